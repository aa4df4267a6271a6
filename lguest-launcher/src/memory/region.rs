//! [`Region`]: the one bounds-checked accessor of a shared mapping.

use memmap2::{MmapOptions, MmapRaw};
use std::fs::File;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::Arc;

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
    map: Arc<dyn Backing>,
    /// `map.base()`, read once: no dynamic call per access.
    base: *mut u8,
    len: u64,
}

// SAFETY: the mapping is shared memory that other processes may write at any
// time; every access goes through the bounds-checked methods below, which use
// atomics for ring indexes and never hand out references into the mapping.
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
        Region { map, base, len }
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
        // SAFETY: callers pass an offset validated by `check`, so the result
        // stays inside the mapping.
        unsafe { self.base.add(off) }
    }

    #[inline]
    fn atomic_u16(&self, what: &'static str, offset: u64) -> Result<&AtomicU16, OutOfBounds> {
        let off = self.check(what, offset, 2, 2)?;
        // SAFETY: in bounds and 2-byte aligned (checked above); the mapping
        // lives as long as `self`; AtomicU16 has the layout of u16 and other
        // processes only ever touch these bytes as whole u16 values.
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
        // SAFETY: in bounds and aligned (checked above), see `atomic_u16`.
        let a = unsafe { AtomicU32::from_ptr(self.ptr(off) as *mut u32) };
        Ok(u32::from_le(a.load(Ordering::Relaxed)))
    }

    /// Store a little-endian u32 (4-byte aligned), relaxed.
    #[inline]
    pub fn store_u32(&self, what: &'static str, offset: u64, v: u32) -> Result<(), OutOfBounds> {
        let off = self.check(what, offset, 4, 4)?;
        // SAFETY: in bounds and aligned (checked above), see `atomic_u16`.
        let a = unsafe { AtomicU32::from_ptr(self.ptr(off) as *mut u32) };
        a.store(v.to_le(), Ordering::Relaxed);
        Ok(())
    }

    /// Copy `out.len()` bytes at `offset` into a local buffer (one fetch:
    /// the peer cannot change what we check after we copied it).
    #[inline]
    pub fn read(&self, what: &'static str, offset: u64, out: &mut [u8]) -> Result<(), OutOfBounds> {
        let off = self.check(what, offset, out.len() as u64, 1)?;
        // SAFETY: source range checked above; `out` is a local buffer that
        // cannot overlap a shared mapping we only reach through raw pointers.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr(off), out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    /// Copy `data` into the mapping at `offset`.
    #[inline]
    pub fn write(&self, what: &'static str, offset: u64, data: &[u8]) -> Result<(), OutOfBounds> {
        let off = self.check(what, offset, data.len() as u64, 1)?;
        // SAFETY: destination range checked above; `data` is local memory.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr(off), data.len()) };
        Ok(())
    }

    /// Copy `len` bytes from `src` at `src_off` to `self` at `dst_off`. Both
    /// ranges are checked; the two mappings are distinct (ours and the
    /// peer's), or the ranges are distinct buffers of one mapping.
    #[inline]
    pub fn copy_from(
        &self,
        dst_off: u64,
        src: &Region,
        src_off: u64,
        len: u64,
    ) -> Result<(), OutOfBounds> {
        let d = self.check("rx buffer", dst_off, len, 1)?;
        let s = src.check("tx buffer", src_off, len, 1)?;
        let same = Arc::ptr_eq(&self.map, &src.map);
        // SAFETY: both ranges checked above. Between two mappings the ranges
        // cannot overlap in our address space; within one mapping we use
        // `copy` (memmove) since a hostile peer may describe overlapping ones.
        unsafe {
            if same {
                std::ptr::copy(src.ptr(s), self.ptr(d), len as usize)
            } else {
                std::ptr::copy_nonoverlapping(src.ptr(s), self.ptr(d), len as usize)
            }
        }
        Ok(())
    }
}
