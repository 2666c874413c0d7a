//! Storage engine figures for BENCHMARKS.md. Run by hand (it writes gigabytes for the start-up
//! figure):
//!
//! ```text
//! cargo bench -p fs-node --bench storage -- all
//! cargo bench -p fs-node --bench storage -- writes|reads|startup|compaction
//! SHOAL_BENCH_STARTUP_KEYS=10000000 SHOAL_BENCH_DIR=/var/tmp cargo bench -p fs-node --bench storage -- startup
//! ```
//!
//! A "durable write" is what a node does before it acknowledges: append the entry (a Put of a
//! 256-byte value) to the data log and wait for the group fdatasync that covers it; an applier
//! thread applies durable entries to the store in zxid order, as the state machine does.

use bytes::Bytes;
use fs_node::storage::{DataLog, DiskStore, LogConfig, RealFs, StoreConfig, Vfs};
use lru::LruCache;
use protocol::message::data::Op;
use protocol::message::replication::Entry;
use protocol::Zxid;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const VALUE_BYTES: usize = 256;
const WRITE_PHASE: Duration = Duration::from_secs(4);
const WRITE_KEYS: u64 = 100_000;

fn bench_dir() -> PathBuf {
    std::env::var("SHOAL_BENCH_DIR").map(PathBuf::from).unwrap_or_else(|_| std::env::temp_dir())
}

fn key(i: u64) -> String {
    format!("/k{i:09}")
}

fn put(i: u64, fill: u8) -> Op {
    Op::Put {
        key: key(i),
        value: Bytes::from(vec![fill; VALUE_BYTES]),
        create_only: false,
        ephemeral: None,
    }
}

fn encode(ops: &[Op]) -> Bytes {
    Bytes::from(
        protocol::codec::encode(&ops.to_vec(), protocol::limits::MESSAGE_BYTES_MAX).unwrap(),
    )
}

fn open(dir: &Path, config: StoreConfig) -> (Arc<DataLog>, Arc<DiskStore>) {
    let vfs: Arc<dyn Vfs> = Arc::new(RealFs);
    let (log, _) = DataLog::open(vfs.clone(), &dir.join("log"), LogConfig::default()).unwrap();
    let (store, _) = DiskStore::open(vfs, &dir.join("data"), config).unwrap();
    (Arc::new(log), Arc::new(store))
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

/// Counts live heap bytes, so that memory per key is measured exactly rather than through RSS
/// (which keeps freed pages).
struct CountingAlloc;

static HEAP_BYTES: AtomicU64 = AtomicU64::new(0);

unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        HEAP_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        std::alloc::System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        HEAP_BYTES.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        std::alloc::System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn heap_bytes() -> u64 {
    HEAP_BYTES.load(Ordering::Relaxed)
}

/// Entries appended but not yet applied, in zxid order.
type Pending = Vec<(Zxid, Vec<Op>)>;

/// The log's appends must be in zxid order; writers take this lock to get a zxid and append.
struct Sequencer {
    next: Mutex<(u64, Pending)>,
    pending: Condvar,
}

struct WriteResult {
    writes: u64,
    seconds: f64,
    latencies_us: Vec<u64>,
}

/// `writers` threads doing durable writes for `phase`; optionally a compactor thread merging
/// continuously. Returns throughput and ack latencies.
fn durable_writes(
    dir: &Path,
    config: StoreConfig,
    writers: usize,
    phase: Duration,
    compact: bool,
) -> WriteResult {
    let (log, store) = open(dir, config);
    // A phase may continue on the directory of the previous one.
    let first = log.last_zxid().counter() as u64;
    let seq =
        Arc::new(Sequencer { next: Mutex::new((first, Vec::new())), pending: Condvar::new() });
    let stop = Arc::new(AtomicBool::new(false));
    let compactions = Arc::new(AtomicU64::new(0));
    // The applier: applies durable entries in zxid order, as the state machine does.
    let applier = {
        let (log, store, seq, stop) = (log.clone(), store.clone(), seq.clone(), stop.clone());
        std::thread::spawn(move || loop {
            let batch: Pending = {
                let mut g = seq.next.lock().unwrap();
                while g.1.is_empty() && !stop.load(Ordering::Relaxed) {
                    g = seq.pending.wait_timeout(g, Duration::from_millis(50)).unwrap().0;
                }
                if g.1.is_empty() {
                    return;
                }
                std::mem::take(&mut g.1)
            };
            let last = batch.last().unwrap().0;
            log.wait_durable(last).unwrap();
            for (zxid, ops) in batch {
                store.apply(zxid, &ops).unwrap();
            }
        })
    };
    let compactor = compact.then(|| {
        let (store, stop, compactions) = (store.clone(), stop.clone(), compactions.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if store.compact().unwrap().is_some() {
                    compactions.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    });
    let start = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let (log, seq, stop) = (log.clone(), seq.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rng = SmallRng::seed_from_u64(w as u64);
                let mut lat = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let ops = vec![put(rng.gen_range(0..WRITE_KEYS), rng.gen())];
                    let data = encode(&ops);
                    let t = Instant::now();
                    let zxid = {
                        let mut g = seq.next.lock().unwrap();
                        g.0 += 1;
                        let zxid = Zxid::new(1, g.0 as u32);
                        log.append(&[Entry { zxid, data }]).unwrap();
                        g.1.push((zxid, ops));
                        seq.pending.notify_one();
                        zxid
                    };
                    log.wait_durable(zxid).unwrap();
                    lat.push(t.elapsed().as_micros() as u64);
                }
                lat
            })
        })
        .collect();
    std::thread::sleep(phase);
    stop.store(true, Ordering::Relaxed);
    let mut latencies_us: Vec<u64> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let seconds = start.elapsed().as_secs_f64();
    applier.join().unwrap();
    if let Some(c) = compactor {
        c.join().unwrap();
        eprintln!(
            "  (compactions completed during the phase: {})",
            compactions.load(Ordering::Relaxed)
        );
    }
    latencies_us.sort_unstable();
    WriteResult { writes: latencies_us.len() as u64, seconds, latencies_us }
}

