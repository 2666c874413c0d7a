//! Tests of the IO-free core, driven by a simulated network: every datagram passes through a
//! scripted fate (deliver, drop, duplicate) and the in-flight set can be shuffled (reordering).
//! Time is simulated (1 ms per step); randomness is seeded.

use super::core::{Core, CoreConfig};
use super::{Delivery, Dest, SendError, FIRST_SEQ};
use crate::header::{ClusterAuth, Header};
use crate::message::transfer::FileTransBlock;
use crate::message::Message;
use crate::SenderId;
use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

fn auth() -> ClusterAuth {
    ClusterAuth::new(0xABCD, b"test key")
}

/// What `sender` (incarnation 1) seals under the client key with.
fn client_sealer(sender: SenderId) -> crate::header::Sealer {
    auth().sealer(crate::header::KeyClass::Client, sender, 1).expect("the client key")
}

/// Message number `i` of `sender`, `len` bytes of data.
fn msg(sender: SenderId, i: u64, len: usize) -> Message {
    let data: Vec<u8> = (0..len).map(|b| (b as u64 ^ i ^ sender) as u8).collect();
    Message::FileTransBlock(FileTransBlock {
        transfer: sender,
        file: 0,
        block: i,
        md5: [0; 16],
        data: Bytes::from(data),
    })
}

fn number_of(m: &Message) -> (SenderId, u64) {
    match m {
        Message::FileTransBlock(b) => (b.transfer, b.block),
        other => panic!("unexpected {other:?}"),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Deliver,
    Drop,
    Duplicate,
}

struct Packet<'a> {
    to: SenderId,
    header: Header,
    #[allow(dead_code)]
    bytes: &'a [u8],
}

type Filter = Box<dyn FnMut(&Packet) -> Fate>;

struct Node {
    core: Option<Core>,
    /// Whether the application takes deliveries (a slow receiver does not).
    consuming: bool,
    log: Vec<Delivery>,
}

struct Net {
    nodes: Vec<Node>,
    now_ms: u64,
    filter: Filter,
    reorder: Option<SmallRng>,
    in_flight: Vec<(SenderId, SenderId, Bytes)>,
}

impl Net {
    /// Nodes with ids 1..=n; `members` grant credit.
    fn new(n: u64, members: &[SenderId], config: impl Fn(&mut CoreConfig)) -> Net {
        let nodes = (1..=n)
            .map(|id| {
                let mut c = CoreConfig::with_members(members.to_vec());
                config(&mut c);
                Node {
                    core: Some(Core::new(id, 1, auth(), c, 0)),
                    consuming: true,
                    log: Vec::new(),
                }
            })
            .collect();
        Net {
            nodes,
            now_ms: 0,
            filter: Box::new(|_| Fate::Deliver),
            reorder: None,
            in_flight: Vec::new(),
        }
    }

    fn core(&mut self, id: SenderId) -> &mut Core {
        self.nodes[id as usize - 1].core.as_mut().expect("node is up")
    }

    /// One millisecond: timers, transmissions through the filter, deliveries, consumption.
    fn step(&mut self) {
        self.now_ms += 1;
        let now = self.now_ms;
        let ids: Vec<SenderId> = (1..=self.nodes.len() as u64).collect();
        for &id in &ids {
            let Some(core) = self.nodes[id as usize - 1].core.as_mut() else { continue };
            let receivers = core.receivers();
            assert_eq!(receivers.held_bytes(), receivers.held_bytes_recounted(), "held bytes");
            core.tick(now);
            while let Some(t) = core.poll_transmit(now) {
                let targets: Vec<SenderId> = match t.dest {
                    Dest::Group => ids.iter().copied().filter(|o| *o != id).collect(),
                    Dest::Sender(to) => vec![to],
                };
                for to in targets {
                    self.in_flight.push((id, to, t.datagram.clone()));
                }
            }
        }
        if let Some(rng) = self.reorder.as_mut() {
            self.in_flight.shuffle(rng);
        }
        for (_from, to, bytes) in std::mem::take(&mut self.in_flight) {
            let header = Header::decode(&bytes).unwrap();
            let fate = (self.filter)(&Packet { to, header, bytes: &bytes });
            let copies = match fate {
                Fate::Deliver => 1,
                Fate::Drop => 0,
                Fate::Duplicate => 2,
            };
            if let Some(core) = self.nodes.get_mut(to as usize - 1).and_then(|n| n.core.as_mut()) {
                for copy in 0..copies {
                    match core.on_datagram(&bytes, now) {
                        Ok(_) => assert_eq!(copy, 0, "a duplicate datagram was accepted twice"),
                        // The network's second copy is the same bytes: the replay guard refuses it.
                        Err(crate::error::ProtocolError::Replay { .. }) if copy == 1 => {}
                        Err(e) => panic!("datagram refused: {e}"),
                    }
                }
            }
        }
        for node in &mut self.nodes {
            if let (Some(core), true) = (node.core.as_mut(), node.consuming) {
                while let Some(d) = core.pop_delivery() {
                    node.log.push(d);
                }
            }
        }
    }

    fn run_until(&mut self, max_steps: u64, mut done: impl FnMut(&Net) -> bool) {
        for _ in 0..max_steps {
            if done(self) {
                return;
            }
            self.step();
        }
        assert!(done(self), "not done after {max_steps} simulated ms");
    }

    /// Sends as many of `msgs` as the core accepts; returns how many went.
    fn send_all(&mut self, from: SenderId, msgs: &[Message]) -> usize {
        let now = self.now_ms;
        let core = self.core(from);
        for (i, m) in msgs.iter().enumerate() {
            match core.try_send(m, now) {
                Ok(()) => {}
                Err(SendError::WouldBlock) => return i,
                Err(e) => panic!("{e}"),
            }
        }
        msgs.len()
    }

    /// Sends every message, stepping the network whenever the sender is out of credit.
    fn send_blocking(&mut self, from: SenderId, msgs: &[Message], max_steps: u64) {
        let mut sent = 0;
        let mut steps = 0;
        while sent < msgs.len() {
            sent += self.send_all(from, &msgs[sent..]);
            self.step();
            steps += 1;
            assert!(steps < max_steps, "sender {from} still blocked after {steps} ms");
        }
    }

    /// (sender, number) of the messages `id` delivered, and its gaps.
    fn delivered(&self, id: SenderId) -> (Vec<(SenderId, u64)>, usize) {
        let log = &self.nodes[id as usize - 1].log;
        let messages = log
            .iter()
            .filter_map(|d| match d {
                Delivery::Message { message, .. } => Some(number_of(message)),
                _ => None,
            })
            .collect();
        let gaps = log.iter().filter(|d| matches!(d, Delivery::Gap { .. })).count();
        (messages, gaps)
    }

    fn delivered_from(&self, id: SenderId, sender: SenderId) -> Vec<u64> {
        self.delivered(id).0.into_iter().filter(|(s, _)| *s == sender).map(|(_, n)| n).collect()
    }
}

