//! [`DeviceQueue`]'s per-descriptor translation cache: the guest-address
//! to offset lookup (a region search) remembered per descriptor index with
//! its address and length.
//!
//! [`DeviceQueue`]: super::DeviceQueue

use crate::memory::GuestMap;

/// One descriptor's entry in [`DeviceQueue`]'s translation cache: the
/// buffer `[addr, addr + len)` it last named and that buffer's offset in
/// the mapping.
#[derive(Clone, Copy, Debug)]
pub(super) struct Xlat {
    addr: u64,
    /// A `u32` length, or `u64::MAX` (no entry: matches no length).
    len: u64,
    offset: u64,
}

impl Xlat {
    pub(super) const NONE: Xlat = Xlat {
        addr: 0,
        len: u64::MAX,
        offset: 0,
    };

    /// The offset this descriptor's buffer had last time, if it had one:
    /// a guess to prefetch, never a translation to use.
    #[inline(always)]
    pub(super) fn last_offset(&self) -> Option<u64> {
        (self.len != u64::MAX).then_some(self.offset)
    }
}

/// The offset of descriptor `idx`'s buffer `[addr, addr+len)` through the
/// per-descriptor cache `xlat` or, when it does not have it, the map's
/// answer, remembered. Either way the map's translation: wholly inside its
/// mapping.
#[inline(always)]
pub(super) fn translate(
    map: &GuestMap,
    xlat: &mut [Xlat],
    idx: u16,
    addr: u64,
    len: u32,
) -> Option<u64> {
    let slot = xlat.get_mut(idx as usize)?;
    if slot.addr == addr && slot.len == u64::from(len) {
        return Some(slot.offset);
    }
    translate_miss(map, slot, addr, len)
}

/// [`translate`] when the cache does not have it.
#[inline(never)]
fn translate_miss(map: &GuestMap, slot: &mut Xlat, addr: u64, len: u32) -> Option<u64> {
    let offset = map.translate(addr, len as u64)?;
    *slot = Xlat {
        addr,
        len: len.into(),
        offset,
    };
    Some(offset)
}
