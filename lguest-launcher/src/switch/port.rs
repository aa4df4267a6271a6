//! One switch port: the peer side of an ordinary link, as a member sees it.
//!
//! To its member a port looks exactly like a synthetic guest: at join the
//! switch offers a sealed memfd holding a TX ring and its buffers (the
//! same [`Layout`] a synthetic guest plans), and maps the member's memory.
//! The switch never runs a copier: it serves the *member's* TX ring as a
//! device ([`DeviceQueue`], every chain checked), and gets frames to the
//! member one of two ways.
//!
//! **Push** (a synthetic member that offered [`transport::F_RX_PUSH`],
//! and `--push on`, the default): the switch is also the device of the
//! member's *RX* ring ([`PushRx`], see `push.rs`) and copies each frame
//! once, from the source's TX buffer straight into a buffer the
//! destination member posted. The member's copier idles; its guest reads
//! the completions the switch wrote. One copy per hop, as on a direct link.
//!
//! **Pull** (a `vhost-user` member, `--share exchange`, a member that
//! captures, an older build, or `--push off`): the switch drives the
//! *port's* TX ring as a driver ([`DriverQueue`], every used entry the
//! member writes back checked) and copies each frame from the source's TX
//! buffer into the port's TX buffer; the member's unchanged copier pulls
//! it into its RX ring as from any peer: one extra copy per hop.

use super::push::{Frame, PushError, PushRx};
use crate::copier::gather_scatter;
use crate::guest::plan::{Layout, BUF_SIZE};
use crate::memory::{map_peer, GuestMap, GuestMemory, MemoryError, OutOfBounds, Region};
use crate::virtq::{ChainError, DeviceQueue, DriverQueue, NotifyMode, RingError, Seg};
use std::time::Instant;
use transport::{PeerInfo, Transport};