fn seeded_filter(seed: u64, drop_percent: u32, duplicate_percent: u32) -> Filter {
    let mut rng = SmallRng::seed_from_u64(seed);
    Box::new(move |_| {
        let roll = rng.gen_range(0..100);
        if roll < drop_percent {
            Fate::Drop
        } else if roll < drop_percent + duplicate_percent {
            Fate::Duplicate
        } else {
            Fate::Deliver
        }
    })
}

/// Under 20 % loss, 10 % duplication and full reordering, every member delivers every other
/// member's messages exactly once, in the order sent, without any gap — small (batched),
/// medium and fragmented messages alike.
#[test]
fn fifo_exactly_once_under_loss_reorder_and_duplication() {
    for seed in 0..2u64 {
        let mut net = Net::new(3, &[1, 2, 3], |_| {});
        net.filter = seeded_filter(seed, 20, 10);
        net.reorder = Some(SmallRng::seed_from_u64(seed + 100));
        let sizes = [10, 100, 3000, 70_000, 100, 200_000, 50];
        let per_sender = 70u64;
        for round in 0..per_sender {
            for sender in 1..=3 {
                let size = sizes[(round as usize + sender as usize) % sizes.len()];
                net.send_blocking(sender, &[msg(sender, round, size)], 5_000);
            }
            if round % 7 == 0 {
                net.step();
            }
        }
        net.run_until(20_000, |net| {
            (1..=3).all(|r| {
                (1..=3)
                    .filter(|s| *s != r)
                    .all(|s| net.delivered_from(r, s).len() == per_sender as usize)
            })
        });
        for receiver in 1..=3 {
            let (_, gaps) = net.delivered(receiver);
            assert_eq!(gaps, 0, "seed {seed}: receiver {receiver} reported a gap");
            for sender in (1..=3).filter(|s| *s != receiver) {
                let got = net.delivered_from(receiver, sender);
                assert_eq!(got, (0..per_sender).collect::<Vec<_>>(), "seed {seed}");
            }
        }
        // And the content survived fragmentation and batching intact.
        let log = &net.nodes[0].log;
        for d in log {
            if let Delivery::Message { message, .. } = d {
                let (s, i) = number_of(message);
                let size = match message {
                    Message::FileTransBlock(b) => b.data.len(),
                    _ => unreachable!(),
                };
                assert_eq!(message, &msg(s, i, size));
            }
        }
    }
}

/// A 5 MB message (86 fragments) crosses 20 % loss and arrives whole and identical.
#[test]
fn multi_megabyte_message_is_fragmented_and_reassembled() {
    let mut net = Net::new(2, &[1, 2], |_| {});
    net.filter = seeded_filter(7, 20, 5);
    net.reorder = Some(SmallRng::seed_from_u64(8));
    let big = msg(1, 0, 5_000_000);
    net.send_blocking(1, std::slice::from_ref(&big), 1000);
    net.send_blocking(1, &[msg(1, 1, 10)], 1000);
    net.run_until(10_000, |net| net.delivered_from(2, 1).len() == 2);
    let first = net.nodes[1].log.iter().find_map(|d| match d {
        Delivery::Message { message, .. } => Some(message.clone()),
        _ => None,
    });
    assert_eq!(first, Some(big));
    assert_eq!(net.delivered(2).1, 0);
}

/// A member whose application does not consume stops granting credit: the sender's
/// `try_send` returns WouldBlock (nothing is dropped), and it resumes once the receiver
/// consumes. Every message then arrives in order.
#[test]
fn slow_receiver_exhausts_credit_and_sender_resumes() {
    let mut net = Net::new(2, &[1, 2], |c| {
        c.sender.initial_credit_datagrams = 64;
        c.receiver.window_datagrams = 64;
        c.sender.batch_bytes_max = 1024;
        c.sender.backlog_datagrams_max = 8;
    });
    net.nodes[1].consuming = false;
    let msgs: Vec<Message> = (0..2000).map(|i| msg(1, i, 200)).collect();
    let mut sent = 0;
    for _ in 0..500 {
        sent += net.send_all(1, &msgs[sent..]);
        net.step();
    }
    assert!(sent < msgs.len(), "the sender was never blocked");
    let blocked_at = sent;
    assert!(net.core(1).stats().sender.would_block > 0);
    // Nothing beyond the window was accepted by the stalled receiver.
    net.nodes[1].consuming = true;
    net.send_blocking(1, &msgs[sent..], 20_000);
    net.run_until(5_000, |net| net.delivered_from(2, 1).len() == msgs.len());
    assert_eq!(net.delivered_from(2, 1), (0..2000).collect::<Vec<_>>());
    assert!(blocked_at > 0);
    assert_eq!(net.core(2).stats().receiver.beyond_window, 0, "sender overran the credit");
}

/// A member that never reports (dead) blocks the sender only until `credit_silence_ms`:
/// afterwards it stops counting toward credit and the sender proceeds; it still counts toward
/// stability (is live) until `member_timeout_ms`, and not after.
#[test]
fn dead_member_stops_counting_after_timeout() {
    let mut net = Net::new(3, &[1, 2, 3], |c| {
        c.sender.initial_credit_datagrams = 32;
        c.sender.credit_silence_ms = 600;
        c.sender.member_timeout_ms = 1000;
        c.sender.batch_bytes_max = 512;
        c.sender.backlog_datagrams_max = 8;
    });
    net.nodes[2].core = None; // node 3 is dead from the start
    let msgs: Vec<Message> = (0..500).map(|i| msg(1, i, 400)).collect();
    let mut sent = 0;
    while net.now_ms < 550 {
        sent += net.send_all(1, &msgs[sent..]);
        net.step();
    }
    assert!(sent < msgs.len(), "a silent member must hold credit before its credit silence");
    net.send_blocking(1, &msgs[sent..], 5_000);
    assert!(net.now_ms > 600, "the sender got through before the credit silence");
    assert!(net.now_ms < 1000, "the sender waited for the member timeout");
    let now = net.now_ms;
    assert_eq!(net.core(1).sender().live_members(now), vec![2, 3], "stability must still wait");
    net.run_until(2_000, |net| net.delivered_from(2, 1).len() == msgs.len());
    assert_eq!(net.delivered_from(2, 1), (0..500).collect::<Vec<_>>());
    for _ in 0..1000 {
        net.step();
    }
    let now = net.now_ms;
    assert_eq!(net.core(1).sender().live_members(now), vec![2]);
}

