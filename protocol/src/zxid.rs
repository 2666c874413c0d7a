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

/// Reads what [`Zxid`]'s `Display` writes (`EPOCH:COUNTER`, e.g. `3:17`) or the raw 64-bit
/// number; anything else is refused with a sentence.
impl std::str::FromStr for Zxid {
    type Err = String;

    fn from_str(s: &str) -> Result<Zxid, String> {
        let bad = || format!("{s:?} is not a zxid: write EPOCH:COUNTER as printed (e.g. 3:17)");
        match s.split_once(':') {
            Some((epoch, counter)) => {
                let epoch = epoch.parse::<u32>().map_err(|_| bad())?;
                let counter = counter.parse::<u32>().map_err(|_| bad())?;
                Ok(Zxid::new(epoch, counter))
            }
            None => s.parse::<u64>().map(Zxid).map_err(|_| bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A zxid reads back from its printed form and from its raw number; junk is refused.
    #[test]
    fn parses_what_display_prints() {
        let z = Zxid::new(3, 17);
        assert_eq!(z.to_string().parse::<Zxid>(), Ok(z));
        assert_eq!(z.0.to_string().parse::<Zxid>(), Ok(z));
        assert_eq!("0".parse::<Zxid>(), Ok(Zxid::ZERO));
        for bad in ["", "3:", ":1", "1:2:3", "-1", "x", "4294967296:0", "1:4294967296"] {
            assert!(bad.parse::<Zxid>().is_err(), "{bad:?} parsed");
        }
    }

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
