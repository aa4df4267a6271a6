//! [`Span`]: a byte range proved inside a mapping, the proof token of a
//! copy that need not check again.
//!
//! The copier's burst (`copier/burst.rs`) reads and checks every
//! descriptor of a burst first, then copies. What the first pass proved
//! (this buffer lies inside that mapping) is carried to the copy as a
//! `Span`, whose only constructors are the check ([`Region::span`]) and
//! the `unsafe` [`Region::span_in_bounds`] for a caller that proved the
//! range another way (a ring's translation of a descriptor, see
//! `virtq/device/taker.rs`). A span borrows its [`Region`], so the mapping
//! outlives it, and holds plain values read once: a peer that rewrites a
//! descriptor after it was checked changes nothing the copy uses.

use super::{volatile, Region};
use std::marker::PhantomData;
use std::ptr::NonNull;

/// `[offset, offset + len)` of one mapping, proved inside it.
#[derive(Clone, Copy, Debug)]
pub struct Span<'m> {
    /// The range's first byte in our address space.
    ptr: NonNull<u8>,
    /// Its offset in the mapping.
    off: u64,
    len: u32,
    _mapping: PhantomData<&'m Region>,
}

impl Span<'_> {
    /// No bytes (a placeholder in a fixed array; copies nothing).
    pub const EMPTY: Span<'static> = Span {
        ptr: NonNull::dangling(),
        off: 0,
        len: 0,
        _mapping: PhantomData,
    };

    /// The offset of the range in its mapping.
    #[inline(always)]
    pub fn offset(&self) -> u64 {
        self.off
    }

    /// Its length in bytes.
    #[inline(always)]
    pub fn len(&self) -> u32 {
        self.len
    }

    /// True for a span of no bytes.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copy all of `src` into the start of this span: `false` (and nothing
    /// copied) if it does not fit. No bounds check is needed: both ranges
    /// were proved when the spans were made.
    #[inline(always)]
    pub fn copy_from(&self, src: &Span<'_>) -> bool {
        if src.len > self.len {
            return false;
        }
        // SAFETY: bounds: `src` is `src.len` bytes inside its mapping and
        // `self` at least as many inside its own (each span's constructor
        // proved its range, and the borrow keeps the mapping alive); the
        // two may overlap (a hostile peer can describe that in one
        // mapping), which `volatile::copy` allows, with memmove's result.
        // Race: as `Region::copy_from`: each byte is read once and written
        // once, so a concurrent peer write only changes which bytes land
        // here, which the receiving guest treats as packet data.
        unsafe { volatile::copy(self.ptr.as_ptr(), src.ptr.as_ptr(), src.len as usize) };
        true
    }

    /// The span's first two bytes as a little-endian u16 (any alignment),
    /// read once; `None` for a span shorter than that.
    #[inline(always)]
    pub fn first_u16(&self) -> Option<u16> {
        if self.len < 2 {
            return None;
        }
        // SAFETY: bounds: the span holds at least 2 bytes (checked above)
        // inside a live mapping; alignment 1 (`read_unaligned`). Race: one
        // volatile read into a register, which the caller checks.
        let v = unsafe { std::ptr::read_volatile(self.ptr.as_ptr() as *const [u8; 2]) };
        Some(u16::from_le_bytes(v))
    }

    /// Hint that the span's first line will soon be read: its transfer
    /// from another CPU overlaps whatever we do before the read. Never
    /// faults, changes no byte; a no-op where the instruction does not
    /// exist.
    #[inline(always)]
    pub fn prefetch(&self) {
        super::prefetch::line_for_read(self.ptr.as_ptr());
    }
}

/// A mapping's start, held by value, for ring accessors whose bounds the
/// caller proved once (a ring checked when it was set up, its entries at
/// indexes masked by its power-of-two size): the `*_in_bounds` accessors
/// of [`Region`] without the reload of the mapping's address that a
/// `&Region` costs after every store to shared memory. Borrows the
/// region, so the mapping outlives it.
#[derive(Clone, Copy, Debug)]
pub struct RawView<'m> {
    base: NonNull<u8>,
    _mapping: PhantomData<&'m Region>,
}

