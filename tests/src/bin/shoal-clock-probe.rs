//! `shoal-clock-probe`: for every line on stdin, prints the milliseconds `Instant` says have
//! passed since start and the wall clock (ms since the Unix epoch). The clock-fault harness
//! (`shoal_tests::clock::verify`) runs it under libfaketime to check that a faked clock really
//! reaches what a Rust program (and so `shoal-fs`, its leases and timers) sees.

use std::io::{BufRead, Write};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

fn main() {
    let start = Instant::now();
    let stdout = std::io::stdout();
    for line in std::io::stdin().lock().lines() {
        if line.is_err() {
            break;
        }
        let wall_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let mut out = stdout.lock();
        let _ = writeln!(out, "{} {wall_ms}", start.elapsed().as_millis());
        let _ = out.flush();
    }
}
