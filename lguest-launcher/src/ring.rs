//! The split virtqueue, in the virtio 1.x layout, both sides of it.
//!
//! A ring lives in the memory of the side that *drives* it (its guest):
//! a descriptor table (`addr u64, len u32, flags u16, next u16` per entry),
//! an avail ring (`flags, idx, ring[size], used_event`) the driver writes,
//! and a used ring (`flags, idx, ring[size] of {id u32, len u32},
//! avail_event`) the device writes. Our launcher drives two rings (its
//! guest's TX and RX) and serves two as a device: the *peer's* TX ring,
//! which our copier pulls packets from, and our own RX ring, which it fills.
//! Each used ring has exactly one writer: the copier on the receiving side.
//!
//! Ordering, as in the spec and lguest.c: a producer fills entries, then
//! publishes the index with a release store; a consumer loads the index
//! with acquire, then reads entries. Before deciding whether to notify, the
//! publisher issues a full fence so its index store is visible before it
//! reads the other side's suppression field (flag or event index) — else
//! both could decide the other is awake and sleep forever.
//!
//! # Why not rust-vmm `virtio-queue`
//! `virtio-queue`'s device side walks a queue through `vm-memory`'s
//! `GuestMemory`, which wants guest-physical address spaces and its own
//! region types; here the "guest memory" of the device side is a peer's
//! memfd mapped at offset 0, and the driver side (our synthetic guest) has
//! to be ours anyway. We keep the same discipline — every address checked
//! with `checked_add`, each descriptor read once into a local copy, a
//! named error per malformed case, explicit orderings — in ~400 lines over
//! one bounds-checked accessor ([`Region`]), which also keeps the hot path
//! free of trait dispatch. The vhost-user work (real VMs) is where
//! `virtio-queue` will come in, behind the same `DeviceQueue` interface.

use crate::memory::{GuestMap, OutOfBounds, Region};
use std::sync::atomic::{fence, Ordering};
use transport::RingInfo;

/// Descriptor continues in `next`.
pub const VRING_DESC_F_NEXT: u16 = 1;
/// Buffer is device-writable.
pub const VRING_DESC_F_WRITE: u16 = 2;
/// Buffer holds a table of descriptors (not negotiated here).
pub const VRING_DESC_F_INDIRECT: u16 = 4;
/// Driver → device: "don't interrupt me" (flags mode).
pub const VRING_AVAIL_F_NO_INTERRUPT: u16 = 1;
/// Device → driver: "don't kick me" (flags mode).
pub const VRING_USED_F_NO_NOTIFY: u16 = 1;

/// How notifications are suppressed. Ordered: a pair uses the lower of the
/// two sides' modes, since each side maintains only its own mode's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NotifyMode {
    /// Notify after every batch, as the 2008 launcher did.
    Always,
    /// `VRING_AVAIL_F_NO_INTERRUPT` / `VRING_USED_F_NO_NOTIFY`.
    Flags,
    /// VIRTIO_F_EVENT_IDX: `used_event` / `avail_event`.
    EventIdx,
}

impl NotifyMode {
    /// The handshake feature bits of a side that maintains this mode's
    /// suppression fields.
    pub fn features(self) -> u64 {
        match self {
            NotifyMode::Always => 0,
            NotifyMode::Flags => transport::F_NOTIFY_FLAGS,
            NotifyMode::EventIdx => transport::F_NOTIFY_FLAGS | transport::F_EVENT_IDX,
        }
    }

    /// The mode a peer maintains, from its handshake feature bits.
    pub fn from_features(f: u64) -> Self {
        if f & transport::F_EVENT_IDX != 0 {
            NotifyMode::EventIdx
        } else if f & transport::F_NOTIFY_FLAGS != 0 {
            NotifyMode::Flags
        } else {
            NotifyMode::Always
        }
    }