/// A sender's restart (new incarnation) resets its window at the receivers: the new stream
/// is delivered from its start, and replayed datagrams of the old incarnation are dropped
/// rather than delivered again.
#[test]
fn restart_with_new_incarnation_resets_window_and_drops_old() {
    let mut net = Net::new(2, &[1, 2], |_| {});
    let old: Vec<Message> = (0..10).map(|i| msg(1, i, 100)).collect();
    // Capture the old incarnation's datagrams for a replay.
    let captured = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let sink = captured.clone();
    net.filter = Box::new(move |p| {
        if p.header.flags & crate::header::flags::RELIABLE != 0 && p.header.incarnation == 1 {
            sink.borrow_mut().push(p.bytes.to_vec());
        }
        Fate::Deliver
    });
    net.send_blocking(1, &old, 100);
    net.run_until(100, |net| net.delivered_from(2, 1).len() == 10);
    // Restart node 1 with incarnation 2.
    let c = CoreConfig::with_members(vec![1, 2]);
    net.nodes[0].core = Some(Core::new(1, 2, auth(), c, net.now_ms));
    let new: Vec<Message> = (100..105).map(|i| msg(1, i, 100)).collect();
    net.send_blocking(1, &new, 100);
    net.run_until(100, |net| net.delivered_from(2, 1).len() == 15);
    let now = net.now_ms;
    for d in captured.borrow().iter() {
        let refused = net.core(2).on_datagram(d, now).unwrap_err();
        assert!(matches!(refused, crate::error::ProtocolError::Replay { .. }), "{refused}");
    }
    for _ in 0..50 {
        net.step();
    }
    let got = net.delivered_from(2, 1);
    assert_eq!(got, (0..10).chain(100..105).collect::<Vec<_>>());
    let replayed = captured.borrow().len() as u64;
    assert!(replayed > 0);
    // The replay guard refuses them before the receive window sees them.
    assert_eq!(net.core(2).stats().receiver.stale_incarnation, 0);
    assert_eq!(net.core(2).receivers().position(1).map(|p| p.0), Some(2));
}

/// A receiver that joins a long-running stream starts at the sender's current position (the
/// first message start it sees), not from sequence 1, and is in order from there.
#[test]
fn late_joiner_starts_at_current_sequence() {
    let mut net = Net::new(3, &[1, 2], |c| {
        c.receiver.join_backfill_datagrams = 8;
        c.sender.batch_bytes_max = 256;
    });
    // Node 3 is a non-member that joins late.
    net.nodes[2].core = None;
    let early: Vec<Message> = (0..300).map(|i| msg(1, i, 200)).collect();
    net.send_blocking(1, &early, 1000);
    net.run_until(500, |net| net.delivered_from(2, 1).len() == 300);
    let mut late_config = CoreConfig::with_members(vec![1, 2]);
    late_config.receiver.join_backfill_datagrams = 8;
    net.nodes[2].core = Some(Core::new(3, 1, auth(), late_config, net.now_ms));
    let late: Vec<Message> = (300..400).map(|i| msg(1, i, 3000)).collect();
    net.send_blocking(1, &late, 1000);
    net.run_until(500, |net| net.delivered_from(3, 1).len() == 100);
    assert_eq!(net.delivered_from(3, 1), (300..400).collect::<Vec<_>>());
    let (_, start) = net.core(3).receivers().position(1).unwrap();
    assert!(start > FIRST_SEQ + 8);
    assert_eq!(net.delivered(3).1, 0, "a late join is not a gap");
}

/// A receiver present from the start whose first datagrams were all lost still gets them
/// (the join backfill): losing the start of a young stream is repaired, not skipped.
#[test]
fn early_loss_of_a_young_stream_is_repaired() {
    let mut net = Net::new(2, &[1, 2], |c| c.sender.batch_bytes_max = 256);
    net.filter = Box::new(|p| {
        let reliable = p.header.flags & crate::header::flags::RELIABLE != 0;
        if reliable && p.header.seq <= 3 {
            Fate::Drop
        } else {
            Fate::Deliver
        }
    });
    let msgs: Vec<Message> = (0..20).map(|i| msg(1, i, 200)).collect();
    net.send_blocking(1, &msgs, 100);
    for _ in 0..20 {
        net.step();
    }
    // Now let retransmissions through.
    net.filter = Box::new(|_| Fate::Deliver);
    net.run_until(1000, |net| net.delivered_from(2, 1).len() == 20);
    assert_eq!(net.delivered_from(2, 1), (0..20).collect::<Vec<_>>());
}

/// The last datagram of a burst is lost and nothing follows it: the sender's status reveals
/// the tail and NAK repair delivers it.
#[test]
fn tail_loss_is_repaired_through_sender_status() {
    let mut net = Net::new(2, &[1, 2], |c| c.sender.batch_bytes_max = 256);
    let mut dropped = false;
    net.filter = Box::new(move |p| {
        if p.header.flags & crate::header::flags::RELIABLE != 0 && p.header.seq == 5 && !dropped {
            dropped = true;
            return Fate::Drop;
        }
        Fate::Deliver
    });
    let msgs: Vec<Message> = (0..5).map(|i| msg(1, i, 200)).collect();
    net.send_blocking(1, &msgs, 100);
    net.run_until(1000, |net| net.delivered_from(2, 1).len() == 5);
    assert_eq!(net.delivered_from(2, 1), (0..5).collect::<Vec<_>>());
    assert!(net.core(2).stats().receiver.naks_sent > 0);
}

/// A non-member receiver (a client) cut off from everything the sender still holds gets an
/// explicit Gap — the sender evicted the data once it was stable at the members — and then
/// continues in order with what follows.
#[test]
fn client_gets_gap_when_sender_no_longer_has_the_data() {
    let mut net = Net::new(3, &[1, 2], |c| {
        c.sender.buffer_datagrams_max = 16;
        c.sender.batch_bytes_max = 256;
    });
    // Node 3 (a client) first sees message 0, then is cut off for a while.
    let cut = std::rc::Rc::new(std::cell::Cell::new(false));
    let cut_in = cut.clone();
    net.filter =
        Box::new(move |p| if p.to == 3 && cut_in.get() { Fate::Drop } else { Fate::Deliver });
    net.send_blocking(1, &[msg(1, 0, 200)], 100);
    net.run_until(100, |net| net.delivered_from(3, 1).len() == 1);
    cut.set(true);
    let middle: Vec<Message> = (1..100).map(|i| msg(1, i, 200)).collect();
    net.send_blocking(1, &middle, 2000);
    net.run_until(500, |net| net.delivered_from(2, 1).len() == 100);
    cut.set(false);
    let after: Vec<Message> = (100..110).map(|i| msg(1, i, 200)).collect();
    net.send_blocking(1, &after, 2000);
    net.run_until(2000, |net| net.delivered_from(3, 1).contains(&109));
    let (_, gaps) = net.delivered(3);
    assert!(gaps >= 1, "the client was not told of the loss");
    let got = net.delivered_from(3, 1);
    assert!(got.windows(2).all(|w| w[0] < w[1]), "out of order: {got:?}");
    assert_eq!(got.first(), Some(&0));
    assert!(got.ends_with(&(100..110).collect::<Vec<_>>()), "{got:?}");
    assert_eq!(net.delivered(2).1, 0, "the member lost nothing");
}

