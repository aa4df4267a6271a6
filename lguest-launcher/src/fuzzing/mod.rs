//! Fuzzing the copier: a decoded list of ring operations, replayed against a
//! real [`Copier`] over two real memfds, with the invariants checked after
//! every step.
//!
//! The copier serves a ring that lives in a hostile peer's memory. The peer
//! can write anything into its descriptor table and avail ring, at any time,
//! in any order, and our own guest posts and reaps RX buffers at its own
//! pace. An [`Op`] is one such step; [`replay`] builds the two memories (the
//! peer's, with its TX ring at a fixed place, and ours, laid out by
//! [`Layout::plan`] as a real run lays it out), applies the ops in order,
//! and after every [`Op::Poll`] checks that
//!
//! 1. the poll returned `Ok`, or a named [`CopyError::PeerRing`] (which ends
//!    the link, and the replay: later ops are ignored); never another error,
//!    never a panic;
//! 2. it did bounded work: at most one queue's worth of chains, and exactly
//!    as many [`Event`]s as the [`Outcome`] counts;
//! 3. [`run::account`](crate::run::account) counted every
//!    [`Event::Dropped`] exactly once, in the stats field of its class, and
//!    every [`Event::Delivered`] once with its bytes; an `rx_full` outcome
//!    once; a notification exactly when the outcome asked for one;
//! 4. the peer's used index advanced by exactly `moved + dropped`, and the
//!    new used entries name the peer's heads in event order, with length 0;
//! 5. our RX used index advanced by exactly `moved`, and each new entry
//!    names a buffer our guest posted and has not reaped, with a length
//!    that fits that buffer;
//! 6. nothing changed in our memory outside our RX used ring and the
//!    delivered bytes of the delivered buffers, and nothing in the peer's
//!    memory outside its used ring;
//! 7. a poll left no work behind that it could have done
//!    ([`Copier::has_work`] is false after it).
//!
//! Our guest's side is checked when it reaps ([`Op::ReapRx`]): the
//! [`DriverQueue`] accepts every used entry the copier wrote.
//!
//! Two drivers feed [`replay`]:
//!
//! * the proptests at the bottom of this file (stable, part of
//!   `cargo test --release -p lguest-launcher`), which generate [`Case`]s with
//!   proptest strategies biased towards the interesting boundaries. Failures
//!   are saved in `lguest-launcher/proptest-regressions/fuzzing/tests.txt` and
//!   replayed first on every later run; keep that file committed. A longer
//!   run: `PROPTEST_CASES=200000 cargo test --release -p lguest-launcher fuzz_`;
//! * `lguest-launcher/fuzz/`, a cargo-fuzz crate (nightly) whose target
//!   decodes a [`Case`] from libFuzzer's bytes with `arbitrary` (feature
//!   `fuzzing`). A crash file it finds goes into
//!   `lguest-launcher/fuzz/corpus-regressions/`, where a stable test
//!   (`cargo test --release -p lguest-launcher --features fuzzing`) replays it.

mod checks;
mod replay;
#[cfg(test)]
mod tests;
mod transport_stub;

pub use replay::replay;

use crate::copier::{Copier, CopyError, DropReason, Event, Outcome};
use crate::guest::plan::{Layout, BUF_SIZE};
use crate::memory::{GuestMap, GuestMemory, Region};
use crate::stats::Stats;
use crate::virtq::{DriverQueue, NotifyMode, RingError};
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use transport::{ConnectOptions, Handshake, Notify, PeerInfo, RingInfo, Transport, Wakeup};

/// Bytes of the peer's memory: its TX ring in the first page, buffers
/// anywhere up to the end (and descriptors pointing past it).
pub const PEER_MEM: u64 = 1 << 16;
/// Where the peer's used ring starts (the descriptor table and avail ring
/// of the largest queue fit below it).
pub const PEER_USED: u64 = 4096;
/// Largest peer queue: `1 << MAX_PEER_QUEUE_LOG2`.
pub const MAX_PEER_QUEUE_LOG2: u8 = 5;
/// Our RX queue size (the same plan a real run makes, scaled down).
pub const OWN_QUEUE: u32 = 8;

/// One step of a hostile peer or of our own guest, decoded from fuzz input.
/// Every field takes any value: an index out of range, a length of
/// `u32::MAX` and an avail index that jumps are all part of the game.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
pub enum Op {
    /// The peer writes descriptor `index` of its TX table (taken modulo the
    /// queue size, so the write lands in the table).
    WriteDesc {
        /// Table entry (modulo the queue size).
        index: u16,
        /// Guest address of the buffer.
        addr: u64,
        /// Buffer length.
        len: u32,
        /// `VRING_DESC_F_*` bits, any of them.
        flags: u16,
        /// The `next` link, unchecked.
        next: u16,
    },
    /// The peer puts `head` in its next avail slot and publishes the avail
    /// index one further (what an honest driver does).
    PublishAvail {
        /// The chain's head, unchecked.
        head: u16,
    },
    /// The peer stores any value as its avail index (jumps, rewinds).
    SetAvailIdx(u16),
    /// The peer writes `byte` at `at` modulo the extent of its ring
    /// (descriptors, avail ring, used ring — the one we write — included).
    Scribble {
        /// Offset (modulo the ring's extent).
        at: u16,
        /// The byte.
        byte: u8,
    },
    /// The peer sets its interrupt suppression: avail flags and `used_event`.
    PeerSuppress {
        /// `VRING_AVAIL_F_NO_INTERRUPT` and whatever else.
        flags: u16,
        /// `used_event`.
        used_event: u16,
    },
    /// Our guest posts up to `count` RX buffers of `len` bytes (clamped to
    /// a slot, at least 1) and publishes them.
    PostRx {
        /// How many (modulo one queue plus one).
        count: u8,
        /// Bytes per buffer.
        len: u32,
    },
    /// Our guest reaps every used RX buffer.
    ReapRx,
    /// Our guest asks for interrupts (or not).
    GuestInterrupts(bool),
    /// The copier asks the peer for kicks (or not), as before sleeping.
    PeerNotifications(bool),
    /// The copier asks our guest for kicks (or not).
    RxNotifications(bool),
    /// The copier polls; its outcome is accounted as a run does.
    Poll,
}

