//! Hostile length prefixes cost no memory: decoding payloads that claim 2^60 elements or
//! bytes is refused while allocating almost nothing. A counting global allocator measures the
//! bytes allocated during each decode.
//!
//! One `#[test]` only: the counter is process-wide, and a second test running in parallel
//! would add its own allocations to it.

use protocol::error::ProtocolError;
use protocol::message::{Message, MessageKind};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCATED_BYTES: AtomicUsize = AtomicUsize::new(0);
static LARGEST_BYTES: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        LARGEST_BYTES.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED_BYTES.fetch_add(new_size, Ordering::Relaxed);
        LARGEST_BYTES.fetch_max(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Bytes allocated in total and in the largest single allocation while decoding.
fn measure(kind: MessageKind, payload: &[u8]) -> (Result<Message, ProtocolError>, usize, usize) {
    ALLOCATED_BYTES.store(0, Ordering::SeqCst);
    LARGEST_BYTES.store(0, Ordering::SeqCst);
    let result = Message::decode_payload(kind as u8, payload);
    let total = ALLOCATED_BYTES.load(Ordering::SeqCst);
    let largest = LARGEST_BYTES.load(Ordering::SeqCst);
    (result, total, largest)
}

/// bincode varint of a u64 in its 8-byte form.
fn varint_u64(v: u64) -> Vec<u8> {
    let mut out = vec![253];
    out.extend_from_slice(&v.to_le_bytes());
    out
}

/// What the decoder may allocate for a refused hostile payload: the error's text and the
/// boxed bincode error, nothing proportional to the claim.
const HOSTILE_ALLOC_BYTES_MAX: usize = 1024;

#[test]
fn hostile_length_prefixes_allocate_nothing_proportional() {
    // 1. Nak whose ranges claim 2^60 elements: refused on the named count limit.
    let mut nak = vec![5, 1];
    nak.extend(varint_u64(1 << 60));
    let (result, total, _) = measure(MessageKind::Nak, &nak);
    assert!(matches!(result, Err(ProtocolError::TooMany { count, .. }) if count == 1 << 60));
    assert!(total <= HOSTILE_ALLOC_BYTES_MAX, "Nak 2^60: {total} bytes allocated");

    // 2. Proposal whose entries claim 2^60 elements (from, epoch, prev, then the count).
    let mut proposal = vec![1, 1, 0];
    proposal.extend(varint_u64(1 << 60));
    let (result, total, _) = measure(MessageKind::Proposal, &proposal);
    assert!(matches!(result, Err(ProtocolError::TooMany { .. })), "{result:?}");
    assert!(total <= HOSTILE_ALLOC_BYTES_MAX, "Proposal 2^60: {total} bytes allocated");

    // 3. Backup to a directory whose name claims 2^60 bytes: the slice reader refuses it.
    let mut backup = vec![0];
    backup.extend(varint_u64(1 << 60));
    let (result, total, _) = measure(MessageKind::Backup, &backup);
    assert!(matches!(result, Err(ProtocolError::Malformed { .. })), "{result:?}");
    assert!(total <= HOSTILE_ALLOC_BYTES_MAX, "Backup 2^60: {total} bytes allocated");

    // 4. A block whose data claims 2^60 bytes (transfer, file, block, md5, then the length).
    let mut block = vec![1, 0, 0];
    block.extend([0u8; 16]);
    block.extend(varint_u64(1 << 60));
    let (result, total, _) = measure(MessageKind::FileTransBlock, &block);
    assert!(matches!(result, Err(ProtocolError::Malformed { .. })), "{result:?}");
    assert!(total <= HOSTILE_ALLOC_BYTES_MAX, "FileTransBlock 2^60: {total} bytes allocated");

    // 5. A count within its limit (4096 ops) that the payload cannot back: reserved memory
    //    is capped by codec::PREALLOC_BYTES_MAX, not by the claim times the element size.
    let mut update = vec![1, 1, 0]; // request (client 1, seq 1), no conditions
    update.extend([251, 0x00, 0x10]); // 4096 ops, u16 varint form
    let (result, total, largest) = measure(MessageKind::Update, &update);
    assert!(matches!(result, Err(ProtocolError::Malformed { .. })), "{result:?}");
    assert!(
        largest <= protocol::codec::PREALLOC_BYTES_MAX,
        "Update 4096 ops: one allocation of {largest} bytes"
    );
    assert!(
        total <= protocol::codec::PREALLOC_BYTES_MAX + HOSTILE_ALLOC_BYTES_MAX,
        "Update 4096 ops: {total} bytes allocated"
    );
}
