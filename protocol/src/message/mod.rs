//! Every message payload, one file per family, and the [`Message`] enum that names them by a
//! one-byte kind carried in the header.
//!
//! - [`data`]: Request (reads), Update (writes and committed-change notices), Rename.
//! - [`lock`]: Lock, sessions, LockChanged.
//! - [`live`]: FSLive, Freeze.
//! - [`transfer`]: RequestFile, TransFile, FileTransMessage request/block, Backup.
//! - [`replication`]: vote, heartbeat, prepare, prepare-ok, sync, proposal, accept, commit.
//! - [`layer`]: the messaging layer's negative acks and stability/credit reports.

pub mod data;
pub mod layer;
pub mod live;
pub mod lock;
pub mod replication;
pub mod transfer;

use crate::codec;
use crate::error::ProtocolError;
use crate::limits::MESSAGE_BYTES_MAX;

macro_rules! messages {
    ($($variant:ident($ty:ty) = $kind:literal,)*) => {
        /// Every message Shoal sends. The discriminant is the header's `kind` byte.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum Message {
            $($variant($ty),)*
        }

        /// The header's `kind` byte.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum MessageKind {
            $($variant = $kind,)*
        }

        impl MessageKind {
            pub fn from_byte(b: u8) -> Result<MessageKind, ProtocolError> {
                match b {
                    $($kind => Ok(MessageKind::$variant),)*
                    other => Err(ProtocolError::UnknownKind(other)),
                }
            }

            pub const ALL: &'static [MessageKind] = &[$(MessageKind::$variant,)*];
        }

        impl Message {
            pub fn kind(&self) -> MessageKind {
                match self {
                    $(Message::$variant(_) => MessageKind::$variant,)*
                }
            }

            /// Encodes the payload (the header is added by the messaging layer).
            pub fn encode_payload(&self) -> Result<Vec<u8>, ProtocolError> {
                match self {
                    $(Message::$variant(m) => codec::encode(m, MESSAGE_BYTES_MAX),)*
                }
            }

            /// Reads a message of `kind` from any serde deserializer (the payload types do
            /// not depend on bincode; tests use this to generate values of every kind).
            pub fn deserialize_kind<'de, D: serde::Deserializer<'de>>(
                kind: MessageKind,
                deserializer: D,
            ) -> Result<Message, D::Error> {
                match kind {
                    $(MessageKind::$variant => {
                        <$ty as serde::Deserialize>::deserialize(deserializer).map(Message::$variant)
                    })*
                }
            }

            /// The exact length of [`Message::encode_payload`]'s output, without encoding.
            pub fn encoded_len(&self) -> Result<usize, ProtocolError> {
                match self {
                    $(Message::$variant(m) => codec::encoded_len(m),)*
                }
            }

            /// Decodes a payload of the given kind byte. Refuses a payload over
            /// [`MESSAGE_BYTES_MAX`] and any sequence over its named limit before allocating.
            pub fn decode_payload(kind: u8, payload: &[u8]) -> Result<Message, ProtocolError> {
                match MessageKind::from_byte(kind)? {
                    $(MessageKind::$variant => Ok(Message::$variant(
                        codec::decode(payload, stringify!($variant), MESSAGE_BYTES_MAX)?,
                    )),)*
                }
            }
        }
    };
}

messages! {
    Request(data::ReadRequest) = 1,
    ReadReply(data::ReadReply) = 2,
    Update(data::UpdateRequest) = 3,
    WriteReply(data::WriteReply) = 4,
    UpdateNotice(data::UpdateNotice) = 5,
    Rename(data::RenameRequest) = 6,
    Lock(lock::LockRequest) = 7,
    LockReply(lock::LockReply) = 8,
    LockChanged(lock::LockChanged) = 9,
    Freeze(live::Freeze) = 10,
    FsLive(live::FsLive) = 11,
    RequestFile(transfer::RequestFile) = 12,
    TransFile(transfer::TransFile) = 13,
    FileTransRequest(transfer::FileTransRequest) = 14,
    FileTransBlock(transfer::FileTransBlock) = 15,
    Backup(transfer::Backup) = 16,
    Vote(replication::Vote) = 32,
    Heartbeat(replication::Heartbeat) = 33,
    Prepare(replication::Prepare) = 34,
    PrepareOk(replication::PrepareOk) = 35,
    Sync(replication::Sync) = 36,
    Proposal(replication::Proposal) = 37,
    Accept(replication::Accept) = 38,
    Commit(replication::Commit) = 39,
    Nak(layer::Nak) = 64,
    Stability(layer::Stability) = 65,
    SenderStatus(layer::SenderStatus) = 66,
}
