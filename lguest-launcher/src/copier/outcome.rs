//! What the copier reports: why it stopped a link ([`CopyError`]), why
//! it dropped a chain ([`DropReason`]), each packet's fate ([`Event`]),
//! what one poll did ([`Outcome`]) and ring occupancy ([`Occupancy`]).

use crate::virtq::{ChainError, RingError, Seg};

/// Why the copier stopped the link.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The peer's ring is in an impossible state.
    #[error("peer ring: {0}")]
    PeerRing(RingError),
    /// Our own ring is broken (our guest's bug, or memory scribbled on).
    #[error("own ring: {0}")]
    OwnRing(RingError),
    /// The transport failed (peer gone, I/O).
    #[error(transparent)]
    Transport(#[from] transport::Error),
}

/// Why a chain of the peer's was dropped. The link carries on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The chain itself is malformed (bad index, out of bounds, loop, wrong
    /// direction, indirect, unusable length).
    Malformed(ChainError),
    /// A well-formed frame larger than the RX buffer our guest posted.
    Oversized {
        /// The frame's length.
        len: u32,
        /// Room in our RX buffer.
        room: u32,
    },
    /// The frame's `virtio_net_hdr` asks for an offload no honest driver
    /// asks for, or one that cannot be done for our guest (see
    /// [`crate::offload`]).
    BadOffload(crate::offload::OffloadError),
}

impl DropReason {
    /// The stable name of the reason, as stats and reports spell it.
    pub fn name(&self) -> &'static str {
        match self {
            DropReason::Malformed(ChainError::BadIndex { .. }) => "bad_index",
            DropReason::Malformed(ChainError::OutOfBounds { .. }) => "out_of_bounds",
            DropReason::Malformed(ChainError::Loop { .. }) => "loop",
            DropReason::Malformed(ChainError::WrongDirection { .. }) => "wrong_direction",
            DropReason::Malformed(ChainError::Indirect { .. }) => "indirect",
            DropReason::Malformed(ChainError::BadLength { .. }) => "bad_length",
            DropReason::Oversized { .. } => "oversized",
            DropReason::BadOffload(_) => "bad_offload",
        }
    }
}

/// One packet's fate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A frame of `len` bytes went from the peer's TX chain `peer_head` into
    /// our RX chain `rx_head`.
    Delivered {
        /// Head of the peer's TX chain.
        peer_head: u16,
        /// Head of our RX chain that now holds the frame.
        rx_head: u16,
        /// Frame bytes.
        len: u32,
        /// The first piece of our RX chain (an offset in our memory), so
        /// a capture tap reads the frame's start without walking the
        /// chain again.
        rx_first: Seg,
    },
    /// The peer's chain `peer_head` was dropped and returned with length 0.
    Dropped {
        /// Head of the peer's TX chain.
        peer_head: u16,
        /// Why.
        reason: DropReason,
    },
}

/// What one [`Copier::poll`](super::Copier::poll) did; the packets themselves are in
/// [`Copier::events`](super::Copier::events).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Frames delivered into our RX ring.
    pub moved: usize,
    /// Their bytes, counted per poll so the caller need not walk
    /// [`Copier::events`](super::Copier::events) for them.
    pub bytes: u64,
    /// Peer chains dropped.
    pub dropped: usize,
    /// The peer had a chain but our guest had posted no RX buffer: it was
    /// left in place for the next poll.
    pub rx_full: bool,
    /// The peer's TX used index moved and its suppression state asks to be
    /// told (the caller notifies through [`Copier::link`](super::Copier::link)).
    pub peer_wants_kick: bool,
    /// The peer's TX used index moved but it asked not to be told.
    pub peer_kick_suppressed: bool,
    /// Our RX used index went from `.0` to `.1`.
    pub rx_used: Option<(u16, u16)>,
    /// Our guest asked for an interrupt for `rx_used` (only computed for a
    /// guest that takes interrupts: see [`Copier::with_guest_interrupts`](super::Copier::with_guest_interrupts)).
    pub guest_wants_irq: bool,
    /// The peer's dropped chains spent their budget for this window
    /// ([`crate::garbage`]): its ring is left alone until the window ends.
    pub throttled: bool,
}

impl Outcome {
    /// Peer chains finished, delivered or dropped.
    pub fn finished(&self) -> usize {
        self.moved + self.dropped
    }
}

/// Ring occupancy at one look ([`Copier::occupancy`](super::Copier::occupancy)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Occupancy {
    /// Our RX ring's size.
    pub rx_size: u16,
    /// RX buffers posted by our guest and not yet filled.
    pub rx_posted: u16,
    /// The peer's TX ring's size.
    pub peer_tx_size: u16,
    /// Chains on the peer's TX ring not yet taken.
    pub peer_tx_pending: u16,
}

impl Occupancy {
    /// Put these into the stats' live fields.
    pub fn record(&self, stats: &mut crate::stats::Stats) {
        stats.rx_ring_size = self.rx_size.into();
        stats.rx_ring_posted = self.rx_posted.into();
        stats.rx_ring_in_use = self.rx_size.saturating_sub(self.rx_posted).into();
        stats.peer_tx_size = self.peer_tx_size.into();
        stats.peer_tx_pending = self.peer_tx_pending.into();
    }
}
