//! A push port: the switch is the device of its member's RX ring.
//!
//! A member whose whole memory is shared (a synthetic guest, `--share
//! guest`) offers [`transport::F_RX_PUSH`]: its RX ring and buffers are in
//! the memory it gave us. When the switch offers it too (`--push on`, the
//! default) the port is a push port, what vhost-user switches (VPP, OVS,
//! snabb) do with every member: instead of putting a frame on the port's
//! own TX ring for the member's copier to pull (a second copy, and a third
//! process touching the frame), the switch takes a buffer the member
//! posted on its RX ring and copies the frame straight into it, from the
//! source member's TX buffer (or the TAP's bytes): one copy per hop.
//!
//! The member's RX ring is served exactly as a copier serves a peer's
//! ring: [`DeviceQueue::new`] checked its parts once; every chain is
//! walked and checked ([`DeviceQueue::walk_one`], else
//! [`DeviceQueue::read_chain`]) before a byte is written; the copy goes
//! through [`Region::copy_from`] / [`gather_scatter`], which check again.
//! A hostile member cannot make us write outside its mapping: a bad RX
//! chain is returned to it used with length 0 and the frame is counted as
//! a drop at its port ([`PushError::Chain`]); an avail index that jumps
//! by more than the ring ends its port ([`RingError::AvailJump`]).
//!
//! The header is written as the member's copier would: `num_buffers` 1
//! when the member accepted `MRG_RXBUF` (`put_num_buffers`, the
//! copier's own piece), and a frame whose `virtio_net_hdr` asks for an
//! offload the member did not accept is fixed in software
//! ([`crate::offload::fix`]) and delivered as one or more frames, each in
//! its own RX chain.
//!
//! Flow control is the port's as before, on the member's RX ring: no
//! posted buffer is "no room" (hold, then drop and count `no_room`);
//! while the switch waits for room it asks the member to kick it when it
//! posts buffers (`avail_event` / flags in the member's RX used ring).
//! Used entries are published once per turn ([`PushRx::flush`]) and the
//! member is kicked as its RX suppression state (`used_event` / flags)
//! asks. A member that comes back (`--reconnect`) is served from the used
//! index it last saw published, as its TX ring is.

use crate::copier::{gather_scatter, put_num_buffers, MRG_RXBUF};
use crate::memory::{GuestMap, OutOfBounds, Region};
use crate::offload::{self, NetHdr, OffloadError, NET_HDR};
use crate::virtq::{ChainError, DeviceQueue, NotifyMode, RingError, Seg};
use std::sync::atomic::Ordering;
use transport::RingInfo;

/// Where the bytes of a frame being pushed are.
#[derive(Clone, Copy)]
pub enum Frame<'a> {
    /// In a member's memory, as chain pieces.
    Chain(&'a Region, &'a [Seg]),
    /// In a buffer of ours (read from the TAP).
    Bytes(&'a [u8]),
}

/// Why a frame was not pushed into a member's RX ring.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The member's ring is impossible (an avail index jump): its port goes.
    #[error("member RX ring: {0}")]
    Ring(#[from] RingError),
    /// The RX chain the member posted is malformed or smaller than the
    /// frame: the chain went back used with length 0; the frame is lost.
    #[error("member RX chain: {0}")]
    Chain(ChainError),
    /// A piece of the source frame lay outside the source member's memory.
    #[error("{0}")]
    Source(OutOfBounds),
    /// The frame's `virtio_net_hdr` is invalid (the source's fault).
    #[error("offload header: {0}")]
    Offload(OffloadError),
}

/// The device side of one member's RX ring.
pub struct PushRx {
    rx: DeviceQueue,
    /// Chains the member posted that we have not taken, as of the last look
    /// at its avail index (looked at again only when this reaches 0).
    room: u16,
    /// Used entries added since the last publish.
    used_added: bool,
    /// The member's guest takes `num_buffers` (`MRG_RXBUF`).
    mergeable: bool,
    /// The offloads the member's guest accepts on receive.
    offloads: u64,
    segs: Vec<Seg>,
    scratch: Vec<u8>,
    frames: offload::Frames,
}

impl PushRx {
    /// Serve the member's RX ring (`info`, in `map`) from the used index
    /// it last saw published; no kicks asked for until we wait for room.
    pub fn new(
        map: &GuestMap,
        info: &RingInfo,
        offloads: u32,
        mode: NotifyMode,
    ) -> Result<Self, RingError> {
        let rx = DeviceQueue::new(map, info)?;
        let used = rx.published_used()?;
        let rx = rx.with_state(used, used);
        rx.set_notifications(mode, false)?;
        Ok(PushRx {
            rx,
            room: 0,
            used_added: false,
            mergeable: u64::from(offloads) & MRG_RXBUF != 0,
            offloads: u64::from(offloads),
            segs: Vec::with_capacity(8),
            scratch: Vec::new(),
            frames: offload::Frames::default(),
        })
    }

