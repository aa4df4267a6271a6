//! The device side of a ring: the peer's TX ring or our own RX ring.

use super::layout::Offsets;
use super::*;
use crate::memory::OutOfBounds;
use crate::memory::{GuestMap, Region};
use std::sync::atomic::{fence, Ordering};
use transport::RingInfo;

mod taker;
mod xlat;

pub use taker::{copy_planned, with_plan, Planned, Taker, SMALL_PLAN};
use xlat::{translate, Xlat};

/// How many entries ahead [`DeviceQueue::add_used`] prefetches the used
/// ring for writing: two lines of eight entries.
const USED_PREFETCH_AHEAD: u16 = 16;

/// A chain [`DeviceQueue::walk_chain`] read and checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chain {
    /// One descriptor (every frame of a synthetic guest, most of a VM's):
    /// its buffer, as an offset in the mapping.
    One(Seg),
    /// Several: their buffers are in the `segs` the walk was given; the
    /// chain's total length.
    Many(u32),
}

impl Chain {
    /// Bytes in the chain.
    #[inline]
    pub fn len(&self) -> u32 {
        match *self {
            Chain::One(s) => s.len,
            Chain::Many(total) => total,
        }
    }

    /// Never true: a chain of no bytes is refused as [`ChainError::BadLength`].
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Descriptors the walk kept (`segs.len()` for [`Chain::Many`]).
    #[inline]
    pub fn descriptors(&self, segs: &[Seg]) -> usize {
        match self {
            Chain::One(_) => 1,
            Chain::Many(_) => segs.len(),
        }
    }
}

/// The device side of a ring: the peer's TX ring (in the peer's memory) or
/// our own RX ring. Nothing read here is trusted. Ring and buffer addresses
/// are guest-physical and go through the memory's [`GuestMap`].
pub struct DeviceQueue {
    mem: Region,
    map: GuestMap,
    off: Offsets,
    last_avail: u16,
    next_used: u16,
    /// Per descriptor index, the last buffer translated through `map`:
    /// `(guest address, length, offset)`. The map never changes for this
    /// queue, so a descriptor that names the same buffer as last time (a
    /// driver that ties buffers to descriptors, as ours and most do) takes
    /// its offset from here: the same answer, without the region search.
    /// Every descriptor is still read once and every field checked; this
    /// only remembers the result of a pure function of two of them.
    xlat: Vec<Xlat>,
    /// The used index we last published (`None` until our first
    /// publication, which reads it from the ring once). We are its only
    /// writer, so the old value for the suppression check comes from here,
    /// not from whatever a peer may have scribbled on the shared field.
    used_published: Option<u16>,
    /// The head of the last chain a [`Taker`] took: where the next one
    /// most likely is, for a prefetch only ([`Taker::prefetch_next`]).
    last_head: u16,
}

impl DeviceQueue {
    /// Serve the ring at guest addresses `info` in `map`. Each part of the
    /// ring must lie inside one memory region, aligned as virtio requires
    /// (the avail ring to 2 bytes, the used ring to 4), and the size must
    /// be a power of two up to 32768.
    ///
    /// This is the one bounds check of the ring's fixed parts: every
    /// descriptor, avail entry and used entry the per-packet accessors
    /// touch is at an index below `size` (checked, or masked by the
    /// power-of-two size), so inside the parts proved here.
    pub fn new(map: &GuestMap, info: &RingInfo) -> Result<Self, RingError> {
        if !info.size.is_power_of_two() || info.size > 32768 {
            return Err(RingError::BadSize { size: info.size });
        }
        let t = |what, gpa: u64, len: u64| {
            map.translate(gpa, len)
                .ok_or(RingError::Memory(OutOfBounds {
                    what,
                    offset: gpa,
                    len,
                    size: map.region().len(),
                }))
        };
        let local = RingInfo {
            desc: t("descriptor table", info.desc, info.desc_bytes())?,
            avail: t("avail ring", info.avail, info.avail_bytes())?,
            used: t("used ring", info.used, info.used_bytes())?,
            size: info.size,
        };
        let mem = map.region();
        mem.check("descriptor table", local.desc, info.desc_bytes(), 1)?;
        mem.check("avail ring", local.avail, info.avail_bytes(), 2)?;
        mem.check("used ring", local.used, info.used_bytes(), 4)?;
        Ok(DeviceQueue {
            mem: map.region().clone(),
            map: map.clone(),
            off: Offsets::new(&local),
            last_avail: 0,
            next_used: 0,
            xlat: vec![Xlat::NONE; info.size as usize],
            used_published: None,
            last_head: 0,
        })
    }

