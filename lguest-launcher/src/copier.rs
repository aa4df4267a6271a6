//! The copier: the device half of a launcher.
//!
//! When the peer's guest has put packets on its TX ring, our copier *pulls*
//! them (the original's direction: the receiver copies). For each available
//! chain on the peer's TX ring it
//!
//! 1. walks and checks the peer's chain (every descriptor read once, every
//!    buffer inside the peer's mapping — see [`DeviceQueue::read_chain`]);
//! 2. takes a buffer from our own RX ring, or, if our guest has posted none,
//!    stops and leaves the peer's chain where it is (nothing is dropped; the
//!    outcome says `rx_full` and we continue once our guest posts buffers);
//! 3. gathers the peer's pieces into our RX pieces, never past either;
//! 4. marks both used.
//!
//! After a batch (what is available, at most [`POLL_BURST`] chains, within
//! the per-poll budgets of [`crate::garbage`]) it publishes both used
//! indexes. It does **not** notify anyone: [`Copier::poll`] returns an
//! [`Outcome`] saying what moved, what was dropped and why (each as an
//! [`Event`]), whether the peer asked to be told that its TX buffers are
//! free, and whether our guest asked for an RX interrupt. The caller acts
//! on it, and [`crate::run::account`] is the one `match` every packet and
//! every drop passes: the place for counters, a capture tap or any other
//! per-packet hook.
//!
//! A malformed chain is dropped ([`DropReason`] names the class) and returned to
//! the peer as used with length 0; ring state that an honest peer cannot
//! produce (an avail index that jumps by more than the queue size) ends the
//! link with a [`CopyError`].
//!
//! # Why `Copier<T: Transport>` keeps its parameter
//! The copier *owns the link* it serves: the peer's mapping and rings were
//! reached through that transport's rendezvous, are valid exactly as long
//! as that link, and are replaced together with it (a reconnect builds a
//! new `Copier<T>` for the next link generation). Owning `T` by value — not
//! an `Arc<T>` held for one call — ties the two lifetimes in the type, and
//! the caller's wake-ups and notifications go through [`Copier::link`],
//! statically dispatched: the transport kind is chosen once, at
//! [`crate::link::dispatch`], never per packet.

mod burst;
mod fallback;
mod gather;
mod mergeable;
mod outcome;
mod reread;

pub(crate) use fallback::{read_prefix, write_chain, MAX_FIX};
pub use gather::gather_scatter;
pub(crate) use mergeable::{put_num_buffers, MRG_RXBUF};
pub use outcome::{CopyError, DropReason, Event, Occupancy, Outcome};

use crate::garbage::{GarbageBudget, POLL_CHAINS, POLL_DESCRIPTORS};
use crate::memory::{GuestMap, OutOfBounds, Region};
use crate::virtq::{Chain, ChainError, DeviceQueue, NotifyMode, RingError, Seg};
use transport::{RingInfo, Transport};

/// Chains one [`Copier::poll`] takes at most (below the garbage bound
/// [`POLL_CHAINS`]): both used indexes are published per burst, so the peer
/// gets its TX buffers back and refills them while we copy the next
/// burst. Taking everything per poll made the two sides take turns (the
/// stats showed ~257 chains per poll: the sender idle while we copied a
/// whole ring, then we idle while it refilled). Pinned spinning stamped
/// streams, same session, alternating: 64 per burst moved 1.3–1.4x the
/// packets of no cap (32: 1.15–1.2x; 128 like 64). The wait loop polls
/// again at once after a busy turn, so nothing waits for a kick.
pub const POLL_BURST: u16 = 64;

