//! A [`Region`] over memory that someone else mapped and keeps alive.
//!
//! A vhost-user backend library maps the VM's memory itself when QEMU sends
//! `SET_MEM_TABLE` (rust-vmm's `GuestMemoryMmap`). Mapping the same memfd a
//! second time would work, but doubles the address space and page tables
//! and leaves two views to keep in step; so the VM side borrows that mapping
//! instead. The owner (an `Arc` of the backend's memory) travels inside the
//! region, so the mapping outlives every clone of it even if the backend
//! swaps in a new memory table meanwhile.

use super::region::Backing;
use super::Region;
use std::sync::Arc;

/// A mapping made by someone else, kept alive by `_owner`.
struct Borrowed {
    base: *mut u8,
    _owner: Box<dyn Send + Sync>,
}

// SAFETY: `base` points into a shared mapping that `_owner` keeps alive; the
// pointer itself carries no thread affinity, and every access goes through
// `Region`'s bounds-checked, atomic or copy-only accessors (see region.rs).
unsafe impl Send for Borrowed {}
// SAFETY: as above: `Borrowed` holds no state besides the pointer and owner.
unsafe impl Sync for Borrowed {}

impl Backing for Borrowed {
    fn base(&self) -> *mut u8 {
        self.base
    }
}

impl Region {
    /// A region over `[base, base + len)`, a mapping that `owner` keeps
    /// alive (the region holds `owner` until its last clone is dropped).
    ///
    /// # Safety
    /// `[base, base + len)` must be one shared, readable and writable
    /// mapping that stays mapped, at that address and size, for as long as
    /// `owner` lives; and nothing may hold Rust references into it (other
    /// processes and raw-pointer users may write it at any time, which is
    /// what `Region`'s accessors expect).
    pub unsafe fn from_raw_parts(
        base: *mut u8,
        len: u64,
        owner: impl Send + Sync + 'static,
    ) -> Region {
        Region::from_backing(
            Arc::new(Borrowed {
                base,
                _owner: Box::new(owner),
            }),
            len,
        )
    }
}