/// Why a member could not be given a port.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// Its memory could not be mapped.
    #[error("member memory: {0}")]
    Memory(#[from] MemoryError),
    /// Its TX ring does not fit its memory.
    #[error("member TX ring: {0}")]
    Ring(#[from] RingError),
}

/// A member linked to one port.
pub struct Port<T: Transport> {
    /// The transport to the member.
    pub link: T,
    /// The member's pid.
    pub pid: u32,
    /// Notification suppression in force on this port.
    pub mode: NotifyMode,
    /// Since when the port's TX ring has been full (`None`: it has room).
    pub full_since: Option<Instant>,
    /// The offloads the member's guest accepts on receive (virtio-net
    /// feature bits, from its handshake).
    pub offloads: u32,
    /// The member has sent its first frame (or its port is fixed by its
    /// path): it will not move to a departed member's port.
    pub settled: bool,
    /// The frame at the head of the member's TX ring is held for a full
    /// destination (see the module docs of `switch`): its chains are not
    /// work until that destination makes room (which is work: see
    /// [`Port::has_work`]) or the hold ends (the sleep is that short).
    pub held: bool,
    /// Which join this is, counted by the switch from 1: what its epoll
    /// set was built for (`switch/sleep.rs`).
    pub serial: u64,
    _mem: GuestMemory,
    own: Region,
    layout: Layout,
    tx: DriverQueue,
    member: Region,
    member_tx: DeviceQueue,
    used_added: bool,
    avail_added: bool,
    /// Push mode: the member's RX ring, served by us.
    push: Option<PushRx>,
}

impl<T: Transport> Port<T> {
    /// Link a member that met the switch: map its memory, serve its TX
    /// ring from where its last device side stopped (a member that comes
    /// back with `--reconnect` resumes), drive our TX ring in `mem`.
    pub fn new(
        link: T,
        peer: PeerInfo,
        mem: GuestMemory,
        layout: Layout,
        notify: NotifyMode,
        push: bool,
    ) -> Result<Self, JoinError> {
        let hs = peer.handshake;
        let mode = notify.min(NotifyMode::from_features(hs.features));
        let map = GuestMap::new(map_peer(peer.memory, hs.mem_size)?, hs.regions());
        // Push when both offered it (we did, unless `--push off`).
        let push = if push && hs.features & transport::F_RX_PUSH != 0 {
            Some(PushRx::new(&map, &hs.rx, hs.offloads, mode)?)
        } else {
            None
        };
        let member_tx = DeviceQueue::new(&map, &hs.tx)?;
        let used = member_tx.published_used()?;
        let member_tx = member_tx.with_state(used, used);
        let own = mem.region().clone();
        let tx = DriverQueue::new(own.clone(), &layout.tx);
        tx.set_interrupts(mode, false, 0)?;
        Ok(Port {
            pid: hs.pid,
            link,
            mode,
            full_since: None,
            offloads: hs.offloads,
            settled: false,
            held: false,
            serial: 0,
            _mem: mem,
            own,
            layout,
            tx,
            member: map.region().clone(),
            member_tx,
            used_added: false,
            avail_added: false,
            push,
        })
    }

    /// Is this a push port (we serve the member's RX ring)?
    pub fn is_push(&self) -> bool {
        self.push.is_some()
    }

    /// The member's memory (where its TX chains' buffers are).
    pub fn member(&self) -> &Region {
        &self.member
    }

    /// Take back the port's TX chains the member's copier completed.
    pub fn reap(&mut self) -> Result<usize, RingError> {
        if let Some(p) = self.push.as_ref() {
            // Nothing of ours to take back; room is the member's posting.
            if self.full_since.is_some() && p.has_room()? {
                self.full_since = None;
            }
            return Ok(0);
        }
        if self.tx.in_flight() == 0 {
            // Nothing to take back: do not touch the member's cache line.
            self.full_since = None;
            return Ok(0);
        }
        let mut n = 0;
        while self.tx.pop_used()?.is_some() {
            n += 1;
        }
        if self.has_room() {
            self.full_since = None;
        }
        Ok(n)
    }

    /// Is there room for a frame: a free slot on the port's TX ring, or
    /// (push) an RX buffer the member posted? A broken member ring says
    /// yes here and fails in [`Port::put`], which names it.
    #[inline]
    pub fn has_room(&mut self) -> bool {
        match self.push.as_mut() {
            Some(p) => p.room().map_or(true, |n| n > 0),
            None => self.tx.num_free() > 0,
        }
    }

    /// The fast burst's parts (`burst.rs`): the member's TX ring (served
    /// by us) and, on a push port, its RX ring.
    #[inline(always)]
    pub(super) fn rings_mut(&mut self) -> (&mut DeviceQueue, Option<&mut PushRx>) {
        (&mut self.member_tx, self.push.as_mut())
    }

    /// The fast burst completed chains of the member's TX ring (through a
    /// taker): publish them with the rest of the turn's.
    #[inline(always)]
    pub(super) fn tx_completed(&mut self) {
        self.used_added = true;
    }

    /// Chains the member has made available and we have not taken.
    pub fn pending(&self) -> Result<u16, RingError> {
        self.member_tx.pending()
    }

    /// The member's next TX chain: its head, and its pieces in `segs` with
    /// its length, or why it is malformed.
    #[inline]
    pub fn peek(
        &mut self,
        segs: &mut Vec<Seg>,
    ) -> Result<(u16, Result<u32, ChainError>), RingError> {
        let head = self.member_tx.peek_head()?;
        // A chain of one descriptor (every synthetic frame, most of a
        // VM's): the copier's fast walk, the same checks without the
        // general walk's plumbing; anything else is walked (and named).
        if let Some(seg) = self.member_tx.walk_one(head, false) {
            segs.clear();
            segs.push(seg);
            return Ok((head, Ok(seg.len)));
        }
        Ok((head, self.member_tx.read_chain(head, false, segs)))
    }

    /// We are done with the member's chain `head` (forwarded or dropped):
    /// it goes back as used, published by [`Port::flush`].
    #[inline]
    pub fn complete(&mut self, head: u16) -> Result<(), RingError> {
        self.member_tx.advance();
        self.member_tx.add_used(head, 0)?;
        self.used_added = true;
        Ok(())
    }

    /// The TX slot for a frame of `len` bytes, its descriptor added (not yet
    /// published); `None` when the ring is full.
    #[inline]
    fn slot(&mut self, len: u32) -> Result<Option<u64>, PutError> {
        if u64::from(len) > BUF_SIZE {
            return Err(PutError::TooLong(len));
        }
        Ok(self
            .tx
            .add_slot(self.layout.tx_bufs, BUF_SIZE, len, false)
            .map_err(PutError::Ring)?
            .map(|(_, slot)| slot))
    }

    /// Copy a frame of `len` bytes (pieces `segs` in `src`) onto the
    /// port's TX ring: one slot, one descriptor. False when the ring is
    /// full; the caller checked [`Port::has_room`].
    #[inline]
    pub fn put(&mut self, src: &Region, segs: &[Seg], len: u32) -> Result<bool, PutError> {
        if let Some(p) = self.push.as_mut() {
            if let [s] = segs {
                if let Some(put) = p.put_plain(&self.member, src, *s, len) {
                    return Ok(put);
                }
            }
            return p
                .put(&self.member, Frame::Chain(src, segs), len)
                .map_err(PutError::from);
        }
        let Some(slot) = self.slot(len)? else {
            return Ok(false);
        };
        match segs {
            // One piece (every frame of ours, most of a VM's): one copy.
            [s] if s.len == len => self.own.copy_from(slot, src, s.addr, u64::from(len)),
            _ => gather_scatter(&self.own, &[Seg { addr: slot, len }], src, segs).map(|_| ()),
        }
        .map_err(PutError::Memory)?;
        self.avail_added = true;
        Ok(true)
    }

    /// Put a frame we hold (`virtio_net_hdr` first, as read from the TAP)
    /// on the port's TX ring; false when the ring is full.
    pub fn put_bytes(&mut self, frame: &[u8]) -> Result<bool, PutError> {
        let len = u32::try_from(frame.len()).map_err(|_| PutError::TooLong(u32::MAX))?;
        if let Some(p) = self.push.as_mut() {
            return p
                .put(&self.member, Frame::Bytes(frame), len)
                .map_err(PutError::from);
        }
        let Some(slot) = self.slot(len)? else {
            return Ok(false);
        };
        self.own
            .write("frame from tap", slot, frame)
            .map_err(PutError::Memory)?;
        self.avail_added = true;
        Ok(true)
    }

    /// Publish what this turn added to both rings. True when the member
    /// asked to be told (its TX completions, or new frames for it).
    pub fn flush(&mut self) -> Result<bool, RingError> {
        let mut kick = false;
        if std::mem::take(&mut self.used_added) {
            let (old, new) = self.member_tx.publish_used()?;
            kick |= self.member_tx.interrupt_needed(self.mode, old, new)?;
        }
        if std::mem::take(&mut self.avail_added) {
            let (old, new) = self.tx.publish()?;
            kick |= self.tx.kick_needed(self.mode, old, new)?;
        }
        if let Some(p) = self.push.as_mut() {
            kick |= p.flush(self.mode)?;
        }
        Ok(kick)
    }

    /// Before sleeping (`on`): ask the member to kick us when it sends,
    /// and, while frames for it are in flight, when its copier takes one
    /// (a port with a full ring gets room back). After waking: stop asking.
    pub fn arm(&self, on: bool) -> Result<(), RingError> {
        self.member_tx.set_notifications(self.mode, on)?;
        if let Some(p) = self.push.as_ref() {
            // Push: while frames for it wait, when it posts RX buffers.
            return p.arm(self.mode, on && self.full_since.is_some());
        }
        let waiting = on && self.tx.in_flight() > 0;
        self.tx
            .set_interrupts(self.mode, waiting, self.tx.last_used())
    }

    /// Something to do right now (the re-check after arming): chains the
    /// member sent, unless the first is held for a full destination, or
    /// room made at this port while it was full. A held frame is not
    /// work: counting it kept the switch turning, idle, at full speed for
    /// as long as the destination's member was off the CPU — on a machine
    /// where that member needed the very CPU the switch was spinning on.
    pub fn has_work(&self) -> Result<bool, RingError> {
        let sent = !self.held && self.member_tx.pending()? > 0;
        if let Some(p) = self.push.as_ref() {
            return Ok(sent || (self.full_since.is_some() && p.has_room()?));
        }
        Ok(sent || self.tx.has_used()?)
    }
}

/// Why a frame could not be put on a port's ring.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    /// Larger than a port buffer.
    #[error("frame of {0} bytes is larger than a port buffer")]
    TooLong(u32),
    /// Our own ring refused (our bug).
    #[error("port ring: {0}")]
    Ring(RingError),
    /// A piece lay outside the member's memory.
    #[error("{0}")]
    Memory(OutOfBounds),
    /// The TAP device failed.
    #[error("{0}")]
    Tap(transport::Error),
    /// Push: the destination member's RX ring is impossible (an avail
    /// index jump): its port goes.
    #[error("member RX ring: {0}")]
    MemberRing(RingError),
    /// Push: the RX chain the destination member posted was malformed or
    /// too small (returned to it unused; the frame is lost at its port).
    #[error("member RX chain: {0}")]
    Dest(ChainError),
    /// Push: the frame's `virtio_net_hdr` is invalid (the source's fault).
    #[error("offload header: {0}")]
    Offload(crate::offload::OffloadError),
}

impl From<PushError> for PutError {
    fn from(e: PushError) -> Self {
        match e {
            PushError::Ring(e) => PutError::MemberRing(e),
            PushError::Chain(e) => PutError::Dest(e),
            PushError::Source(e) => PutError::Memory(e),
            PushError::Offload(e) => PutError::Offload(e),
        }
    }
}

/// Read the first `out.len()` bytes of a chain (pieces `segs` in `mem`);
/// false when the chain is shorter or a piece is out of bounds.
#[inline]
pub fn read_prefix(mem: &Region, segs: &[Seg], out: &mut [u8]) -> bool {
    if let Some(s) = segs.first() {
        if s.len as usize >= out.len() {
            // The whole prefix in the first piece (every frame of ours,
            // most of a VM's): one read.
            return mem.read("frame header", s.addr, out).is_ok();
        }
    }
    crate::copier::read_prefix(mem, segs, out) == out.len()
}
