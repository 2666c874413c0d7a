//! Throughput and CPU cost of the messaging layer, printed as a table for BENCHMARKS.md.
//!
//! Run: `cargo bench -p protocol --bench messaging` (options: `-- --quick` for a short run).
//! Without `--bench` (which `cargo bench` passes), e.g. under `cargo test --benches`, it is a
//! smoke run with 1000× fewer messages.
//!
//! Scenarios: three endpoints in this process on loopback multicast (127.0.0.1), all members,
//! every endpoint multicasting concurrently to the two others; 100-byte and 8 KiB messages
//! (encoded payload size); with no loss and with 5 % of received datagrams dropped by the
//! fault hook. Figures: messages multicast per second (sum over the three senders), deliveries
//! per second (each message is delivered twice), payload MB/s multicast, and CPU time
//! (user + system, whole process, from getrusage) per message multicast and per delivery.
//! Plus two micro-figures: sealing+opening one datagram (HMAC-SHA256), and the IO-free core
//! alone (one sender, two receivers, in memory).

use bytes::Bytes;
use protocol::header::{flags, seal, ClusterAuth};
use protocol::message::transfer::FileTransBlock;
use protocol::message::Message;
use protocol::messaging::{
    Core, CoreConfig, Dest, Endpoint, EndpointConfig, FaultConfig, Incoming,
};
use protocol::SenderId;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

fn auth() -> ClusterAuth {
    ClusterAuth::new(0xBE4C, b"bench key")
}

/// A message whose encoded payload is `payload_bytes` long (to within a byte or two).
fn message_of(sender: SenderId, payload_bytes: usize) -> Message {
    let mut data_len = payload_bytes;
    loop {
        let m = Message::FileTransBlock(FileTransBlock {
            transfer: sender,
            file: 0,
            block: 0,
            md5: [7; 16],
            data: Bytes::from(vec![0xA5u8; data_len]),
        });
        let len = m.encode_payload().unwrap().len();
        if len <= payload_bytes || data_len == 0 {
            return m;
        }
        data_len -= (len - payload_bytes).min(data_len);
    }
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct we pass; RUSAGE_SELF is always valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage failed");
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(usage.ru_utime) + t(usage.ru_stime)
}

struct Figures {
    messages: u64,
    deliveries: u64,
    payload_bytes: usize,
    wall: Duration,
    cpu_s: f64,
    gaps: u64,
    retransmits: u64,
    dropped: u64,
}