/// Pulls packets from the peer's TX ring into our RX ring.
pub struct Copier<T: Transport> {
    link: T,
    peer_mem: Region,
    own_mem: Region,
    peer_tx: DeviceQueue,
    own_rx: DeviceQueue,
    mode: NotifyMode,
    guest_irqs: bool,
    src: Vec<Seg>,
    dst: Vec<Seg>,
    events: Vec<Event>,
    /// Descriptors the last [`Copier::copy_one`] read (both chains, plus
    /// the one each walk stopped at): what the poll charges its budgets.
    walked: usize,
    garbage: GarbageBudget,
    guest_features: u64,
    offload: fallback::OffloadState,
    /// Our RX ring's size (how many frames one segmented frame may become).
    rx_size: u16,
    /// RX chains the frame at the head of the peer's ring needs (more
    /// than 1 only while a mergeable-buffer frame waits for our guest to
    /// post enough: see `mergeable.rs`); [`Copier::has_work`] waits for
    /// that many.
    rx_wanted: u16,
    /// Scratch for the further RX chains of a mergeable-buffer frame.
    merge: mergeable::Scratch,
    /// List every delivery in [`Copier::events`], not only when a capture
    /// tap is on (see [`Copier::keep_delivery_events`]).
    keep_deliveries: bool,
}

impl<T: Transport> Copier<T> {
    /// A copier over `link` from the peer's TX ring (`peer_tx` in `peer`)
    /// into our RX ring (`own_rx` in `own`); ring addresses are
    /// guest-physical.
    pub fn new(
        link: T,
        peer: &GuestMap,
        peer_tx: &RingInfo,
        own: &GuestMap,
        own_rx: &RingInfo,
        mode: NotifyMode,
    ) -> Result<Self, RingError> {
        Ok(Copier {
            link,
            peer_tx: DeviceQueue::new(peer, peer_tx)?,
            own_rx: DeviceQueue::new(own, own_rx)?,
            peer_mem: peer.region().clone(),
            own_mem: own.region().clone(),
            mode,
            guest_irqs: false,
            src: Vec::with_capacity(8),
            dst: Vec::with_capacity(8),
            events: Vec::with_capacity(256),
            walked: 0,
            garbage: GarbageBudget::default(),
            guest_features: 0,
            offload: fallback::OffloadState::default(),
            rx_size: own_rx.size.min(u16::MAX as u32) as u16,
            rx_wanted: 1,
            merge: mergeable::Scratch::default(),
            keep_deliveries: false,
        })
    }

    /// The virtio-net feature bits our guest accepted (what it takes on
    /// receive: `VIRTIO_NET_F_GUEST_CSUM`, `GUEST_TSO4/6`, `GUEST_ECN`,
    /// `MRG_RXBUF`, ...). A VM's change when its driver negotiates again
    /// (a reboot); a synthetic guest's follow `--offloads`. 0 until set.
    ///
    /// Setting them turns on the offload path ([`crate::offload`]): from
    /// then on a frame whose header asks for an offload is checked, and
    /// fixed in software when our guest did not accept what it needs.
    /// Until then (a copier nobody told about its guest) frames pass as
    /// they are.
    pub fn set_guest_features(&mut self, features: u64) {
        self.guest_features = features;
        self.offload.on = true;
    }

    /// What [`Copier::set_guest_features`] last set.
    pub fn guest_features(&self) -> u64 {
        self.guest_features
    }

    /// Our guest takes interrupts (a VM's call eventfd): compute
    /// [`Outcome::guest_wants_irq`] from its suppression state. A synthetic
    /// guest polls its used ring in our thread and needs none.
    pub fn with_guest_interrupts(mut self) -> Self {
        self.guest_irqs = true;
        self
    }

    /// Start our RX ring at `last_avail`/`next_used` (see
    /// [`DeviceQueue::with_state`]) instead of 0/0.
    pub fn with_rx_state(mut self, last_avail: u16, next_used: u16) -> Self {
        self.own_rx = self.own_rx.with_state(last_avail, next_used);
        self
    }

    /// Start the peer's TX ring where the ring itself says its last device
    /// side stopped: at its published used index. For a fresh peer that is
    /// 0; for a survivor of a restart (`--reconnect`) it is what the dead
    /// copier completed, so the chains it had taken but not completed are
    /// delivered by us, and none twice.
    pub fn resume_peer_tx(mut self) -> Result<Self, RingError> {
        let used = self.peer_tx.published_used()?;
        self.peer_tx = self.peer_tx.with_state(used, used);
        Ok(self)
    }

