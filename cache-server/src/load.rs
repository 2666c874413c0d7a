//! The node's load as replies and FSLive report it: CPU and memory use in permille, sampled with
//! `sysinfo` by a periodic task off the request path, and the count of requests in flight.
//!
//! Reading the gauge is three relaxed atomic loads, so every reply can carry fresh figures
//! (routing must not herd on 30-second-old FSLive numbers).

use protocol::message::data::Load;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use sysinfo::System;

/// How often the sampler refreshes CPU and memory. `sysinfo` needs at least
/// `sysinfo::MINIMUM_CPU_UPDATE_INTERVAL` (200 ms on Linux) between two CPU samples.
pub const LOAD_REFRESH_DEFAULT: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct LoadGauge {
    cpu_permille: AtomicU16,
    mem_permille: AtomicU16,
    inflight: AtomicU32,
}

/// Counts one request in flight for as long as it lives.
pub struct InflightGuard(Arc<LoadGauge>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl LoadGauge {
    pub fn new() -> Arc<LoadGauge> {
        Arc::new(LoadGauge::default())
    }

    pub fn load(&self) -> Load {
        Load {
            cpu_permille: self.cpu_permille.load(Ordering::Relaxed),
            mem_permille: self.mem_permille.load(Ordering::Relaxed),
            inflight: self.inflight.load(Ordering::Relaxed),
        }
    }

    /// Sets CPU and memory use (clamped to 1000): the sampler's output, or a test's input.
    pub fn set(&self, cpu_permille: u16, mem_permille: u16) {
        self.cpu_permille.store(cpu_permille.min(1000), Ordering::Relaxed);
        self.mem_permille.store(mem_permille.min(1000), Ordering::Relaxed);
    }

    pub fn begin(self: &Arc<Self>) -> InflightGuard {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        InflightGuard(Arc::clone(self))
    }
}

/// Reads CPU and memory use from the operating system.
pub struct LoadSampler {
    system: System,
}

impl Default for LoadSampler {
    fn default() -> Self {
        LoadSampler::new()
    }
}

impl LoadSampler {
    pub fn new() -> LoadSampler {
        let mut system = System::new();
        // The first CPU figure is measured against this baseline.
        system.refresh_cpu_usage();
        LoadSampler { system }
    }

    /// Takes one sample: (cpu permille, memory permille).
    pub fn sample(&mut self) -> (u16, u16) {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        let cpu = (self.system.global_cpu_usage() * 10.0).round().clamp(0.0, 1000.0) as u16;
        let total = self.system.total_memory();
        let mem = self.system.used_memory().saturating_mul(1000).checked_div(total).unwrap_or(0);
        let mem = mem.min(1000) as u16;
        (cpu, mem)
    }
}

/// Refreshes `gauge` every `interval` until the task is dropped or aborted. The sample runs on
/// a blocking thread because it reads /proc.
pub async fn run_sampler(gauge: Arc<LoadGauge>, interval: Duration) {
    let interval = interval.max(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
    let mut sampler = Some(LoadSampler::new());
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let mut s = sampler.take().expect("sampler returned each round");
        let Ok((s_back, (cpu, mem))) = tokio::task::spawn_blocking(move || {
            let figures = s.sample();
            (s, figures)
        })
        .await
        else {
            return;
        };
        gauge.set(cpu, mem);
        sampler = Some(s_back);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In-flight counts follow guards; figures are clamped to permille.
    #[test]
    fn gauge_counts_and_clamps() {
        let gauge = LoadGauge::new();
        let a = gauge.begin();
        let b = gauge.begin();
        assert_eq!(gauge.load().inflight, 2);
        drop(a);
        drop(b);
        assert_eq!(gauge.load().inflight, 0);
        gauge.set(2000, 400);
        assert_eq!(gauge.load().cpu_permille, 1000);
        assert_eq!(gauge.load().mem_permille, 400);
    }

    /// A real sample is within permille bounds (the machine has some memory in use).
    #[test]
    fn sampler_reports_permille() {
        let (cpu, mem) = LoadSampler::new().sample();
        assert!(cpu <= 1000);
        assert!(mem > 0 && mem <= 1000);
    }
}
