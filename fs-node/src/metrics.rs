//! Node metrics: a small registry of atomic counters, gauges and fixed-bucket histograms, a
//! Prometheus text-format (0.0.4) renderer, and a minimal HTTP/1.1 responder for
//! `GET /metrics` on the configured `metrics_addr`.
//!
//! The registry ([`Metrics`]) holds what only the runtime sees as it happens (operations by
//! kind, write latency, commit batch sizes, log group commits, elections); the rest (role,
//! zxids, lock counts, cache and messaging counters) is read from its owner at scrape time by
//! the node's render function, so nothing is counted twice.
//!
//! # Exposed names
//! | name | type | labels | meaning |
//! | --- | --- | --- | --- |
//! | `shoal_ops_total` | counter | `kind` | requests served, by kind (see [`OpKind`]) |
//! | `shoal_write_latency_seconds` | histogram | | submit → commit+apply of a write, on the node that took it |
//! | `shoal_commit_batch_entries` | histogram | | entries applied per engine Ready |
//! | `shoal_log_fsyncs_total` | counter | | durable-watermark advances seen by the core (each follows at least one group-commit fsync; advances close together count once, so this is a lower bound) |
//! | `shoal_elections_total` | counter | | times this node became an established master |
//! | `shoal_role_changes_total` | counter | | role changes seen by this node |
//! | `shoal_role` | gauge | `role` | 1 for the current role (looking, follower, master) |
//! | `shoal_epoch` | gauge | | current epoch |
//! | `shoal_applied_zxid` / `shoal_committed_zxid` | gauge | | as a 64-bit number (epoch << 32 \| counter) |
//! | `shoal_locks` / `shoal_sessions` | gauge | | held locks and open sessions in the applied state |
//! | `shoal_transfer_in_progress` | gauge | | 1 while a data-file transfer runs |
//! | `shoal_transfers_started_total` / `_done_total` / `_failed_total` | counter | | file transfers and backups this node took part in (donor or receiver) |
//! | `shoal_transfer_bytes_sent_total` / `_received_total` | counter | | file-transfer bytes (blocks and repairs sent; whole data sets received) |
//! | `shoal_snapshots_total` | counter | | snapshots taken (store files + tables) |
//! | `shoal_snapshot_zxid` | gauge | | zxid of the latest snapshot |
//! | `shoal_cache_hits_total` / `shoal_cache_misses_total` / `shoal_cache_evictions_total` | counter | | the server cache |
//! | `shoal_messaging_*_total` | counter | | endpoint counters: retransmits, NAKs sent and received, gaps, duplicates |
//! | `shoal_messaging_dropped_total` | counter | `reason` | datagrams dropped inside the messaging core, by reason (rejected, stale incarnation, beyond the window, queue overflow, unmatched replies) |
//! | `shoal_dropped_datagrams_total` | counter | `reason` | datagrams refused on receipt, by [`protocol::stats::DropReason`]: `truncated`, `bad_magic`, `wrong_version`, `wrong_cluster`, `bad_mac`, `unknown_kind`, `malformed`, `too_large`, `wrong_class` (a key class this endpoint does not take from that sender or kind), `replay` (seen before, below the replay window, or an older incarnation), `receiver_full` (authentic, but the receiver's reorder/reassembly memory cap was full; repaired by retransmission) |

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Most bytes of one HTTP request head; anything longer is refused with 431.
pub const REQUEST_BYTES_MAX: usize = 4096;
/// Most scrapes served at once; further connections wait in the kernel backlog.
pub const CONNECTIONS_MAX: usize = 8;
/// How long a connection may take to send its request head.
pub const REQUEST_WAIT: Duration = Duration::from_secs(5);
/// Pause after a failed accept.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Upper bounds of the write latency buckets, in microseconds.
pub const WRITE_LATENCY_BUCKETS_US: [u64; 12] =
    [250, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 250_000, 500_000, 1_000_000];
