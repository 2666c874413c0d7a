//! WGL/porcupine-style linearizability checker (owned by the replication work).
