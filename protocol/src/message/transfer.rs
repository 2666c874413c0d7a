//! RequestFile, TransFile, FileTransMessage (request and block) and Backup.

use crate::{NodeId, Zxid};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Receiver → donor: send me your data files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestFile {
    pub receiver: NodeId,
    /// What the receiver has applied (the donor may answer with log records instead).
    pub applied: Zxid,
    pub purpose: TransferPurpose,
    /// Free disk bytes at the receiver, so the donor can refuse early.
    pub free_bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferPurpose {
    Join,
    CatchUp,
    Backup,
}

/// Donor → receivers: the offer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransFile {
    pub transfer: u64,
    pub donor: NodeId,
    /// The data files are consistent up to this zxid; the receiver catches up from there.
    pub snapshot_zxid: Zxid,
    #[serde(
        deserialize_with = "crate::codec::bounded::vec::<_, _, { crate::limits::TRANSFER_FILES_MAX }>"
    )]
    pub files: Vec<FileOffer>,
    /// The multicast group this transfer uses alone, "ip:port".
    pub group: String,
    pub block_bytes: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOffer {
    pub name: String,
    pub size: u64,
    pub md5: [u8; 16],
}

/// Receiver → donor: send these blocks again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileTransRequest {
    pub transfer: u64,
    pub receiver: NodeId,
    /// (file index, first block, block count).
    #[serde(
        deserialize_with = "crate::codec::bounded::vec::<_, _, { crate::limits::NAK_RANGES_MAX }>"
    )]
    pub ranges: Vec<(u32, u64, u32)>,
    /// The receiver has everything and checked every file.
    pub done: bool,
}

/// Donor → transfer group: one block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileTransBlock {
    pub transfer: u64,
    pub file: u32,
    pub block: u64,
    pub md5: [u8; 16],
    pub data: Bytes,
}

/// Operator → FS: make a consistent backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    pub target: BackupTarget,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackupTarget {
    Directory(String),
    Node(NodeId),
}