/// Upper bounds of the commit batch buckets, in entries.
pub const COMMIT_BATCH_BUCKETS: [u64; 9] = [1, 2, 4, 8, 16, 32, 64, 128, 256];

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        // Relaxed: every counter is independent and only read as a statistic.
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A histogram over fixed upper bounds (plus +Inf), with a sum and a count.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    /// Non-cumulative counts per bucket; the last is +Inf.
    counts: Vec<AtomicU64>,
    sum: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [u64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    pub fn record(&self, value: u64) {
        let i = self.bounds.iter().position(|b| value <= *b).unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Renders `name_bucket`, `name_sum`, `name_count`, dividing bounds and sum by `scale`
    /// (1e6 turns microseconds into the seconds Prometheus expects).
    fn render(&self, out: &mut String, name: &str, help: &str, scale: f64) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let le = match self.bounds.get(i) {
                Some(b) => format!("{}", *b as f64 / scale),
                None => "+Inf".to_string(),
            };
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum.load(Ordering::Relaxed) as f64 / scale;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}

/// Operation kinds counted by `shoal_ops_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Get,
    Exists,
    IsDir,
    Stat,
    List,
    Range,
    Write,
    Linearizable,
    Lock,
}

impl OpKind {
    pub const ALL: [OpKind; 9] = [
        OpKind::Get,
        OpKind::Exists,
        OpKind::IsDir,
        OpKind::Stat,
        OpKind::List,
        OpKind::Range,
        OpKind::Write,
        OpKind::Linearizable,
        OpKind::Lock,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OpKind::Get => "get",
            OpKind::Exists => "exists",
            OpKind::IsDir => "is_dir",
            OpKind::Stat => "stat",
            OpKind::List => "list",
            OpKind::Range => "range",
            OpKind::Write => "write",
            OpKind::Linearizable => "linearizable",
            OpKind::Lock => "lock",
        }
    }
}

/// What the runtime counts as it happens. Share one behind an `Arc`.
#[derive(Debug)]
pub struct Metrics {
    ops: [Counter; OpKind::ALL.len()],
    pub write_latency_us: Histogram,
    pub commit_batch: Histogram,
    pub log_fsyncs: Counter,
    pub elections: Counter,
    pub role_changes: Counter,
    pub transfers_started: Counter,
    pub transfers_done: Counter,
    pub transfers_failed: Counter,
    pub transfer_bytes_sent: Counter,
    pub transfer_bytes_received: Counter,
    pub snapshots: Counter,
    /// Messages the core could not hand to the full outbound queue (`node::OUTBOUND_QUEUE_MAX`).
    pub outbound_dropped: Counter,
    /// Requests turned away because the in-flight bounds were reached
    /// (`node::REQUESTS_IN_FLIGHT_MAX`, `node::REQUEST_BYTES_IN_FLIGHT_MAX`).
    pub requests_refused_busy: Counter,
    /// Zxid of the latest snapshot (a gauge: set, not added).
    pub snapshot_zxid: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            ops: Default::default(),
            write_latency_us: Histogram::new(&WRITE_LATENCY_BUCKETS_US),
            commit_batch: Histogram::new(&COMMIT_BATCH_BUCKETS),
            log_fsyncs: Counter::default(),
            elections: Counter::default(),
            role_changes: Counter::default(),
            transfers_started: Counter::default(),
            transfers_done: Counter::default(),
            transfers_failed: Counter::default(),
            transfer_bytes_sent: Counter::default(),
            transfer_bytes_received: Counter::default(),
            snapshots: Counter::default(),
            outbound_dropped: Counter::default(),
            requests_refused_busy: Counter::default(),
            snapshot_zxid: AtomicU64::new(0),
        }
    }

    pub fn op(&self, kind: OpKind) {
        self.ops[kind as usize].inc();
    }

    pub fn ops(&self, kind: OpKind) -> u64 {
        self.ops[kind as usize].get()
    }

    /// Appends this registry in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP shoal_ops_total Requests served by this node, by kind.\n\
             # TYPE shoal_ops_total counter"
        );
        for kind in OpKind::ALL {
            let _ = writeln!(out, "shoal_ops_total{{kind=\"{}\"}} {}", kind.name(), self.ops(kind));
        }
        self.write_latency_us.render(
            out,
            "shoal_write_latency_seconds",
            "Write submit to commit and apply on the node that took it.",
            1e6,
        );
        self.commit_batch.render(
            out,
            "shoal_commit_batch_entries",
            "Entries applied per engine Ready.",
            1.0,
        );
        counter(
            out,
            "shoal_log_fsyncs_total",
            "Durable-watermark advances the core observed (each after at least one group-commit fsync; advances close together count once).",
            self.log_fsyncs.get(),
        );
        counter(
            out,
            "shoal_elections_total",
            "Times this node became an established master.",
            self.elections.get(),
        );
        counter(
            out,
            "shoal_role_changes_total",
            "Role changes seen by this node.",
            self.role_changes.get(),
        );
        counter(
            out,
            "shoal_transfers_started_total",
            "File transfers and backups started (donor or receiver).",
            self.transfers_started.get(),
        );
        counter(
            out,
            "shoal_transfers_done_total",
            "File transfers and backups completed.",
            self.transfers_done.get(),
        );
        counter(
            out,
            "shoal_transfers_failed_total",
            "File transfers and backups failed.",
            self.transfers_failed.get(),
        );
        counter(
            out,
            "shoal_transfer_bytes_sent_total",
            "File-transfer bytes sent (blocks and repairs).",
            self.transfer_bytes_sent.get(),
        );
        counter(
            out,
            "shoal_transfer_bytes_received_total",
            "File-transfer bytes received (whole data sets).",
            self.transfer_bytes_received.get(),
        );
        counter(out, "shoal_snapshots_total", "Snapshots taken.", self.snapshots.get());
        counter(
            out,
            "shoal_outbound_dropped_total",
            "Messages dropped because the outbound queue was full (repaired like lost datagrams).",
            self.outbound_dropped.get(),
        );
        counter(
            out,
            "shoal_requests_refused_busy_total",
            "Requests answered Unavailable (or dropped) because the in-flight bounds were reached.",
            self.requests_refused_busy.get(),
        );
        gauge(
            out,
            "shoal_snapshot_zxid",
            "Zxid of the latest snapshot (epoch << 32 | counter).",
            self.snapshot_zxid.load(Ordering::Relaxed),
        );
    }
}

