//! The namespace harness cleans up after itself: on a panic, and after a run that died without
//! cleaning up (what `cleanup_stale` finds by the creator's pid in the name). Needs root,
//! `ip` and `nft`; without them the tests print why and pass as skipped.

use shoal_tests::nemesis::Nemesis;
use shoal_tests::netns::{
    bind_udp_in, cleanup_stale, list_namespaces, namespace_pids, run, skip_reason, Network,
};
use std::net::{SocketAddr, UdpSocket};
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
    /// Deletes the test's own namespaces however the test ends.
    struct Delete(Vec<String>);
    impl Drop for Delete {
        fn drop(&mut self) {
            for name in &self.0 {
                let _ = Command::new("ip")
                    .args(["netns", "delete", name])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
    let _delete = Delete(vec![stale.clone(), live.clone()]);
    for name in [&stale, &live] {
        run(Command::new("ip").args(["netns", "add", name])).unwrap();
    }
    // A leftover process inside the stale namespace (bounded: it would end by itself).
    let mut leftover = Command::new("ip")
        .args(["netns", "exec", &stale, "sleep", "30"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    // `ip netns exec` enters the namespace just after it starts: wait until it is inside.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !namespace_pids(&stale).unwrap().contains(&(leftover.id() as i32)) {
        assert!(Instant::now() < deadline, "the leftover never entered its namespace");
        std::thread::sleep(Duration::from_millis(10));
    }
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
}

/// Whether a datagram from `from` reaches `to` within `wait` (drains stale probes first).
fn reaches(from: &UdpSocket, to: &UdpSocket, wait: Duration) -> bool {
    to.set_nonblocking(true).unwrap();
    let mut buffer = [0u8; 64];
    while to.recv_from(&mut buffer).is_ok() {}
    to.set_nonblocking(false).unwrap();
    to.set_read_timeout(Some(wait)).unwrap();
    from.send_to(b"probe", to.local_addr().unwrap()).unwrap();
    matches!(to.recv_from(&mut buffer), Ok((5, _)))
}

/// Each network fault primitive does what it says on real links: a one-way drop blocks one
/// direction only, a partition both, a client can be cut off from one host, a bridge-side link
/// down cuts a host off, loss of 100 % drops everything, and healing restores every path.
#[test]
fn nemesis_primitives_cut_exactly_the_paths_they_name() {
    if skipped("nemesis_primitives_cut_exactly_the_paths_they_name") {
        return;
    }
    let network = Network::create(3).expect("create network");
    let bind = |index: usize| {
        let host = network.host_or_client(index).unwrap();
        bind_udp_in(&host.namespace, SocketAddr::from((host.address, 0))).unwrap()
    };
    let (client, h1, h2, h3) = (bind(0), bind(1), bind(2), bind(3));
    // Positive probes may wait long (a loaded machine); negative ones need only outlast
    // delivery on a local bridge.
    let yes = Duration::from_secs(5);
    let no = Duration::from_millis(300);
    let all_paths_work = |what: &str| {
        for (a, b) in
            [(&h1, &h2), (&h2, &h1), (&h1, &h3), (&h3, &h1), (&client, &h1), (&h1, &client)]
        {
            assert!(
                reaches(a, b, yes),
                "{what}: {:?} -> {:?} blocked",
                a.local_addr(),
                b.local_addr()
            );
        }
    };
    all_paths_work("fresh network");
    let mut nemesis = Nemesis::new(&network);

    nemesis.drop_from(2, &[1]).unwrap();
    assert!(!reaches(&h1, &h2, no), "one-way: h1 -> h2 should be dropped");
    assert!(reaches(&h2, &h1, yes), "one-way: h2 -> h1 should pass");
    assert!(reaches(&h3, &h2, yes), "one-way: h3 -> h2 untouched");
    nemesis.heal_network().unwrap();
    all_paths_work("after one-way");

    nemesis.partition(&[1]).unwrap();
    assert!(!reaches(&h1, &h2, no) && !reaches(&h2, &h1, no) && !reaches(&h3, &h1, no));
    assert!(reaches(&h2, &h3, yes), "the majority side still talks");
    assert!(reaches(&client, &h1, yes), "partitions leave clients alone");
    nemesis.heal_network().unwrap();
    all_paths_work("after partition");

    nemesis.drop_from(0, &[1]).unwrap();
    assert!(!reaches(&h1, &client, no), "client should not hear h1");
    assert!(reaches(&h2, &client, yes));
    nemesis.heal_network().unwrap();

    nemesis.set_link(1, false).unwrap();
    assert!(!reaches(&h1, &h2, no) && !reaches(&h2, &h1, no) && !reaches(&client, &h1, no));
    assert!(reaches(&h2, &h3, yes));
    nemesis.heal_network().unwrap();
    all_paths_work("after link down");

    nemesis.set_loss_everywhere(100).unwrap();
    assert!(!reaches(&h1, &h2, no) && !reaches(&h3, &h1, no));
    assert!(!reaches(&client, &h1, no), "100 % loss at h1 drops the client's probe too");
    nemesis.heal_network().unwrap();
    all_paths_work("after loss");
}