    /// Where we are in the peer's TX ring: `(last_avail, next_used)`.
    pub fn peer_tx_state(&self) -> (u16, u16) {
        self.peer_tx.state()
    }

    /// Our RX ring's `(last_avail, next_used)`, all published after a
    /// [`Copier::poll`] returns.
    pub fn rx_state(&self) -> (u16, u16) {
        self.own_rx.state()
    }

    /// Our guest's memory, where [`Event::Delivered`]'s `rx_first` lies.
    pub fn own_memory(&self) -> &Region {
        &self.own_mem
    }

    /// The transport to the peer this copier serves.
    pub fn link(&self) -> &T {
        &self.link
    }

    /// The suppression mode in force.
    pub fn mode(&self) -> NotifyMode {
        self.mode
    }

    /// The packets of the last [`Copier::poll`], in ring order: every drop
    /// and every frame the general path delivered, and the frames of the
    /// per-packet fast path (`copier/burst.rs`) when something reads them
    /// — a capture tap is on ([`crate::capture::tap`]) or
    /// [`Copier::keep_delivery_events`] was asked. Otherwise those are
    /// only counted in [`Outcome::moved`] and [`Outcome::bytes`] (the
    /// counters need no event per frame; pushing one cost 13 instructions
    /// per 64 B frame).
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// List every delivered frame in [`Copier::events`], capture tap or
    /// not (the fuzz harness checks each one).
    pub fn keep_delivery_events(mut self) -> Self {
        self.keep_deliveries = true;
        self
    }

    /// Ask our guest to kick us when it posts RX buffers (or not).
    pub fn set_rx_notifications(&self, enable: bool) -> Result<(), CopyError> {
        self.own_rx
            .set_notifications_for(self.mode, enable, self.rx_wanted)
            .map_err(CopyError::OwnRing)
    }

    /// Move what we can, up to [`POLL_BURST`] packets, and say what
    /// happened. Nobody is notified here: the caller acts on the
    /// [`Outcome`] (and polls again after a busy turn).
    pub fn poll(&mut self) -> Result<Outcome, CopyError> {
        self.events.clear();
        self.rx_wanted = 1;
        let mut out = Outcome::default();
        if self.garbage.paused() {
            out.throttled = true;
            return Ok(out);
        }
        // Both avail indexes are loaded once per poll, not per packet: the
        // peer's TX index here, our RX index when the first chain needs a
        // buffer (and again only once those buffers are used up). Each load
        // is an acquire that covers every entry up to it.
        let pending = self.peer_tx.pending().map_err(CopyError::PeerRing)?;
        let mut rx_room = 0u16;
        // Descriptors read this poll (both rings), against POLL_DESCRIPTORS.
        let mut read = 0usize;
        let chains = pending.min(POLL_CHAINS).min(POLL_BURST);
        let mut done = 0u16;
        while done < chains {
            // The plain frames, a burst at a time (`copier/burst.rs`),
            // within what is left of the descriptor budget.
            let room = POLL_DESCRIPTORS.saturating_sub(read) / burst::PLAIN_WALKED;
            let max = (chains - done).min(room.min(usize::from(u16::MAX)) as u16);
            let k = self.burst(max, &mut rx_room, &mut out);
            done += k;
            read += usize::from(k) * burst::PLAIN_WALKED;
            if done == chains || read >= POLL_DESCRIPTORS {
                break;
            }
            // The next chain is anything else (see `copier/burst.rs`). A
            // segmented frame's deliveries but the last are pushed by
            // `copy_one` itself.
            let head = self.peer_tx.peek_head().map_err(CopyError::PeerRing)?;
            let before = self.events.len();
            let ev = self.copy_one(head, &mut rx_room)?;
            let cost = self.walked;
            read += cost;
            match ev {
                Some(ev) => {
                    for e in &self.events[before..] {
                        if let Event::Delivered { len, .. } = e {
                            out.moved += 1;
                            out.bytes += u64::from(*len);
                        }
                    }
                    match ev {
                        Event::Delivered { len, .. } => {
                            out.moved += 1;
                            out.bytes += len as u64;
                        }
                        Event::Dropped { .. } => {
                            out.dropped += 1;
                            out.throttled = self.garbage.charge(cost);
                        }
                    }
                    self.events.push(ev);
                    self.peer_tx.advance();
                    self.peer_tx
                        .add_used(head, 0)
                        .map_err(CopyError::PeerRing)?;
                    done += 1;
                }
                None => {
                    // Our guest has not posted buffers: leave the peer's
                    // chain in place; we come back when it does.
                    out.rx_full = true;
                    break;
                }
            }
            if out.throttled || read >= POLL_DESCRIPTORS {
                break;
            }
        }
        // The peer's used index first, then ours. Should we die between
        // the two stores, the peer counts these chains as completed and its
        // next peer starts after them, while our guest never sees them: lost
        // with us, like frames in a NIC that resets, never delivered twice.
        // (A synthetic guest runs in this thread and cannot look between
        // the stores; a VM can.)
        if out.finished() > 0 {
            let (old, new) = self.peer_tx.publish_used().map_err(CopyError::PeerRing)?;
            if self
                .peer_tx
                .interrupt_needed(self.mode, old, new)
                .map_err(CopyError::PeerRing)?
            {
                out.peer_wants_kick = true;
            } else {
                out.peer_kick_suppressed = true;
            }
        }
        if out.moved > 0 {
            let (old, new) = self.own_rx.publish_used().map_err(CopyError::OwnRing)?;
            out.rx_used = Some((old, new));
            if self.guest_irqs {
                out.guest_wants_irq = self
                    .own_rx
                    .interrupt_needed(self.mode, old, new)
                    .map_err(CopyError::OwnRing)?;
            }
        }
        Ok(out)
    }