    /// Start at ring position `last_avail`/`next_used` instead of 0/0: a
    /// ring whose device side was already served (a vhost-user backend's
    /// `SET_VRING_BASE`, the used index the driver left).
    pub fn with_state(mut self, last_avail: u16, next_used: u16) -> Self {
        self.last_avail = last_avail;
        self.next_used = next_used;
        self.used_published = None;
        self
    }

    /// The queue's size (entries).
    pub fn size(&self) -> u16 {
        self.off.size
    }

    /// Where we are: `(last_avail, next_used)` — the next chain we will
    /// take and the next used slot we will fill (what vhost-user's
    /// `GET_VRING_BASE` reports).
    pub fn state(&self) -> (u16, u16) {
        (self.last_avail, self.next_used)
    }

    /// The used index as published in the ring: how far a device side
    /// that served this ring before us got (a restarted peer's copier, a
    /// backend before a reconnect). Read from shared memory; only ever a
    /// starting point, as [`DeviceQueue::pending`] checks every avail index
    /// against it.
    pub fn published_used(&self) -> Result<u16, RingError> {
        // Acquire: pairs with the release store of the device side that
        // published it (the entries before it are complete).
        Ok(self
            .mem
            .load_u16("used idx", self.off.used_idx(), Ordering::Acquire)?)
    }

    /// How many chains the driver has made available that we have not
    /// taken. A jump of more than the queue size is an impossible state.
    pub fn pending(&self) -> Result<u16, RingError> {
        // Acquire: the ring entries and descriptors the driver wrote before
        // publishing this index are visible to our reads after it.
        let idx = self
            .mem
            .load_u16("avail idx", self.off.avail_idx(), Ordering::Acquire)?;
        let n = idx.wrapping_sub(self.last_avail);
        if n > self.off.size {
            return Err(RingError::AvailJump {
                from: self.last_avail,
                to: idx,
                size: self.off.size,
            });
        }
        Ok(n)
    }

    /// The head of the next available chain (read once).
    #[inline(always)]
    pub fn peek_head(&self) -> Result<u16, RingError> {
        Ok(self.avail_entry(self.last_avail))
    }

    /// Avail ring entry `i` (masked by the size), read once.
    #[inline(always)]
    fn avail_entry(&self, i: u16) -> u16 {
        let at = self.off.avail_ring(i);
        // SAFETY: `at` is `avail + 4 + 2 * (i & (size - 1))`: below
        // `avail + 4 + 2 * size`, so its two bytes lie inside the avail
        // ring, which `new` checked is inside the mapping and 2-aligned
        // (the size a power of two, so the mask keeps the index below it).
        // Race: an atomic load, its value checked by the caller.
        unsafe { self.mem.load_u16_in_bounds(at, Ordering::Relaxed) }
    }

    /// The head of the available chain `n` places after the next one
    /// (`peek_head_at(0)` is [`DeviceQueue::peek_head`]); the caller checked
    /// with [`DeviceQueue::pending`] that the driver made it available.
    /// Mergeable RX buffers: one frame takes several chains.
    pub fn peek_head_at(&self, n: u16) -> Result<u16, RingError> {
        Ok(self.avail_entry(self.last_avail.wrapping_add(n)))
    }

    /// Walk the chain at `head` into `segs`, checking every descriptor: index
    /// in range, direction as expected, buffer inside memory, no indirect, no
    /// loop. Returns the chain's total length.
    ///
    /// A chain is walked for at most [`crate::garbage::MAX_CHAIN`]
    /// descriptors (or the queue size, if smaller); a longer one is a
    /// [`ChainError::Loop`]. Whether it fails or not, `segs` ends up
    /// holding one entry per descriptor read before the failing one, so
    /// `segs.len() + 1` bounds what the walk cost.
    ///
    /// A chain of one descriptor (every packet of ours, most of a VM's) is
    /// the inlined fast path; longer chains continue in
    /// `read_rest`. The checks are the same on both.
    #[inline]
    pub fn read_chain(
        &mut self,
        head: u16,
        writable: bool,
        segs: &mut Vec<Seg>,
    ) -> Result<u32, ChainError> {
        match self.walk_chain(head, writable, segs)? {
            Chain::One(seg) => {
                segs.push(seg);
                Ok(seg.len)
            }
            Chain::Many(total) => Ok(total),
        }
    }

