//! What can be wrong with a ring: a malformed chain (dropped) or an
//! impossible ring state (the link is dropped).

use crate::memory::OutOfBounds;

/// A malformed descriptor chain: the chain is dropped, the link carries on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// A head or `next` index is not below the queue size.
    #[error("descriptor index {index} >= queue size {size}")]
    BadIndex {
        /// The index the peer wrote.
        index: u16,
        /// The queue size.
        size: u16,
    },
    /// A buffer does not lie inside the owner's memory.
    #[error("descriptor buffer {addr:#x}+{len} outside {mem} bytes of memory")]
    OutOfBounds {
        /// Address the peer wrote.
        addr: u64,
        /// Length the peer wrote.
        len: u32,
        /// Memory size.
        mem: u64,
    },
    /// The chain is longer than the queue or [`crate::garbage::MAX_CHAIN`]:
    /// it loops (or is too long to be a packet we walk).
    #[error("looped descriptor chain (more than {size} descriptors)")]
    Loop {
        /// The limit it passed: the queue size or `MAX_CHAIN`.
        size: u16,
    },
    /// A device-writable buffer in a chain we only read, or the reverse.
    #[error("descriptor {index} has the wrong direction (writable = {writable})")]
    WrongDirection {
        /// The descriptor index.
        index: u16,
        /// Its WRITE flag.
        writable: bool,
    },
    /// An indirect descriptor, which we do not negotiate.
    #[error("indirect descriptor {index} (not negotiated)")]
    Indirect {
        /// The descriptor index.
        index: u16,
    },
    /// The chain adds up to more than 4 GiB or a zero length.
    #[error("chain length {total} is not a usable packet length")]
    BadLength {
        /// Total bytes.
        total: u64,
    },
}

/// Ring state that cannot happen with an honest peer: the link is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// The avail index moved by more than the queue size since we looked.
    #[error("avail index jumped from {from} to {to} (queue size {size})")]
    AvailJump {
        /// Where we were.
        from: u16,
        /// What the peer wrote.
        to: u16,
        /// The queue size.
        size: u16,
    },
    /// The used index moved by more than the buffers in flight (or went back).
    #[error("used index moved from {from} to {to} with only {in_flight} buffers in flight")]
    UsedJump {
        /// Where we were.
        from: u16,
        /// What the peer wrote.
        to: u16,
        /// Buffers we had given the device.
        in_flight: u16,
    },
    /// A used entry names a descriptor that was not in flight.
    #[error("used entry names descriptor {id}, which was not in flight")]
    BadUsedId {
        /// The id the peer wrote.
        id: u32,
    },
    /// A chain our own guest posted is malformed (our guest's bug, or our
    /// memory scribbled on).
    #[error("own chain: {0}")]
    OwnChain(ChainError),
    /// A queue size that is not a power of two from 1 to 32768 (the ring
    /// is refused when it is set up).
    #[error("queue size {size} is not a power of two from 1 to 32768")]
    BadSize {
        /// The size given.
        size: u32,
    },
    /// A ring field outside memory (our layout is checked, so this is a bug
    /// or a handshake that slipped through).
    #[error(transparent)]
    Memory(#[from] OutOfBounds),
}
