//! The read path's costs: a client cache hit, one routing decision, and a whole `read` through
//! the in-memory network to a real `cache_server::Server` (cache hit vs. node round trip).
//! Run: `cargo bench -p cache-client --bench read_path`.

use bytes::Bytes;
use cache_client::cache::{CacheConfig, ClientCache};
use cache_client::routing::{Router, RoutingConfig};
use cache_client::transport::MemNetwork;
use cache_client::{Client, ClientConfig, ReadOptions};
use cache_server::mem::{serve, MemBackend};
use cache_server::ServerConfig;
use criterion::{criterion_group, criterion_main, Criterion};
use protocol::message::data::{Load, Role, Versioned};
use protocol::message::live::FsLive;
use protocol::message::Message;
use protocol::Zxid;
use std::sync::Arc;
use std::time::Instant;

fn cache_hit(c: &mut Criterion) {
    let now = Instant::now();
    let mut cache = ClientCache::new(CacheConfig::default());
    cache.learn_position(Zxid::new(1, 0), 0);
    for i in 0..10_000 {
        let v = Versioned { zxid: Zxid::new(1, 1), value: Bytes::from(vec![0u8; 100]) };
        cache.fill(&format!("/k{i}"), Some(v), Zxid::new(1, 1), 0, now);
    }
    c.bench_function("client cache hit (10k entries, 100 B)", |b| {
        b.iter(|| cache.lookup("/k5000", Zxid::new(1, 1), now))
    });
}

fn routing_pick(c: &mut Criterion) {
    let now = Instant::now();
    let mut router = Router::new(RoutingConfig::default(), 1);
    for node in 1..=5u8 {
        router.on_fs_live(
            &FsLive {
                node,
                role: if node == 1 { Role::Master } else { Role::Follower },
                epoch: 1,
                applied: Zxid::new(1, 9),
                frozen: false,
                load: Load { cpu_permille: 100 * node as u16, mem_permille: 300, inflight: 0 },
                address: format!("n{node}"),
                master: Some(1),
            },
            now,
        );
    }
    c.bench_function("routing pick_read (5 nodes)", |b| {
        b.iter(|| router.pick_read(Zxid::new(1, 5), &[], now))
    });
}

fn client_read(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let network = MemNetwork::new();
    let server = serve(MemBackend::master(1, 1), ServerConfig::new("n1"));
    let handler_server = Arc::clone(&server);
    network.add_node(
        "n1",
        Arc::new(move |m| {
            let s = Arc::clone(&handler_server);
            Box::pin(async move { s.handle(m).await })
        }),
    );
    let client = runtime.block_on(async {
        let client = Client::new(
            network.transport(),
            ClientConfig { rng_seed: Some(1), ..ClientConfig::default() },
        );
        network.multicast(Message::FsLive(server.fs_live()));
        client.write("/k", vec![0u8; 100]).await.unwrap();
        client.read("/k").await.unwrap();
        client
    });
    let bypass = ReadOptions { linearizable: false, bypass_cache: true };
    c.bench_function("client read, cache hit", |b| {
        b.iter(|| runtime.block_on(client.read("/k")).unwrap())
    });
    c.bench_function("client read, in-memory node round trip", |b| {
        b.iter(|| runtime.block_on(client.read_with("/k", bypass)).unwrap())
    });
}

criterion_group!(benches, cache_hit, routing_pick, client_read);
criterion_main!(benches);
