//! The log events an operator greps for (README "Logs"), on a real cluster: elections and
//! membership as they happen when the master is killed.

use shoal_tests::cluster::Cluster;
use std::time::Duration;

const ELECTION_WAIT: Duration = Duration::from_secs(20);
/// How long the survivors get to notice the dead master in their logs (the member timeout is
/// 3 s; the election is quicker).
const LOG_WAIT: Duration = Duration::from_secs(15);

/// The lines of `log` that carry `event="<name>"`.
fn events<'a>(log: &'a str, name: &str) -> Vec<&'a str> {
    let field = format!("event=\"{name}\"");
    log.lines().filter(|l| l.contains(&field)).collect()
}

/// Claim: the first master logs `election_won` and every other node `following` it and
/// `member_joined` for its peers; after SIGKILL of the master, the new master logs
/// `election_won` for a newer epoch, the other survivor logs `following` the new master, and
/// both survivors log `member_left` for the killed node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_master_logs_election_and_membership_events() {
    let mut cluster = Cluster::start(3);
    let client = cluster.client().await;
    let Some(first) = cluster.wait_master(&client, ELECTION_WAIT).await else {
        panic!("no master elected\n{}", cluster.logs())
    };
    let followers: Vec<_> = cluster.ids().into_iter().filter(|id| *id != first).collect();
    // The membership checks run every 250 ms; give them a moment after the election.
    let deadline = tokio::time::Instant::now() + LOG_WAIT;
    let joined = |cluster: &Cluster| {
        cluster.ids().iter().all(|id| events(&cluster.node_log(*id), "member_joined").len() >= 2)
    };
    while !joined(&cluster) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(joined(&cluster), "every node hears both peers\n{}", cluster.logs());
    assert_eq!(events(&cluster.node_log(first), "election_won").len(), 1, "{}", cluster.logs());
    for id in &followers {
        let log = cluster.node_log(*id);
        let following = events(&log, "following");
        assert!(
            following.last().is_some_and(|l| l.contains(&format!("master={first}"))),
            "node {id} logs that it follows {first}: {following:?}"
        );
        assert!(events(&log, "election_won").is_empty(), "node {id} never won\n{log}");
    }

    cluster.kill(first);
    let Some(second) = cluster.wait_master(&client, ELECTION_WAIT).await else {
        panic!("no new master after the kill\n{}", cluster.logs())
    };
    assert_ne!(second, first);
    let other = followers.iter().copied().find(|id| *id != second).expect("a third node");
    let left = format!("member={first}");
    let settled = |cluster: &Cluster| {
        let (new, old) = (cluster.node_log(second), cluster.node_log(other));
        !events(&new, "election_won").is_empty()
            && events(&old, "following")
                .last()
                .is_some_and(|l| l.contains(&format!("master={second}")))
            && [&new, &old]
                .iter()
                .all(|log| events(log, "member_left").iter().any(|l| l.contains(&left)))
    };
    let deadline = tokio::time::Instant::now() + LOG_WAIT;
    while !settled(&cluster) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(settled(&cluster), "survivors log the failover\n{}", cluster.logs());
    let won = cluster.node_log(second);
    let line = events(&won, "election_won").last().copied().unwrap_or_default().to_string();
    let epoch = |l: &str| -> u32 {
        let (_, rest) = l.split_once("epoch=").unwrap_or_else(|| panic!("no epoch in {l}"));
        rest.split(|c: char| !c.is_ascii_digit()).next().unwrap_or("").parse().expect("epoch")
    };
    let first_won = cluster.node_log(first);
    let first_line = events(&first_won, "election_won")[0].to_string();
    assert!(epoch(&line) > epoch(&first_line), "{line} after {first_line}");
}
