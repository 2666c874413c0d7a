//! Shared by the storage tests: an independent reference model of the key namespace, a seeded
//! random batch generator, and helpers to encode batches as log entries.
#![allow(dead_code)]

use bytes::Bytes;
use fs_node::storage::DiskStore;
use protocol::message::data::{DirEntry, ErrorCode, Op};
use protocol::message::replication::Entry;
use protocol::Zxid;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

/// One node of the model: a directory, or a file with its value; and the zxid that wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub dir: bool,
    pub value: Bytes,
    pub zxid: Zxid,
}

/// The namespace as a plain `BTreeMap`, with the semantics written out naively.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Model {
    pub nodes: BTreeMap<String, Node>,
}

fn parent(k: &str) -> &str {
    match k.rfind('/') {
        Some(0) => "/",
        Some(i) => &k[..i],
        None => "/",
    }
}

fn within(k: &str, dir: &str) -> bool {
    k.starts_with(&format!("{dir}/"))
}

impl Model {
    fn is_dir(&self, k: &str) -> Option<bool> {
        if k == "/" {
            return Some(true);
        }
        self.nodes.get(k).map(|n| n.dir)
    }

    fn parent_ok(&self, k: &str) -> Result<(), ErrorCode> {
        match self.is_dir(parent(k)) {
            Some(true) => Ok(()),
            Some(false) => Err(ErrorCode::NotADirectory),
            None => Err(ErrorCode::ParentMissing),
        }
    }

    fn one(&mut self, zxid: Zxid, op: &Op) -> Result<(), ErrorCode> {
        match op {
            Op::Put { key, value, create_only, .. } => {
                self.parent_ok(key)?;
                match self.is_dir(key) {
                    Some(true) => return Err(ErrorCode::IsADirectory),
                    Some(false) if *create_only => return Err(ErrorCode::AlreadyExists),
                    _ => {}
                }
                self.nodes.insert(key.clone(), Node { dir: false, value: value.clone(), zxid });
            }
            Op::Mkdir { key } => {
                self.parent_ok(key)?;
                if self.nodes.contains_key(key) {
                    return Err(ErrorCode::AlreadyExists);
                }
                self.nodes.insert(key.clone(), Node { dir: true, value: Bytes::new(), zxid });
            }
            Op::Delete { key, recursive } => {
                if !self.nodes.contains_key(key) {
                    return Err(ErrorCode::NotFound);
                }
                let below: Vec<String> =
                    self.nodes.keys().filter(|k| within(k, key)).cloned().collect();
                if !below.is_empty() && !recursive {
                    return Err(ErrorCode::DirectoryNotEmpty);
                }
                for k in below {
                    self.nodes.remove(&k);
                }
                self.nodes.remove(key);
            }
            Op::Rename { from, to } => {
                if to == from || within(to, from) {
                    return Err(ErrorCode::BadKey);
                }
                if !self.nodes.contains_key(from) {
                    return Err(ErrorCode::NotFound);
                }
                if self.nodes.contains_key(to) {
                    return Err(ErrorCode::AlreadyExists);
                }
                self.parent_ok(to)?;
                let moved: Vec<(String, Node)> = self
                    .nodes
                    .iter()
                    .filter(|(k, _)| *k == from || within(k, from))
                    .map(|(k, n)| (k.clone(), n.clone()))
                    .collect();
                for (k, _) in &moved {
                    self.nodes.remove(k);
                }
                for (k, n) in moved {
                    let target = format!("{to}{}", &k[from.len()..]);
                    self.nodes.insert(target, Node { zxid, ..n });
                }
            }
            Op::Lock(_) | Op::Session(_) => {}
        }
        Ok(())
    }

    /// Applies a batch atomically: all ops or none.
    pub fn apply(&mut self, zxid: Zxid, ops: &[Op]) -> Result<(), ErrorCode> {
        let mut next = self.clone();
        for op in ops {
            next.one(zxid, op)?;
        }
        *self = next;
        Ok(())
    }

    pub fn list(&self, dir: &str) -> Vec<DirEntry> {
        let prefix = if dir == "/" { "/".to_string() } else { format!("{dir}/") };
        self.nodes
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix) && !k[prefix.len()..].contains('/'))
            .map(|(k, n)| DirEntry {
                name: k[prefix.len()..].to_string(),
                is_dir: n.dir,
                zxid: n.zxid,
            })
            .collect()
    }

    /// The model as `DiskStore::dump` shows a store.
    pub fn dump(&self) -> Vec<(String, Option<(Zxid, Bytes)>)> {
        self.nodes
            .iter()
            .map(|(k, n)| (k.clone(), if n.dir { None } else { Some((n.zxid, n.value.clone())) }))
            .collect()
    }
}

