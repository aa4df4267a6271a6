//! Descriptor flags, suppression flags and the checked piece of a chain.

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

/// One readable or writable piece of a chain, already bounds-checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seg {
    /// Offset in the ring owner's memory.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
}