/// Appends one unlabelled counter.
pub fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
}

/// Appends one unlabelled gauge.
pub fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
}

/// Appends one family with a single label.
pub fn labelled(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    label: &str,
    values: &[(&str, u64)],
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (value_label, value) in values {
        let _ = writeln!(out, "{name}{{{label}=\"{value_label}\"}} {value}");
    }
}

/// Appends the messaging endpoint's counters.
pub fn render_endpoint(out: &mut String, stats: &protocol::messaging::EndpointStats) {
    let core = &stats.core;
    counter(
        out,
        "shoal_messaging_retransmits_total",
        "Datagrams sent again.",
        core.sender.retransmits,
    );
    counter(
        out,
        "shoal_messaging_naks_received_total",
        "NAKs received.",
        core.sender.naks_received,
    );
    counter(out, "shoal_messaging_naks_sent_total", "NAKs sent.", core.receiver.naks_sent);
    counter(out, "shoal_messaging_gaps_total", "Stream losses given up on.", core.receiver.gaps);
    counter(
        out,
        "shoal_messaging_duplicates_total",
        "Duplicate datagrams received.",
        core.receiver.duplicates,
    );
    counter(
        out,
        "shoal_messaging_datagrams_received_total",
        "Datagrams received.",
        stats.datagrams_received,
    );
    counter(out, "shoal_messaging_datagrams_sent_total", "Datagrams sent.", stats.datagrams_sent);
    labelled(
        out,
        "shoal_messaging_dropped_total",
        "counter",
        "Datagrams dropped as bad, by reason.",
        "reason",
        &[
            ("rejected", core.datagrams_rejected),
            ("malformed", core.receiver.malformed),
            ("stale_incarnation", core.receiver.stale_incarnation),
            ("beyond_window", core.receiver.beyond_window),
            ("unreliable_overflow", core.unreliable_dropped),
            ("replies_unmatched", stats.replies_unmatched),
        ],
    );
}

