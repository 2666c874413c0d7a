//! The [`StateStore`] conformance suite: every store must pass it (the storage engine runs it on
//! the disk store; `fs-node/tests/state_store.rs` runs it on [`MemStore`](super::MemStore)).
//!
//! - [`check_rules`]: one scenario per rule of the trait, each failure naming the rule.
//! - [`check_random`]: seeded random batches compared against [`NamespaceModel`], a naive
//!   model (clone the map, apply op by op, discard on error). The seed is in every failure.
//!
//! It returns `Err(description)` instead of panicking, so that it can run inside any harness.

use super::state_store::{EntryKind, StateStore};
use bytes::Bytes;
use protocol::key::{self, ROOT};
use protocol::limits::KEY_BYTES_DEFAULT;
use protocol::message::data::{ErrorCode, Op};
use protocol::message::lock::LockOp;
use protocol::Zxid;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

/// Every key, kind and zxid a store holds, in key order, read through the trait.
pub fn snapshot<S: StateStore + ?Sized>(store: &S) -> Vec<(String, EntryKind, Zxid)> {
    let mut keys = Vec::new();
    store.visit_within(ROOT, &mut |k, _| {
        keys.push(k.to_string());
        true
    });
    keys.sort();
    keys.into_iter().filter_map(|k| store.stat(&k).map(|(kind, zxid)| (k, kind, zxid))).collect()
}

fn put(key: &str, value: &'static str) -> Op {
    Op::Put {
        key: key.into(),
        value: Bytes::from_static(value.as_bytes()),
        create_only: false,
        ephemeral: None,
    }
}

fn expect(rule: &str, ok: bool) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("rule broken: {rule}"))
    }
}

fn refused<S: StateStore>(store: &S, ops: &[Op]) -> Option<ErrorCode> {
    store.check(ops, KEY_BYTES_DEFAULT).err().map(|e| e.code)
}

fn apply<S: StateStore>(store: &mut S, zxid: Zxid, ops: &[Op]) -> Result<(), String> {
    store
        .check(ops, KEY_BYTES_DEFAULT)
        .map_err(|e| format!("check refused a valid batch: {}", e.message))?;
    store.apply(zxid, ops).map_err(|e| format!("apply failed: {e}"))
}

