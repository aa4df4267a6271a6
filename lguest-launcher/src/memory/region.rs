//! [`Region`]: the one bounds-checked accessor of a shared mapping.
//!
//! Two checks guard every access. Bounds: the offset range is checked with
//! `checked_add` against the mapping length (and the alignment, for ring
//! fields) before any pointer is formed. Races: the peer process may write
//! any byte of either mapping at any time, so no access may be a plain load
//! or store the compiler could repeat, merge or elide. Ring fields are
//! atomics; packet bytes and descriptors go through the volatile word copy
//! of [`super::volatile`]. Every value a caller checks was first copied out
//! once (into a register or a local buffer), so a concurrent write changes
//! what we read, never a value we already checked.

use super::volatile;
use memmap2::{MmapOptions, MmapRaw};
use std::fs::File;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::Arc;

mod in_bounds;
mod prefetch;
mod span;

pub use span::{RawView, Span};

/// An access that would fall outside a mapping, or is misaligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{what}: offset {offset:#x} + {len} is outside the {size}-byte mapping or misaligned")]
pub struct OutOfBounds {
    /// What we were accessing.
    pub what: &'static str,
    /// Offset asked for.
    pub offset: u64,
    /// Length asked for.
    pub len: u64,
    /// Size of the mapping.
    pub size: u64,
}

/// Errors setting up memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// An OS call failed.
    #[error("{0}: {1}")]
    Os(&'static str, std::io::Error),
}

/// What a [`Region`]'s bytes live in: a mapping we made ([`Region::map`]),
/// or one another component made and keeps alive (`borrowed.rs`).
pub(super) trait Backing: Send + Sync {
    /// Start of the mapping.
    fn base(&self) -> *mut u8;
}

impl Backing for MmapRaw {
    fn base(&self) -> *mut u8 {
        self.as_mut_ptr()
    }
}

/// A shared mapping. Cloning a `Region` shares the mapping.
#[derive(Clone)]
pub struct Region {
    /// Keeps the mapping alive for as long as any handle to it exists.
    _map: Arc<dyn Backing>,
    /// `map.base()`, read once: no dynamic call per access.
    base: *mut u8,
    len: u64,
}

// SAFETY: the mapping is shared memory that other processes may write at any
// time, so our own threads writing it too adds no new case: every access goes
// through the bounds-checked methods below, which use atomics for ring fields
// and volatile accesses for everything else, and never hand out references
// into the mapping.
unsafe impl Send for Region {}
// SAFETY: as above; `Region` holds no interior state besides the mapping.
unsafe impl Sync for Region {}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Region({} bytes)", self.len)
    }
}

impl Region {
    /// Map `len` bytes of `file` shared and writable.
    pub fn map(file: &File, len: u64) -> Result<Self, MemoryError> {
        let map = MmapOptions::new()
            .len(len as usize)
            .map_raw(file)
            .map_err(|e| MemoryError::Os("mmap", e))?;
        Ok(Region::from_backing(Arc::new(map), len))
    }

    /// A region over `len` bytes of `map` (`borrowed.rs` checks the rest).
    pub(super) fn from_backing(map: Arc<dyn Backing>, len: u64) -> Self {
        let base = map.base();
        Region {
            _map: map,
            base,
            len,
        }
    }