/// When every retransmission to a receiver is lost, the hole is abandoned after
/// `nak_rounds_max` NAK rounds and surfaced as a Gap; later messages are delivered.
#[test]
fn nak_rounds_exhausted_becomes_gap() {
    let mut net = Net::new(2, &[1], |c| {
        c.receiver.nak_rounds_max = 3;
        c.sender.batch_bytes_max = 256;
    });
    net.filter = Box::new(|p| {
        if p.header.flags & crate::header::flags::RELIABLE != 0 && p.header.seq == 2 {
            Fate::Drop
        } else {
            Fate::Deliver
        }
    });
    let msgs: Vec<Message> = (0..5).map(|i| msg(1, i, 200)).collect();
    net.send_blocking(1, &msgs, 100);
    net.run_until(2000, |net| net.delivered_from(2, 1).len() == 4);
    assert_eq!(net.delivered_from(2, 1), vec![0, 2, 3, 4]);
    let gap = net.nodes[1].log.iter().find(|d| matches!(d, Delivery::Gap { .. })).cloned();
    assert_eq!(
        gap,
        Some(Delivery::Gap { sender: 1, incarnation: 1, first_missing: 2, resumed_at: Some(3) })
    );
    assert_eq!(net.core(2).stats().receiver.naks_sent, 3);
}

/// Datagrams under another cluster key are refused and change nothing.
#[test]
fn foreign_datagrams_are_rejected() {
    let mut a = Core::new(1, 1, ClusterAuth::new(0xABCD, b"other key"), CoreConfig::default(), 0);
    let mut b = Core::new(2, 1, auth(), CoreConfig::default(), 0);
    a.try_send(&msg(1, 0, 10), 0).unwrap();
    let t = a.poll_transmit(0).unwrap();
    assert!(b.on_datagram(&t.datagram, 0).is_err());
    assert_eq!(b.stats().datagrams_rejected, 1);
    assert!(b.pop_delivery().is_none());
}

/// A member that timed out counts again from its next report: once it is back, the sender
/// is held to its credit again (it cannot be overrun), and it receives everything it missed
/// that the sender still holds.
#[test]
fn returning_member_counts_again() {
    let mut net = Net::new(3, &[1, 2, 3], |c| {
        c.sender.initial_credit_datagrams = 32;
        c.receiver.window_datagrams = 32;
        c.sender.member_timeout_ms = 200;
        c.sender.batch_bytes_max = 512;
        c.sender.backlog_datagrams_max = 8;
    });
    // Node 3 goes silent (its reports and everything to it are lost) ...
    let silent = std::rc::Rc::new(std::cell::Cell::new(true));
    let silent_in = silent.clone();
    net.filter = Box::new(move |p| {
        if silent_in.get() && (p.to == 3 || p.header.sender == 3) {
            Fate::Drop
        } else {
            Fate::Deliver
        }
    });
    net.send_blocking(1, &(0..100).map(|i| msg(1, i, 400)).collect::<Vec<_>>(), 2_000);
    net.run_until(2_000, |net| net.delivered_from(2, 1).len() == 100);
    assert!(net.now_ms > 200, "the silent member's credit was not waited for");
    let now = net.now_ms;
    assert_eq!(net.core(1).sender().live_members(now), vec![2], "silent member still counted");
    // ... then comes back and stops consuming: the sender must wait for it again.
    silent.set(false);
    net.nodes[2].consuming = false;
    for _ in 0..50 {
        net.step();
    }
    let now = net.now_ms;
    assert_eq!(net.core(1).sender().live_members(now), vec![2, 3]);
    let more: Vec<Message> = (100..400).map(|i| msg(1, i, 400)).collect();
    let mut sent = 0;
    for _ in 0..100 {
        sent += net.send_all(1, &more[sent..]);
        net.step();
    }
    assert!(sent < more.len(), "the returned member's credit was ignored");
    net.nodes[2].consuming = true;
    net.send_blocking(1, &more[sent..], 10_000);
    net.run_until(5_000, |net| net.delivered_from(3, 1).contains(&399));
    let got = net.delivered_from(3, 1);
    assert!(got.windows(2).all(|w| w[0] + 1 == w[1]), "not contiguous: {got:?}");
    assert_eq!(net.core(3).stats().receiver.beyond_window, 0);
}

/// When more senders speak than `senders_max`, the least recently heard is forgotten; when it
/// speaks again it resumes where it was: nothing is delivered twice and nothing is skipped.
#[test]
fn evicted_sender_resumes_without_duplicates() {
    let mut net = Net::new(3, &[], |c| {
        c.receiver.senders_max = 1;
        c.sender.batch_bytes_max = 256;
    });
    // Node 3 hears sender 1, then sender 2 (evicting 1), then 1 again.
    net.send_blocking(1, &(0..5).map(|i| msg(1, i, 200)).collect::<Vec<_>>(), 100);
    net.run_until(200, |net| net.delivered_from(3, 1).len() == 5);
    net.send_blocking(2, &(0..5).map(|i| msg(2, i, 200)).collect::<Vec<_>>(), 100);
    net.run_until(200, |net| net.delivered_from(3, 2).len() == 5);
    net.send_blocking(1, &(5..10).map(|i| msg(1, i, 200)).collect::<Vec<_>>(), 100);
    net.run_until(500, |net| net.delivered_from(3, 1).len() >= 10);
    for _ in 0..100 {
        net.step();
    }
    assert_eq!(net.delivered_from(3, 1), (0..10).collect::<Vec<_>>());
    assert!(net.core(3).stats().receiver.senders_evicted >= 2);
}

/// A seeded simulation over many seeds: random message sizes (batched, single, fragmented),
/// random loss, duplication and reordering, small windows and buffers, and receivers whose
/// applications pause at random. Safety: every receiver's deliveries from each sender are
/// exactly 0, 1, 2, ... with no gap; liveness: once faults stop, everything arrives. A failure
/// names its seed.
#[test]
fn seeded_simulation_keeps_fifo_exactly_once() {
    for seed in 0..12u64 {
        let mut rng = SmallRng::seed_from_u64(seed);
        let window = [16u64, 64, 256][rng.gen_range(0..3)];
        let mut net = Net::new(3, &[1, 2, 3], |c| {
            c.receiver.window_datagrams = window;
            c.sender.initial_credit_datagrams = window;
            c.sender.backlog_datagrams_max = 8;
            c.sender.buffer_datagrams_max = 4 * window as usize;
            c.sender.batch_bytes_max = 1024;
        });
        let drop_percent = rng.gen_range(0..25);
        net.filter = seeded_filter(seed ^ 0xF00D, drop_percent, 5);
        net.reorder = Some(SmallRng::seed_from_u64(seed ^ 0xBEEF));
        let per_sender = 60u64;
        let mut next = [0u64; 3];
        let mut steps = 0;
        // Safety phase: faults on, random pauses.
        while next.iter().any(|n| *n < per_sender) {
            steps += 1;
            assert!(steps < 50_000, "seed {seed}: senders stuck at {next:?}");
            for s in 1..=3u64 {
                let i = next[s as usize - 1];
                if i < per_sender && rng.gen_bool(0.5) {
                    let size = match rng.gen_range(0..10) {
                        0 => rng.gen_range(61_000..150_000),
                        1..=3 => rng.gen_range(1_000..5_000),
                        _ => rng.gen_range(1..300),
                    };
                    if net.send_all(s, &[msg(s, i, size)]) == 1 {
                        next[s as usize - 1] += 1;
                    }
                }
            }
            for node in &mut net.nodes {
                if rng.gen_range(0..20) == 0 {
                    node.consuming = !node.consuming;
                }
            }
            net.step();
        }
        // Liveness phase: no faults, everyone consumes.
        net.filter = Box::new(|_| Fate::Deliver);
        for node in &mut net.nodes {
            node.consuming = true;
        }
        net.run_until(20_000, |net| {
            (1..=3).all(|r| {
                (1..=3)
                    .filter(|s| *s != r)
                    .all(|s| net.delivered_from(r, s).len() == per_sender as usize)
            })
        });
        for r in 1..=3 {
            assert_eq!(net.delivered(r).1, 0, "seed {seed}: receiver {r} saw a gap");
            for s in (1..=3).filter(|s| *s != r) {
                assert_eq!(
                    net.delivered_from(r, s),
                    (0..per_sender).collect::<Vec<_>>(),
                    "seed {seed}: receiver {r}, sender {s}"
                );
            }
        }
    }
}