    /// The spelling used on the command line and in stats.
    pub fn name(self) -> &'static str {
        match self {
            NotifyMode::Always => "always",
            NotifyMode::Flags => "flags",
            NotifyMode::EventIdx => "event-idx",
        }
    }
}

/// The `vring_need_event` rule: notify iff `event` lies in `[old, new)`,
/// in 16-bit wrapping arithmetic.
#[inline]
pub fn vring_need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// One readable or writable piece of a chain, already bounds-checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seg {
    /// Offset in the ring owner's memory.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
}

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
    /// The chain is longer than the queue: it loops.
    #[error("looped descriptor chain (more than {size} descriptors)")]
    Loop {
        /// The queue size.
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
    /// A ring field outside memory (our layout is checked, so this is a bug
    /// or a handshake that slipped through).
    #[error(transparent)]
    Memory(#[from] OutOfBounds),
}

/// Byte offsets of one ring's fields.
#[derive(Clone, Copy, Debug)]
struct Offsets {
    desc: u64,
    avail: u64,
    used: u64,
    size: u16,
}

impl Offsets {
    fn new(info: &RingInfo) -> Self {
        Offsets {
            desc: info.desc,
            avail: info.avail,
            used: info.used,
            size: info.size as u16, // ≤ 32768, validated by the handshake
        }
    }
    #[inline]
    fn mask(&self) -> u16 {
        self.size.wrapping_sub(1)
    }
    #[inline]
    fn desc(&self, i: u16) -> u64 {
        self.desc + 16 * i as u64
    }
    #[inline]
    fn avail_flags(&self) -> u64 {
        self.avail
    }
    #[inline]
    fn avail_idx(&self) -> u64 {
        self.avail + 2
    }
    #[inline]
    fn avail_ring(&self, i: u16) -> u64 {
        self.avail + 4 + 2 * (i & self.mask()) as u64
    }
    #[inline]
    fn used_event(&self) -> u64 {
        self.avail + 4 + 2 * self.size as u64
    }
    #[inline]
    fn used_flags(&self) -> u64 {
        self.used
    }
    #[inline]
    fn used_idx(&self) -> u64 {
        self.used + 2
    }
    #[inline]
    fn used_ring(&self, i: u16) -> u64 {
        self.used + 4 + 8 * (i & self.mask()) as u64
    }
    #[inline]
    fn avail_event(&self) -> u64 {
        self.used + 4 + 8 * self.size as u64
    }
}

/// The driver side of a ring in our own memory (our synthetic guest).
pub struct DriverQueue {
    mem: Region,
    off: Offsets,
    free: Vec<u16>,
    /// Local shadow of the chains we posted: the `next` link of each
    /// descriptor and the length of each in-flight chain by head (0: not in
    /// flight). Chains are freed from this shadow, never from the shared
    /// table, which the peer could scribble on.
    next: Vec<u16>,
    chain_len: Vec<u16>,
    in_flight: u16,
    next_avail: u16,
    last_used: u16,
}

impl DriverQueue {
    /// Take over a zeroed ring at `info` in `mem`.
    pub fn new(mem: Region, info: &RingInfo) -> Self {
        let off = Offsets::new(info);
        DriverQueue {
            mem,
            off,
            free: (0..off.size).rev().collect(),
            next: vec![0; off.size as usize],
            chain_len: vec![0; off.size as usize],
            in_flight: 0,
            next_avail: 0,
            last_used: 0,
        }
    }

    /// Descriptors not in flight.
    pub fn num_free(&self) -> usize {
        self.free.len()
    }

    /// Chains given to the device and not yet returned.
    pub fn in_flight(&self) -> u16 {
        self.in_flight
    }

    /// Post a chain of `(offset, len)` buffers, all device-readable or all
    /// device-writable, without publishing it. Returns the head id, or
    /// `None` when too few descriptors are free.
    pub fn add(&mut self, bufs: &[Seg], writable: bool) -> Result<Option<u16>, RingError> {
        if bufs.is_empty() || bufs.len() > self.free.len() {
            return Ok(None);
        }
        // The chain takes the top `n` free ids (no allocation per packet).
        let n = bufs.len();
        let top = self.free.len();
        let id_at = |i: usize| self.free[top - 1 - i];
        for (i, b) in bufs.iter().enumerate() {
            let id = id_at(i);
            let mut flags = if writable { VRING_DESC_F_WRITE } else { 0 };
            let next = if i + 1 < n {
                flags |= VRING_DESC_F_NEXT;
                id_at(i + 1)
            } else {
                0
            };
            let mut d = [0u8; 16];
            d[0..8].copy_from_slice(&b.addr.to_le_bytes());
            d[8..12].copy_from_slice(&b.len.to_le_bytes());
            d[12..14].copy_from_slice(&flags.to_le_bytes());
            d[14..16].copy_from_slice(&next.to_le_bytes());
            self.mem.write("descriptor", self.off.desc(id), &d)?;
            self.next[id as usize] = next;
        }
        let head = id_at(0);
        self.free.truncate(top - n);
        self.mem.store_u16(
            "avail ring",
            self.off.avail_ring(self.next_avail),
            head,
            Ordering::Relaxed,
        )?;
        self.next_avail = self.next_avail.wrapping_add(1);
        self.chain_len[head as usize] = n as u16;
        self.in_flight += 1;
        Ok(Some(head))
    }

    /// Post a one-descriptor chain.
    pub fn add_one(&mut self, buf: Seg, writable: bool) -> Result<Option<u16>, RingError> {
        self.add(std::slice::from_ref(&buf), writable)
    }

    /// Post a one-descriptor chain whose buffer is tied to its descriptor:
    /// descriptor `id` gets slot `base + id * stride`. Returns `(id, slot)`,
    /// or `None` when the ring is full. The caller fills the slot before
    /// the next [`DriverQueue::publish`].
    pub fn add_slot(
        &mut self,
        base: u64,
        stride: u64,
        len: u32,
        writable: bool,
    ) -> Result<Option<(u16, u64)>, RingError> {
        let Some(&id) = self.free.last() else {
            return Ok(None);
        };
        let addr = base + id as u64 * stride;
        let head = self.add_one(Seg { addr, len }, writable)?;
        debug_assert_eq!(head, Some(id));
        Ok(head.map(|h| (h, addr)))
    }

    /// Make everything added since the last publish visible to the device.
    /// Returns `(old, new)` avail indexes for the kick decision.
    pub fn publish(&mut self) -> Result<(u16, u16), RingError> {
        let old = self
            .mem
            .load_u16("avail idx", self.off.avail_idx(), Ordering::Relaxed)?;
        // Release: descriptors and ring entries written above are visible
        // before the device can see the new index.
        self.mem.store_u16(
            "avail idx",
            self.off.avail_idx(),
            self.next_avail,
            Ordering::Release,
        )?;
        Ok((old, self.next_avail))
    }

    /// True when the device has returned something we have not popped.
    pub fn has_used(&self) -> Result<bool, RingError> {
        Ok(self
            .mem
            .load_u16("used idx", self.off.used_idx(), Ordering::Acquire)?
            != self.last_used)
    }

    /// Pop one used chain: `(head id, bytes written)`. The used ring is
    /// written by the peer's copier, so every field is checked.
    pub fn pop_used(&mut self) -> Result<Option<(u16, u32)>, RingError> {
        // Acquire: the entry (and the data in the buffer) written before the
        // device published this index are visible to the reads below.
        let used = self
            .mem
            .load_u16("used idx", self.off.used_idx(), Ordering::Acquire)?;
        if used == self.last_used {
            return Ok(None);
        }
        if used.wrapping_sub(self.last_used) > self.in_flight {
            return Err(RingError::UsedJump {
                from: self.last_used,
                to: used,
                in_flight: self.in_flight,
            });
        }
        let at = self.off.used_ring(self.last_used);
        let id = self.mem.load_u32("used entry", at)?;
        let len = self.mem.load_u32("used entry", at + 4)?;
        self.last_used = self.last_used.wrapping_add(1);
        if id >= self.off.size as u32 || self.chain_len[id as usize] == 0 {
            return Err(RingError::BadUsedId { id });
        }
        let mut cur = id as u16;
        for _ in 0..std::mem::take(&mut self.chain_len[id as usize]) {
            self.free.push(cur);
            cur = self.next[cur as usize];
        }
        self.in_flight -= 1;
        Ok(Some((id as u16, len)))
    }

    /// Ask for (or stop asking for) interrupts when the device uses buffers.
    /// Flags mode clears/sets `VRING_AVAIL_F_NO_INTERRUPT`; event-idx mode
    /// writes `used_event = at` ("interrupt me once used passes `at`").
    pub fn set_interrupts(&self, mode: NotifyMode, enable: bool, at: u16) -> Result<(), RingError> {
        match mode {
            NotifyMode::Always => {}
            NotifyMode::Flags => {
                let f = if enable {
                    0
                } else {
                    VRING_AVAIL_F_NO_INTERRUPT
                };
                self.mem
                    .store_u16("avail flags", self.off.avail_flags(), f, Ordering::Relaxed)?;
            }
            NotifyMode::EventIdx => {
                if enable {
                    self.mem.store_u16(
                        "used_event",
                        self.off.used_event(),
                        at,
                        Ordering::Relaxed,
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Index of the next used entry we will pop.
    pub fn last_used(&self) -> u16 {
        self.last_used
    }

    /// After publishing `old..new`, does the device want a kick?
    pub fn kick_needed(&self, mode: NotifyMode, old: u16, new: u16) -> Result<bool, RingError> {
        // Full fence: our avail index store must be visible before we read
        // the device's suppression field; otherwise the device may re-check
        // the ring before our store lands, go to sleep, and we skip the kick.
        fence(Ordering::SeqCst);
        Ok(match mode {
            NotifyMode::Always => true,
            NotifyMode::Flags => {
                self.mem
                    .load_u16("used flags", self.off.used_flags(), Ordering::Relaxed)?
                    & VRING_USED_F_NO_NOTIFY
                    == 0
            }
            NotifyMode::EventIdx => {
                let event =
                    self.mem
                        .load_u16("avail_event", self.off.avail_event(), Ordering::Relaxed)?;
                vring_need_event(event, new, old)
            }
        })
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
}

impl DeviceQueue {
    /// Serve the ring at guest addresses `info` in `map`. Each part of the
    /// ring must lie inside one memory region.
    pub fn new(map: &GuestMap, info: &RingInfo) -> Result<Self, RingError> {
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
        Ok(DeviceQueue {
            mem: map.region().clone(),
            map: map.clone(),
            off: Offsets::new(&local),
            last_avail: 0,
            next_used: 0,
        })
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
    pub fn peek_head(&self) -> Result<u16, RingError> {
        Ok(self.mem.load_u16(
            "avail ring",
            self.off.avail_ring(self.last_avail),
            Ordering::Relaxed,
        )?)
    }

    /// Walk the chain at `head` into `segs`, checking every descriptor: index
    /// in range, direction as expected, buffer inside memory, no indirect, no
    /// loop. Returns the chain's total length.
    pub fn read_chain(
        &self,
        head: u16,
        writable: bool,
        segs: &mut Vec<Seg>,
    ) -> Result<u32, ChainError> {
        segs.clear();
        let size = self.off.size;
        let mut idx = head;
        let mut total: u64 = 0;
        for _ in 0..size {
            if idx >= size {
                return Err(ChainError::BadIndex { index: idx, size });
            }
            // One fetch of the whole descriptor: what we check is what we use.
            let mut d = [0u8; 16];
            self.mem
                .read("descriptor", self.off.desc(idx), &mut d)
                .map_err(|_| ChainError::BadIndex { index: idx, size })?;
            let addr = u64::from_le_bytes(d[0..8].try_into().unwrap_or_default());
            let len = u32::from_le_bytes(d[8..12].try_into().unwrap_or_default());
            let flags = u16::from_le_bytes([d[12], d[13]]);
            let next = u16::from_le_bytes([d[14], d[15]]);
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
            let Some(offset) = self.map.translate(addr, len as u64) else {
                return Err(ChainError::OutOfBounds {
                    addr,
                    len,
                    mem: self.mem.len(),
                });
            };
            segs.push(Seg { addr: offset, len });
            total += len as u64;
            if flags & VRING_DESC_F_NEXT == 0 {
                if total == 0 || total > u32::MAX as u64 {
                    return Err(ChainError::BadLength { total });
                }
                return Ok(total as u32);
            }
            idx = next;
        }
        Err(ChainError::Loop { size })
    }

    /// We are done with the chain we peeked: move past it.
    pub fn advance(&mut self) {
        self.last_avail = self.last_avail.wrapping_add(1);
    }

    /// Record that chain `id` is done and `len` bytes were written to it
    /// (not yet visible: see [`DeviceQueue::publish_used`]).
    pub fn add_used(&mut self, id: u16, len: u32) -> Result<(), RingError> {
        let at = self.off.used_ring(self.next_used);
        self.mem.store_u32("used entry", at, id as u32)?;
        self.mem.store_u32("used entry", at + 4, len)?;
        self.next_used = self.next_used.wrapping_add(1);
        Ok(())
    }

    /// Publish the used entries added so far. Returns `(old, new)`.
    pub fn publish_used(&mut self) -> Result<(u16, u16), RingError> {
        let old = self
            .mem
            .load_u16("used idx", self.off.used_idx(), Ordering::Relaxed)?;
        // Release: the packet bytes we copied and the used entries are
        // visible before the driver can see the new index.
        self.mem.store_u16(
            "used idx",
            self.off.used_idx(),
            self.next_used,
            Ordering::Release,
        )?;
        Ok((old, self.next_used))
    }

    /// Ask for (or stop asking for) kicks when the driver adds buffers.
    /// Flags mode clears/sets `VRING_USED_F_NO_NOTIFY`; event-idx mode
    /// writes `avail_event = last_avail` ("kick me when you pass what I've
    /// seen") on enable and leaves it stale on disable, which suppresses.
    pub fn set_notifications(&self, mode: NotifyMode, enable: bool) -> Result<(), RingError> {
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
                        self.last_avail,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::GuestMemory;

    fn ring(size: u32) -> (GuestMemory, RingInfo) {
        let m = GuestMemory::create("ring-test", 1 << 20).unwrap();
        let info = RingInfo {
            desc: 0,
            avail: 16 * size as u64,
            used: 16 * size as u64 + 4096,
            size,
        };
        (m, info)
    }

    #[test]
    fn need_event_follows_spec_including_wrap() {
        assert!(vring_need_event(0, 1, 0));
        assert!(!vring_need_event(1, 1, 0));
        assert!(vring_need_event(5, 10, 0));
        assert!(!vring_need_event(10, 10, 0));
        // 16-bit wrap: old = 65534, new = 2 covers 65534, 65535, 0, 1.
        assert!(vring_need_event(65535, 2, 65534));
        assert!(vring_need_event(0, 2, 65534));
        assert!(vring_need_event(1, 2, 65534));
        assert!(!vring_need_event(2, 2, 65534));
        assert!(!vring_need_event(65533, 2, 65534));
        // Nothing published: never.
        assert!(!vring_need_event(7, 7, 7));
    }

    #[test]
    fn driver_and_device_exchange_chains_with_wrapping_indexes() {
        let (m, info) = ring(4);
        let mut drv = DriverQueue::new(m.region().clone(), &info);
        let mut dev = DeviceQueue::new(&GuestMap::identity(m.region().clone()), &info).unwrap();
        let mut segs = Vec::new();
        // 70_000 round trips wrap both 16-bit indexes.
        for i in 0..70_000u32 {
            let head = drv
                .add_one(
                    Seg {
                        addr: 8192 + (i % 4) as u64 * 64,
                        len: 60,
                    },
                    false,
                )
                .unwrap()
                .unwrap();
            drv.publish().unwrap();
            assert_eq!(dev.pending().unwrap(), 1);
            let h = dev.peek_head().unwrap();
            assert_eq!(h, head);
            assert_eq!(dev.read_chain(h, false, &mut segs).unwrap(), 60);
            dev.advance();
            dev.add_used(h, 0).unwrap();
            dev.publish_used().unwrap();
            assert_eq!(drv.pop_used().unwrap(), Some((head, 0)));
            assert_eq!(drv.pop_used().unwrap(), None);
        }
        assert_eq!(drv.num_free(), 4);
    }

    #[test]
    fn full_ring_refuses_more_and_empty_ring_has_nothing() {
        let (m, info) = ring(4);
        let mut drv = DriverQueue::new(m.region().clone(), &info);
        let dev = DeviceQueue::new(&GuestMap::identity(m.region().clone()), &info).unwrap();
        assert_eq!(dev.pending().unwrap(), 0);
        for _ in 0..4 {
            assert!(drv
                .add_one(Seg { addr: 8192, len: 1 }, false)
                .unwrap()
                .is_some());
        }
        assert_eq!(
            drv.add_one(Seg { addr: 8192, len: 1 }, false).unwrap(),
            None
        );
        drv.publish().unwrap();
        assert_eq!(dev.pending().unwrap(), 4);
    }

    #[test]
    fn chains_of_several_descriptors_are_walked_in_order() {
        let (m, info) = ring(8);
        let mut drv = DriverQueue::new(m.region().clone(), &info);
        let dev = DeviceQueue::new(&GuestMap::identity(m.region().clone()), &info).unwrap();
        let bufs = [
            Seg {
                addr: 9000,
                len: 12,
            },
            Seg {
                addr: 10000,
                len: 100,
            },
            Seg {
                addr: 20000,
                len: 7,
            },
        ];
        let head = drv.add(&bufs, true).unwrap().unwrap();
        drv.publish().unwrap();
        let mut segs = Vec::new();
        assert_eq!(dev.read_chain(head, true, &mut segs).unwrap(), 119);
        assert_eq!(segs, bufs);
        // Reading it as a TX (device-readable) chain is a direction error.
        assert!(matches!(
            dev.read_chain(head, false, &mut segs),
            Err(ChainError::WrongDirection { .. })
        ));
    }

    #[test]
    fn rejects_descriptor_loop_and_bad_index_and_out_of_bounds() {
        let (m, info) = ring(4);
        let r = m.region();
        let dev = DeviceQueue::new(&GuestMap::identity(r.clone()), &info).unwrap();
        let desc = |i: u16, addr: u64, len: u32, flags: u16, next: u16| {
            let mut d = [0u8; 16];
            d[0..8].copy_from_slice(&addr.to_le_bytes());
            d[8..12].copy_from_slice(&len.to_le_bytes());
            d[12..14].copy_from_slice(&flags.to_le_bytes());
            d[14..16].copy_from_slice(&next.to_le_bytes());
            r.write("t", 16 * i as u64, &d).unwrap();
        };
        let mut segs = Vec::new();
        desc(0, 8192, 10, VRING_DESC_F_NEXT, 1);
        desc(1, 8192, 10, VRING_DESC_F_NEXT, 0);
        assert_eq!(
            dev.read_chain(0, false, &mut segs),
            Err(ChainError::Loop { size: 4 })
        );
        desc(1, 8192, 10, VRING_DESC_F_NEXT, 9);
        assert_eq!(
            dev.read_chain(0, false, &mut segs),
            Err(ChainError::BadIndex { index: 9, size: 4 })
        );
        assert!(matches!(
            dev.read_chain(4, false, &mut segs),
            Err(ChainError::BadIndex { .. })
        ));
        desc(2, u64::MAX - 4, 10, 0, 0);
        assert!(matches!(
            dev.read_chain(2, false, &mut segs),
            Err(ChainError::OutOfBounds { .. })
        ));
        desc(3, 8192, 10, VRING_DESC_F_INDIRECT, 0);
        assert!(matches!(
            dev.read_chain(3, false, &mut segs),
            Err(ChainError::Indirect { .. })
        ));
    }

    #[test]
    fn avail_index_jump_is_a_ring_error() {
        let (m, info) = ring(4);
        let dev = DeviceQueue::new(&GuestMap::identity(m.region().clone()), &info).unwrap();
        m.region()
            .store_u16("t", info.avail + 2, 5, Ordering::Relaxed)
            .unwrap();
        assert!(matches!(
            dev.pending(),
            Err(RingError::AvailJump { to: 5, .. })
        ));
    }

    #[test]
    fn used_entry_for_descriptor_not_in_flight_is_rejected() {
        let (m, info) = ring(4);
        let mut drv = DriverQueue::new(m.region().clone(), &info);
        let mut dev = DeviceQueue::new(&GuestMap::identity(m.region().clone()), &info).unwrap();
        drv.add_one(Seg { addr: 8192, len: 1 }, false).unwrap();
        drv.publish().unwrap();
        dev.add_used(3, 0).unwrap(); // 3 was never posted
        dev.publish_used().unwrap();
        assert!(matches!(
            drv.pop_used(),
            Err(RingError::BadUsedId { id: 3 })
        ));
    }

    #[test]
    fn event_idx_suppresses_kicks_until_device_rearms() {
        let (m, info) = ring(8);
        let mut drv = DriverQueue::new(m.region().clone(), &info);
        let mut dev = DeviceQueue::new(&GuestMap::identity(m.region().clone()), &info).unwrap();
        dev.set_notifications(NotifyMode::EventIdx, true).unwrap(); // avail_event = 0
        drv.add_one(Seg { addr: 8192, len: 1 }, false).unwrap();
        let (o, n) = drv.publish().unwrap();
        assert!(drv.kick_needed(NotifyMode::EventIdx, o, n).unwrap());
        drv.add_one(Seg { addr: 8192, len: 1 }, false).unwrap();
        let (o, n) = drv.publish().unwrap();
        assert!(
            !drv.kick_needed(NotifyMode::EventIdx, o, n).unwrap(),
            "device has not re-armed"
        );
        dev.advance();
        dev.advance();
        dev.set_notifications(NotifyMode::EventIdx, true).unwrap(); // avail_event = 2
        drv.add_one(Seg { addr: 8192, len: 1 }, false).unwrap();
        let (o, n) = drv.publish().unwrap();
        assert!(drv.kick_needed(NotifyMode::EventIdx, o, n).unwrap());
    }

    #[test]
    fn flags_mode_suppresses_while_device_is_busy() {
        let (m, info) = ring(8);
        let mut drv = DriverQueue::new(m.region().clone(), &info);
        let dev = DeviceQueue::new(&GuestMap::identity(m.region().clone()), &info).unwrap();
        dev.set_notifications(NotifyMode::Flags, false).unwrap();
        drv.add_one(Seg { addr: 8192, len: 1 }, false).unwrap();
        let (o, n) = drv.publish().unwrap();
        assert!(!drv.kick_needed(NotifyMode::Flags, o, n).unwrap());
        dev.set_notifications(NotifyMode::Flags, true).unwrap();
        assert!(drv.kick_needed(NotifyMode::Flags, o, n).unwrap());
    }
}
