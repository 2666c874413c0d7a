//! Clock faults: a node run under libfaketime (Debian package `faketime`), so that its clock
//! runs fast or slow (a rate) or its wall clock is off (an offset). libfaketime intercepts
//! `clock_gettime`, `CLOCK_MONOTONIC` included, so Rust's `Instant` (leases, election timers,
//! tokio's timers) follows the faked rate; [`verify`] proves that on this machine before a
//! run relies on it, with the `shoal-clock-probe` binary.
//!
//! The node's configured `drift_margin_ms` (30 of a 300 ms lease by default) is the clock
//! error the lease tolerates; rates within about 10 % stay inside it, see RELIABILITY.md.

use crate::netns::NetnsError;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where Debian's `faketime` package puts the library.
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
/// How long the probe's two readings are apart, in real time.
pub const PROBE_MS: u64 = 400;
/// How far the probe's measured rate may be from the asked one (scheduling noise), relative.
pub const RATE_TOLERANCE: f64 = 0.1;
/// How far the probe's wall clock may be from the asked offset.
pub const OFFSET_TOLERANCE_MS: i64 = 2_000;

/// One node's faked clock.
#[derive(Clone, Debug, PartialEq)]
pub struct ClockSkew {
    /// The host (node id) whose node runs with it.
    pub host: usize,
    /// How fast its clocks run: 1.05 is 5 % fast (applies to the monotonic clock too).
    pub rate: f64,
    /// Its wall clock's offset in seconds (the monotonic clock is not shifted).
    pub offset_s: i64,
}

impl ClockSkew {
    /// The `FAKETIME` value: "<offset>s x<rate>".
    pub fn faketime(&self) -> String {
        format!("{:+}s x{}", self.offset_s, self.rate)
    }

    /// `env` arguments that run a program under this clock.
    pub fn env(&self) -> Vec<String> {
        vec![format!("LD_PRELOAD={LIBFAKETIME}"), format!("FAKETIME={}", self.faketime())]
    }

    /// Parses `h3=x1.05`, `h2=-300s` or `h1=-300s,x0.9` (host, then a rate and/or an offset).
    pub fn parse(text: &str) -> Result<ClockSkew, String> {
        let (host, spec) = text.split_once('=').ok_or_else(|| format!("{text}: want hN=SPEC"))?;
        let host = host
            .trim_start_matches('h')
            .parse()
            .map_err(|_| format!("{text}: the host is h<number>"))?;
        let mut skew = ClockSkew { host, rate: 1.0, offset_s: 0 };
        for part in spec.split(',') {
            if let Some(rate) = part.strip_prefix('x') {
                skew.rate = rate.parse().map_err(|_| format!("{part}: a rate is x<float>"))?;
                if skew.rate.is_nan() || skew.rate <= 0.0 {
                    return Err(format!("{part}: a rate is positive"));
                }
            } else if let Some(offset) = part.strip_suffix('s') {
                skew.offset_s =
                    offset.parse().map_err(|_| format!("{part}: an offset is <+-int>s"))?;
            } else {
                return Err(format!("{part}: want x<rate> or <offset>s"));
            }
        }
        Ok(skew)
    }
}

/// Why clock faults cannot run here (libfaketime missing), or None.
pub fn skip_reason() -> Option<String> {
    (!Path::new(LIBFAKETIME).exists()).then(|| {
        format!("{LIBFAKETIME} is missing: apt-get install -y faketime (.ci/run does this as root)")
    })
}

/// The probe binary beside `sibling` (any binary of the same build, e.g. `shoal-fs`).
pub fn probe_beside(sibling: &Path) -> PathBuf {
    sibling.with_file_name("shoal-clock-probe")
}

/// What the probe saw under one clock: the rate of its monotonic clock against real time, and
/// its wall clock's offset.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProbeReading {
    pub rate: f64,
    pub offset_ms: i64,
}

/// Runs `probe` under `skew` and measures its clocks.
pub fn measure(probe: &Path, skew: &ClockSkew) -> Result<ProbeReading, NetnsError> {
    let mut child = Command::new("env")
        .args(skew.env())
        .arg(probe)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let mut reading = || -> Result<(u64, i64, Instant, i64), NetnsError> {
        stdin.write_all(b"\n")?;
        stdin.flush()?;
        let line = lines.next().ok_or_else(|| other("the probe printed nothing"))??;
        let real = Instant::now();
        let real_wall =
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let mut words = line.split_whitespace().map(str::parse::<i64>);
        match (words.next(), words.next()) {
            (Some(Ok(mono)), Some(Ok(wall))) => Ok((mono as u64, wall, real, real_wall)),
            _ => Err(other(&format!("the probe printed {line:?}"))),
        }
    };
    let (mono_a, wall_a, real_a, real_wall_a) = reading()?;
    std::thread::sleep(Duration::from_millis(PROBE_MS));
    let (mono_b, _, real_b, _) = reading()?;
    drop(stdin);
    let _ = child.wait();
    let real_ms = real_b.duration_since(real_a).as_secs_f64() * 1000.0;
    Ok(ProbeReading { rate: (mono_b - mono_a) as f64 / real_ms, offset_ms: wall_a - real_wall_a })
}

/// Checks, with the probe beside `sibling`, that every skew really reaches a Rust program:
/// its `Instant` runs at the rate asked (within [`RATE_TOLERANCE`]) and its wall clock is off
/// by the offset asked (within [`OFFSET_TOLERANCE_MS`]).
pub fn verify(sibling: &Path, skews: &[ClockSkew]) -> Result<(), NetnsError> {
    if let Some(reason) = skip_reason() {
        return Err(other(&reason));
    }
    let probe = probe_beside(sibling);
    if !probe.exists() {
        return Err(other(&format!(
            "{} is missing: cargo build -p shoal-tests --bins",
            probe.display()
        )));
    }
    for skew in skews {
        let r = measure(&probe, skew)?;
        let rate_ok = (r.rate / skew.rate - 1.0).abs() <= RATE_TOLERANCE;
        let offset_ok = (r.offset_ms - skew.offset_s * 1000).abs() <= OFFSET_TOLERANCE_MS;
        if !rate_ok || !offset_ok {
            return Err(other(&format!(
                "libfaketime does not give FAKETIME=\"{}\" here: the probe's Instant ran at \
                 x{:.3} and its wall clock was {} ms off",
                skew.faketime(),
                r.rate,
                r.offset_ms
            )));
        }
    }
    Ok(())
}

fn other(text: &str) -> NetnsError {
    NetnsError::Io(std::io::Error::other(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Specs parse into host, rate and offset, render as a FAKETIME value, and bad specs are
    /// refused with the reason.
    #[test]
    fn clock_specs_parse_and_render() {
        let a = ClockSkew::parse("h3=x1.05").unwrap();
        assert_eq!(a, ClockSkew { host: 3, rate: 1.05, offset_s: 0 });
        assert_eq!(a.faketime(), "+0s x1.05");
        let b = ClockSkew::parse("h2=-300s,x0.9").unwrap();
        assert_eq!(b, ClockSkew { host: 2, rate: 0.9, offset_s: -300 });
        assert_eq!(b.faketime(), "-300s x0.9");
        assert!(b.env()[0].starts_with("LD_PRELOAD="));
        assert!(ClockSkew::parse("h1").is_err());
        assert!(ClockSkew::parse("h1=x0").is_err());
        assert!(ClockSkew::parse("h1=5m").is_err());
    }
}