/// A request or reply larger than one datagram is fragmented under its request id; the
/// receiver keeps the fragments it has across retries, so two attempts that each lose
/// different fragments still complete the message, and it is delivered once, intact.
#[test]
fn fragmented_reply_completes_across_retries() {
    let auth = auth();
    let big = msg(1, 7, 500_000); // 9 fragments
    let datagrams =
        super::seal_unreliable(&client_sealer(1), 42, crate::header::flags::REPLY, &big).unwrap();
    assert!(datagrams.len() > 1);
    let mut requester = Core::new(2, 1, auth.clone(), CoreConfig::default(), 0);
    // First attempt: the odd fragments are lost.
    for (i, d) in datagrams.iter().enumerate() {
        if i % 2 == 0 {
            requester.on_datagram(d, 1).unwrap();
        }
    }
    assert!(requester.pop_reply().is_none());
    // The retry: the even fragments are lost this time.
    for (i, d) in datagrams.iter().enumerate() {
        if i % 2 == 1 {
            requester.on_datagram(d, 2).unwrap();
        }
    }
    let reply = requester.pop_reply().expect("reply complete");
    assert_eq!((reply.request_id, reply.is_reply, reply.message), (42, true, big));
    assert!(requester.pop_reply().is_none());
    // A best-effort message without a request id may not be fragmented.
    assert!(super::seal_unreliable(&client_sealer(1), 0, 0, &msg(1, 0, 100_000)).is_err());
}

/// The sequence of message `i` when every message is one datagram (`batch_bytes_max` 256,
/// messages of 200 bytes).
fn seq_of(i: u64) -> u64 {
    FIRST_SEQ + i
}

/// Where the partition tests stand: node 2 never gets message `hole` (first transmission and
/// retransmissions) in `Hole`, gets nothing at all and sends nothing in `Cut`, and everything
/// is delivered in `Healed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Hole,
    Cut,
    Healed,
}

/// The filter of the partition tests (see [`Phase`]); only incarnation 1 has the hole.
fn hole_and_partition(hole: u64, phase: std::rc::Rc<std::cell::Cell<Phase>>) -> Filter {
    Box::new(move |p| {
        let reliable = p.header.flags & crate::header::flags::RELIABLE != 0;
        let drop = match phase.get() {
            Phase::Hole => {
                p.to == 2 && reliable && p.header.incarnation == 1 && p.header.seq == seq_of(hole)
            }
            Phase::Cut => p.to == 2 || p.header.sender == 2,
            Phase::Healed => false,
        };
        if drop {
            Fate::Drop
        } else {
            Fate::Deliver
        }
    })
}

/// Default NAK horizon of the receiving side: `nak_rounds_max × nak_retry_ms`.
fn default_nak_horizon_ms() -> u64 {
    let r = super::receiver::ReceiverConfig::default();
    r.nak_rounds_max as u64 * r.nak_retry_ms
}

/// Claim (1): a receiver with a hole open, cut off from the sender for three times the NAK
/// horizon (longer than `nak_rounds_max × nak_retry_ms`), repairs the hole after the heal with
/// no gap, because the sender still holds the data: NAK rounds do not count while the sender
/// is silent. (Before the fix this reported a gap ~1.2 s into the partition.)
#[test]
fn partition_longer_than_nak_horizon_heals_without_gap() {
    let mut net = Net::new(2, &[1], |c| c.sender.batch_bytes_max = 256);
    let phase = std::rc::Rc::new(std::cell::Cell::new(Phase::Hole));
    net.filter = hole_and_partition(3, phase.clone());
    let before: Vec<Message> = (0..20).map(|i| msg(1, i, 200)).collect();
    net.send_blocking(1, &before, 100);
    net.run_until(100, |net| net.delivered_from(2, 1).len() == 3);
    // Let a few NAK rounds go unanswered (the hole is not repaired before the cut).
    for _ in 0..100 {
        net.step();
    }
    assert_eq!(net.delivered_from(2, 1), vec![0, 1, 2]);
    phase.set(Phase::Cut);
    let partition_ms = 3 * default_nak_horizon_ms();
    let during: Vec<Message> = (20..40).map(|i| msg(1, i, 200)).collect();
    net.send_blocking(1, &during, 100);
    for _ in 0..partition_ms {
        net.step();
    }
    assert_eq!(net.delivered(2), (vec![(1, 0), (1, 1), (1, 2)], 0), "gave up while cut off");
    let stats = net.core(2).stats().receiver;
    let rounds_max = super::receiver::ReceiverConfig::default().nak_rounds_max as u64;
    assert!(stats.naks_sent > 2 * rounds_max, "the partition did not outlast the horizon");
    assert!(stats.nak_rounds_unheard > rounds_max, "silent rounds were counted");
    phase.set(Phase::Healed);
    net.run_until(1_000, |net| net.delivered_from(2, 1).len() == 40);
    assert_eq!(net.delivered_from(2, 1), (0..40).collect::<Vec<_>>());
    assert_eq!(net.delivered(2).1, 0, "a hole the sender still held became a gap");
}

/// Claim (2): the same partition, but meanwhile the sender evicted the missing data (a small
/// buffer and plenty of traffic): the receiver reports the gap after the heal — from the
/// sender's status, not from counting silent rounds — and then continues in order.
#[test]
fn partition_then_eviction_reports_gap_after_heal() {
    let mut net = Net::new(2, &[1], |c| {
        c.sender.batch_bytes_max = 256;
        c.sender.buffer_datagrams_max = 16;
    });
    let phase = std::rc::Rc::new(std::cell::Cell::new(Phase::Hole));
    net.filter = hole_and_partition(3, phase.clone());
    let before: Vec<Message> = (0..10).map(|i| msg(1, i, 200)).collect();
    net.send_blocking(1, &before, 100);
    net.run_until(100, |net| net.delivered_from(2, 1).len() == 3);
    phase.set(Phase::Cut);
    let during: Vec<Message> = (10..100).map(|i| msg(1, i, 200)).collect();
    net.send_blocking(1, &during, 1_000);
    for _ in 0..3 * default_nak_horizon_ms() {
        net.step();
    }
    assert_eq!(net.delivered(2).1, 0, "the gap must not come from silent rounds");
    assert!(net.core(1).sender().stats().datagrams_sent > 16);
    phase.set(Phase::Healed);
    let after: Vec<Message> = (100..110).map(|i| msg(1, i, 200)).collect();
    net.send_blocking(1, &after, 1_000);
    net.run_until(2_000, |net| net.delivered_from(2, 1).contains(&109));
    let gap = net.nodes[1].log.iter().find(|d| matches!(d, Delivery::Gap { .. })).cloned();
    assert!(
        matches!(gap, Some(Delivery::Gap { sender: 1, first_missing, .. })
            if first_missing == seq_of(3)),
        "{gap:?}"
    );
    let got = net.delivered_from(2, 1);
    assert!(got.windows(2).all(|w| w[0] < w[1]), "out of order: {got:?}");
    assert!(got.starts_with(&[0, 1, 2]) && got.ends_with(&(100..110).collect::<Vec<_>>()));
}