impl<'m> RawView<'m> {
    /// [`Region::load_u16_in_bounds`], relaxed.
    ///
    /// # Safety
    ///
    /// `[offset, offset + 2)` lies inside the mapping and `offset` is
    /// 2-aligned.
    #[inline(always)]
    pub unsafe fn load_u16(&self, offset: u64) -> u16 {
        // SAFETY: bounds and alignment are the caller's contract; an atomic
        // load of a value the caller checks after loading it once.
        let a = unsafe {
            std::sync::atomic::AtomicU16::from_ptr(
                self.base.as_ptr().add(offset as usize) as *mut u16
            )
        };
        u16::from_le(a.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// [`Region::load_u128_in_bounds`].
    ///
    /// # Safety
    ///
    /// `[offset, offset + 16)` lies inside the mapping.
    #[inline(always)]
    pub unsafe fn load_u128(&self, offset: u64) -> u128 {
        // SAFETY: bounds are the caller's contract; race: read once into a
        // register, a torn value is checked field by field by the caller.
        unsafe { volatile::load_u128(self.base.as_ptr().add(offset as usize)) }
    }

    /// [`Region::store_u32_pair_in_bounds`].
    ///
    /// # Safety
    ///
    /// `[offset, offset + 8)` lies inside the mapping and `offset` is
    /// 4-aligned.
    #[inline(always)]
    pub unsafe fn store_u32_pair(&self, offset: u64, (first, second): (u32, u32)) {
        use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
        // SAFETY: bounds and alignment are the caller's contract, so both
        // words are in bounds and aligned; the stores are atomic, so a
        // concurrent peer access races with nothing undefined.
        unsafe {
            let p = self.base.as_ptr().add(offset as usize);
            AtomicU32::from_ptr(p as *mut u32).store(first.to_le(), Relaxed);
            AtomicU32::from_ptr(p.add(4) as *mut u32).store(second.to_le(), Relaxed);
        }
    }

    /// [`Region::prefetch_for_write`] of a line the caller proved inside.
    ///
    /// # Safety
    ///
    /// `offset` lies inside the mapping (the hint itself cannot fault;
    /// the contract keeps the pointer arithmetic in bounds).
    #[inline(always)]
    pub unsafe fn prefetch_for_write(&self, offset: u64) {
        // SAFETY: `offset` lies inside the mapping (the caller's contract),
        // so the pointer arithmetic stays in bounds.
        super::prefetch::line_for_write(unsafe { self.base.as_ptr().add(offset as usize) });
    }

    /// Hint that the line at `offset` will soon be read (PREFETCHT0), for
    /// a guess the caller has not checked yet: a hint never faults and
    /// changes no byte, and the address is formed without pointer
    /// arithmetic's in-bounds rule, so any offset is allowed (one outside
    /// the mapping only wastes the hint).
    #[inline(always)]
    pub fn prefetch_guess(&self, offset: u64) {
        super::prefetch::line_for_read(self.base.as_ptr().wrapping_add(offset as usize));
    }

    /// [`Region::span_in_bounds`].
    ///
    /// # Safety
    ///
    /// `[offset, offset + len)` lies inside the mapping.
    #[inline(always)]
    pub unsafe fn span(&self, offset: u64, len: u32) -> Span<'m> {
        Span {
            // SAFETY: inside the mapping (the caller's contract), whose
            // start is not null.
            ptr: unsafe { NonNull::new_unchecked(self.base.as_ptr().add(offset as usize)) },
            off: offset,
            len,
            _mapping: PhantomData,
        }
    }
}

impl Region {
    /// The mapping's start as a [`RawView`].
    #[inline(always)]
    pub fn raw_view(&self) -> RawView<'_> {
        RawView {
            // SAFETY: a mapping's start is never null.
            base: unsafe { NonNull::new_unchecked(self.base) },
            _mapping: PhantomData,
        }
    }

    /// `[offset, offset + len)` as a [`Span`], if it lies inside the
    /// mapping: the check, done once, that a copy through the span relies
    /// on.
    #[inline(always)]
    pub fn span(&self, offset: u64, len: u32) -> Option<Span<'_>> {
        self.check("span", offset, len as u64, 1).ok()?;
        // SAFETY: checked just above.
        Some(unsafe { self.span_in_bounds(offset, len) })
    }

    /// [`Region::span`] without the check.
    ///
    /// # Safety
    ///
    /// `[offset, offset + len)` lies inside the mapping (what
    /// [`Region::check`] would have verified).
    #[inline(always)]
    pub unsafe fn span_in_bounds(&self, offset: u64, len: u32) -> Span<'_> {
        Span {
            // SAFETY: `ptr` stays inside the mapping (the caller's
            // contract), whose base is not null.
            ptr: unsafe { NonNull::new_unchecked(self.ptr(offset as usize)) },
            off: offset,
            len,
            _mapping: PhantomData,
        }
    }

    /// Both handles reach the same bytes: the same mapping (same start in
    /// our address space, same length). Two live mappings cannot share a
    /// start address, so a range proved inside one is inside the other.
    #[inline]
    pub fn same_mapping(&self, other: &Region) -> bool {
        std::ptr::eq(self.base, other.base) && self.len == other.len
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::GuestMemory;

    #[test]
    fn spans_are_checked_once_and_copy_within_them() {
        let a = GuestMemory::create("a", 4096).unwrap();
        let b = GuestMemory::create("b", 4096).unwrap();
        let data: Vec<u8> = (0..100u8).collect();
        a.region().write("t", 1000, &data).unwrap();
        assert!(a.region().span(4000, 97).is_none(), "past the end");
        assert!(a.region().span(u64::MAX - 8, 16).is_none(), "wraps");
        let s = a.region().span(1000, 100).unwrap();
        let d = b.region().span(3000, 128).unwrap();
        assert_eq!(
            (s.offset(), s.len(), d.offset(), d.len()),
            (1000, 100, 3000, 128)
        );
        assert!(d.copy_from(&s));
        let mut got = vec![0u8; 100];
        b.region().read("t", 3000, &mut got).unwrap();
        assert_eq!(got, data);
        assert_eq!(d.first_u16(), Some(0x0100));
        // Too long for the destination: nothing copied.
        let small = b.region().span(0, 99).unwrap();
        assert!(!small.copy_from(&s));
        let mut zero = vec![0u8; 99];
        b.region().read("t", 0, &mut zero).unwrap();
        assert!(zero.iter().all(|&x| x == 0));
        assert_eq!(b.region().span(10, 1).unwrap().first_u16(), None);
        assert!(a.region().same_mapping(&a.region().clone()));
        assert!(!a.region().same_mapping(b.region()));
    }
}