/// Runs one scenario per rule against fresh stores from `make`.
pub fn check_rules<S: StateStore>(make: &mut dyn FnMut() -> S) -> Result<(), String> {
    let z = |c| Zxid::new(1, c);
    let mkdir = |k: &str| Op::Mkdir { key: k.into() };

    let mut s = make();
    expect("the root exists and is a directory", s.is_dir(ROOT))?;
    expect("a new store is empty", snapshot(&s).is_empty())?;
    expect(
        "put needs its parent (ParentMissing at op 0)",
        refused(&s, &[put("/a/b", "x")]) == Some(ErrorCode::ParentMissing),
    )?;
    apply(&mut s, z(1), &[mkdir("/a"), put("/a/b", "x")])?;
    expect(
        "a batch sees its earlier ops; apply stamps the batch zxid",
        s.stat("/a") == Some((EntryKind::Dir, z(1)))
            && s.stat("/a/b") == Some((EntryKind::Value, z(1))),
    )?;
    let got = s.get("/a/b").map_err(|e| e.to_string())?;
    expect(
        "get returns the value and its zxid",
        got.is_some_and(|v| v.zxid == z(1) && v.value == "x"),
    )?;
    expect("get of a directory is None", s.get("/a").map_err(|e| e.to_string())?.is_none())?;
    expect(
        "a value cannot be a parent (NotADirectory)",
        refused(&s, &[put("/a/b/c", "x")]) == Some(ErrorCode::NotADirectory),
    )?;
    expect(
        "put refuses a directory key (IsADirectory)",
        refused(&s, &[put("/a", "x")]) == Some(ErrorCode::IsADirectory),
    )?;
    let create_only =
        Op::Put { key: "/a/b".into(), value: Bytes::new(), create_only: true, ephemeral: None };
    expect(
        "create_only refuses an existing key (AlreadyExists)",
        refused(&s, &[create_only]) == Some(ErrorCode::AlreadyExists),
    )?;
    expect(
        "mkdir refuses an existing key (AlreadyExists)",
        refused(&s, &[mkdir("/a")]) == Some(ErrorCode::AlreadyExists),
    )?;
    expect(
        "delete of a missing key is NotFound",
        refused(&s, &[Op::Delete { key: "/nope".into(), recursive: false }])
            == Some(ErrorCode::NotFound),
    )?;
    expect(
        "delete of a non-empty directory needs recursive (DirectoryNotEmpty)",
        refused(&s, &[Op::Delete { key: "/a".into(), recursive: false }])
            == Some(ErrorCode::DirectoryNotEmpty),
    )?;
    expect(
        "a batch that empties a directory may then delete it",
        refused(
            &s,
            &[
                Op::Delete { key: "/a/b".into(), recursive: false },
                Op::Delete { key: "/a".into(), recursive: false },
            ],
        )
        .is_none(),
    )?;
    expect(
        "rename into its own subtree is refused",
        refused(&s, &[Op::Rename { from: "/a".into(), to: "/a/c".into() }])
            == Some(ErrorCode::BadKey),
    )?;
    apply(&mut s, z(2), &[mkdir("/t"), put("/t/v", "y")])?;
    expect(
        "rename may not move a key past the key limit (BadKey; /tttt/v is 7 bytes)",
        s.check(&[Op::Rename { from: "/t".into(), to: "/tttt".into() }], 6).map_err(|e| e.code)
            == Err(ErrorCode::BadKey)
            && s.check(&[Op::Rename { from: "/t".into(), to: "/tttt".into() }], 7).is_ok(),
    )?;
    expect(
        "rename onto an existing key is AlreadyExists",
        refused(&s, &[Op::Rename { from: "/a".into(), to: "/t".into() }])
            == Some(ErrorCode::AlreadyExists),
    )?;
    let before = snapshot(&s);
    expect(
        "a refused batch changes nothing (check is read-only)",
        refused(&s, &[put("/t/w", "1"), put("/zz/y", "1")]) == Some(ErrorCode::ParentMissing)
            && snapshot(&s) == before,
    )?;
    apply(&mut s, z(3), &[Op::Rename { from: "/a".into(), to: "/t/a".into() }])?;
    expect(
        "rename moves the whole subtree and stamps the rename's zxid",
        snapshot(&s)
            == vec![
                ("/t".to_string(), EntryKind::Dir, z(2)),
                ("/t/a".to_string(), EntryKind::Dir, z(3)),
                ("/t/a/b".to_string(), EntryKind::Value, z(3)),
                ("/t/v".to_string(), EntryKind::Value, z(2)),
            ],
    )?;
    let listed = s.list("/t", 10).map_err(|e| e.message)?;
    let names: Vec<(String, bool)> = listed.into_iter().map(|e| (e.name, e.is_dir)).collect();
    expect(
        "list gives direct children in name order",
        names == vec![("a".to_string(), true), ("v".to_string(), false)],
    )?;
    expect("list honours its limit", s.list("/t", 1).map(|l| l.len()) == Ok(1))?;
    expect(
        "list of a missing directory is NotFound",
        s.list("/nope", 10).map_err(|e| e.code) == Err(ErrorCode::NotFound),
    )?;
    let before = snapshot(&s);
    s.apply(z(3), &[put("/t/v", "replayed")]).map_err(|e| e.to_string())?;
    expect("a replayed batch (zxid already applied) is harmless", snapshot(&s) == before)?;
    let release = Op::Lock(LockOp::Release { lock: "/l".into(), auth: 2, holder: 1 });
    apply(&mut s, z(4), &[release])?;
    expect("lock and session ops are not data", snapshot(&s) == before)?;
    apply(&mut s, z(5), &[Op::Delete { key: "/t".into(), recursive: true }])?;
    expect("a recursive delete removes the subtree", snapshot(&s).is_empty())?;
    Ok(())
}

/// Applies `batches` seeded random batches over a small key space to a fresh store and to the
/// model, comparing refusals (op index and code), contents and listings after each.
pub fn check_random<S: StateStore>(
    make: &mut dyn FnMut() -> S,
    seed: u64,
    batches: usize,
) -> Result<(), String> {
    const KEYS: &[&str] = &["/a", "/b", "/a/x", "/a/y", "/b/x", "/a/x/z", "/c"];
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut store = make();
    let mut model = NamespaceModel::default();
    for i in 0..batches {
        let zxid = Zxid::new(1, u32::try_from(i + 1).unwrap_or(u32::MAX));
        let ops: Vec<Op> = (0..rng.gen_range(1..4))
            .map(|_| {
                let key = KEYS[rng.gen_range(0..KEYS.len())].to_string();
                match rng.gen_range(0..10) {
                    0..=3 => Op::Put {
                        key,
                        value: Bytes::from(vec![b'v'; rng.gen_range(0..3)]),
                        create_only: rng.gen_bool(0.3),
                        ephemeral: None,
                    },
                    4..=6 => Op::Mkdir { key },
                    7..=8 => Op::Delete { key, recursive: rng.gen_bool(0.5) },
                    _ => Op::Rename { from: key, to: KEYS[rng.gen_range(0..KEYS.len())].into() },
                }
            })
            .collect();
        let expected = model.apply(&ops, zxid);
        let got = refused(&store, &ops);
        if got != expected.as_ref().err().map(|(_, code)| *code) {
            return Err(format!(
                "seed {seed}, batch {i} {ops:?}: store says {got:?}, model says {:?}",
                expected.err()
            ));
        }
        if let Ok(next) = expected {
            store.apply(zxid, &ops).map_err(|e| format!("seed {seed}, batch {i}: {e}"))?;
            model = next;
        }
        if snapshot(&store) != model.snapshot() {
            return Err(format!(
                "seed {seed}, batch {i} {ops:?}: store holds {:?}, model {:?}",
                snapshot(&store),
                model.snapshot()
            ));
        }
        for dir in ["/", "/a", "/a/x"] {
            let listed = store
                .list(dir, usize::MAX)
                .ok()
                .map(|l| l.into_iter().map(|e| (e.name, e.is_dir, e.zxid)).collect::<Vec<_>>());
            if listed != model.list(dir) {
                return Err(format!("seed {seed}, batch {i}: list {dir} gives {listed:?}"));
            }
        }
    }
    Ok(())
}

