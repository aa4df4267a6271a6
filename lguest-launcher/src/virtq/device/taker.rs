//! [`Taker`]: a burst of one-descriptor chains off a [`DeviceQueue`],
//! each buffer handed out as a [`Span`] of a mapping the caller holds.
//!
//! The copier's burst (`copier/burst.rs`) checks a whole burst of chains
//! on both rings before it copies any: each avail entry and each
//! descriptor is read once (the descriptor as one 16-byte load), checked
//! (index below the size, one descriptor, its direction, not indirect, a
//! non-zero length, its buffer inside the mapping through the ring's
//! translation) and its buffer returned as a [`Span`]. The copy then uses
//! only those values, so a peer that rewrites an avail entry or a
//! descriptor after it was checked cannot move the copy, and the copy
//! need not check the range again. The span borrows the caller's
//! [`Region`] (the copier keeps its own handle of each mapping), which
//! [`DeviceQueue::taker`] checks once is the mapping this ring translates
//! into.

use super::{
    translate, DeviceQueue, Xlat, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
};
use crate::memory::{GuestMap, RawView, Region, Span};
use crate::virtq::layout::Offsets;

/// A [`DeviceQueue`] taking a burst of plain chains; spans of `'m`.
///
/// It holds the ring's fixed offsets and its two positions by value (so
/// the burst's loops keep them in registers rather than reload them after
/// every store to shared memory) and writes the positions back when it is
/// dropped.
pub struct Taker<'q, 'm> {
    mem: RawView<'m>,
    off: Offsets,
    map: &'q GuestMap,
    xlat: &'q mut [Xlat],
    last_avail: u16,
    next_used: u16,
    q_last_avail: &'q mut u16,
    q_next_used: &'q mut u16,
    last_head: u16,
    q_last_head: &'q mut u16,
}

impl DeviceQueue {
    /// Take chains off this ring with their buffers as spans of `mem`,
    /// which must be the mapping this ring's buffers translate into (the
    /// same bytes as the `GuestMap` it was built on); `None` otherwise.
    #[inline(always)]
    pub fn taker<'q, 'm>(&'q mut self, mem: &'m Region) -> Option<Taker<'q, 'm>> {
        if !mem.same_mapping(&self.mem) {
            return None;
        }
        Some(Taker {
            mem: mem.raw_view(),
            off: self.off,
            map: &self.map,
            xlat: &mut self.xlat,
            last_avail: self.last_avail,
            next_used: self.next_used,
            q_last_avail: &mut self.last_avail,
            q_next_used: &mut self.next_used,
            last_head: self.last_head,
            q_last_head: &mut self.last_head,
        })
    }
}

impl<'m> Taker<'_, 'm> {
    /// The available chain `n` places after the next one (the caller knows
    /// from [`DeviceQueue::pending`] that the driver made it available),
    /// if it is one descriptor of the expected direction and a non-zero
    /// length inside memory: its head and its buffer. `None` for anything
    /// else (a longer chain, a malformed one), which the general path
    /// then walks, with the same checks and the error named. Nothing is
    /// consumed.
    #[inline(always)]
    pub fn one_at(&mut self, n: u16, writable: bool) -> Option<(u16, Span<'m>)> {
        let at = self.off.avail_ring(self.last_avail.wrapping_add(n));
        // SAFETY: `at` is `avail + 4 + 2 * (i & (size - 1))`: its two
        // bytes lie inside the avail ring, which `DeviceQueue::new` checked
        // is inside this mapping (`taker` checked `mem` is it) and
        // 2-aligned. Race: an atomic load, its value checked below.
        let head = unsafe { self.mem.load_u16(at) };
        if head >= self.off.size {
            return None;
        }
        // SAFETY: `head < size` (checked above), so the descriptor's 16
        // bytes at `desc + 16 * head` lie inside the descriptor table,
        // which `new` checked is inside the mapping. Race: read once into
        // a register; a torn value is checked field by field below.
        let d = unsafe { self.mem.load_u128(self.off.desc(head)) };
        let addr = d as u64;
        let len = (d >> 64) as u32;
        let flags = (d >> 96) as u16;
        let want = if writable { VRING_DESC_F_WRITE } else { 0 };
        let shape = VRING_DESC_F_NEXT | VRING_DESC_F_WRITE | VRING_DESC_F_INDIRECT;
        if flags & shape != want || len == 0 {
            return None;
        }
        let offset = translate(self.map, self.xlat, head, addr, len)?;
        // SAFETY: `translate` answers with the map's translation of
        // `[addr, addr + len)` (or the cache of that answer for the same
        // descriptor, address and length), which lies wholly inside the
        // ring's mapping (`GuestMap` keeps only regions inside it), and
        // `taker` checked that `self.mem` is that mapping.
        self.last_head = head;
        Some((head, unsafe { self.mem.span(offset, len) }))
    }

    /// Ask for the lines the next chain will most likely need, all at
    /// once: its avail entry, and the descriptor and buffer of the two
    /// heads a driver most likely makes available next: the last one again
    /// (a driver whose free list is a stack, with one frame in flight: a
    /// ping) or the one after it (frames in flight returned in order: a
    /// stream); a buffer as the translation cache last saw it. Read one
    /// after the other, each line waits for the one before (the entry
    /// names the descriptor, the descriptor the buffer): from another CPU
    /// that is three line transfers in a row where one suffices when the
    /// guess is right. Only hints: nothing is read here, and
    /// [`Taker::one_at`] reads and checks everything as before; a wrong
    /// guess costs a wasted prefetch.
    #[inline(always)]
    pub fn prefetch_next(&self) {
        self.mem
            .prefetch_guess(self.off.avail_ring(self.last_avail));
        let mask = self.off.size - 1;
        for guess in [self.last_head & mask, self.last_head.wrapping_add(1) & mask] {
            self.mem.prefetch_guess(self.off.desc(guess));
            if let Some(at) = self
                .xlat
                .get(usize::from(guess))
                .and_then(|x| x.last_offset())
            {
                self.mem.prefetch_guess(at);
            }
        }
    }

    /// The `n` chains taken with [`Taker::one_at`] (`0..n`) are done:
    /// move past them.
    #[inline(always)]
    pub fn advance_by(&mut self, n: u16) {
        self.last_avail = self.last_avail.wrapping_add(n);
    }

    /// [`DeviceQueue::add_used`] for a chain of this burst: the entry is
    /// written, not yet published. The line two lines on is asked for once
    /// per line (see `DeviceQueue::add_used`).
    #[inline(always)]
    pub fn add_used(&mut self, id: u16, len: u32) {
        let at = self.off.used_ring(self.next_used);
        // SAFETY: `at` is `used + 4 + 8 * (next_used & (size - 1))`: its 8
        // bytes lie inside the used ring, which `new` checked is inside
        // this mapping and 4-aligned. Race: atomic stores.
        unsafe { self.mem.store_u32_pair(at, (id as u32, len)) };
        if self.next_used.is_multiple_of(8) {
            let ahead = self.next_used.wrapping_add(super::USED_PREFETCH_AHEAD);
            // SAFETY: an entry of the used ring (index masked by the
            // size), inside the mapping as above.
            unsafe { self.mem.prefetch_for_write(self.off.used_ring(ahead)) };
        }
        self.next_used = self.next_used.wrapping_add(1);
    }
}