/// Claim (3): a sender that dies with a hole open at a receiver never makes that receiver's
/// memory grow (the window holds at most `window_datagrams`), and it is presumed gone after
/// `sender_gone_ms` of silence: the hole then becomes a gap within `nak_rounds_max` rounds,
/// what was held behind it is delivered and freed, and the NAKs stop.
#[test]
fn dead_sender_ends_in_gap_after_gone_horizon_with_bounded_memory() {
    let window = 32;
    let mut net = Net::new(2, &[1], |c| {
        c.sender.batch_bytes_max = 256;
        c.receiver.window_datagrams = window;
    });
    let phase = std::rc::Rc::new(std::cell::Cell::new(Phase::Hole));
    net.filter = hole_and_partition(3, phase);
    let msgs: Vec<Message> = (0..20).map(|i| msg(1, i, 200)).collect();
    net.send_blocking(1, &msgs, 100);
    net.run_until(100, |net| net.delivered_from(2, 1).len() == 3);
    for _ in 0..100 {
        net.step();
    }
    assert_eq!(net.core(2).receivers().held_datagrams(), 16, "messages 4..20 wait for 3");
    net.nodes[0].core = None; // the sender dies for good
    let died_ms = net.now_ms;
    let config = super::receiver::ReceiverConfig::default();
    let deadline_ms = config.sender_gone_ms + default_nak_horizon_ms() + 1_000;
    let mut gap_at_ms = None;
    for _ in 0..deadline_ms {
        net.step();
        let held = net.core(2).receivers().held_datagrams();
        assert!(held <= window as usize, "the window grew to {held}");
        if gap_at_ms.is_none() && net.delivered(2).1 > 0 {
            gap_at_ms = Some(net.now_ms - died_ms);
        }
    }
    let gap_at_ms = gap_at_ms.expect("a dead sender's hole never became a gap");
    assert!(gap_at_ms > config.sender_gone_ms, "gave up before the sender was presumed gone");
    let gap = net.nodes[1].log.iter().find(|d| matches!(d, Delivery::Gap { .. })).cloned();
    assert_eq!(
        gap,
        Some(Delivery::Gap {
            sender: 1,
            incarnation: 1,
            first_missing: seq_of(3),
            resumed_at: Some(seq_of(4)),
        })
    );
    assert_eq!(net.delivered_from(2, 1), (0..20).filter(|i| *i != 3).collect::<Vec<_>>());
    assert_eq!(net.core(2).receivers().held_datagrams(), 0);
    let naks = net.core(2).stats().receiver.naks_sent;
    for _ in 0..1_000 {
        net.step();
    }
    assert_eq!(net.core(2).stats().receiver.naks_sent, naks, "still NAKing a dead sender");
}

/// A sender that dies with a hole open and comes back as a new incarnation (before it would
/// be presumed gone) makes the receiver report the old incarnation's hole as a gap at once,
/// and the new stream is delivered from its start.
#[test]
fn restarted_sender_reports_old_hole_as_gap() {
    let mut net = Net::new(2, &[1], |c| c.sender.batch_bytes_max = 256);
    let phase = std::rc::Rc::new(std::cell::Cell::new(Phase::Hole));
    net.filter = hole_and_partition(3, phase);
    let msgs: Vec<Message> = (0..10).map(|i| msg(1, i, 200)).collect();
    net.send_blocking(1, &msgs, 100);
    net.run_until(100, |net| net.delivered_from(2, 1).len() == 3);
    net.nodes[0].core = None;
    for _ in 0..2 * default_nak_horizon_ms() {
        net.step();
    }
    assert_eq!(net.delivered(2).1, 0, "gave up on a silent sender");
    let mut c = CoreConfig::with_members(vec![1]);
    c.sender.batch_bytes_max = 256;
    net.nodes[0].core = Some(Core::new(1, 2, auth(), c, net.now_ms));
    let new: Vec<Message> = (100..105).map(|i| msg(1, i, 200)).collect();
    net.send_blocking(1, &new, 100);
    net.run_until(200, |net| net.delivered_from(2, 1).len() == 8);
    let gaps: Vec<&Delivery> =
        net.nodes[1].log.iter().filter(|d| matches!(d, Delivery::Gap { .. })).collect();
    assert_eq!(
        gaps,
        vec![&Delivery::Gap {
            sender: 1,
            incarnation: 1,
            first_missing: seq_of(3),
            resumed_at: None
        }]
    );
    assert_eq!(net.delivered_from(2, 1), vec![0, 1, 2, 100, 101, 102, 103, 104]);
}

/// A member killed mid-stream (its reports stop) must not stall the sender until the member
/// timeout: with the default configuration, a sender streaming faster than a window per
/// second used to exhaust the dead member's last credit (`window_datagrams` beyond what it
/// had consumed) and then wait, blocked, until the dead member stopped counting at
/// `member_timeout_ms` (3 s) — the follower-kill stalls of RELIABILITY.md ("Follower faults
/// and credit"). Credit now ignores a member silent for `credit_silence_ms` (several report
/// keepalives), while stability still waits for it until the member timeout, so the
/// retransmit buffer keeps everything the dead member lacks (it can still repair if it was
/// only slow) and stays bounded.
#[test]
fn killed_member_stalls_the_sender_at_most_the_credit_silence() {
    let mut net = Net::new(3, &[1, 2, 3], |_| {});
    let defaults = super::SenderConfig::default();
    // 4 messages of 3 KB per simulated ms: two datagrams per ms, a window in half a second.
    let msgs: Vec<Message> = (0..12_000).map(|i| msg(1, i, 3_000)).collect();
    let mut sent = net.send_all(1, &msgs[..400]);
    net.run_until(1_000, |net| net.delivered_from(3, 1).len() == sent);
    net.nodes[2].core = None; // kill -9 of node 3
    let killed_ms = net.now_ms;
    let mut longest_stall_ms = 0;
    let mut stalled_since = None;
    while sent < msgs.len() {
        let end = (sent + 4).min(msgs.len());
        let went = net.send_all(1, &msgs[sent..end]);
        sent += went;
        if went == 0 {
            let since = *stalled_since.get_or_insert(net.now_ms);
            longest_stall_ms = longest_stall_ms.max(net.now_ms - since);
        } else {
            stalled_since = None;
        }
        if net.now_ms - killed_ms < defaults.member_timeout_ms {
            // Stability still waits for the dead member: nothing it lacks may be freed.
            assert_eq!(net.core(1).sender().retained_from(), FIRST_SEQ);
        }
        net.step();
        assert!(net.now_ms - killed_ms < 20_000, "sender still blocked");
    }
    net.run_until(5_000, |net| net.delivered_from(2, 1).len() == msgs.len());
    assert_eq!(net.delivered_from(2, 1), (0..12_000).collect::<Vec<_>>());
    assert!(
        longest_stall_ms <= defaults.credit_silence_ms,
        "the dead member stalled the sender {longest_stall_ms} ms"
    );
}

