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
//!   are saved in `lguest-launcher/proptest-regressions/fuzzing.txt` and
//!   replayed first on every later run; keep that file committed. A longer
//!   run: `PROPTEST_CASES=200000 cargo test --release -p lguest-launcher fuzz_`;
//! * `lguest-launcher/fuzz/`, a cargo-fuzz crate (nightly) whose target
//!   decodes a [`Case`] from libFuzzer's bytes with `arbitrary` (feature
//!   `fuzzing`). A crash file it finds goes into
//!   `lguest-launcher/fuzz/corpus-regressions/`, where a stable test
//!   (`cargo test --release -p lguest-launcher --features fuzzing`) replays it.

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

/// A transport stand-in: counts notifications; the copier needs a
/// transport for its type and `as_fd` wants a real fd (`/dev/null`).
struct CountingTransport {
    notifies: AtomicU64,
    fd: std::fs::File,
}

impl CountingTransport {
    fn new() -> std::io::Result<Self> {
        Ok(CountingTransport {
            notifies: AtomicU64::new(0),
            fd: std::fs::File::open("/dev/null")?,
        })
    }
}

impl Transport for CountingTransport {
    const KIND: &'static str = "counting";
    fn connect(
        _: &Path,
        _: &Handshake,
        _: BorrowedFd<'_>,
        _: &ConnectOptions,
    ) -> transport::Result<(Self, PeerInfo)> {
        Err(transport::Error::NotImplemented("counting"))
    }
    fn notify(&self) -> transport::Result<Notify> {
        self.notifies.fetch_add(1, Ordering::Relaxed);
        Ok(Notify::Sent)
    }
    fn wait(&self, _: Option<Duration>) -> transport::Result<Wakeup> {
        Ok(Wakeup::Timeout)
    }
    fn as_fd(&self) -> BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.fd)
    }
    fn peer_pid(&self) -> u32 {
        1
    }
}

/// The stats field a drop of `reason` is counted in, by our own reading of
/// the stats contract (not by calling `account`, which is under test).
fn drop_counter(reason: &DropReason) -> &'static str {
    match reason.name() {
        "bad_index" => "peer_bad_index",
        "out_of_bounds" => "peer_out_of_bounds",
        "loop" => "peer_loop",
        "wrong_direction" => "peer_wrong_direction",
        "indirect" => "peer_indirect",
        _ => "peer_bad_length", // bad_length and oversized
    }
}