impl Drop for Taker<'_, '_> {
    /// The ring's positions move as the burst moved them (written back
    /// once, not per chain: a store through the queue per chain made the
    /// loops reload everything after it).
    fn drop(&mut self) {
        *self.q_last_avail = self.last_avail;
        *self.q_next_used = self.next_used;
        *self.q_last_head = self.last_head;
    }
}

/// Entries of the plan [`with_plan`] hands a burst of at most this many
/// chains.
pub const SMALL_PLAN: usize = 8;

/// Run `f` on a burst's plan (the chains its first pass checks, kept on
/// the stack for its second): at least `n` entries, all `empty`, of
/// [`SMALL_PLAN`] when `n` fits in it, else of `MAX`. The array is filled
/// before `f` runs, at a cost of its size in stores: a 64-entry plan of
/// the copier was 3.5 KB of them, which a one-frame poll (a ping) waited
/// behind before it read its first chain.
#[inline(always)]
pub fn with_plan<E: Copy, R, const MAX: usize>(
    n: usize,
    empty: E,
    f: impl FnOnce(&mut [E]) -> R,
) -> R {
    if n <= SMALL_PLAN {
        f(&mut [empty; SMALL_PLAN])
    } else {
        f(&mut [empty; MAX])
    }
}

/// One frame of a two-pass burst (the copier's, the switch's push run),
/// checked in pass 1: the chain it came in and the RX chain it goes to.
#[derive(Clone, Copy)]
pub struct Planned<'s, 'd> {
    /// The frame, in the source's memory.
    pub src: Span<'s>,
    /// The RX buffer it is copied into.
    pub dst: Span<'d>,
    /// The source's chain.
    pub head: u16,
    /// The RX chain.
    pub rx_head: u16,
}

impl Planned<'_, '_> {
    /// A placeholder entry of a plan ([`with_plan`]'s `empty`).
    pub const EMPTY: Planned<'static, 'static> = Planned {
        src: Span::EMPTY,
        dst: Span::EMPTY,
        head: 0,
        rx_head: 0,
    };
}

/// Pass 2 of a two-pass burst: copy each frame of `plan` span to span (no
/// range is checked again: the spans are the proof, and a source that
/// rewrites a descriptor meanwhile cannot move the copy), write both used
/// entries as it goes (`rx` gets the frame's length, `tx` 0), then move
/// both rings past what was copied. Stops at the first frame that does
/// not fit, or, with `check_header`, whose copied `virtio_net_hdr` asks
/// for an offload (or is too short to tell): the general path takes that
/// one. Returns how many frames were moved, and their bytes.
///
/// Stored as each frame is copied, the used entries drain from the store
/// queue behind the copies; written back to back after them, they filled
/// it (perf: a quarter of the copier's burst samples on those stores), and
/// asking for the source's used lines in pass 1 (PREFETCHW) made it slower
/// still (BENCHMARKS.md, "After round 2, session 6").
#[inline(always)]
pub fn copy_planned(
    plan: &[Planned<'_, '_>],
    tx: &mut Taker<'_, '_>,
    rx: &mut Taker<'_, '_>,
    check_header: bool,
) -> (u16, u64) {
    let mut moved = 0u16;
    let mut bytes = 0u64;
    for p in plan {
        if !p.dst.copy_from(&p.src) {
            break;
        }
        if check_header && p.dst.first_u16() != Some(0) {
            break;
        }
        rx.add_used(p.rx_head, p.src.len());
        tx.add_used(p.head, 0);
        moved += 1;
        bytes += u64::from(p.src.len());
    }
    rx.advance_by(moved);
    tx.advance_by(moved);
    (moved, bytes)
}
