//! [`RequestWindow`]: the client's bound on requests in flight that the master's request
//! table remembers (writes, transactions, lock commands).
//!
//! The table keeps the last [`REQUEST_WINDOW`] outcomes per client by request seq and
//! answers every seq at or below a forgotten one `RequestTooOld` (`fs-node`
//! `state::requests`). A retry is safe only while its seq is above that horizon, so the
//! client never lets the seqs in flight span more than the window: a request gets seq `n`
//! only once every request below `n - REQUEST_WINDOW + 1` has ended. (A count of requests in
//! flight would not do: one slow request and a stream of quick ones behind it would carry
//! the newest seqs more than a window past it.)

use std::collections::BTreeSet;
use std::sync::Mutex;
use tokio::sync::Notify;

/// Seqs in flight span at most this many (the master's `results_per_client_max`, 32).
pub const REQUEST_WINDOW: u64 = 32;

/// Hands out request seqs within the window (see the module docs).
#[derive(Debug)]
pub struct RequestWindow {
    size: u64,
    state: Mutex<State>,
    freed: Notify,
}

#[derive(Debug, Default)]
struct State {
    last: u64,
    in_flight: BTreeSet<u64>,
}

/// A seq in flight; dropping it ends the request.
#[derive(Debug)]
pub struct Slot<'a> {
    window: &'a RequestWindow,
    seq: u64,
}

impl Slot<'_> {
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.window.state.lock().expect("request window poisoned").in_flight.remove(&self.seq);
        self.window.freed.notify_waiters();
    }
}

impl RequestWindow {
    pub fn new(size: u64) -> RequestWindow {
        assert!(size > 0, "a request window holds at least one request");
        RequestWindow { size, state: Mutex::default(), freed: Notify::new() }
    }

    /// The next seq, once the window has room for it.
    pub async fn open(&self) -> Slot<'_> {
        loop {
            // Registered before the check, so a slot freed in between wakes it.
            let freed = self.freed.notified();
            if let Some(slot) = self.try_open() {
                return slot;
            }
            freed.await;
        }
    }

    /// The next seq, or `None` while the oldest request in flight is a whole window behind.
    pub fn try_open(&self) -> Option<Slot<'_>> {
        let mut state = self.state.lock().expect("request window poisoned");
        let next = state.last + 1;
        if state.in_flight.first().is_some_and(|low| next - low >= self.size) {
            return None;
        }
        state.last = next;
        state.in_flight.insert(next);
        Some(Slot { window: self, seq: next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seqs_in_flight_never_span_more_than_the_window() {
        let w = RequestWindow::new(4);
        let slots: Vec<_> = (0..4).map(|_| w.try_open().expect("room")).collect();
        assert_eq!(slots.iter().map(Slot::seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert!(w.try_open().is_none(), "a fifth while 1 is in flight");
        let mut slots = slots.into_iter();
        let first = slots.next().expect("1");
        let rest: Vec<_> = slots.collect();
        drop(rest);
        // 2, 3 and 4 ended, 1 did not: 5 would be a whole window past it.
        assert!(w.try_open().is_none(), "seq 5 while seq 1 is in flight");
        drop(first);
        assert_eq!(w.try_open().map(|s| s.seq()), Some(5));
    }

    #[tokio::test]
    async fn open_waits_for_the_oldest_request() {
        let w = std::sync::Arc::new(RequestWindow::new(2));
        let a = w.try_open().expect("1");
        let _b = w.try_open().expect("2");
        let w2 = w.clone();
        let waiter = tokio::spawn(async move { w2.open().await.seq() });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(a);
        assert_eq!(waiter.await.expect("joined"), 3);
    }
}