/// The counters [`replay`] checks, by stats field name.
fn counters(s: &Stats) -> [(&'static str, u64); 10] {
    [
        ("packets_copied", s.packets_copied),
        ("bytes_copied", s.bytes_copied),
        ("rx_ring_full", s.rx_ring_full),
        ("peer_errors", s.peer_errors),
        ("peer_bad_index", s.peer_bad_index),
        ("peer_out_of_bounds", s.peer_out_of_bounds),
        ("peer_loop", s.peer_loop),
        ("peer_wrong_direction", s.peer_wrong_direction),
        ("peer_indirect", s.peer_indirect),
        ("peer_bad_length", s.peer_bad_length),
    ]
}

fn snapshot(mem: &Region) -> Vec<u8> {
    let mut v = vec![0u8; mem.len() as usize];
    // The whole region is in bounds by construction.
    let _ = mem.read("fuzz snapshot", 0, &mut v);
    v
}

/// The first offset where `a` and `b` differ outside `allowed` (sorted,
/// disjoint ranges); compared as slices so a clean run costs a memcmp.
fn stray_change(a: &[u8], b: &[u8], allowed: &[Range<u64>]) -> Option<u64> {
    let mut from = 0u64;
    let check = |r: Range<u64>| {
        let (s, e) = (r.start as usize, (r.end as usize).min(a.len()));
        if s < e && a[s..e] != b[s..e] {
            let i = (s..e).find(|&i| a[i] != b[i]).unwrap_or(s);
            return Some(i as u64);
        }
        None
    };
    for r in allowed {
        if let Some(i) = check(from..r.start) {
            return Some(i);
        }
        from = from.max(r.end);
    }
    check(from..a.len() as u64)
}

/// Our guest: the RX driver queue and what it has in flight.
struct Guest {
    mem: Region,
    rx: DriverQueue,
    info: RingInfo,
    bufs: u64,
    /// Posted, not yet reaped: buffer id -> its length.
    posted: HashMap<u16, u32>,
    /// Delivered by the copier, not yet reaped.
    delivered: HashMap<u16, u32>,
}

/// Peer state the harness keeps to play an honest driver's part.
struct Peer {
    mem: Region,
    info: RingInfo,
    next_avail: u16,
    /// Chains the copier finished so far: where its used index must be.
    used: u16,
}

fn ring_error(op: usize, error: RingError) -> Violation {
    Violation::UnexpectedError {
        op,
        error: format!("own guest: {error}"),
    }
}

/// Replay `ops` against a real copier (see the module docs for what is
/// checked). `Ok` says every invariant held; the report says what happened.
pub fn replay(ops: &[Op], cfg: &Config) -> Result<Report, Violation> {
    let setup = |e: &dyn std::fmt::Display| Violation::Setup(e.to_string());
    let info = cfg.peer_ring();
    let size = info.size;
    let peer_mem = GuestMemory::create("fuzz-peer", PEER_MEM).map_err(|e| setup(&e))?;
    let layout = Layout::plan(OWN_QUEUE);
    let own_mem = GuestMemory::create("fuzz-own", layout.needed).map_err(|e| setup(&e))?;
    let own = own_mem.region().clone();
    let mode: NotifyMode = cfg.mode.into();
    let mut copier = Copier::new(
        CountingTransport::new().map_err(|e| setup(&e))?,
        &GuestMap::identity(peer_mem.region().clone()),
        &info,
        &GuestMap::identity(own.clone()),
        &layout.rx,
        mode,
    )
    .map_err(|e| setup(&e))?;
    if cfg.guest_interrupts {
        copier = copier.with_guest_interrupts();
    }
    let mut peer = Peer {
        mem: peer_mem.region().clone(),
        info,
        next_avail: 0,
        used: 0,
    };
    let mut guest = Guest {
        mem: own.clone(),
        rx: DriverQueue::new(own.clone(), &layout.rx),
        info: layout.rx,
        bufs: layout.rx_bufs,
        posted: HashMap::new(),
        delivered: HashMap::new(),
    };
    let mut report = Report::default();
    let peer_extent = info.used + info.used_bytes();

    for (i, op) in ops.iter().enumerate() {
        // The peer's memory is in bounds for every write below by
        // construction (offsets are taken modulo its ring), so the results
        // are ignored rather than unwrapped: the harness must not panic.
        match *op {
            Op::WriteDesc {
                index,
                addr,
                len,
                flags,
                next,
            } => {
                let mut b = [0u8; 16];
                b[0..8].copy_from_slice(&addr.to_le_bytes());
                b[8..12].copy_from_slice(&len.to_le_bytes());
                b[12..14].copy_from_slice(&flags.to_le_bytes());
                b[14..16].copy_from_slice(&next.to_le_bytes());
                let at = info.desc + 16 * (index as u64 % size as u64);
                let _ = peer.mem.write("fuzz desc", at, &b);
            }
            Op::PublishAvail { head } => {
                let slot = peer.next_avail as u64 % size as u64;
                let _ = peer.mem.store_u16(
                    "fuzz avail",
                    info.avail + 4 + 2 * slot,
                    head,
                    Ordering::Relaxed,
                );
                peer.next_avail = peer.next_avail.wrapping_add(1);
                let _ = peer.mem.store_u16(
                    "fuzz avail idx",
                    info.avail + 2,
                    peer.next_avail,
                    Ordering::Release,
                );
            }
            Op::SetAvailIdx(idx) => {
                peer.next_avail = idx;
                let _ =
                    peer.mem
                        .store_u16("fuzz avail idx", info.avail + 2, idx, Ordering::Release);
            }
            Op::Scribble { at, byte } => {
                let _ = peer
                    .mem
                    .write("fuzz scribble", at as u64 % peer_extent, &[byte]);
            }
            Op::PeerSuppress { flags, used_event } => {
                let _ =
                    peer.mem
                        .store_u16("fuzz avail flags", info.avail, flags, Ordering::Relaxed);
                let _ = peer.mem.store_u16(
                    "fuzz used_event",
                    info.avail + 4 + 2 * size as u64,
                    used_event,
                    Ordering::Relaxed,
                );
            }
            Op::PostRx { count, len } => {
                let len = len.clamp(1, BUF_SIZE as u32);
                for _ in 0..count as u32 % (OWN_QUEUE + 1) {
                    match guest.rx.add_slot(guest.bufs, BUF_SIZE, len, true) {
                        Ok(Some((id, _))) => {
                            guest.posted.insert(id, len);
                        }
                        Ok(None) => break,
                        Err(e) => return Err(ring_error(i, e)),
                    }
                }
                guest.rx.publish().map_err(|e| ring_error(i, e))?;
            }
            Op::ReapRx => reap(i, &mut guest, &mut report)?,
            Op::GuestInterrupts(enable) => {
                let at = guest.rx.last_used();
                guest
                    .rx
                    .set_interrupts(mode, enable, at)
                    .map_err(|e| ring_error(i, e))?;
            }
            Op::PeerNotifications(enable) => {
                // Writes only the peer's used ring: never an error.
                if let Err(e) = copier.set_notifications(enable) {
                    return Err(Violation::UnexpectedError {
                        op: i,
                        error: e.to_string(),
                    });
                }
            }
            Op::RxNotifications(enable) => {
                if let Err(e) = copier.set_rx_notifications(enable) {
                    return Err(Violation::UnexpectedError {
                        op: i,
                        error: e.to_string(),
                    });
                }
            }
            Op::Poll => {
                if let Some(e) = poll(i, &mut copier, &mut peer, &mut guest, &mut report)? {
                    report.link_dropped = Some((i, e));
                    break; // the link is gone; so is the copier
                }
            }
        }
    }
    report.notifies = copier.link().notifies.load(Ordering::Relaxed);
    Ok(report)
}

/// Our guest pops every used RX buffer; each must be one the copier
/// delivered, with the length it delivered.
fn reap(op: usize, guest: &mut Guest, report: &mut Report) -> Result<(), Violation> {
    while let Some((id, len)) = guest.rx.pop_used().map_err(|e| ring_error(op, e))? {
        match guest.delivered.remove(&id) {
            Some(l) if l == len => {}
            other => {
                return Err(Violation::RxUsed {
                    op,
                    what: format!("reaped ({id}, {len}), delivered {other:?}"),
                })
            }
        }
        guest.posted.remove(&id);
        report.reaped += 1;
    }
    Ok(())
}

/// One poll and every check after it. `Ok(Some(e))`: the link ended with a
/// named peer-ring error.
fn poll(
    op: usize,
    copier: &mut Copier<CountingTransport>,
    peer: &mut Peer,
    guest: &mut Guest,
    report: &mut Report,
) -> Result<Option<RingError>, Violation> {
    let size = peer.info.size;
    let own = guest.mem.clone();
    let own_before = snapshot(&own);
    let peer_before = snapshot(&peer.mem);
    let rx_used_before = own
        .load_u16("fuzz", guest.info.used + 2, Ordering::Acquire)
        .unwrap_or_default();
    let stats_before = counters(&report.stats);
    let notifies_before = copier.link().notifies.load(Ordering::Relaxed);

    let out = match copier.poll() {
        Ok(out) => out,
        Err(CopyError::PeerRing(e)) => return Ok(Some(e)),
        Err(e) => {
            return Err(Violation::UnexpectedError {
                op,
                error: e.to_string(),
            })
        }
    };
    report.polls += 1;
    if let Err(e) = crate::run::account(copier, &out, &mut report.stats) {
        return Err(Violation::UnexpectedError {
            op,
            error: e.to_string(),
        });
    }
    let events = copier.events().to_vec();

    // 2. Bounded work, and the outcome agrees with the events.
    let done = out.finished();
    if done > size as usize {
        return Err(Violation::TooMuchWork { op, done, size });
    }
    let delivered: Vec<(u16, u16, u32)> = events
        .iter()
        .filter_map(|e| match *e {
            Event::Delivered {
                peer_head,
                rx_head,
                len,
            } => Some((peer_head, rx_head, len)),
            Event::Dropped { .. } => None,
        })
        .collect();
    if events.len() != done || delivered.len() != out.moved {
        return Err(Violation::OutcomeMismatch {
            op,
            outcome: out,
            events,
        });
    }

    // 3. Every event counted once, by class; rx_full and kicks too.
    let mut expected: BTreeMap<&'static str, u64> = BTreeMap::new();
    for e in &events {
        match e {
            Event::Delivered { len, .. } => {
                *expected.entry("packets_copied").or_default() += 1;
                *expected.entry("bytes_copied").or_default() += *len as u64;
            }
            Event::Dropped { reason, .. } => {
                *expected.entry("peer_errors").or_default() += 1;
                *expected.entry(drop_counter(reason)).or_default() += 1;
                *report.drops_by_reason.entry(reason.name()).or_default() += 1;
            }
        }
    }
    expected.insert("rx_ring_full", out.rx_full as u64);
    for ((counter, before), (_, after)) in stats_before.iter().zip(counters(&report.stats)) {
        let counted = after - before;
        let want = expected.get(counter).copied().unwrap_or(0);
        if counted != want {
            return Err(Violation::Miscounted {
                op,
                counter,
                counted,
                expected: want,
            });
        }
    }
    let kicks = copier.link().notifies.load(Ordering::Relaxed) - notifies_before;
    if kicks != out.peer_wants_kick as u64 || (out.peer_wants_kick && out.peer_kick_suppressed) {
        return Err(Violation::Miscounted {
            op,
            counter: "notifications_sent",
            counted: kicks,
            expected: out.peer_wants_kick as u64,
        });
    }
    report.moved += out.moved as u64;
    report.dropped += out.dropped as u64;

    // 4. The peer's used index advanced by exactly the finished chains, and
    // the new entries name them in order with length 0. (Between polls the
    // peer may scribble its used ring: check only what this poll wrote.)
    let used_off = peer.info.used;
    let peer_used = peer
        .mem
        .load_u16("fuzz", used_off + 2, Ordering::Acquire)
        .unwrap_or_default();
    let before_used = u16::from_le_bytes([
        peer_before[used_off as usize + 2],
        peer_before[used_off as usize + 3],
    ]);
    let want_used = if done > 0 {
        peer.used.wrapping_add(done as u16)
    } else {
        before_used
    };
    if peer_used != want_used {
        return Err(Violation::PeerUsed {
            op,
            what: format!("index {before_used} -> {peer_used} after {done} chains"),
        });
    }
    for (k, e) in events.iter().enumerate() {
        let head = match *e {
            Event::Delivered { peer_head, .. } | Event::Dropped { peer_head, .. } => peer_head,
        };
        let slot = peer.used.wrapping_add(k as u16) as u64 % size as u64;
        let at = used_off + 4 + 8 * slot;
        let id = peer.mem.load_u32("fuzz", at).unwrap_or(u32::MAX);
        let len = peer.mem.load_u32("fuzz", at + 4).unwrap_or(u32::MAX);
        if id != head as u32 || len != 0 {
            return Err(Violation::PeerUsed {
                op,
                what: format!("entry {k} is ({id}, {len}), event {e:?}"),
            });
        }
    }
    peer.used = peer.used.wrapping_add(done as u16);

    // 5. Our RX used ring: advanced by `moved`; entries name posted,
    // unreaped, undelivered buffers with lengths that fit.
    let rx_used = own
        .load_u16("fuzz", guest.info.used + 2, Ordering::Acquire)
        .unwrap_or_default();
    if rx_used.wrapping_sub(rx_used_before) as usize != out.moved {
        return Err(Violation::RxUsed {
            op,
            what: format!(
                "index {rx_used_before} -> {rx_used} for {} frames",
                out.moved
            ),
        });
    }
    let mut allowed_bufs = Vec::new();
    for (k, &(_, rx_head, len)) in delivered.iter().enumerate() {
        let slot = rx_used_before.wrapping_add(k as u16) as u64 % guest.info.size as u64;
        let at = guest.info.used + 4 + 8 * slot;
        let id = own.load_u32("fuzz", at).unwrap_or(u32::MAX);
        let used_len = own.load_u32("fuzz", at + 4).unwrap_or(u32::MAX);
        if id != rx_head as u32 || used_len != len {
            return Err(Violation::RxUsed {
                op,
                what: format!("entry {k} is ({id}, {used_len}), delivered ({rx_head}, {len})"),
            });
        }
        let fits = guest.posted.get(&rx_head).is_some_and(|&room| len <= room);
        if !fits || guest.delivered.insert(rx_head, len).is_some() {
            return Err(Violation::RxUsed {
                op,
                what: format!(
                    "buffer {rx_head} with {len} bytes: posted {:?}, delivered already: {}",
                    guest.posted.get(&rx_head),
                    guest.delivered.contains_key(&rx_head)
                ),
            });
        }
        let start = guest.bufs + rx_head as u64 * BUF_SIZE;
        allowed_bufs.push(start..start + len as u64);
    }

    // 6. No stray writes: ours only in the RX used ring and the delivered
    // bytes; the peer's only in its used ring.
    let mut allowed = allowed_bufs;
    allowed.push(guest.info.used..guest.info.used + guest.info.used_bytes());
    allowed.sort_by_key(|r| r.start);
    if let Some(offset) = stray_change(&own_before, &snapshot(&own), &allowed) {
        return Err(Violation::StrayWrite {
            op,
            mem: "own",
            offset,
            allowed: "the RX used ring and delivered RX bytes",
        });
    }
    let peer_used_ring = peer.info.used..peer.info.used + peer.info.used_bytes();
    if let Some(offset) = stray_change(
        &peer_before,
        &snapshot(&peer.mem),
        std::slice::from_ref(&peer_used_ring),
    ) {
        return Err(Violation::StrayWrite {
            op,
            mem: "peer",
            offset,
            allowed: "its used ring",
        });
    }

    // 7. Nothing left that this poll could have done.
    if !matches!(copier.has_work(), Ok(false)) {
        return Err(Violation::LeftWork { op });
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtq::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use proptest::prelude::*;
    use proptest::test_runner::FileFailurePersistence;

    fn addr() -> impl Strategy<Value = u64> {
        prop_oneof![
            4 => 8192u64..PEER_MEM,
            1 => Just(PEER_MEM - 1),
            1 => Just(PEER_MEM),
            1 => (PEER_MEM - 64)..(PEER_MEM + 64),
            1 => Just(u64::MAX - 8),
            1 => any::<u64>(),
        ]
    }

    fn len() -> impl Strategy<Value = u32> {
        prop_oneof![
            4 => 0u32..2000,
            1 => Just(0u32),
            1 => 60000u32..70000,
            1 => Just(u32::MAX),
            1 => any::<u32>(),
        ]
    }

    fn flags() -> impl Strategy<Value = u16> {
        prop_oneof![
            4 => Just(0u16),
            4 => Just(VRING_DESC_F_NEXT),
            1 => Just(VRING_DESC_F_WRITE),
            1 => Just(VRING_DESC_F_INDIRECT),
            1 => any::<u16>(),
        ]
    }

    /// An index near the queue (`size` is the largest queue: smaller ones
    /// take indexes modulo theirs or see them out of range).
    fn index(size: u16) -> impl Strategy<Value = u16> {
        prop_oneof![4 => 0..size, 1 => any::<u16>()]
    }

    fn config() -> impl Strategy<Value = Config> {
        (
            0..=MAX_PEER_QUEUE_LOG2,
            prop_oneof![Just(Mode::Always), Just(Mode::Flags), Just(Mode::EventIdx)],
            any::<bool>(),
        )
            .prop_map(|(peer_queue_log2, mode, guest_interrupts)| Config {
                peer_queue_log2,
                mode,
                guest_interrupts,
            })
    }

    fn write_desc(size: u16) -> impl Strategy<Value = Op> {
        (index(size), addr(), len(), flags(), index(size)).prop_map(
            |(index, addr, len, flags, next)| Op::WriteDesc {
                index,
                addr,
                len,
                flags,
                next,
            },
        )
    }

    /// Any op, weighted towards the ones that move packets.
    fn op(size: u16) -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => write_desc(size),
            4 => index(size).prop_map(|head| Op::PublishAvail { head }),
            1 => prop_oneof![4 => 0..=size, 1 => any::<u16>()].prop_map(Op::SetAvailIdx),
            2 => (any::<u16>(), any::<u8>()).prop_map(|(at, byte)| Op::Scribble { at, byte }),
            1 => (any::<u16>(), any::<u16>())
                .prop_map(|(flags, used_event)| Op::PeerSuppress { flags, used_event }),
            2 => (0..=OWN_QUEUE as u8, prop_oneof![4 => Just(BUF_SIZE as u32), 1 => any::<u32>()])
                .prop_map(|(count, len)| Op::PostRx { count, len }),
            2 => Just(Op::ReapRx),
            1 => any::<bool>().prop_map(Op::GuestInterrupts),
            1 => any::<bool>().prop_map(Op::PeerNotifications),
            1 => any::<bool>().prop_map(Op::RxNotifications),
            4 => Just(Op::Poll),
        ]
    }

    /// The shape of the original property: a whole hostile ring written up
    /// front, our RX ring full of buffers, then a few rounds of "set the
    /// avail index, scribble a byte, poll".
    fn whole_ring_case() -> impl Strategy<Value = Case> {
        config().prop_flat_map(|cfg| {
            let size = cfg.peer_queue() as usize;
            (
                Just(cfg),
                prop::collection::vec((addr(), len(), flags(), index(size as u16)), size),
                prop::collection::vec(index(size as u16), size),
                prop::collection::vec(prop_oneof![4 => 0..=size as u16, 1 => any::<u16>()], 1..4),
                prop::collection::vec((any::<u16>(), any::<u8>()), 0..4),
            )
                .prop_map(|(cfg, descs, heads, avail_idx, scribble)| {
                    // Each write lands in its own table entry.
                    let mut ops: Vec<Op> = descs
                        .into_iter()
                        .enumerate()
                        .map(|(i, (addr, len, flags, next))| Op::WriteDesc {
                            index: i as u16,
                            addr,
                            len,
                            flags,
                            next,
                        })
                        .collect();
                    for head in heads {
                        ops.push(Op::PublishAvail { head });
                    }
                    ops.push(Op::PostRx {
                        count: OWN_QUEUE as u8,
                        len: BUF_SIZE as u32,
                    });
                    for (round, idx) in avail_idx.into_iter().enumerate() {
                        ops.push(Op::SetAvailIdx(idx));
                        if let Some(&(at, byte)) = scribble.get(round) {
                            ops.push(Op::Scribble { at, byte });
                        }
                        ops.push(Op::Poll);
                    }
                    Case { cfg, ops }
                })
        })
    }

    fn any_case() -> impl Strategy<Value = Case> {
        config().prop_flat_map(|cfg| {
            let size = cfg.peer_queue() as u16;
            (Just(cfg), prop::collection::vec(op(size), 0..64))
                .prop_map(|(cfg, ops)| Case { cfg, ops })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            // lguest-launcher/proptest-regressions/fuzzing.txt
            failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel(
                "proptest-regressions",
            ))),
            ..ProptestConfig::default()
        })]

        #[test]
        fn fuzz_copier_survives_hostile_peer_ring(case in whole_ring_case()) {
            if let Err(v) = replay(&case.ops, &case.cfg) {
                return Err(TestCaseError::fail(v.to_string()));
            }
        }

        #[test]
        fn fuzz_copier_keeps_invariants_under_any_op_sequence(case in any_case()) {
            if let Err(v) = replay(&case.ops, &case.cfg) {
                return Err(TestCaseError::fail(v.to_string()));
            }
        }
    }

    fn desc(index: u16, addr: u64, flags: u16, next: u16) -> Op {
        Op::WriteDesc {
            index,
            addr,
            len: 100,
            flags,
            next,
        }
    }

    #[test]
    fn fuzz_regression_self_looping_chain_is_dropped_and_counted() {
        let mut ops = vec![
            desc(0, 8192, VRING_DESC_F_NEXT, 0),  // loops to itself
            desc(1, 8192, 0, 0),                  // fine
            desc(2, 8192, VRING_DESC_F_WRITE, 0), // writable in a TX chain
            desc(3, u64::MAX - 8, 0, 0),          // outside the peer's memory
            Op::PostRx {
                count: OWN_QUEUE as u8,
                len: BUF_SIZE as u32,
            },
        ];
        ops.extend((0..4).map(|head| Op::PublishAvail { head }));
        ops.push(Op::Poll);
        let cfg = Config {
            peer_queue_log2: 2,
            ..Config::default()
        };
        let report = replay(&ops, &cfg).unwrap();
        let stats = &report.stats;
        assert_eq!(stats.peer_loop, 1, "{stats:?}");
        assert_eq!(stats.peer_wrong_direction, 1, "{stats:?}");
        assert_eq!(stats.peer_out_of_bounds, 1, "{stats:?}");
        assert_eq!(stats.peer_errors, 3);
        assert_eq!((report.moved, report.dropped), (1, 3));
        assert!(report.link_dropped.is_none());
    }

    #[test]
    fn fuzz_avail_jump_ends_the_link_with_a_named_error() {
        let ops = [Op::SetAvailIdx(9), Op::Poll, Op::Poll];
        let report = replay(&ops, &Config::default()).unwrap();
        assert!(
            matches!(
                report.link_dropped,
                Some((1, RingError::AvailJump { to: 9, .. }))
            ),
            "{:?}",
            report.link_dropped
        );
        assert_eq!(report.polls, 0);
    }

    #[test]
    fn fuzz_frame_waits_for_rx_buffer_then_is_reaped() {
        let ops = [
            desc(0, 8192, 0, 0),
            Op::PublishAvail { head: 0 },
            Op::Poll, // no RX buffer: rx_full, nothing consumed
            Op::PostRx { count: 1, len: 50 },
            Op::Poll, // 100 bytes into 50: oversized
            desc(1, 8192, 0, 0),
            Op::PublishAvail { head: 1 },
            Op::PostRx { count: 1, len: 100 },
            Op::Poll, // a drop leaves the 50-byte buffer first: oversized again
            Op::WriteDesc {
                index: 0,
                addr: 9000,
                len: 40,
                flags: 0,
                next: 0,
            },
            Op::PublishAvail { head: 0 },
            Op::Poll, // 40 bytes fit the 50-byte buffer
            Op::ReapRx,
        ];
        let report = replay(&ops, &Config::default()).unwrap();
        assert_eq!(report.stats.rx_ring_full, 1);
        assert_eq!(report.drops_by_reason.get("oversized"), Some(&2));
        assert_eq!((report.moved, report.dropped, report.reaped), (1, 2, 1));
    }

    /// Crash inputs of the cargo-fuzz target, replayed on stable.
    #[cfg(feature = "fuzzing")]
    #[test]
    fn fuzz_corpus_regressions_replay_clean() {
        use arbitrary::{Arbitrary, Unstructured};
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus-regressions");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("fuzz/corpus-regressions") {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "md") || !path.is_file() {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            // As libfuzzer-sys decodes a typed fuzz_target! input.
            let Ok(case) = Case::arbitrary_take_rest(Unstructured::new(&bytes)) else {
                continue; // libFuzzer skips undecodable input too
            };
            if let Err(v) = replay(&case.ops, &case.cfg) {
                panic!("{}: {v}\n{case:?}", path.display());
            }
            n += 1;
        }
        eprintln!("replayed {n} corpus regressions");
    }
}