/// Notification suppression mode of a replay (a local copy of
/// [`NotifyMode`] so that fuzz input can pick it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
pub enum Mode {
    /// [`NotifyMode::Always`].
    Always,
    /// [`NotifyMode::Flags`].
    Flags,
    /// [`NotifyMode::EventIdx`].
    #[default]
    EventIdx,
}

impl From<Mode> for NotifyMode {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Always => NotifyMode::Always,
            Mode::Flags => NotifyMode::Flags,
            Mode::EventIdx => NotifyMode::EventIdx,
        }
    }
}

/// The fixed part of a replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
pub struct Config {
    /// The peer's queue size is `1 << (peer_queue_log2 % 6)`: 1 to 32.
    pub peer_queue_log2: u8,
    /// Suppression mode both sides use.
    pub mode: Mode,
    /// Our guest takes interrupts ([`Copier::with_guest_interrupts`]).
    pub guest_interrupts: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            peer_queue_log2: 3,
            mode: Mode::EventIdx,
            guest_interrupts: false,
        }
    }
}

impl Config {
    /// The peer's queue size.
    pub fn peer_queue(&self) -> u32 {
        1 << (self.peer_queue_log2 % (MAX_PEER_QUEUE_LOG2 + 1))
    }

    /// Where the peer's TX ring lies in its memory.
    pub fn peer_ring(&self) -> RingInfo {
        let size = self.peer_queue();
        RingInfo {
            desc: 0,
            avail: 16 * size as u64,
            used: PEER_USED,
            size,
        }
    }
}

/// One fuzz input: the configuration and the operations. The fuzz target
/// decodes this from libFuzzer's bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
pub struct Case {
    /// The fixed part.
    pub cfg: Config,
    /// The steps.
    pub ops: Vec<Op>,
}

/// What a replay did, for tests that expect particular outcomes.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Polls made.
    pub polls: usize,
    /// Frames delivered into our RX ring.
    pub moved: u64,
    /// Peer chains dropped.
    pub dropped: u64,
    /// Drops by [`DropReason::name`].
    pub drops_by_reason: BTreeMap<&'static str, u64>,
    /// RX buffers our guest reaped.
    pub reaped: u64,
    /// Notifications the copier sent to the peer.
    pub notifies: u64,
    /// The stats [`run::account`](crate::run::account) kept.
    pub stats: Stats,
    /// The named error that ended the link, if one did (at op index `.0`).
    pub link_dropped: Option<(usize, RingError)>,
}

/// An invariant that did not hold: a bug in the copier (or in its
/// accounting), found at op index `op`.
#[derive(Debug, thiserror::Error)]
pub enum Violation {
    /// The harness could not set up its memories (not a finding).
    #[error("setup: {0}")]
    Setup(String),
    /// The copier returned an error other than a named peer-ring error.
    #[error("op {op}: unexpected error {error}")]
    UnexpectedError {
        /// Op index.
        op: usize,
        /// The error.
        error: String,
    },
    /// More chains finished in one poll than the peer's queue holds.
    #[error("op {op}: {done} chains in one poll on a ring of {size}")]
    TooMuchWork {
        /// Op index.
        op: usize,
        /// Chains finished.
        done: usize,
        /// Queue size.
        size: u32,
    },
    /// The outcome and the events disagree.
    #[error("op {op}: outcome {outcome:?} does not match events {events:?}")]
    OutcomeMismatch {
        /// Op index.
        op: usize,
        /// The outcome.
        outcome: Outcome,
        /// The events.
        events: Vec<Event>,
    },
    /// A stats counter moved by other than what the events say.
    #[error("op {op}: counter {counter} moved by {counted}, events say {expected}")]
    Miscounted {
        /// Op index.
        op: usize,
        /// Stats field.
        counter: &'static str,
        /// How much it moved.
        counted: u64,
        /// How much the events say.
        expected: u64,
    },
    /// The peer's used ring does not reflect exactly the finished chains.
    #[error("op {op}: peer used ring: {what}")]
    PeerUsed {
        /// Op index.
        op: usize,
        /// What is wrong.
        what: String,
    },
    /// Our RX used ring names a buffer we did not post, or a length that
    /// does not fit, or moved by other than the delivered frames.
    #[error("op {op}: RX used ring: {what}")]
    RxUsed {
        /// Op index.
        op: usize,
        /// What is wrong.
        what: String,
    },
    /// A byte changed where the copier must not write.
    #[error("op {op}: byte {offset:#x} of {mem} memory changed outside {allowed}")]
    StrayWrite {
        /// Op index.
        op: usize,
        /// `own` or `peer`.
        mem: &'static str,
        /// Offset in that memory.
        offset: u64,
        /// Where writes are allowed.
        allowed: &'static str,
    },
    /// A poll returned with work it could have done.
    #[error("op {op}: has_work() is true right after a poll")]
    LeftWork {
        /// Op index.
        op: usize,
    },
}
