//! The namespace harness cleans up after itself: on a panic, and after a run that died without
//! cleaning up (what `cleanup_stale` finds by the creator's pid in the name). Needs root,
//! `ip` and `nft`; without them the tests print why and pass as skipped.

use shoal_tests::netns::{cleanup_stale, list_namespaces, run, skip_reason, Network};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

fn skipped(test: &str) -> bool {
    match skip_reason() {
        Some(reason) => {
            eprintln!("{test}: SKIPPED: {reason}");
            true
        }
        None => false,
    }
}

/// A network made inside a test that panics is gone once the panic has unwound.
#[test]
fn network_is_torn_down_when_its_owner_panics() {
    if skipped("network_is_torn_down_when_its_owner_panics") {
        return;
    }
    let names = Mutex::new(Vec::new());
    let result = std::panic::catch_unwind(|| {
        let network = Network::create(2).expect("create network");
        *names.lock().unwrap() = network.namespaces();
        panic!("a failing test");
    });
    assert!(result.is_err());
    let names = names.into_inner().unwrap();
    assert_eq!(names.len(), 4);
    let existing = list_namespaces().unwrap();
    for name in &names {
        assert!(!existing.contains(name), "{name} survived the panic");
    }
}

/// Namespaces whose creating process is dead are removed together with the processes still
/// running in them; namespaces of a live creator are left alone.
#[test]
fn stale_namespaces_of_dead_creators_are_removed_with_their_processes() {
    if skipped("stale_namespaces_of_dead_creators_are_removed_with_their_processes") {
        return;
    }
    // A pid that was a process a moment ago and is not any more.
    let mut gone = Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    let stale = format!("shoal-{dead_pid}-900-h1");
    let live = format!("shoal-{}-900-h1", std::process::id());
    for name in [&stale, &live] {
        run(Command::new("ip").args(["netns", "add", name])).unwrap();
    }
    // A leftover process inside the stale namespace (bounded: it would end by itself).
    let mut leftover = Command::new("ip")
        .args(["netns", "exec", &stale, "sleep", "30"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let _ = cleanup_stale().unwrap();
    let existing = list_namespaces().unwrap();
    assert!(!existing.contains(&stale), "stale namespace kept");
    assert!(existing.contains(&live), "a live run's namespace was removed");
    // The leftover was killed (not left to run out its 30 s).
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = leftover.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the leftover process was not killed");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.signal(), Some(9), "killed with SIGKILL");
    run(Command::new("ip").args(["netns", "delete", &live])).unwrap();
}