    /// Size of the mapping in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for a zero-length mapping (never the case for guest memory).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Check `[offset, offset+len)` lies inside the mapping and `offset` is
    /// a multiple of `align`; return the offset as usize.
    #[inline]
    pub fn check(
        &self,
        what: &'static str,
        offset: u64,
        len: u64,
        align: u64,
    ) -> Result<usize, OutOfBounds> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len && offset.is_multiple_of(align) => Ok(offset as usize),
            _ => Err(OutOfBounds {
                what,
                offset,
                len,
                size: self.len,
            }),
        }
    }

    #[inline]
    fn ptr(&self, off: usize) -> *mut u8 {
        // SAFETY: callers pass an offset validated by `check` (or proved in
        // bounds by the contract of an `*_in_bounds` accessor), so the result
        // stays inside the mapping. Forming a pointer reads nothing, so a
        // concurrent writer is of no concern here.
        unsafe { self.base.add(off) }
    }

    #[inline]
    fn atomic_u16(&self, what: &'static str, offset: u64) -> Result<&AtomicU16, OutOfBounds> {
        let off = self.check(what, offset, 2, 2)?;
        // SAFETY: bounds: in bounds and 2-byte aligned (checked above); the
        // mapping lives as long as the returned reference (borrowed from
        // `self`); AtomicU16 has the layout of u16. Race: a shared reference
        // to an atomic is exactly what concurrent writers require, and a
        // well-behaved peer writes ring fields only as whole u16 atomics; a
        // hostile one writing them some other way can only change the value
        // we load, which every caller checks after loading it once.
        Ok(unsafe { AtomicU16::from_ptr(self.ptr(off) as *mut u16) })
    }

    /// Load a little-endian u16 ring field with `order`.
    #[inline]
    pub fn load_u16(
        &self,
        what: &'static str,
        offset: u64,
        order: Ordering,
    ) -> Result<u16, OutOfBounds> {
        Ok(u16::from_le(self.atomic_u16(what, offset)?.load(order)))
    }

    /// Store a little-endian u16 ring field with `order`.
    #[inline]
    pub fn store_u16(
        &self,
        what: &'static str,
        offset: u64,
        v: u16,
        order: Ordering,
    ) -> Result<(), OutOfBounds> {
        self.atomic_u16(what, offset)?.store(v.to_le(), order);
        Ok(())
    }

    /// Load a little-endian u32 (4-byte aligned), relaxed.
    #[inline]
    pub fn load_u32(&self, what: &'static str, offset: u64) -> Result<u32, OutOfBounds> {
        let off = self.check(what, offset, 4, 4)?;
        // SAFETY: in bounds and 4-byte aligned (checked above); the load is
        // atomic, so a concurrent peer write only changes the value returned,
        // which the caller checks (see `atomic_u16`).
        let a = unsafe { AtomicU32::from_ptr(self.ptr(off) as *mut u32) };
        Ok(u32::from_le(a.load(Ordering::Relaxed)))
    }

    /// Load two consecutive little-endian u32s (4-byte aligned), relaxed,
    /// with one bounds check: a used-ring entry (`id`, `len`).
    #[inline]
    pub fn load_u32_pair(
        &self,
        what: &'static str,
        offset: u64,
    ) -> Result<(u32, u32), OutOfBounds> {
        let off = self.check(what, offset, 8, 4)?;
        // SAFETY: `[off, off + 8)` is in bounds and 4-byte aligned (checked
        // above), so both words are; each load is atomic, so a concurrent
        // peer write only changes the values returned, which the caller
        // checks (see `atomic_u16`).
        let (a, b) = unsafe {
            (
                AtomicU32::from_ptr(self.ptr(off) as *mut u32),
                AtomicU32::from_ptr(self.ptr(off + 4) as *mut u32),
            )
        };
        Ok((
            u32::from_le(a.load(Ordering::Relaxed)),
            u32::from_le(b.load(Ordering::Relaxed)),
        ))
    }

    /// Store two consecutive little-endian u32s (4-byte aligned), relaxed,
    /// with one bounds check: a used-ring entry (`id`, `len`).
    #[inline]
    pub fn store_u32_pair(
        &self,
        what: &'static str,
        offset: u64,
        (first, second): (u32, u32),
    ) -> Result<(), OutOfBounds> {
        let off = self.check(what, offset, 8, 4)?;
        // SAFETY: `[off, off + 8)` is in bounds and 4-byte aligned (checked
        // above), so both words are; the stores are atomic, so a concurrent
        // peer access races with nothing undefined (see `atomic_u16`).
        unsafe {
            AtomicU32::from_ptr(self.ptr(off) as *mut u32).store(first.to_le(), Ordering::Relaxed);
            AtomicU32::from_ptr(self.ptr(off + 4) as *mut u32)
                .store(second.to_le(), Ordering::Relaxed);
        }
        Ok(())
    }

    /// Store a little-endian u32 (4-byte aligned), relaxed.
    #[inline]
    pub fn store_u32(&self, what: &'static str, offset: u64, v: u32) -> Result<(), OutOfBounds> {
        let off = self.check(what, offset, 4, 4)?;
        // SAFETY: in bounds and 4-byte aligned (checked above); the store is
        // atomic, so a concurrent peer access races with nothing undefined
        // (see `atomic_u16`).
        let a = unsafe { AtomicU32::from_ptr(self.ptr(off) as *mut u32) };
        a.store(v.to_le(), Ordering::Relaxed);
        Ok(())
    }

    /// Copy `out.len()` bytes at `offset` into a local buffer (one fetch:
    /// the peer cannot change what we check after we copied it).
    #[inline]
    pub fn read(&self, what: &'static str, offset: u64, out: &mut [u8]) -> Result<(), OutOfBounds> {
        let off = self.check(what, offset, out.len() as u64, 1)?;
        // SAFETY: bounds: the source range was checked above and `out` is
        // valid for `out.len()` bytes; `out` is local memory, which cannot
        // overlap a shared mapping we only reach through raw pointers. Race:
        // each source byte is read once (`volatile::copy`: volatile words
        // for a field, one memmove for more); a concurrent peer write leaves
        // garbage bytes in `out`, and callers check `out`, not the mapping,
        // so what they checked cannot change afterwards.
        unsafe { volatile::copy(out.as_mut_ptr(), self.ptr(off), out.len()) };
        Ok(())
    }

    /// Copy `data` into the mapping at `offset`.
    #[inline]
    pub fn write(&self, what: &'static str, offset: u64, data: &[u8]) -> Result<(), OutOfBounds> {
        let off = self.check(what, offset, data.len() as u64, 1)?;
        // SAFETY: bounds: the destination range was checked above and `data`
        // is valid for `data.len()` bytes of local memory (no overlap with
        // the mapping). Race: each destination byte is written once
        // (`volatile::copy`); a peer writing the same bytes meanwhile leaves
        // a mix in guest memory, which the guest treats as packet data.
        unsafe { volatile::copy(self.ptr(off), data.as_ptr(), data.len()) };
        Ok(())
    }

    /// Load 16 little-endian bytes at `offset` (any alignment) as one
    /// volatile load into a value: a descriptor, read once and parsed from
    /// the value (see `volatile::load_u128`).
    #[inline]
    pub fn load_u128(&self, what: &'static str, offset: u64) -> Result<u128, OutOfBounds> {
        let off = self.check(what, offset, 16, 1)?;
        // SAFETY: bounds: the 16 bytes were checked above. Race: read once
        // into a register; a concurrent peer write yields a torn value,
        // which the caller checks field by field.
        Ok(unsafe { volatile::load_u128(self.ptr(off)) })
    }

    /// Store `v` as 16 little-endian bytes at `offset` (any alignment):
    /// one volatile store of a value built in registers, for a descriptor
    /// or a frame stamp (see `volatile::store_u128`).
    #[inline]
    pub fn store_u128(&self, what: &'static str, offset: u64, v: u128) -> Result<(), OutOfBounds> {
        let off = self.check(what, offset, 16, 1)?;
        // SAFETY: bounds: the 16 bytes were checked above. Race: written
        // once; a peer writing the same bytes meanwhile leaves a mix,
        // which whoever reads them checks (a descriptor) or treats as
        // packet data (a stamp).
        unsafe { volatile::store_u128(self.ptr(off), v) };
        Ok(())
    }

    /// `[offset, offset + len)` lies inside the mapping and `offset` is a
    /// multiple of `align`: [`Region::check`] as a yes/no, for a caller
    /// that proves a whole ring in bounds once (`DeviceQueue::new`) and
    /// then uses the `*_in_bounds` accessors below.
    #[inline]
    pub fn contains(&self, offset: u64, len: u64, align: u64) -> bool {
        self.check("", offset, len, align).is_ok()
    }

    /// Copy `len` bytes from `src` at `src_off` to `self` at `dst_off`. Both
    /// ranges are checked; the two mappings are distinct (ours and the
    /// peer's), or the ranges are buffers of one mapping, which a hostile
    /// peer may make overlap: then the copy has memmove's result.
    ///
    /// This is the per-packet copy (`volatile::copy`: vm-memory's policy,
    /// see `memory/volatile.rs`). Always inlined: a call per packet cost
    /// more than the two checks (callgrind, 64 B frames).
    #[inline(always)]
    pub fn copy_from(
        &self,
        dst_off: u64,
        src: &Region,
        src_off: u64,
        len: u64,
    ) -> Result<(), OutOfBounds> {
        let d = self.check("rx buffer", dst_off, len, 1)?;
        let s = src.check("tx buffer", src_off, len, 1)?;
        let (dst, from, len) = (self.ptr(d), src.ptr(s), len as usize);
        // SAFETY: bounds: both ranges were checked above against their own
        // mappings, and the copy touches only bytes inside them; ranges of
        // one mapping may overlap (a hostile peer can describe that), which
        // `volatile::copy` allows, with memmove's result. Race: either
        // mapping may be written by the peer meanwhile; each byte is read
        // once and written once, so that only changes which bytes land in
        // `self`, which the receiving guest treats as packet data.
        unsafe { volatile::copy(dst, from, len) }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::GuestMemory;
    use super::*;

    /// A 4 KiB region filled with a known pattern.
    fn patterned() -> GuestMemory {
        let m = GuestMemory::create("t", 4096).unwrap();
        let fill: Vec<u8> = (0..4096).map(|i| (i * 13 + 5) as u8).collect();
        m.region().write("t", 0, &fill).unwrap();
        m
    }

    fn contents(r: &Region) -> Vec<u8> {
        let mut v = vec![0; r.len() as usize];
        r.read("t", 0, &mut v).unwrap();
        v
    }

    #[test]
    fn copy_between_mappings_matches_at_every_alignment() {
        let a = patterned();
        let b = GuestMemory::create("t", 4096).unwrap();
        let src = contents(a.region());
        for so in 0..16u64 {
            for dof in 0..16u64 {
                for len in [0u64, 1, 7, 12, 15, 16, 17, 63, 64, 65, 1500] {
                    b.region()
                        .copy_from(2048 + dof, a.region(), so, len)
                        .unwrap();
                    let mut got = vec![0; len as usize];
                    b.region().read("t", 2048 + dof, &mut got).unwrap();
                    assert_eq!(got, &src[so as usize..(so + len) as usize]);
                }
            }
        }
    }

    #[test]
    fn overlapping_copy_in_one_mapping_is_memmove_and_stays_in_bounds() {
        for (s, d) in [
            (100u64, 103u64),
            (103, 100),
            (100, 100),
            (0, 4000),
            (4000, 3999),
        ] {
            let m = patterned();
            let r = m.region();
            let before = contents(r);
            let len = 96.min(4096 - s.max(d));
            r.copy_from(d, r, s, len).unwrap();
            let mut want = before.clone();
            want.copy_within(s as usize..(s + len) as usize, d as usize);
            assert_eq!(contents(r), want, "copy {len} bytes {s} -> {d}");
        }
    }

    #[test]
    fn rejects_out_of_bounds_copies_and_leaves_memory_alone() {
        let m = patterned();
        let r = m.region();
        let before = contents(r);
        assert!(r.copy_from(4000, r, 0, 97).is_err(), "destination past end");
        assert!(r.copy_from(0, r, 4000, 97).is_err(), "source past end");
        assert!(r.copy_from(0, r, u64::MAX - 8, 16).is_err(), "source wraps");
        assert!(
            r.copy_from(u64::MAX - 8, r, 0, 16).is_err(),
            "destination wraps"
        );
        assert!(r.write("t", 4095, &[0; 2]).is_err());
        assert!(r.read("t", 4089, &mut [0; 8]).is_err());
        assert_eq!(contents(r), before);
    }

    #[test]
    fn ring_fields_round_trip_as_little_endian() {
        let m = GuestMemory::create("t", 4096).unwrap();
        let r = m.region();
        r.store_u32("t", 8, 0x0102_0304).unwrap();
        let mut b = [0; 4];
        r.read("t", 8, &mut b).unwrap();
        assert_eq!(b, [4, 3, 2, 1]);
        assert_eq!(r.load_u32("t", 8).unwrap(), 0x0102_0304);
        assert!(r.load_u32("t", 6).is_err(), "misaligned");
        r.store_u16("t", 2, 0xbeef, Ordering::Release).unwrap();
        assert_eq!(r.load_u16("t", 2, Ordering::Acquire).unwrap(), 0xbeef);
    }
}