async fn scenario(index: u8, payload_bytes: usize, loss_percent: u32, per_sender: u64) -> Figures {
    let ids = [1u64, 2, 3];
    let group = SocketAddrV4::new(Ipv4Addr::new(239, 255, 201, 10 + index), 31_000 + index as u16);
    let mut endpoints = Vec::new();
    for id in ids {
        let mut c = EndpointConfig::new(id, 1, auth());
        c.group = group;
        c.interface = Ipv4Addr::LOCALHOST;
        c.unicast_bind = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        c.members = ids.to_vec();
        c.fault = FaultConfig::drop_receive_percent(1000 + id, loss_percent);
        if let Some(window) = std::env::var("SHOAL_BENCH_WINDOW").ok().and_then(|w| w.parse().ok())
        {
            c.core.receiver.window_datagrams = window;
            c.core.sender.initial_credit_datagrams = window;
        }
        endpoints.push(Endpoint::bind(c).await.expect("bind"));
    }
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let mut receivers = Vec::new();
    for e in &endpoints {
        let e = e.clone();
        receivers.push(tokio::spawn(async move {
            let mut got = 0u64;
            let mut gaps = 0u64;
            while got < 2 * per_sender {
                match e.recv().await.expect("alive") {
                    Incoming::Message(r) if r.reliable => got += 1,
                    Incoming::Gap { .. } => gaps += 1,
                    _ => {}
                }
            }
            (got, gaps)
        }));
    }
    let mut senders = Vec::new();
    for e in &endpoints {
        let e = e.clone();
        let m = message_of(e.id(), payload_bytes);
        senders.push(tokio::spawn(async move {
            for _ in 0..per_sender {
                e.multicast(m.clone()).await.expect("multicast");
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    let mut deliveries = 0;
    let mut gaps = 0;
    for r in receivers {
        let (d, g) = r.await.unwrap();
        deliveries += d;
        gaps += g;
    }
    let wall = t0.elapsed();
    let cpu_s = cpu_seconds() - cpu0;
    let mut retransmits = 0;
    let mut dropped = 0;
    for e in &endpoints {
        let s = e.stats();
        retransmits += s.core.sender.retransmits;
        dropped += s.fault_dropped_receive;
        e.shutdown().await;
    }
    Figures {
        messages: 3 * per_sender,
        deliveries,
        payload_bytes: message_of(1, payload_bytes).encode_payload().unwrap().len(),
        wall,
        cpu_s,
        gaps,
        retransmits,
        dropped,
    }
}

/// Unicast request/reply between two endpoints: `concurrency` requests in flight, each a
/// 100-byte message echoed back. Returns (requests per second, CPU µs per request).
async fn request_reply(concurrency: usize, requests: u64) -> (f64, f64) {
    let bind = |id: SenderId| {
        let mut c = EndpointConfig::new(id, 1, auth());
        c.group = SocketAddrV4::new(Ipv4Addr::new(239, 255, 201, 99), 31_099);
        c.interface = Ipv4Addr::LOCALHOST;
        c.unicast_bind = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        Endpoint::bind(c)
    };
    let server = bind(1).await.expect("bind");
    let client = bind(1 << 40).await.expect("bind");
    let to = server.local_addr().unwrap();
    let s = server.clone();
    let serving = tokio::spawn(async move {
        while let Ok(incoming) = s.recv().await {
            if let Incoming::Message(r) = incoming {
                if let Some(request) = r.request {
                    let _ = request.reply(&s, r.message).await;
                }
            }
        }
    });
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let per_task = requests / concurrency as u64;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let c = client.clone();
        let m = message_of(1, 100);
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_task {
                c.request(to, m.clone(), Duration::from_millis(200), 5).await.expect("reply");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let total = per_task * concurrency as u64;
    serving.abort();
    server.shutdown().await;
    client.shutdown().await;
    (total as f64 / secs, cpu * 1e6 / total as f64)
}

/// Seal + open of one datagram of `payload` bytes through the receiver's path (subkeys
/// cached in the replay guard): the inherent AES-256-GCM cost of wire version 3.
fn aead_cost(payload: usize, rounds: u32) -> Duration {
    let auth = auth();
    let data = vec![0x5Au8; payload];
    let sealer = auth.sealer(auth.class_for_kind(15), 1, 1).expect("a held key");
    let header = sealer.header(15, flags::RELIABLE, 1, (0, 1), payload);
    let mut guard = protocol::header::ReplayGuard::new(auth.clone(), 16);
    let mut out = Vec::new();
    let mut opened = Vec::new();
    let t0 = Instant::now();
    for _ in 0..rounds {
        seal(&sealer, &header, &data, &mut out).unwrap();
        let h = guard.open(&out, &mut opened).unwrap();
        std::hint::black_box((h, &opened));
    }
    t0.elapsed() / rounds
}

/// The reference: what wire version 2 spent on the same datagram, an HMAC-SHA256 tag over
/// header and payload computed by the sender and again by the receiver (a 40-byte header
/// then; the payload was copied out in clear).
fn hmac_cost(payload: usize, rounds: u32) -> Duration {
    use hmac::{Hmac, Mac};
    let key = b"a cluster key of thirty-two bytes";
    let mut datagram = vec![0x5Au8; 40 + payload];
    let mut opened = Vec::new();
    let t0 = Instant::now();
    for _ in 0..rounds {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
        mac.update(&datagram);
        let tag = mac.finalize().into_bytes();
        datagram.extend_from_slice(&tag[..16]);
        let (body, tag) = datagram.split_at(datagram.len() - 16);
        let mut check = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
        check.update(body);
        check.verify_truncated_left(tag).expect("the tag verifies");
        opened.clear();
        opened.extend_from_slice(&body[40..]);
        std::hint::black_box(&opened);
        datagram.truncate(40 + payload);
    }
    t0.elapsed() / rounds
}

/// The IO-free core alone: one sender, two receivers, datagrams handed over in memory.
fn core_only(payload_bytes: usize, messages: u64) -> (Duration, u64) {
    let members = vec![1, 2, 3];
    let mut cores: Vec<Core> = (1..=3)
        .map(|id| Core::new(id, 1, auth(), CoreConfig::with_members(members.clone()), 0))
        .collect();
    let m = message_of(1, payload_bytes);
    let t0 = Instant::now();
    let mut sent = 0;
    let mut delivered = 0;
    let mut now = 0;
    while delivered < 2 * messages {
        while sent < messages && cores[0].try_send(&m, now).is_ok() {
            sent += 1;
        }
        now += 1;
        for i in 0..3 {
            cores[i].tick(now);
            while let Some(t) = cores[i].poll_transmit(now) {
                let targets: Vec<usize> = match t.dest {
                    Dest::Group => (0..3).filter(|j| *j != i).collect(),
                    Dest::Sender(id) => vec![id as usize - 1],
                };
                for j in targets {
                    cores[j].on_datagram(&t.datagram, now).unwrap();
                }
            }
        }
        for core in cores.iter_mut().skip(1) {
            while core.pop_delivery().is_some() {
                delivered += 1;
            }
        }
    }
    (t0.elapsed(), delivered)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes `--bench`; without it (e.g. `cargo test --all-targets`) this is a
    // smoke run that only checks the benchmark still works.
    let smoke = !args.iter().any(|a| a == "--bench");
    let quick = args.iter().any(|a| a == "--quick");
    let scale = if smoke {
        1000
    } else if quick {
        10
    } else {
        1
    };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    println!("Messaging layer, 3 endpoints on loopback multicast, 2 tokio workers");
    println!(
        "| payload | loss | msgs multicast/s | deliveries/s | MB/s multicast | CPU µs/msg | \
         CPU µs/delivery | CPU util | retransmits | fault drops | gaps |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let cases =
        [(100usize, 0u32, 400_000u64), (100, 5, 400_000), (8192, 0, 20_000), (8192, 5, 20_000)];
    for (index, (size, loss, per_sender)) in cases.into_iter().enumerate() {
        let f = runtime.block_on(scenario(index as u8, size, loss, per_sender / scale));
        let secs = f.wall.as_secs_f64();
        println!(
            "| {} B | {} % | {:.0} | {:.0} | {:.1} | {:.2} | {:.2} | {:.0} % | {} | {} | {} |",
            f.payload_bytes,
            loss,
            f.messages as f64 / secs,
            f.deliveries as f64 / secs,
            (f.messages as f64 * f.payload_bytes as f64) / secs / 1e6,
            f.cpu_s * 1e6 / f.messages as f64,
            f.cpu_s * 1e6 / f.deliveries as f64,
            100.0 * f.cpu_s / secs,
            f.retransmits,
            f.dropped,
            f.gaps,
        );
    }
    println!();
    for concurrency in [1usize, 64] {
        let (rate, cpu) = runtime.block_on(request_reply(concurrency, 100_000 / scale));
        println!(
            "unicast request/reply, 100 B, {concurrency} in flight: {rate:.0} requests/s, \
             {cpu:.1} CPU µs per request (both ends)"
        );
    }
    println!();
    println!("| datagram payload | seal+open AES-256-GCM (v3) | HMAC-SHA256 tag + verify (v2) | v2 / v3 |");
    println!("|---|---|---|---|");
    for payload in [128usize, 1024, 8 * 1024, 60 * 1024] {
        let rounds = if payload > 10_000 { 2_000 } else { 50_000 } / scale as u32;
        let aead = aead_cost(payload, rounds).as_secs_f64() * 1e6;
        let hmac = hmac_cost(payload, rounds).as_secs_f64() * 1e6;
        println!(
            "| {payload} B | {aead:.2} µs ({:.0} MiB/s) | {hmac:.2} µs ({:.0} MiB/s) | {:.2} |",
            payload as f64 / aead / 1.048_576,
            payload as f64 / hmac / 1.048_576,
            hmac / aead
        );
    }
    println!();
    for (payload, messages) in [(100usize, 1_000_000u64), (8192, 50_000)] {
        let (t, delivered) = core_only(payload, messages / scale);
        println!(
            "IO-free core alone, {payload} B: {:.0} msgs/s multicast to 2 receivers ({delivered} deliveries in {:.2} s)",
            messages as f64 / scale as f64 / t.as_secs_f64(),
            t.as_secs_f64()
        );
    }
}