    /// Copy the peer's chain `head` into our next RX buffer. `None` when our
    /// guest has no RX buffer posted (nothing consumed). `rx_room` is how
    /// many RX chains our guest had posted at the last look at its avail
    /// index, less those used since; we look again only when it is 0.
    ///
    /// Sets `walked`: every descriptor the two walks kept, plus
    /// the one each walk stopped at. Chains of one descriptor on both sides
    /// (every synthetic frame, most of a VM's) are copied straight from
    /// the two checked descriptors, without filling `src`/`dst`.
    #[inline]
    fn copy_one(&mut self, head: u16, rx_room: &mut u16) -> Result<Option<Event>, CopyError> {
        self.dst.clear();
        let dropped = |reason| {
            Ok(Some(Event::Dropped {
                peer_head: head,
                reason,
            }))
        };
        let src = self.peer_tx.walk_chain(head, false, &mut self.src);
        self.walked = self.src.len() + 2;
        let src = match src {
            Ok(chain) => chain,
            Err(e) => return dropped(DropReason::Malformed(e)),
        };
        self.walked = src.descriptors(&self.src) + 2;
        let len = src.len();
        if *rx_room == 0 {
            *rx_room = self.own_rx.pending().map_err(CopyError::OwnRing)?;
            if *rx_room == 0 {
                return Ok(None);
            }
        }
        let rx_head = self.own_rx.peek_head().map_err(CopyError::OwnRing)?;
        let dst = self
            .own_rx
            .walk_chain(rx_head, true, &mut self.dst)
            .map_err(|e| CopyError::OwnRing(RingError::OwnChain(e)))?;
        self.walked += dst.descriptors(&self.dst);
        let room = dst.len();
        if len > room {
            // The slower paths below read the pieces from `src`/`dst`.
            self.spill(src, dst);
            if self.offload.on {
                // A GSO frame our guest does not take may fit once
                // segmented (crate::offload); a bad header is dropped.
                if let Some(ev) = self.offload_oversized(head, len, rx_room)? {
                    return Ok(ev);
                }
            }
            if self.mergeable() {
                // MRG_RXBUF: the frame spans this chain and the next ones.
                return self.deliver_merged(head, len, rx_head, room, rx_room);
            }
            // A frame larger than any buffer we post: drop it.
            return dropped(DropReason::Oversized { len, room });
        }
        let copied = match (src, dst) {
            (Chain::One(s), Chain::One(d)) => {
                // `dst` names our buffer for the header checks, the
                // num_buffers store and the capture tap.
                self.dst.push(d);
                self.own_mem
                    .copy_from(d.addr, &self.peer_mem, s.addr, len as u64)
            }
            _ => {
                self.spill(src, dst);
                gather_scatter(&self.own_mem, &self.dst, &self.peer_mem, &self.src).map(|_| ())
            }
        };
        if copied.is_err() {
            return dropped(DropReason::Malformed(ChainError::OutOfBounds {
                addr: 0,
                len,
                mem: self.peer_mem.len(),
            }));
        }
        if self.offload.on && !self.plain_header() {
            return self.offload_copied(head, rx_head, len, rx_room);
        }
        self.deliver_copied(head, rx_head, len, rx_room).map(Some)
    }

