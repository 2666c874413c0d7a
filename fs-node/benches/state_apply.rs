//! State machine apply throughput over `MemStore`, entries decoded as in production:
//! single-put writes, CAS writes, and lock grant+release pairs, plus a retried request.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use fs_node::state::{Command, MemStore, StateConfig, StateMachine};
use protocol::message::data::{Condition, Op, RequestId};
use protocol::message::lock::LockOp;
use protocol::message::replication::Entry;
use protocol::Zxid;

const ENTRIES: u32 = 10_000;
const CLIENT: u64 = protocol::CLIENT_ID_MIN + 1;

fn entries(make: impl Fn(u32) -> Command) -> Vec<Entry> {
    (1..=ENTRIES)
        .map(|i| Entry { zxid: Zxid::new(1, i), data: Bytes::from(make(i).encode().unwrap()) })
        .collect()
}

fn put(i: u32) -> Command {
    Command::Write {
        request: RequestId { client: CLIENT, seq: u64::from(i) },
        conditions: vec![],
        ops: vec![Op::Put {
            key: format!("/k{}", i % 1000),
            value: Bytes::from(vec![7u8; 128]),
            create_only: false,
            ephemeral: None,
        }],
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("state_apply");
    group.throughput(Throughput::Elements(u64::from(ENTRIES)));
    let run = |entries: &Vec<Entry>| {
        let mut m = StateMachine::new(MemStore::new(), StateConfig::default());
        for e in entries {
            m.apply(e).unwrap();
        }
        m
    };

    let puts = entries(put);
    group.bench_function("put_128B", |b| {
        b.iter_batched(|| (), |_| run(&puts), BatchSize::SmallInput)
    });

    let cas = entries(|i| {
        // Create-if-absent on a fresh key: every condition holds.
        let key = format!("/c{i}");
        Command::Write {
            request: RequestId { client: CLIENT, seq: u64::from(i) },
            conditions: vec![Condition::KeyZxid { key: key.clone(), zxid: Zxid::ZERO }],
            ops: vec![Op::Put {
                key,
                value: Bytes::from(vec![7u8; 128]),
                create_only: true,
                ephemeral: None,
            }],
        }
    });
    group.bench_function("cas_put_128B", |b| {
        b.iter_batched(|| (), |_| run(&cas), BatchSize::SmallInput)
    });

    let locks = entries(|i| {
        let request = RequestId { client: CLIENT, seq: u64::from(i) };
        let lock = format!("/lock{}", (i / 2) % 100);
        let op = if i % 2 == 1 {
            LockOp::Grant { lock, auth: 5, session: 0, holder: CLIENT, host: "bench".into() }
        } else {
            LockOp::Release { lock, auth: 5, holder: CLIENT }
        };
        Command::Lock { request, op }
    });
    group.bench_function("lock_grant_release", |b| {
        b.iter_batched(|| (), |_| run(&locks), BatchSize::SmallInput)
    });

    let retries = entries(|_| put(1));
    group.bench_function("retried_request", |b| {
        b.iter_batched(|| (), |_| run(&retries), BatchSize::SmallInput)
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