/// Appends `shoal_dropped_datagrams_total{reason}`: every datagram the endpoint refused on
/// receipt, one sample per [`protocol::stats::DropReason`] (zeros included, so a dashboard
/// sees every series from the first scrape).
pub fn render_dropped(out: &mut String, dropped: &protocol::stats::DropSnapshot) {
    let values: Vec<(&str, u64)> = dropped.iter().map(|(r, n)| (r.name(), n)).collect();
    labelled(
        out,
        "shoal_dropped_datagrams_total",
        "counter",
        "Datagrams refused on receipt (not Shoal, wrong version or cluster, wrong key class, replay, bad tag, malformed, over a limit), by reason.",
        "reason",
        &values,
    );
}

/// Whether the node should receive traffic, for `GET /ready`: `Ok(what it is)` or
/// `Err(why not)`, one line each.
pub type Readiness = Result<String, String>;

/// Serves, on `listener`, until the task is aborted:
/// - `GET /metrics`: the text `render` returns;
/// - `GET /health`: 200 whenever the process answers (a liveness probe);
/// - `GET /ready`: 200 with `ready()`'s line when it is `Ok`, 503 with its reason otherwise (a
///   readiness probe for a load balancer or Kubernetes).
///
/// Bounded: [`CONNECTIONS_MAX`] at once, [`REQUEST_BYTES_MAX`] per request head,
/// [`REQUEST_WAIT`] to send it; one request per connection.
pub async fn serve<F, R>(listener: TcpListener, render: F, ready: R)
where
    F: Fn() -> String + Send + Sync + 'static,
    R: Fn() -> Readiness + Send + Sync + 'static,
{
    let probes = Arc::new((render, ready));
    let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!("metrics accept failed: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let probes = probes.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = respond(stream, &probes.0, &probes.1).await {
                tracing::debug!("metrics connection: {e}");
            }
        });
    }
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Metrics,
    Health,
    Ready,
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

/// Routes one request head (the bytes up to the blank line).
pub fn route(head: &[u8]) -> Route {
    let Ok(text) = std::str::from_utf8(head) else { return Route::BadRequest };
    let line = text.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") {
        return Route::BadRequest;
    }
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => Route::Metrics,
        ("GET", "/health") => Route::Health,
        ("GET", "/ready") => Route::Ready,
        (_, "/metrics" | "/health" | "/ready") => Route::MethodNotAllowed,
        _ => Route::NotFound,
    }
}