    /// Put a one-descriptor chain's buffer into `src`/`dst` as a walk of
    /// several leaves them there.
    fn spill(&mut self, src: Chain, dst: Chain) {
        if let Chain::One(s) = src {
            self.src.push(s);
        }
        if let Chain::One(d) = dst {
            self.dst.push(d);
        }
    }

    /// The frame of `len` bytes is in our RX chain `rx_head`: take the
    /// chain off our avail ring and mark it used.
    #[inline]
    fn deliver_copied(
        &mut self,
        head: u16,
        rx_head: u16,
        len: u32,
        rx_room: &mut u16,
    ) -> Result<Event, CopyError> {
        if self.mergeable() {
            self.write_num_buffers(len, 1)
                .map_err(|e| CopyError::OwnRing(RingError::Memory(e)))?;
        }
        self.own_rx.advance();
        *rx_room -= 1;
        self.own_rx
            .add_used(rx_head, len)
            .map_err(CopyError::OwnRing)?;
        Ok(Event::Delivered {
            peer_head: head,
            rx_head,
            len,
            rx_first: self.dst.first().copied().unwrap_or(Seg { addr: 0, len: 0 }),
        })
    }

    /// Is there a peer packet we could move right now? Used for the
    /// re-check after re-enabling notifications, before sleeping.
    pub fn has_work(&self) -> Result<bool, CopyError> {
        if self.garbage.is_paused() {
            return Ok(false); // the peer spent its garbage budget
        }
        let pending = self.peer_tx.pending().map_err(CopyError::PeerRing)?;
        if pending == 0 {
            return Ok(false);
        }
        let room = self.own_rx.pending().map_err(CopyError::OwnRing)?;
        Ok(room >= self.rx_wanted.max(1))
    }

    /// How full both rings are now, for live status: our RX ring's size
    /// and the buffers our guest posted that no frame filled yet, the
    /// peer's TX ring's size and the chains waiting on it. Two acquire
    /// loads of avail indexes; call it now and then, not per packet.
    pub fn occupancy(&self) -> Result<Occupancy, CopyError> {
        let rx_posted = self.own_rx.pending().map_err(CopyError::OwnRing)?;
        self.occupancy_pushed(rx_posted)
    }

    /// [`Copier::occupancy`] with our RX ring's unfilled buffers given:
    /// when the peer serves that ring (RX push, `switch/push.rs`) we take
    /// nothing from it, so our own index of it stands still and says
    /// nothing; `rx_posted` is then our guest's count of the buffers it
    /// posted that the peer has not filled.
    pub fn occupancy_pushed(&self, rx_posted: u16) -> Result<Occupancy, CopyError> {
        Ok(Occupancy {
            rx_size: self.own_rx.size(),
            rx_posted,
            peer_tx_size: self.peer_tx.size(),
            peer_tx_pending: self.peer_tx.pending().map_err(CopyError::PeerRing)?,
        })
    }

    /// Ask the peer to kick us (before sleeping) or not (while busy).
    pub fn set_notifications(&self, enable: bool) -> Result<(), CopyError> {
        self.peer_tx
            .set_notifications(self.mode, enable)
            .map_err(CopyError::PeerRing)
    }
}