    /// [`DeviceQueue::read_chain`] for the per-packet path: a chain of one
    /// descriptor comes back as [`Chain::One`] and `segs` stays empty (no
    /// vector traffic per packet); a longer chain is walked into `segs` as
    /// `read_chain` does and comes back as [`Chain::Many`]. The checks are
    /// the same, and on failure `segs` holds the descriptors read before
    /// the failing one, as with `read_chain`.
    #[inline(always)]
    pub fn walk_chain(
        &mut self,
        head: u16,
        writable: bool,
        segs: &mut Vec<Seg>,
    ) -> Result<Chain, ChainError> {
        segs.clear();
        let (seg, next) = self.read_desc(head, writable)?;
        match next {
            None if seg.len == 0 => {
                segs.push(seg); // read and kept, as for a longer chain
                Err(ChainError::BadLength { total: 0 })
            }
            None => Ok(Chain::One(seg)),
            Some(next) => {
                segs.push(seg);
                self.read_rest(next, writable, segs, seg.len as u64)
                    .map(Chain::Many)
            }
        }
    }

    /// The chain at `head` if it is a single descriptor of the expected
    /// direction and a non-zero length inside memory: the per-packet fast
    /// path. `None` for anything else (a longer chain, a malformed one),
    /// which the caller then walks with [`DeviceQueue::walk_chain`]: the
    /// same checks, with the error named.
    #[inline(always)]
    pub fn walk_one(&mut self, head: u16, writable: bool) -> Option<Seg> {
        match self.read_desc(head, writable) {
            Ok((seg, None)) if seg.len != 0 => Some(seg),
            _ => None,
        }
    }

    /// The rest of a chain after its head (whose length is `total`): at
    /// most `limit - 1` more descriptors (the queue size or `MAX_CHAIN`),
    /// or it loops.
    #[inline(never)]
    fn read_rest(
        &mut self,
        mut idx: u16,
        writable: bool,
        segs: &mut Vec<Seg>,
        mut total: u64,
    ) -> Result<u32, ChainError> {
        let size = self.off.size;
        let limit = size.min(crate::garbage::MAX_CHAIN);
        for _ in 1..limit {
            let (seg, next) = self.read_desc(idx, writable)?;
            segs.push(seg);
            total += seg.len as u64;
            match next {
                None if total == 0 || total > u32::MAX as u64 => {
                    return Err(ChainError::BadLength { total })
                }
                None => return Ok(total as u32),
                Some(next) => idx = next,
            }
        }
        Err(ChainError::Loop { size: limit })
    }

    /// Read descriptor `idx` once and check it: index in range, not
    /// indirect, direction as expected, buffer inside memory. Returns the
    /// buffer as an offset in the mapping, and the `next` link if the
    /// descriptor has one.
    #[inline(always)]
    fn read_desc(&mut self, idx: u16, writable: bool) -> Result<(Seg, Option<u16>), ChainError> {
        let size = self.off.size;
        if idx >= size {
            return Err(ChainError::BadIndex { index: idx, size });
        }
        // One fetch of the whole descriptor, into a register: what we check
        // is what we use.
        // SAFETY: `idx < size` (checked above), so the descriptor's 16 bytes
        // at `desc + 16 * idx` lie inside the descriptor table, which `new`
        // checked is inside the mapping. Race: read once into a register;
        // a torn value is checked field by field below.
        let d = unsafe { self.mem.load_u128_in_bounds(self.off.desc(idx)) };
        let addr = d as u64;
        let len = (d >> 64) as u32;
        let flags = (d >> 96) as u16;
        let next = (d >> 112) as u16;
        if flags & VRING_DESC_F_INDIRECT != 0 {
            return Err(ChainError::Indirect { index: idx });
        }
        let w = flags & VRING_DESC_F_WRITE != 0;
        if w != writable {
            return Err(ChainError::WrongDirection {
                index: idx,
                writable: w,
            });
        }
        let Some(offset) = self.translate(idx, addr, len) else {
            return Err(ChainError::OutOfBounds {
                addr,
                len,
                mem: self.mem.len(),
            });
        };
        let next = (flags & VRING_DESC_F_NEXT != 0).then_some(next);
        Ok((Seg { addr: offset, len }, next))
    }

    /// The offset of descriptor `idx`'s buffer `[addr, addr+len)`, through
    /// the per-descriptor cache (`xlat`) or the map.
    #[inline(always)]
    fn translate(&mut self, idx: u16, addr: u64, len: u32) -> Option<u64> {
        translate(&self.map, &mut self.xlat, idx, addr, len)
    }