async fn respond(
    mut stream: TcpStream,
    render: &(dyn Fn() -> String + Send + Sync),
    ready: &(dyn Fn() -> Readiness + Send + Sync),
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let complete = tokio::time::timeout(REQUEST_WAIT, async {
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok::<bool, std::io::Error>(false);
            }
            head.extend_from_slice(&buf[..n]);
            if head.windows(4).any(|w| w == b"\r\n\r\n") {
                return Ok(true);
            }
            if head.len() > REQUEST_BYTES_MAX {
                return Ok(false);
            }
        }
    })
    .await;
    let (status, body, content_type) = match complete {
        Err(_) | Ok(Err(_)) => return Ok(()),
        Ok(Ok(false)) if head.len() > REQUEST_BYTES_MAX => {
            ("431 Request Header Fields Too Large", String::new(), "text/plain")
        }
        Ok(Ok(false)) => return Ok(()),
        Ok(Ok(true)) => match route(&head) {
            Route::Metrics => ("200 OK", render(), "text/plain; version=0.0.4"),
            Route::Health => ("200 OK", "ok\n".into(), "text/plain"),
            Route::Ready => match ready() {
                Ok(what) => ("200 OK", format!("ready: {what}\n"), "text/plain"),
                Err(why) => {
                    ("503 Service Unavailable", format!("not ready: {why}\n"), "text/plain")
                }
            },
            Route::NotFound => ("404 Not Found", "not found\n".into(), "text/plain"),
            Route::MethodNotAllowed => {
                ("405 Method Not Allowed", "GET only\n".into(), "text/plain")
            }
            Route::BadRequest => ("400 Bad Request", "bad request\n".into(), "text/plain"),
        },
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_count_every_value() {
        let h = Histogram::new(&COMMIT_BATCH_BUCKETS);
        for v in [1, 1, 3, 300] {
            h.record(v);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "help", 1.0);
        assert!(out.contains("x_bucket{le=\"1\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"4\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"256\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("x_sum 305\nx_count 4\n"), "{out}");
        assert_eq!(h.count(), 4);
    }

    #[test]
    fn ops_are_counted_per_kind() {
        let m = Metrics::new();
        m.op(OpKind::Write);
        m.op(OpKind::Write);
        m.op(OpKind::Get);
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("shoal_ops_total{kind=\"write\"} 2\n"), "{out}");
        assert!(out.contains("shoal_ops_total{kind=\"get\"} 1\n"), "{out}");
        assert!(out.contains("shoal_ops_total{kind=\"list\"} 0\n"), "{out}");
    }

    /// Every drop reason gets its own sample, with exactly the count of that reason.
    #[test]
    fn dropped_datagrams_are_rendered_per_reason() {
        let counters = protocol::stats::DropCounters::new();
        counters.record_reason(protocol::stats::DropReason::BadMac);
        counters.record_reason(protocol::stats::DropReason::BadMac);
        counters.record_reason(protocol::stats::DropReason::WrongCluster);
        let mut out = String::new();
        render_dropped(&mut out, &counters.snapshot());
        assert!(out.contains("# TYPE shoal_dropped_datagrams_total counter\n"), "{out}");
        assert!(out.contains("shoal_dropped_datagrams_total{reason=\"bad_mac\"} 2\n"), "{out}");
        assert!(
            out.contains("shoal_dropped_datagrams_total{reason=\"wrong_cluster\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("shoal_dropped_datagrams_total{reason=\"truncated\"} 0\n"), "{out}");
        let samples = out.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(samples, protocol::stats::DropReason::ALL.len(), "{out}");
    }

    #[test]
    fn only_get_of_metrics_is_served() {
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), Route::Metrics);
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Route::Metrics);
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"POST /metrics HTTP/1.1\r\n\r\n"), Route::MethodNotAllowed);
        assert_eq!(route(b"GET /health HTTP/1.1\r\n\r\n"), Route::Health);
        assert_eq!(route(b"GET /ready?verbose HTTP/1.1\r\n\r\n"), Route::Ready);
        assert_eq!(route(b"DELETE /ready HTTP/1.1\r\n\r\n"), Route::MethodNotAllowed);
        assert_eq!(route(b"garbage\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(&[0xff, 0xfe, b'\r', b'\n']), Route::BadRequest);
    }

    #[tokio::test]
    async fn server_answers_metrics_404_and_refuses_an_oversized_head() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ready.clone();
        let task = tokio::spawn(serve(
            listener,
            || "shoal_up 1\n".to_string(),
            move || {
                if flag.load(std::sync::atomic::Ordering::SeqCst) {
                    Ok("follower".into())
                } else {
                    Err("looking for a master".into())
                }
            },
        ));
        async fn ask(addr: std::net::SocketAddr, request: Vec<u8>) -> String {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(&request).await.unwrap();
            let mut reply = String::new();
            s.read_to_string(&mut reply).await.unwrap();
            reply
        }
        let ok = ask(addr, b"GET /metrics HTTP/1.1\r\n\r\n".to_vec()).await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nshoal_up 1\n"), "{ok}");
        let missing = ask(addr, b"GET /other HTTP/1.1\r\n\r\n".to_vec()).await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        let health = ask(addr, b"GET /health HTTP/1.1\r\n\r\n".to_vec()).await;
        assert!(health.starts_with("HTTP/1.1 200 OK\r\n"), "{health}");
        let not_ready = ask(addr, b"GET /ready HTTP/1.1\r\n\r\n".to_vec()).await;
        assert!(not_ready.starts_with("HTTP/1.1 503"), "{not_ready}");
        assert!(not_ready.ends_with("not ready: looking for a master\n"), "{not_ready}");
        ready.store(true, std::sync::atomic::Ordering::SeqCst);
        let is_ready = ask(addr, b"GET /ready HTTP/1.1\r\n\r\n".to_vec()).await;
        assert!(is_ready.starts_with("HTTP/1.1 200 OK\r\n"), "{is_ready}");
        assert!(is_ready.ends_with("ready: follower\n"), "{is_ready}");
        let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', REQUEST_BYTES_MAX + 10));
        let refused = ask(addr, big).await;
        assert!(refused.starts_with("HTTP/1.1 431"), "{refused}");
        task.abort();
    }
}