/// The namespace rules written the naive way: key → (kind, zxid), the root implicit; a batch
/// clones the map and applies op by op.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceModel(pub BTreeMap<String, (EntryKind, Zxid)>);

impl NamespaceModel {
    pub fn kind(&self, key: &str) -> Option<EntryKind> {
        if key == ROOT {
            return Some(EntryKind::Dir);
        }
        self.0.get(key).map(|(k, _)| *k)
    }

    pub fn snapshot(&self) -> Vec<(String, EntryKind, Zxid)> {
        self.0.iter().map(|(k, (kind, z))| (k.clone(), *kind, *z)).collect()
    }

    fn parent_ok(&self, key: &str) -> Result<(), ErrorCode> {
        match self.kind(key::parent(key).unwrap_or(ROOT)) {
            Some(EntryKind::Dir) => Ok(()),
            Some(EntryKind::Value) => Err(ErrorCode::NotADirectory),
            None => Err(ErrorCode::ParentMissing),
        }
    }

    fn below(&self, dir: &str) -> Vec<String> {
        self.0.keys().filter(|k| k.as_str() != dir && key::is_within(k, dir)).cloned().collect()
    }

    /// The model after `ops`, or the first refused op's index and code.
    pub fn apply(&self, ops: &[Op], zxid: Zxid) -> Result<NamespaceModel, (usize, ErrorCode)> {
        let mut m = self.clone();
        for (i, op) in ops.iter().enumerate() {
            m.step(op, zxid).map_err(|c| (i, c))?;
        }
        Ok(m)
    }

    fn step(&mut self, op: &Op, zxid: Zxid) -> Result<(), ErrorCode> {
        match op {
            Op::Put { key, create_only, .. } => {
                self.parent_ok(key)?;
                match self.kind(key) {
                    Some(EntryKind::Dir) => return Err(ErrorCode::IsADirectory),
                    Some(EntryKind::Value) if *create_only => return Err(ErrorCode::AlreadyExists),
                    _ => {}
                }
                self.0.insert(key.clone(), (EntryKind::Value, zxid));
            }
            Op::Mkdir { key } => {
                self.parent_ok(key)?;
                if self.kind(key).is_some() {
                    return Err(ErrorCode::AlreadyExists);
                }
                self.0.insert(key.clone(), (EntryKind::Dir, zxid));
            }
            Op::Delete { key, recursive } => {
                let Some(kind) = self.kind(key) else { return Err(ErrorCode::NotFound) };
                let below = self.below(key);
                if kind == EntryKind::Dir && !recursive && !below.is_empty() {
                    return Err(ErrorCode::DirectoryNotEmpty);
                }
                for k in below {
                    self.0.remove(&k);
                }
                self.0.remove(key);
            }
            Op::Rename { from, to } => {
                if key::is_within(to, from) {
                    return Err(ErrorCode::BadKey);
                }
                if self.kind(from).is_none() {
                    return Err(ErrorCode::NotFound);
                }
                if self.kind(to).is_some() {
                    return Err(ErrorCode::AlreadyExists);
                }
                self.parent_ok(to)?;
                let mut moved = self.below(from);
                moved.push(from.clone());
                for k in moved {
                    if let Some((kind, _)) = self.0.remove(&k) {
                        self.0.insert(format!("{to}{}", &k[from.len()..]), (kind, zxid));
                    }
                }
            }
            Op::Lock(_) | Op::Session(_) => {}
        }
        Ok(())
    }

    /// Direct children of `dir` as (name, is_dir, zxid), or `None` if `dir` is no directory.
    pub fn list(&self, dir: &str) -> Option<Vec<(String, bool, Zxid)>> {
        if self.kind(dir) != Some(EntryKind::Dir) {
            return None;
        }
        Some(
            self.0
                .iter()
                .filter(|(k, _)| key::parent(k) == Some(dir))
                .map(|(k, (kind, z))| (key::name(k).to_string(), *kind == EntryKind::Dir, *z))
                .collect(),
        )
    }
}
