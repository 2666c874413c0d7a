//! The zxid: one total order over every committed change.
//!
//! `epoch << 32 | counter`. A new master's epoch is above every epoch seen, so zxids from a
//! later epoch always compare above those of an earlier one.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A transaction id: epoch in the high 32 bits, a per-epoch counter in the low 32.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Zxid(pub u64);

impl Zxid {
    pub const ZERO: Zxid = Zxid(0);

    pub fn new(epoch: u32, counter: u32) -> Zxid {
        Zxid(((epoch as u64) << 32) | counter as u64)
    }

    pub fn epoch(self) -> u32 {
        (self.0 >> 32) as u32
    }

    pub fn counter(self) -> u32 {
        self.0 as u32
    }

    /// The next zxid in the same epoch, or `None` when the counter would wrap (the master must
    /// then start a new epoch).
    pub fn next(self) -> Option<Zxid> {
        self.counter().checked_add(1).map(|c| Zxid::new(self.epoch(), c))
    }
}

impl fmt::Display for Zxid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch(), self.counter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A later epoch orders above any counter of an earlier one.
    #[test]
    fn epoch_dominates_counter() {
        assert!(Zxid::new(2, 0) > Zxid::new(1, u32::MAX));
        assert_eq!(Zxid::new(7, 9).epoch(), 7);
        assert_eq!(Zxid::new(7, 9).counter(), 9);
        assert_eq!(Zxid::new(1, u32::MAX).next(), None);
        assert_eq!(Zxid::new(1, 1).to_string(), "1:1");
    }
}
