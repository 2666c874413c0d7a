//! The reliable, flow-controlled multicast messaging layer.
//!
//! Owned by the messaging work: an IO-free core (per-sender windows, NAKs, retransmit buffer,
//! stability and credit, fragmentation, incarnations) and the socket driver around it.
