//! Byte offsets of a split ring's fields, from its three addresses.

use transport::RingInfo;

/// Byte offsets of one ring's fields.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Offsets {
    pub(crate) desc: u64,
    pub(crate) avail: u64,
    pub(crate) used: u64,
    pub(crate) size: u16,
}

impl Offsets {
    pub(crate) fn new(info: &RingInfo) -> Self {
        Offsets {
            desc: info.desc,
            avail: info.avail,
            used: info.used,
            size: info.size as u16, // ≤ 32768, validated by the handshake
        }
    }
    #[inline]
    pub(crate) fn mask(&self) -> u16 {
        self.size.wrapping_sub(1)
    }
    #[inline]
    pub(crate) fn desc(&self, i: u16) -> u64 {
        self.desc + 16 * i as u64
    }
    #[inline]
    pub(crate) fn avail_flags(&self) -> u64 {
        self.avail
    }
    #[inline]
    pub(crate) fn avail_idx(&self) -> u64 {
        self.avail + 2
    }
    #[inline]
    pub(crate) fn avail_ring(&self, i: u16) -> u64 {
        self.avail + 4 + 2 * (i & self.mask()) as u64
    }
    #[inline]
    pub(crate) fn used_event(&self) -> u64 {
        self.avail + 4 + 2 * self.size as u64
    }
    #[inline]
    pub(crate) fn used_flags(&self) -> u64 {
        self.used
    }
    #[inline]
    pub(crate) fn used_idx(&self) -> u64 {
        self.used + 2
    }
    #[inline]
    pub(crate) fn used_ring(&self, i: u16) -> u64 {
        self.used + 4 + 8 * (i & self.mask()) as u64
    }
    #[inline]
    pub(crate) fn avail_event(&self) -> u64 {
        self.used + 4 + 8 * self.size as u64
    }
}