    /// RX chains posted and not yet taken (at least `room` when non-zero:
    /// the member's avail index is loaded again only at 0).
    #[inline]
    pub fn room(&mut self) -> Result<u16, RingError> {
        if self.room == 0 {
            self.room = self.rx.pending()?;
        }
        Ok(self.room)
    }

    /// The fast burst (`burst.rs`) may fill this ring: the member takes
    /// no `num_buffers` (with `MRG_RXBUF` the general path writes it).
    #[inline(always)]
    pub(super) fn plain_ring(&mut self) -> Option<&mut DeviceQueue> {
        (!self.mergeable).then_some(&mut self.rx)
    }

    /// The fast burst took `n` of the chains [`PushRx::room`] counted
    /// (through a taker on [`PushRx::plain_ring`]) and wrote their used
    /// entries.
    #[inline(always)]
    pub(super) fn took(&mut self, n: u16) {
        self.room -= n;
        self.used_added |= n > 0;
    }

    /// The per-frame fast path of [`PushRx::put`], as the copier's
    /// `copy_plain`: a frame in one piece (`s`, in `from`) into an RX
    /// chain of one descriptor that holds it, with a plain header, for a
    /// member without `MRG_RXBUF`: `Some(true)` delivered, `Some(false)`
    /// no RX buffer posted. `None`: anything else, nothing consumed (the
    /// RX buffer may hold a copy, which the general path overwrites);
    /// [`PushRx::put`] takes the same frame and names what it finds. The
    /// checks are the same (`walk_one`, [`Region::copy_from`]); what it
    /// saves is moving a `Result` with its error through the stack per
    /// frame.
    #[inline(always)]
    pub fn put_plain(&mut self, mem: &Region, from: &Region, s: Seg, len: u32) -> Option<bool> {
        if self.mergeable || s.len != len {
            return None;
        }
        if self.room == 0 {
            self.room = self.rx.pending().ok()?;
            if self.room == 0 {
                return Some(false);
            }
        }
        let head = self.rx.peek_head().ok()?;
        let d = self.rx.walk_one(head, true)?;
        if d.len < len || d.addr % 2 != 0 {
            return None;
        }
        mem.copy_from(d.addr, from, s.addr, u64::from(len)).ok()?;
        // Relaxed: we wrote these two bytes just now (see `plain`).
        if !matches!(
            mem.load_u16("offload header", d.addr, Ordering::Relaxed),
            Ok(0)
        ) {
            return None;
        }
        self.rx.add_used(head, len).ok()?;
        self.rx.advance();
        self.room -= 1;
        self.used_added = true;
        Some(true)
    }

    /// Copy a frame of `len` bytes into the member's next RX chain (the
    /// member's memory is `mem`). False when it posted none.
    #[inline]
    pub fn put(&mut self, mem: &Region, src: Frame<'_>, len: u32) -> Result<bool, PushError> {
        if self.room()? == 0 {
            return Ok(false);
        }
        let head = self.rx.peek_head()?;
        let one = match self.rx.walk_one(head, true) {
            Some(d) if d.len >= len => Some(d),
            _ => None,
        };
        let d = match one {
            Some(d) => d,
            None => {
                // A chain of several pieces, too small, or malformed: walk
                // it again with the error named.
                self.take_chain(head, len)?;
                Seg { addr: 0, len: 0 }
            }
        };
        // `d.len == 0`: the pieces are in `self.segs`.
        let copied = match (src, d.len) {
            (Frame::Chain(from, [s]), n) if n > 0 => mem
                .copy_from(d.addr, from, s.addr, u64::from(len))
                .map(|_| ()),
            (Frame::Chain(from, segs), n) => {
                let dst = if n > 0 {
                    std::slice::from_ref(&d)
                } else {
                    &self.segs[..]
                };
                gather_scatter(mem, dst, from, segs).map(|_| ())
            }
            (Frame::Bytes(b), n) => {
                let bytes = &b[..len as usize];
                if n > 0 {
                    mem.write("frame from tap", d.addr, bytes)
                } else {
                    crate::copier::write_chain(mem, &self.segs, bytes)
                }
            }
        };
        // Nothing taken yet: the chain stays for the next frame.
        copied.map_err(PushError::Source)?;
        if d.len > 0 {
            self.segs.clear();
            self.segs.push(d);
        }
        if !self.plain(mem) {
            return self.offload(mem, head, len);
        }
        self.deliver(mem, head, len)?;
        Ok(true)
    }

    /// The header of the frame just copied into `self.segs` asks for no
    /// offload (flags and `gso_type` 0; the copier's fast test). Relaxed:
    /// we wrote these bytes just now in this thread; a member changing
    /// them under us only changes what its own guest reads.
    #[inline]
    fn plain(&self, mem: &Region) -> bool {
        match self.segs.first() {
            Some(d) if d.len >= 2 && d.addr % 2 == 0 => {
                matches!(
                    mem.load_u16("offload header", d.addr, Ordering::Relaxed),
                    Ok(0)
                )
            }
            _ => {
                let mut b = [0u8; 2];
                crate::copier::read_prefix(mem, &self.segs, &mut b) < 2
                    || NetHdr::is_plain(b[0], b[1])
            }
        }
    }

