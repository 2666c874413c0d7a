//! A linearizability check of real `shoal-fs` processes: concurrent clients write and
//! linearizably read a few keys while the master is SIGKILLed; the recorded history is checked
//! with the WGL checker (`shoal_tests::linearizability`).

use bytes::Bytes;
use cache_client::ReadOptions;
use shoal_tests::cluster::Cluster;
use shoal_tests::linearizability::{check, Input, Operation, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ELECTION_WAIT: Duration = Duration::from_secs(20);
const CLIENTS: u64 = 4;
const KEYS: u64 = 3;
const LOAD: Duration = Duration::from_millis(2_500);
const KILL_AFTER: Duration = Duration::from_millis(1_000);

/// Claim: writes and linearizable reads on three keys by four clients, across a SIGKILL of
/// the master, form a linearizable history (operations without an answer may or may not have
/// happened), and some operations complete on each side of the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_across_master_kill_is_linearizable() {
    let mut cluster = Cluster::start(3);
    let probe = cluster.client().await;
    let Some(master) = cluster.wait_master(&probe, ELECTION_WAIT).await else {
        panic!("no master elected\n{}", cluster.logs())
    };
    let history: Arc<Mutex<Vec<Operation>>> = Arc::default();
    let t0 = Instant::now();
    let micros = move || t0.elapsed().as_micros() as u64;
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let client = cluster.client().await;
        let history = history.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while t0.elapsed() < LOAD {
                n += 1;
                let key = format!("/k{}", (c * 7 + n) % KEYS);
                let call = micros();
                if n.is_multiple_of(2) {
                    let value = (c + 1) * 1_000_000 + n;
                    let result = client.write(&key, Bytes::from(value.to_string())).await;
                    let (ret, output) = match result {
                        Ok(_) => (Some(micros()), Some(Output::Write)),
                        Err(_) => (None, None),
                    };
                    let input = Input::Write(value);
                    history.lock().unwrap().push(Operation {
                        client: c,
                        key,
                        call,
                        ret,
                        input,
                        output,
                    });
                } else if let Ok(v) = client.read_with(&key, ReadOptions::linearizable()).await {
                    let value = v.map(|v| {
                        String::from_utf8_lossy(&v.value).parse::<u64>().expect("a number")
                    });
                    let op = Operation {
                        client: c,
                        key,
                        call,
                        ret: Some(micros()),
                        input: Input::Read,
                        output: Some(Output::Read(value)),
                    };
                    history.lock().unwrap().push(op);
                }
                // A read without an answer observed nothing and changed nothing: not recorded.
            }
        }));
    }
    tokio::time::sleep(KILL_AFTER).await;
    let killed_at = micros();
    cluster.kill(master);
    for t in tasks {
        t.await.expect("client task");
    }
    let history = history.lock().unwrap().clone();
    let done = |before: bool| {
        history.iter().filter(|o| o.ret.is_some_and(|r| (r < killed_at) == before)).count()
    };
    assert!(
        done(true) > 0 && done(false) > 0,
        "ops before/after the kill: {} / {}\n{}",
        done(true),
        done(false),
        cluster.logs()
    );
    if let Err(violation) = check(&history) {
        panic!("{violation}");
    }
    eprintln!("{} operations checked ({} before the kill)", history.len(), done(true));
}