/// A reliable datagram that `sender` (any id: the peer holds the cluster key) never had to
/// earn: sequence `seq`, fragment `index` of `count`, `len` bytes of payload.
fn forged_data(sender: SenderId, seq: u64, index: u16, count: u16, len: usize) -> Vec<u8> {
    let kind = crate::message::MessageKind::FileTransBlock as u8;
    forged_fragment(sender, kind, seq, index, count, &vec![0x5A; len])
}

/// A whole message `m` of `sender` as one reliable datagram at `seq`.
fn forged_message(sender: SenderId, seq: u64, m: &Message) -> Vec<u8> {
    let payload = m.encode_payload().unwrap();
    forged_fragment(sender, m.kind() as u8, seq, 0, 1, &payload)
}

fn forged_fragment(
    sender: SenderId,
    kind: u8,
    seq: u64,
    index: u16,
    count: u16,
    payload: &[u8],
) -> Vec<u8> {
    let sealer = client_sealer(sender);
    let header =
        sealer.header(kind, crate::header::flags::RELIABLE, seq, (index, count), payload.len());
    let mut out = Vec::new();
    crate::header::seal(&sealer, &header, payload, &mut out).unwrap();
    out
}

/// Issue 15 point 9: one hostile peer claims many sender ids and fills each one's reorder
/// window out of order (the head, sequence 1, never comes). The receiver's total held bytes
/// stay within `held_bytes_max` whatever the number of ids; what does not fit is dropped and
/// counted; an in-order datagram is still delivered when the cap is reached, and delivering a
/// stream's head frees what it held.
#[test]
fn claimed_sender_ids_cannot_hold_more_than_the_global_cap() {
    const CAP: usize = 4 * 1024 * 1024;
    const WINDOW: u64 = 64;
    const IDS: u64 = 64;
    const LEN: usize = 8 * 1024;
    let mut config = CoreConfig::with_members(vec![1]);
    config.receiver.window_datagrams = WINDOW;
    config.receiver.held_bytes_max = CAP;
    let mut core = Core::new(1, 1, auth(), config, 0);
    let mut peak = 0;
    // 64 ids × 63 datagrams × 8 KiB = 32 MiB offered, eight times the cap.
    for id in 100..100 + IDS {
        for seq in (FIRST_SEQ + 1..FIRST_SEQ + WINDOW).rev() {
            core.on_datagram(&forged_data(id, seq, 0, 1, LEN), 0).unwrap();
            peak = peak.max(core.receivers().held_bytes_recounted());
        }
    }
    assert!(
        peak <= CAP,
        "receiver held {peak} bytes for reordering across {IDS} claimed sender ids, over the \
         global cap of {CAP}"
    );
    let offered = IDS * (WINDOW - 1);
    let held = core.receivers().held_datagrams() as u64;
    assert_eq!(core.stats().receiver.over_held_cap, offered - held, "every refusal is counted");
    assert!(held > 0, "the cap is used, not refused outright");
    // The cap never refuses an in-order datagram: a new sender's head is delivered at once.
    core.on_datagram(&forged_message(7, FIRST_SEQ, &msg(7, 0, 100)), 1).unwrap();
    assert!(
        matches!(core.pop_delivery(), Some(Delivery::Message { sender: 7, .. })),
        "the in-order datagram was delivered"
    );
    // The first id's head arrives: everything it held is delivered and freed.
    let before = core.receivers().held_bytes();
    core.on_datagram(&forged_message(100, FIRST_SEQ, &msg(100, 0, 100)), 1).unwrap();
    assert!(core.receivers().held_bytes() < before, "delivering the head frees the window");
    assert!(core.receivers().held_bytes() <= CAP);
}

/// Reassemblies count too: claimed sender ids each sending the first fragments of a large
/// message in order (and never its end) cannot make the receiver hold or reserve more than the
/// cap. (The old code reserved each message's announced size at its first fragment, without
/// any limit across senders.)
#[test]
fn claimed_sender_ids_cannot_reassemble_past_the_global_cap() {
    const CAP: usize = 4 * 1024 * 1024;
    const FRAG: usize = crate::limits::FRAGMENT_PAYLOAD_BYTES_MAX;
    let mut config = CoreConfig::with_members(vec![1]);
    config.receiver.held_bytes_max = CAP;
    let mut core = Core::new(1, 1, auth(), config, 0);
    let mut peak = 0;
    // 16 ids × 10 fragments × 60 KiB = 9.4 MiB offered in order; each message announces 100.
    for id in 100..116 {
        for index in 0..10u16 {
            let datagram = forged_data(id, FIRST_SEQ + index as u64, index, 100, FRAG);
            core.on_datagram(&datagram, 0).unwrap();
            peak = peak.max(core.receivers().held_bytes_recounted());
            assert_eq!(core.receivers().held_bytes(), core.receivers().held_bytes_recounted());
        }
    }
    assert!(
        peak <= CAP,
        "receiver reserved {peak} bytes for reassembly across claimed sender ids, over the \
         global cap of {CAP}"
    );
    assert!(core.stats().receiver.over_held_cap > 0, "the refusals are counted");
    assert_eq!(core.stats().receiver.malformed, 0, "a refusal is not a malformed datagram");
    // A whole message in one datagram is never held, so it still gets through.
    core.on_datagram(&forged_message(7, FIRST_SEQ, &msg(7, 0, 100)), 1).unwrap();
    assert!(matches!(core.pop_delivery(), Some(Delivery::Message { sender: 7, .. })));
}