    /// Mark the chain `head` (pieces in `self.segs`) used with `len` bytes.
    #[inline]
    fn deliver(&mut self, mem: &Region, head: u16, len: u32) -> Result<(), PushError> {
        if self.mergeable {
            put_num_buffers(mem, &self.segs, len, 1)
                .map_err(|e| PushError::Ring(RingError::Memory(e)))?;
        }
        self.rx.add_used(head, len)?;
        self.rx.advance();
        self.room -= 1;
        self.used_added = true;
        Ok(())
    }

    /// Read the RX chain `head` into `self.segs`; one that cannot hold
    /// `len` bytes, or is malformed, goes back unused ([`Self::reject`])
    /// and is named.
    fn take_chain(&mut self, head: u16, len: u32) -> Result<(), PushError> {
        match self.rx.read_chain(head, true, &mut self.segs) {
            Ok(room) if room >= len => Ok(()),
            Ok(room) => {
                self.reject(head)?;
                Err(PushError::Chain(ChainError::BadLength {
                    total: u64::from(room),
                }))
            }
            Err(e) => {
                self.reject(head)?;
                Err(PushError::Chain(e))
            }
        }
    }

    /// Give back a malformed RX chain, used with length 0.
    #[cold]
    fn reject(&mut self, head: u16) -> Result<(), RingError> {
        self.rx.add_used(head, 0)?;
        self.rx.advance();
        self.room -= 1;
        self.used_added = true;
        Ok(())
    }

    /// The frame (`len` bytes in `self.segs`) asks for an offload: pass it
    /// if the member takes it, else fix it and deliver what comes out, each
    /// frame in its own RX chain (all or nothing: false until the member
    /// posted enough). The copier's `offload_copied`, on the switch side.
    #[cold]
    fn offload(&mut self, mem: &Region, head: u16, len: u32) -> Result<bool, PushError> {
        let mut h = [0u8; NET_HDR];
        if crate::copier::read_prefix(mem, &self.segs, &mut h) < NET_HDR {
            return Err(PushError::Offload(OffloadError::NoHeader(len)));
        }
        let hdr = NetHdr::parse(&h);
        let needs = hdr
            .check(len - NET_HDR as u32)
            .map_err(PushError::Offload)?;
        if needs & !self.offloads == 0 {
            self.deliver(mem, head, len)?;
            return Ok(true);
        }
        if len > crate::copier::MAX_FIX {
            return Err(PushError::Offload(OffloadError::TooLong(len)));
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.resize(len as usize, 0);
        let got = crate::copier::read_prefix(mem, &self.segs, &mut scratch);
        let mut frames = std::mem::take(&mut self.frames);
        let result = if got < len as usize {
            Err(PushError::Offload(OffloadError::NoHeader(len)))
        } else {
            offload::fix(&mut scratch, &hdr, &mut frames).map_err(PushError::Offload)
        };
        let out = match result {
            Ok(_) => self.deliver_frames(mem, &mut frames),
            Err(e) => Err(e),
        };
        self.scratch = scratch;
        self.frames = frames;
        out
    }

    /// Deliver each of `frames` into the member's next RX chains.
    fn deliver_frames(
        &mut self,
        mem: &Region,
        frames: &mut offload::Frames,
    ) -> Result<bool, PushError> {
        let n = frames.len();
        if (self.room as usize) < n {
            self.room = self.rx.pending()?;
            if (self.room as usize) < n {
                return Ok(false);
            }
        }
        if self.mergeable {
            frames.set_num_buffers(1);
        }
        for i in 0..n {
            let data = frames.get(i);
            let len = data.len() as u32;
            let head = self.rx.peek_head()?;
            self.take_chain(head, len)?;
            crate::copier::write_chain(mem, &self.segs, data)
                .map_err(|e| PushError::Ring(RingError::Memory(e)))?;
            self.rx.add_used(head, len)?;
            self.rx.advance();
            self.room -= 1;
            self.used_added = true;
        }
        Ok(true)
    }

    /// Publish this turn's used entries; true when the member asked to be
    /// told (its RX `used_event` / flags).
    pub fn flush(&mut self, mode: NotifyMode) -> Result<bool, RingError> {
        if !std::mem::take(&mut self.used_added) {
            return Ok(false);
        }
        let (old, new) = self.rx.publish_used()?;
        self.rx.interrupt_needed(mode, old, new)
    }

    /// Ask the member to kick us when it posts RX buffers (`on`: we wait
    /// for room), or stop asking.
    pub fn arm(&self, mode: NotifyMode, on: bool) -> Result<(), RingError> {
        self.rx.set_notifications(mode, on)
    }

    /// Has the member posted a buffer since we last looked?
    pub fn has_room(&self) -> Result<bool, RingError> {
        Ok(self.room > 0 || self.rx.pending()? > 0)
    }
}

#[cfg(test)]
mod tests;