fn report(label: &str, r: &WriteResult) {
    println!(
        "| {label} | {:.0} writes/s | p50 {} µs | p99 {} µs |",
        r.writes as f64 / r.seconds,
        percentile(&r.latencies_us, 0.50),
        percentile(&r.latencies_us, 0.99)
    );
}

fn writes() {
    println!("\n## durable writes, 256-byte values, fdatasync on ({WRITE_PHASE:?} each)");
    println!("| writers | throughput | p50 | p99 |");
    for writers in [1, 16, 64, 256] {
        let dir = tempfile::tempdir_in(bench_dir()).unwrap();
        let r = durable_writes(dir.path(), StoreConfig::default(), writers, WRITE_PHASE, false);
        report(&format!("{writers}"), &r);
    }
}

fn compaction() {
    println!("\n## compaction's effect on durable write latency (16 writers, overwrites of 100k keys, 1 MiB data segments)");
    println!("| phase | throughput | p50 | p99 |");
    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    // Small segments so that sealed segments full of overwritten values pile up quickly.
    let config = || StoreConfig { segment_bytes_max: 1024 * 1024, ..StoreConfig::default() };
    let _ = durable_writes(dir.path(), config(), 16, WRITE_PHASE, false);
    // Alternate, so that the machine's background load hits both alike.
    for round in 0..2 {
        let r = durable_writes(dir.path(), config(), 16, WRITE_PHASE, false);
        report(&format!("no compaction ({})", round + 1), &r);
        let r = durable_writes(dir.path(), config(), 16, WRITE_PHASE, true);
        report(&format!("compacting every 20 ms ({})", round + 1), &r);
    }
}

