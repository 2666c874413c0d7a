//! The client's one clock.

use std::time::Instant;

/// The monotonic clock: tokio's, so that paused-time tests control it.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}
