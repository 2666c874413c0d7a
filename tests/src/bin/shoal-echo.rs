//! `shoal-echo`: one messaging endpoint for the network-namespace tests (a stand-in for
//! `shoal-fs` until it exists). It binds a `protocol::messaging::Endpoint` on the host's
//! address, multicasts `--count` numbered messages, and prints one JSON line per event on
//! stdout (see `shoal_tests::messaging_workload::Event`). It stops on SIGTERM or after
//! `--lifetime-ms`, whichever comes first, printing its counters.

use clap::Parser;
use protocol::header::ClusterAuth;
use protocol::messaging::{Endpoint, EndpointConfig, Incoming};
use protocol::SenderId;
use shoal_tests::messaging_workload::{echo_message, parse_message, unix_us, Event};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(about = "A messaging endpoint that multicasts numbered messages and prints deliveries")]
struct Args {
    #[arg(long)]
    id: SenderId,
    /// Comma-separated member ids (credit comes from these).
    #[arg(long, value_delimiter = ',')]
    members: Vec<SenderId>,
    /// The host's address: unicast bind and multicast interface.
    #[arg(long)]
    bind: Ipv4Addr,
    #[arg(long, default_value = "239.255.77.1:7700")]
    group: SocketAddrV4,
    /// The incarnation; the harness sets SHOAL_START to 1, 2, ... on every start.
    #[arg(long, env = "SHOAL_START", default_value_t = 1)]
    incarnation: u64,
    #[arg(long, default_value_t = 100)]
    count: u64,
    #[arg(long, default_value_t = 10)]
    interval_ms: u64,
    #[arg(long, default_value_t = 200)]
    payload_bytes: usize,
    /// Every this many messages one is large (fragmented); 0: never.
    #[arg(long, default_value_t = 0)]
    large_every: u64,
    #[arg(long, default_value_t = 100_000)]
    large_bytes: usize,
    /// Do not send before this unix time in ms (so that endpoints started together begin
    /// together); a restarted endpoint finds it past and sends at once.
    #[arg(long, default_value_t = 0)]
    start_at_unix_ms: u64,
    /// Hard bound on the process's life.
    #[arg(long, default_value_t = 120_000)]
    lifetime_ms: u64,
    /// NAK rounds before a hole is declared lost (default: the layer's own).
    #[arg(long)]
    nak_rounds_max: Option<u32>,
    #[arg(long, default_value = "shoal netns test key")]
    key: String,
}

fn emit(event: &Event) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", serde_json::to_string(event).expect("events serialize"));
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let lifetime = Duration::from_millis(args.lifetime_ms);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    let mut config = EndpointConfig::new(
        args.id,
        args.incarnation,
        ClusterAuth::new(0x5E70, args.key.as_bytes()),
    );
    config.group = args.group;
    config.interface = args.bind;
    config.unicast_bind = SocketAddr::from((args.bind, 0));
    config.members = args.members.clone();
    if let Some(rounds) = args.nak_rounds_max {
        config.core.receiver.nak_rounds_max = rounds;
    }
    let endpoint = match Endpoint::bind(config).await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("shoal-echo {}: cannot bind: {e}", args.id);
            std::process::exit(2);
        }
    };
    emit(&Event::Ready {
        id: args.id,
        incarnation: args.incarnation,
        address: endpoint.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        t_us: unix_us(),
    });
    let receiver = {
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            while let Ok(incoming) = endpoint.recv().await {
                match incoming {
                    Incoming::Message(r) if r.reliable => match parse_message(&r.message) {
                        Some((sender, incarnation, seq, sent_us)) => emit(&Event::Deliver {
                            from: r.sender,
                            sender_claimed: sender,
                            incarnation,
                            seq,
                            sent_us,
                            t_us: unix_us(),
                        }),
                        None => eprintln!("shoal-echo: unexpected message from {}", r.sender),
                    },
                    Incoming::Message(_) => {}
                    Incoming::Gap { sender, incarnation, first_missing, resumed_at } => {
                        emit(&Event::Gap {
                            from: sender,
                            incarnation,
                            first_missing,
                            resumed_at,
                            t_us: unix_us(),
                        })
                    }
                }
            }
        })
    };
    let sender = {
        let endpoint = endpoint.clone();
        let args_id = args.id;
        let incarnation = args.incarnation;
        tokio::spawn(async move {
            let now_ms = unix_us() / 1000;
            if args.start_at_unix_ms > now_ms {
                tokio::time::sleep(Duration::from_millis(args.start_at_unix_ms - now_ms)).await;
            }
            let mut ticker = tokio::time::interval(Duration::from_millis(args.interval_ms.max(1)));
            for seq in 0..args.count {
                ticker.tick().await;
                let bytes =
                    if args.large_every > 0 && seq % args.large_every == args.large_every - 1 {
                        args.large_bytes
                    } else {
                        args.payload_bytes
                    };
                let sent_us = unix_us();
                if endpoint
                    .multicast(echo_message(args_id, incarnation, seq, sent_us, bytes))
                    .await
                    .is_err()
                {
                    return;
                }
                emit(&Event::Sent { seq, sent_us, wait_us: unix_us() - sent_us });
            }
            let stable = endpoint.flush(Duration::from_secs(30)).await;
            emit(&Event::Done { stable, t_us: unix_us() });
        })
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::time::sleep(lifetime) => eprintln!("shoal-echo {}: lifetime over", args.id),
    }
    sender.abort();
    let stats = endpoint.stats();
    emit(&Event::Stats {
        datagrams_sent: stats.datagrams_sent,
        datagrams_received: stats.datagrams_received,
        retransmits: stats.core.sender.retransmits,
        naks_sent: stats.core.receiver.naks_sent,
        gaps: stats.core.receiver.gaps,
    });
    endpoint.shutdown().await;
    receiver.abort();
}
