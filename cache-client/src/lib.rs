//! The Shoal client library: what user agents link.
//!
//! # Layout
//! (filled in as the modules land)
