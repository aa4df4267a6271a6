//! [`RingParts`]: a driver-side ring's avail and used entries, with the
//! bounds check proved once per ring where `DriverQueue::new` could.

use crate::memory::Region;
use crate::virtq::layout::Offsets;
use crate::virtq::RingError;
use std::sync::atomic::Ordering;

/// The avail and used entries of a driver-side ring, read and written
/// with one bounds check each, or none when `in_bounds` (see
/// `DriverQueue::new`).
#[derive(Clone, Copy)]
pub(super) struct RingParts<'a> {
    pub(super) mem: &'a Region,
    pub(super) off: &'a Offsets,
    pub(super) in_bounds: bool,
}

impl RingParts<'_> {
    /// Used entry `i` (masked by the size): `(id, len)`.
    #[inline(always)]
    pub(super) fn used(self, i: u16) -> Result<(u32, u32), RingError> {
        let at = self.off.used_ring(i);
        if self.in_bounds {
            // SAFETY: `at` is `used + 4 + 8 * (i & (size - 1))`, so its 8
            // bytes lie below `used + 4 + 8 * size`, inside the used ring,
            // which `new` checked is inside the mapping and 4-aligned (the
            // size a power of two, so the mask keeps the index below it).
            Ok(unsafe { self.mem.load_u32_pair_in_bounds(at) })
        } else {
            Ok(self.mem.load_u32_pair("used entry", at)?)
        }
    }

    /// Write `id` to avail entry `i` (masked by the size), relaxed.
    #[inline(always)]
    pub(super) fn set_avail(self, i: u16, id: u16) -> Result<(), RingError> {
        let at = self.off.avail_ring(i);
        if self.in_bounds {
            // SAFETY: `at` is `avail + 4 + 2 * (i & (size - 1))`: its two
            // bytes lie inside the avail ring, which `new` checked is
            // inside the mapping and 2-aligned.
            unsafe { self.mem.store_u16_in_bounds(at, id, Ordering::Relaxed) };
            Ok(())
        } else {
            Ok(self
                .mem
                .store_u16("avail ring", at, id, Ordering::Relaxed)?)
        }
    }
}
