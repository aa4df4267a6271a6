//! [`Region`]'s accessors without a bounds check, for a caller that
//! proved the whole range once (a ring checked when it was set up, its
//! entries addressed by an index masked by its power-of-two size). Each
//! is `unsafe`: its contract is the check it skips.

use super::{volatile, Region};
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};

impl Region {
    /// [`Region::load_u16`] without the bounds check.
    ///
    /// # Safety
    ///
    /// `[offset, offset + 2)` lies inside the mapping and `offset` is
    /// 2-aligned (what `check` would have verified).
    #[inline(always)]
    pub unsafe fn load_u16_in_bounds(&self, offset: u64, order: Ordering) -> u16 {
        // SAFETY: bounds and alignment are the caller's contract; the race
        // argument is `atomic_u16`'s (an atomic load of a value the caller
        // checks after loading it once).
        let a = unsafe { AtomicU16::from_ptr(self.ptr(offset as usize) as *mut u16) };
        u16::from_le(a.load(order))
    }

    /// [`Region::store_u16`] without the bounds check.
    ///
    /// # Safety
    ///
    /// `[offset, offset + 2)` lies inside the mapping and `offset` is
    /// 2-aligned.
    #[inline(always)]
    pub unsafe fn store_u16_in_bounds(&self, offset: u64, v: u16, order: Ordering) {
        // SAFETY: bounds and alignment are the caller's contract; an atomic
        // store races with nothing undefined (see `atomic_u16`).
        let a = unsafe { AtomicU16::from_ptr(self.ptr(offset as usize) as *mut u16) };
        a.store(v.to_le(), order);
    }

    /// [`Region::load_u32_pair`] without the bounds check.
    ///
    /// # Safety
    ///
    /// `[offset, offset + 8)` lies inside the mapping and `offset` is
    /// 4-aligned.
    #[inline(always)]
    pub unsafe fn load_u32_pair_in_bounds(&self, offset: u64) -> (u32, u32) {
        let off = offset as usize;
        // SAFETY: bounds and alignment are the caller's contract, so both
        // words are in bounds and aligned; each load is atomic, its value
        // checked by the caller (see `atomic_u16`).
        let (a, b) = unsafe {
            (
                AtomicU32::from_ptr(self.ptr(off) as *mut u32),
                AtomicU32::from_ptr(self.ptr(off + 4) as *mut u32),
            )
        };
        (
            u32::from_le(a.load(Ordering::Relaxed)),
            u32::from_le(b.load(Ordering::Relaxed)),
        )
    }

    /// [`Region::load_u128`] without the bounds check.
    ///
    /// # Safety
    ///
    /// `[offset, offset + 16)` lies inside the mapping.
    #[inline(always)]
    pub unsafe fn load_u128_in_bounds(&self, offset: u64) -> u128 {
        // SAFETY: bounds are the caller's contract; race: read once into a
        // register, a torn value is checked field by field by the caller.
        unsafe { volatile::load_u128(self.ptr(offset as usize)) }
    }

    /// [`Region::store_u128`] without the bounds check.
    ///
    /// # Safety
    ///
    /// `[offset, offset + 16)` lies inside the mapping.
    #[inline(always)]
    pub unsafe fn store_u128_in_bounds(&self, offset: u64, v: u128) {
        // SAFETY: bounds are the caller's contract; race: written once from
        // a register, a peer writing meanwhile leaves a mix, which whoever
        // reads it checks or treats as packet data (see `store_u128`).
        unsafe { volatile::store_u128(self.ptr(offset as usize), v) }
    }

    /// [`Region::store_u32_pair`] without the bounds check.
    ///
    /// # Safety
    ///
    /// `[offset, offset + 8)` lies inside the mapping and `offset` is
    /// 4-aligned.
    #[inline(always)]
    pub unsafe fn store_u32_pair_in_bounds(&self, offset: u64, (first, second): (u32, u32)) {
        let off = offset as usize;
        // SAFETY: bounds and alignment are the caller's contract, so both
        // words are in bounds and aligned; the stores are atomic, so a
        // concurrent peer access races with nothing undefined.
        unsafe {
            AtomicU32::from_ptr(self.ptr(off) as *mut u32).store(first.to_le(), Ordering::Relaxed);
            AtomicU32::from_ptr(self.ptr(off + 4) as *mut u32)
                .store(second.to_le(), Ordering::Relaxed);
        }
    }
}
