//! The storage host's front: answers Request / Update / Rename / Lock, keeps a server-side LRU
//! of hot values, announces FSLive, and runs the file-transfer donor and receiver. It reaches
//! storage and replication only through the [`Backend`] trait that `fs-node` implements.
//!
//! # Layout
//! (filled in as the modules land)
