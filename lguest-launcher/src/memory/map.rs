//! [`GuestMap`]: guest-physical addresses to offsets in a mapping.

use super::Region;
use std::sync::Arc;

/// A mapping plus the guest-physical map of what is in it: how guest
/// addresses (ring addresses, descriptor buffers) become offsets in the
/// mapping. A synthetic guest's map is the identity (one region at 0); a
/// QEMU guest's has one region per RAM slot.
#[derive(Clone, Debug)]
pub struct GuestMap {
    region: Region,
    map: Arc<[transport::MemRegion]>,
}

impl GuestMap {
    /// Guest-physical address = offset in `region`.
    pub fn identity(region: Region) -> Self {
        let whole = transport::MemRegion {
            gpa: 0,
            size: region.len(),
            offset: 0,
        };
        GuestMap {
            region,
            map: Arc::from([whole]),
        }
    }

    /// A map from a handshake (already validated against the mapping's size)
    /// or from a VMM's memory table. Regions that do not fit the mapping are
    /// dropped, so every translation lands inside it.
    pub fn new(region: Region, regions: &[transport::MemRegion]) -> Self {
        let len = region.len();
        let map: Vec<_> = regions
            .iter()
            .copied()
            .filter(|m| m.offset.checked_add(m.size).is_some_and(|e| e <= len))
            .collect();
        GuestMap {
            region,
            map: Arc::from(map),
        }
    }

    /// The mapping.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// Offset in the mapping of guest range `[gpa, gpa+len)`, if it lies
    /// wholly inside one region.
    #[inline]
    pub fn translate(&self, gpa: u64, len: u64) -> Option<u64> {
        transport::translate(&self.map, gpa, len)
    }
}