/// In-order data comes before out-of-order data: with the cap full of datagrams held out of
/// order, a sender's large message, arriving in order, sheds them (their senders' NAKs repair
/// them later) and is delivered whole.
#[test]
fn in_order_reassembly_sheds_out_of_order_datagrams_at_the_cap() {
    const CAP: usize = 1024 * 1024;
    const FRAG: usize = crate::limits::FRAGMENT_PAYLOAD_BYTES_MAX;
    let mut config = CoreConfig::with_members(vec![1]);
    config.receiver.held_bytes_max = CAP;
    let mut core = Core::new(1, 1, auth(), config, 0);
    // Fill the cap with out-of-order datagrams of claimed ids (their heads never come).
    for id in 100..132 {
        for seq in FIRST_SEQ + 1..FIRST_SEQ + 8 {
            core.on_datagram(&forged_data(id, seq, 0, 1, 8 * 1024), 0).unwrap();
        }
    }
    let refused = core.stats().receiver.over_held_cap;
    assert!(refused > 0 && core.receivers().held_bytes() + 8 * 1024 > CAP, "the cap is full");
    // Sender 7 sends a real 10-fragment message (600 KiB, more than half the cap), in order.
    let big = msg(7, 0, 10 * FRAG - 100);
    let payload = big.encode_payload().unwrap();
    let chunks: Vec<&[u8]> = payload.chunks(FRAG).collect();
    for (index, chunk) in chunks.iter().enumerate() {
        let sealer = client_sealer(7);
        let header = sealer.header(
            big.kind() as u8,
            crate::header::flags::RELIABLE,
            FIRST_SEQ + index as u64,
            (index as u16, chunks.len() as u16),
            chunk.len(),
        );
        let mut out = Vec::new();
        crate::header::seal(&sealer, &header, chunk, &mut out).unwrap();
        core.on_datagram(&out, 1).unwrap();
        assert!(core.receivers().held_bytes() <= CAP);
        assert_eq!(core.receivers().held_bytes(), core.receivers().held_bytes_recounted());
    }
    match core.pop_delivery() {
        Some(Delivery::Message { sender: 7, message, .. }) => assert_eq!(message, big),
        other => panic!("the in-order message was not delivered: {other:?}"),
    }
    assert!(core.stats().receiver.over_held_cap > refused, "the shed datagrams are counted");
    assert_eq!(core.receivers().held_bytes(), core.receivers().held_bytes_recounted());
}

/// The cap costs no data: with `held_bytes_max` far below the window (and only a little above
/// the largest message), under 20 % loss, 10 % duplication and full reordering, every member
/// still delivers every other member's messages exactly once, in order, without a gap — what
/// the cap refused or shed was NAKed and retransmitted.
#[test]
fn tight_held_cap_under_loss_and_reordering_loses_nothing() {
    const CAP: usize = 320 * 1024;
    for seed in 0..2u64 {
        let mut net = Net::new(3, &[1, 2, 3], |c| c.receiver.held_bytes_max = CAP);
        net.filter = seeded_filter(seed + 7, 20, 10);
        net.reorder = Some(SmallRng::seed_from_u64(seed + 300));
        let sizes = [10, 100, 3000, 70_000, 100, 200_000, 50, 30_000];
        let per_sender = 60u64;
        for round in 0..per_sender {
            for sender in 1..=3 {
                let size = sizes[(round as usize + sender as usize) % sizes.len()];
                net.send_blocking(sender, &[msg(sender, round, size)], 5_000);
            }
        }
        net.run_until(30_000, |net| {
            (1..=3).all(|r| {
                (1..=3)
                    .filter(|s| *s != r)
                    .all(|s| net.delivered_from(r, s).len() == per_sender as usize)
            })
        });
        let mut refused = 0;
        for receiver in 1..=3 {
            assert_eq!(net.delivered(receiver).1, 0, "seed {seed}: receiver {receiver}: a gap");
            for sender in (1..=3).filter(|s| *s != receiver) {
                let got = net.delivered_from(receiver, sender);
                assert_eq!(got, (0..per_sender).collect::<Vec<_>>(), "seed {seed}");
            }
            let core = net.core(receiver);
            assert!(core.receivers().held_bytes() <= CAP);
            refused += core.stats().receiver.over_held_cap;
        }
        assert!(refused > 0, "seed {seed}: the cap was never reached, so this tested nothing");
    }
}

/// A sender that falls silent in the middle of a fragmented message (it crashed before sending
/// the rest, so no hole tells the receiver) does not hold its reservation against the cap for
/// ever: after `sender_gone_ms` the reassembly is given up, a gap says so, and another sender's
/// message that did not fit before is admitted.
#[test]
fn half_sent_message_of_a_silent_sender_frees_its_reservation() {
    const FRAG: usize = crate::limits::FRAGMENT_PAYLOAD_BYTES_MAX;
    let mut config = CoreConfig::with_members(vec![1]);
    config.receiver.held_bytes_max = 150 * FRAG;
    let gone_ms = config.receiver.sender_gone_ms;
    let mut core = Core::new(1, 1, auth(), config, 0);
    // Sender 5 delivers one message, then starts a 100-fragment one and dies after two.
    core.on_datagram(&forged_message(5, FIRST_SEQ, &msg(5, 0, 100)), 0).unwrap();
    assert!(matches!(core.pop_delivery(), Some(Delivery::Message { sender: 5, .. })));
    for index in 0..2u16 {
        let datagram = forged_data(5, FIRST_SEQ + 1 + index as u64, index, 100, FRAG);
        core.on_datagram(&datagram, 0).unwrap();
    }
    assert_eq!(core.receivers().held_bytes(), 100 * FRAG, "the whole message is reserved");
    // Sender 6's 100-fragment message does not fit beside it.
    let first = forged_data(6, FIRST_SEQ, 0, 100, FRAG);
    core.on_datagram(&first, 1).unwrap();
    assert_eq!(core.receivers().position(6), Some((1, FIRST_SEQ)), "refused for the cap");
    assert_eq!(core.stats().receiver.over_held_cap, 1);
    // Time passes; sender 5 stays silent.
    let mut now = 1;
    while now <= gone_ms + 1_000 && core.receivers().held_bytes() >= 100 * FRAG {
        now += 10;
        core.tick(now);
        while core.poll_transmit(now).is_some() {}
    }
    assert!(now > gone_ms, "freed only once sender 5 was presumed gone (at {now} ms)");
    assert_eq!(core.stats().receiver.reassemblies_abandoned, 1);
    match core.pop_delivery() {
        Some(Delivery::Gap { sender: 5, first_missing, resumed_at, .. }) => {
            assert_eq!((first_missing, resumed_at), (FIRST_SEQ + 1, Some(FIRST_SEQ + 3)));
        }
        other => panic!("expected sender 5's gap, got {other:?}"),
    }
    // A large message is admitted again.
    core.on_datagram(&forged_data(7, FIRST_SEQ, 0, 100, FRAG), now).unwrap();
    assert_eq!(core.receivers().position(7), Some((1, FIRST_SEQ + 1)), "admitted now");
    assert_eq!(core.receivers().held_bytes(), 100 * FRAG);
    assert_eq!(core.receivers().held_bytes(), core.receivers().held_bytes_recounted());
}

/// The receive window checks its bookkeeping after each change and stops rather than go on
/// from a corrupt state: a consumption report for data never delivered (it would grant the
/// sender credit for datagrams no one took) trips `consumed_below <= next_deliver`.
#[test]
#[should_panic(expected = "out of order: consumed_below 50 next_deliver 2")]
fn a_window_consumed_past_what_was_delivered_stops_the_process() {
    let mut receivers = super::receiver::ReceiverSet::new(
        client_sealer(1),
        super::receiver::ReceiverConfig::default(),
    );
    let datagram = forged_message(7, FIRST_SEQ, &msg(7, 0, 100));
    let (header, payload) = crate::header::open(&auth(), &datagram).unwrap();
    receivers.on_data(&header, &payload, 0);
    assert!(receivers.pop_delivery().is_some());
    receivers.consumed(7, 1, 50);
}
