//! The deterministic fault hook: seeded datagram drops on receive and on send, so that tests
//! (and a curious operator) can exercise loss repair. The same seed drops the same positions of
//! each direction's datagram sequence.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Drop probabilities, in parts per million so the configuration stays integral and exact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultConfig {
    pub seed: u64,
    /// Probability (ppm) that a received datagram is discarded before the core sees it.
    pub drop_receive_ppm: u32,
    /// Probability (ppm) that a datagram to send is discarded instead.
    pub drop_send_ppm: u32,
}

impl FaultConfig {
    /// No faults.
    pub fn none() -> FaultConfig {
        FaultConfig::default()
    }

    /// Drops `percent` % of received datagrams.
    pub fn drop_receive_percent(seed: u64, percent: u32) -> FaultConfig {
        assert!(percent <= 100);
        FaultConfig { seed, drop_receive_ppm: percent * 10_000, drop_send_ppm: 0 }
    }

    pub fn is_active(&self) -> bool {
        self.drop_receive_ppm > 0 || self.drop_send_ppm > 0
    }
}

/// One direction's seeded coin.
#[derive(Debug)]
pub struct Coin {
    rng: SmallRng,
    ppm: u32,
}

impl Coin {
    pub fn new(seed: u64, ppm: u32) -> Coin {
        assert!(ppm <= 1_000_000, "a probability is at most 1 000 000 ppm");
        Coin { rng: SmallRng::seed_from_u64(seed), ppm }
    }

    /// True when this datagram is to be dropped.
    pub fn drop_this(&mut self) -> bool {
        self.ppm > 0 && self.rng.gen_range(0..1_000_000) < self.ppm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same seed drops the same positions, and the drop rate is close to the one asked.
    #[test]
    fn coin_is_seeded_and_calibrated() {
        let mut a = Coin::new(42, 200_000);
        let mut b = Coin::new(42, 200_000);
        let drops_a: Vec<bool> = (0..10_000).map(|_| a.drop_this()).collect();
        let drops_b: Vec<bool> = (0..10_000).map(|_| b.drop_this()).collect();
        assert_eq!(drops_a, drops_b);
        let n = drops_a.iter().filter(|d| **d).count();
        assert!((1_700..2_300).contains(&n), "{n} drops of 10 000 at 20 %");
        let mut never = Coin::new(1, 0);
        assert!((0..1000).all(|_| !never.drop_this()));
    }
}