/// Loads `keys` keys (values of `value_bytes`) in batches straight into a store.
fn load(dir: &Path, keys: u64, value_bytes: usize) {
    let vfs: Arc<dyn Vfs> = Arc::new(RealFs);
    let (store, _) = DiskStore::open(vfs, &dir.join("data"), StoreConfig::default()).unwrap();
    let per_batch = 1000;
    let value = Bytes::from(vec![7u8; value_bytes]);
    let mut zxid = Zxid::new(1, 0);
    let mut i = 0;
    while i < keys {
        zxid = zxid.next().unwrap();
        let ops: Vec<Op> = (i..(i + per_batch).min(keys))
            .map(|k| Op::Put {
                key: key(k),
                value: value.clone(),
                create_only: false,
                ephemeral: None,
            })
            .collect();
        store.apply(zxid, &ops).unwrap();
        i += per_batch;
    }
    // Seal the active segment (hint file) and make everything durable, as a running node
    // would have at its last checkpoint.
    store.freeze().unwrap();
    store.unfreeze();
    store.checkpoint().unwrap();
}

fn startup() {
    let keys: u64 = std::env::var("SHOAL_BENCH_STARTUP_KEYS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let value_bytes: usize = std::env::var("SHOAL_BENCH_STARTUP_VALUE_BYTES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(VALUE_BYTES);
    println!("\n## start-up and memory with {keys} keys ({value_bytes}-byte values)");
    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    let t = Instant::now();
    load(dir.path(), keys, value_bytes);
    println!("load: {:.1} s", t.elapsed().as_secs_f64());
    let before = heap_bytes();
    let t = Instant::now();
    let vfs: Arc<dyn Vfs> = Arc::new(RealFs);
    let (store, rec) =
        DiskStore::open(vfs, &dir.path().join("data"), StoreConfig::default()).unwrap();
    let secs = t.elapsed().as_secs_f64();
    let after = heap_bytes();
    assert_eq!(store.key_count() as u64, keys);
    println!(
        "| start-up (open, index from hint files) | {secs:.2} s | segments from hints {}, scanned {} |",
        rec.segments_from_hints, rec.segments_scanned
    );
    println!(
        "| memory per key (live heap bytes of the open store / keys; keys are 11 bytes) | {:.0} bytes |",
        (after.saturating_sub(before)) as f64 / keys as f64
    );
}

fn reads() {
    let keys: u64 = 1_000_000;
    println!("\n## point reads, {keys} keys of {VALUE_BYTES} bytes, 1 thread");
    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    load(dir.path(), keys, VALUE_BYTES);
    let vfs: Arc<dyn Vfs> = Arc::new(RealFs);
    let (store, _) =
        DiskStore::open(vfs, &dir.path().join("data"), StoreConfig::default()).unwrap();
    let mut rng = SmallRng::seed_from_u64(1);
    let n = 1_000_000;
    let t = Instant::now();
    for _ in 0..n {
        let v = store.get(&key(rng.gen_range(0..keys))).unwrap();
        assert!(v.is_some());
    }
    let disk = n as f64 / t.elapsed().as_secs_f64();
    println!(
        "| get via index + pread (+CRC check; file pages in the OS cache) | {disk:.0} reads/s |"
    );
    // A read cache in front, as the cache server keeps one: hot keys (10% of the key space).
    let mut cache: LruCache<String, protocol::message::data::Versioned> =
        LruCache::new(NonZeroUsize::new(200_000).unwrap());
    let hot = keys / 10;
    for i in 0..hot {
        let k = key(i);
        let v = store.get(&k).unwrap().unwrap();
        cache.put(k, v);
    }
    let t = Instant::now();
    let mut hits = 0u64;
    for _ in 0..n {
        if cache.get(&key(rng.gen_range(0..hot))).is_some() {
            hits += 1;
        }
    }
    assert_eq!(hits, n);
    let lru = n as f64 / t.elapsed().as_secs_f64();
    println!("| get from an LRU in front (all hits) | {lru:.0} reads/s |");
}

fn main() {
    let what: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let all = what.is_empty() || what.iter().any(|w| w == "all");
    let want = |name: &str| all || what.iter().any(|w| w == name);
    if want("writes") {
        writes();
    }
    if want("reads") {
        reads();
    }
    if want("compaction") {
        compaction();
    }
    if want("startup") {
        startup();
    }
}