/// The store's full contents in the model's `dump` shape.
pub fn store_dump(store: &DiskStore) -> Vec<(String, Option<(Zxid, Bytes)>)> {
    store
        .dump()
        .expect("dump")
        .into_iter()
        .map(|(k, v)| (k, v.map(|v| (v.zxid, v.value))))
        .collect()
}

/// Asserts the store equals the model: contents, zxids, and every directory's listing.
pub fn assert_same(store: &DiskStore, model: &Model, context: &str) {
    let got: BTreeMap<_, _> = store_dump(store).into_iter().collect();
    let want: BTreeMap<_, _> = model.dump().into_iter().collect();
    if got != want {
        let mut diffs = Vec::new();
        for k in got.keys().chain(want.keys()).collect::<std::collections::BTreeSet<_>>() {
            let (g, w) = (got.get(k), want.get(k));
            if g != w {
                let show = |v: Option<&Option<(Zxid, Bytes)>>| match v {
                    None => "absent".to_string(),
                    Some(None) => "dir".to_string(),
                    Some(Some((z, b))) => format!("file@{z} {}B", b.len()),
                };
                diffs.push(format!("{k}: store {} model {}", show(g), show(w)));
            }
        }
        panic!("contents differ ({context}), store applied {}: {diffs:#?}", store.applied_zxid());
    }
    let mut dirs = vec!["/".to_string()];
    dirs.extend(model.nodes.iter().filter(|(_, n)| n.dir).map(|(k, _)| k.clone()));
    for d in dirs {
        assert_eq!(store.list(&d).expect("list"), model.list(&d), "list({d}) differs ({context})");
    }
}

const NAMES: [&str; 3] = ["a", "b", "c"];

fn random_key(rng: &mut SmallRng) -> String {
    let depth = rng.gen_range(1..=3);
    (0..depth).map(|_| format!("/{}", NAMES[rng.gen_range(0..NAMES.len())])).collect()
}

fn random_op(rng: &mut SmallRng, value_bytes_max: usize) -> Op {
    match rng.gen_range(0..10) {
        0..=3 => {
            let len = rng.gen_range(0..=value_bytes_max);
            let fill = rng.gen::<u8>();
            Op::Put {
                key: random_key(rng),
                value: Bytes::from(vec![fill; len]),
                create_only: rng.gen_bool(0.2),
                ephemeral: None,
            }
        }
        4..=6 => Op::Mkdir { key: random_key(rng) },
        7..=8 => Op::Delete { key: random_key(rng), recursive: rng.gen_bool(0.5) },
        _ => Op::Rename { from: random_key(rng), to: random_key(rng) },
    }
}

/// A seeded generator of random batches of 1 to 4 ops over a small namespace (39 keys), so
/// that ops collide often.
pub struct Workload {
    rng: SmallRng,
    pub value_bytes_max: usize,
}

impl Workload {
    pub fn new(seed: u64) -> Workload {
        Workload { rng: SmallRng::seed_from_u64(seed), value_bytes_max: 300 }
    }

    pub fn batch(&mut self) -> Vec<Op> {
        let n = self.rng.gen_range(1..=4);
        (0..n).map(|_| random_op(&mut self.rng, self.value_bytes_max)).collect()
    }

    /// A batch the model accepts (retrying a bounded number of times), or else a put of `/z`,
    /// a key outside the random namespace that always applies.
    pub fn valid_batch(&mut self, model: &Model, zxid: Zxid) -> Vec<Op> {
        for _ in 0..50 {
            let ops = self.batch();
            if model.clone().apply(zxid, &ops).is_ok() {
                return ops;
            }
        }
        vec![Op::Put {
            key: "/z".into(),
            value: Bytes::from_static(b"x"),
            create_only: false,
            ephemeral: None,
        }]
    }

    pub fn rng(&mut self) -> &mut SmallRng {
        &mut self.rng
    }
}

/// A batch as a log entry (the tests' stand-in for the state machine's command encoding).
pub fn entry(zxid: Zxid, ops: &[Op]) -> Entry {
    let data = protocol::codec::encode(&ops.to_vec(), protocol::limits::MESSAGE_BYTES_MAX)
        .expect("encode");
    Entry { zxid, data: Bytes::from(data) }
}

pub fn ops_of(entry: &Entry) -> Vec<Op> {
    protocol::codec::decode(&entry.data, "test ops", protocol::limits::MESSAGE_BYTES_MAX)
        .expect("decode")
}