    /// We are done with the chain we peeked: move past it.
    pub fn advance(&mut self) {
        self.last_avail = self.last_avail.wrapping_add(1);
    }

    /// Record that chain `id` is done and `len` bytes were written to it
    /// (not yet visible: see [`DeviceQueue::publish_used`]).
    #[inline(always)]
    pub fn add_used(&mut self, id: u16, len: u32) -> Result<(), RingError> {
        let at = self.off.used_ring(self.next_used);
        // SAFETY: `at` is `used + 4 + 8 * (next_used & (size - 1))`: its 8
        // bytes lie below `used + 4 + 8 * size`, inside the used ring,
        // which `new` checked is inside the mapping and 4-aligned. Race:
        // atomic stores (see `Region::store_u32_pair`).
        unsafe { self.mem.store_u32_pair_in_bounds(at, (id as u32, len)) };
        // The entry two lines on: its line was last read by the driver (on
        // the peer's CPU for the peer's TX ring), so ask for it now rather
        // than let the store that needs it hold up every store after it
        // (see `memory/region/prefetch.rs`).
        let ahead = self.next_used.wrapping_add(USED_PREFETCH_AHEAD);
        self.mem.prefetch_for_write(self.off.used_ring(ahead));
        self.next_used = self.next_used.wrapping_add(1);
        Ok(())
    }

    /// Publish the used entries added so far. Returns `(old, new)`.
    pub fn publish_used(&mut self) -> Result<(u16, u16), RingError> {
        let old = match self.used_published {
            Some(old) => old,
            None => self
                .mem
                .load_u16("used idx", self.off.used_idx(), Ordering::Relaxed)?,
        };
        // Release: the packet bytes we copied and the used entries are
        // visible before the driver can see the new index.
        self.mem.store_u16(
            "used idx",
            self.off.used_idx(),
            self.next_used,
            Ordering::Release,
        )?;
        self.used_published = Some(self.next_used);
        Ok((old, self.next_used))
    }

    /// Ask for (or stop asking for) kicks when the driver adds buffers.
    /// Flags mode clears/sets `VRING_USED_F_NO_NOTIFY`; event-idx mode
    /// writes `avail_event = last_avail` ("kick me when you pass what I've
    /// seen") on enable and leaves it stale on disable, which suppresses.
    pub fn set_notifications(&self, mode: NotifyMode, enable: bool) -> Result<(), RingError> {
        self.set_notifications_for(mode, enable, 1)
    }

    /// [`DeviceQueue::set_notifications`], but in event-idx mode kick us
    /// only once `wanted` chains (at least 1) are available past the ones
    /// we took: `avail_event = last_avail + wanted - 1`. A mergeable-buffer
    /// frame that needs several RX chains waits for all of them, not for a
    /// kick per buffer (the caller's re-check covers a driver that got
    /// there first).
    pub fn set_notifications_for(
        &self,
        mode: NotifyMode,
        enable: bool,
        wanted: u16,
    ) -> Result<(), RingError> {
        match mode {
            NotifyMode::Always => {}
            NotifyMode::Flags => {
                let f = if enable { 0 } else { VRING_USED_F_NO_NOTIFY };
                self.mem
                    .store_u16("used flags", self.off.used_flags(), f, Ordering::Relaxed)?;
            }
            NotifyMode::EventIdx => {
                if enable {
                    self.mem.store_u16(
                        "avail_event",
                        self.off.avail_event(),
                        self.last_avail.wrapping_add(wanted.max(1) - 1),
                        Ordering::Relaxed,
                    )?;
                }
            }
        }
        Ok(())
    }

    /// After publishing used `old..new`, does the driver want an interrupt?
    pub fn interrupt_needed(
        &self,
        mode: NotifyMode,
        old: u16,
        new: u16,
    ) -> Result<bool, RingError> {
        // Full fence: our used index store must be visible before we read
        // the driver's suppression field (the mirror of `kick_needed`).
        fence(Ordering::SeqCst);
        Ok(match mode {
            NotifyMode::Always => true,
            NotifyMode::Flags => {
                self.mem
                    .load_u16("avail flags", self.off.avail_flags(), Ordering::Relaxed)?
                    & VRING_AVAIL_F_NO_INTERRUPT
                    == 0
            }
            NotifyMode::EventIdx => {
                let event =
                    self.mem
                        .load_u16("used_event", self.off.used_event(), Ordering::Relaxed)?;
                vring_need_event(event, new, old)
            }
        })
    }
}
