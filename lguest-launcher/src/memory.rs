//! Guest memory: our own sealed memfd, and our mapping of the peer's.
//!
//! Each launcher owns one memfd holding its guest's rings and packet
//! buffers. It is sized once, sealed against shrinking and growing (and
//! against further seal changes) *before* the peer can see it, and mapped
//! shared. The peer maps it too, after checking the seals and size, so a
//! truncate can never turn a ring access into SIGBUS.
//!
//! Every access to either mapping goes through [`Region`], the one
//! bounds-checked accessor: offsets are checked with `checked_add` against
//! the mapping length, ring indexes are accessed as atomics at aligned
//! offsets, and packet bytes are copied with `copy_nonoverlapping` after the
//! same check. This is the only module (with `ring.rs` using it) that holds
//! raw pointers; nothing outside does pointer arithmetic on guest memory.

use memmap2::{MmapOptions, MmapRaw};
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
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

/// A shared mapping. Cloning a `Region` shares the mapping.
#[derive(Clone)]
pub struct Region {
    map: Arc<MmapRaw>,
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
        Ok(Region {
            map: Arc::new(map),
            len,
        })
    }

    /// Size of the mapping in bytes.
    pub fn len(&self) -> u64 {
        self.len
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
        unsafe { self.map.as_mut_ptr().add(off) }
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

/// Our own guest memory: a sealed memfd and its mapping.
pub struct GuestMemory {
    file: File,
    region: Region,
}

impl GuestMemory {
    /// Create a memfd of `size` bytes, seal it against shrinking, growing
    /// and further sealing, and map it.
    pub fn create(name: &str, size: u64) -> Result<Self, MemoryError> {
        let cname = CString::new(format!("sharenet-{name}")).unwrap_or_default();
        let fd: OwnedFd = memfd_create(
            &cname,
            MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
        )
        .map_err(|e| MemoryError::Os("memfd_create", e.into()))?;
        let file = File::from(fd);
        file.set_len(size)
            .map_err(|e| MemoryError::Os("ftruncate memfd", e))?;
        seal(file.as_fd())?;
        let region = Region::map(&file, size)?;
        Ok(GuestMemory { file, region })
    }

    /// The shared mapping.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// The memfd, to offer to the peer.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// The memfd's number in this process (for `/proc/PID/fd/N`).
    pub fn raw_fd(&self) -> i32 {
        self.file.as_raw_fd()
    }
}

/// Seal a memfd so its size can never change again.
pub fn seal(fd: BorrowedFd<'_>) -> Result<(), MemoryError> {
    let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
    fcntl(fd.as_raw_fd(), FcntlArg::F_ADD_SEALS(seals))
        .map_err(|e| MemoryError::Os("seal memfd", e.into()))?;
    Ok(())
}

/// Map the peer's memory fd (already checked by the transport for seals and
/// size).
pub fn map_peer(fd: OwnedFd, size: u64) -> Result<Region, MemoryError> {
    let file = File::from(fd);
    Region::map(&file, size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_memory_is_sealed_against_resizing() {
        let m = GuestMemory::create("t", 1 << 16).unwrap();
        let seals = fcntl(m.fd().as_raw_fd(), FcntlArg::F_GET_SEALS).unwrap();
        let seals = SealFlag::from_bits_truncate(seals);
        assert!(
            seals.contains(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL)
        );
        assert!(m.file.set_len(1 << 12).is_err());
        assert!(m.file.set_len(1 << 20).is_err());
        transport::check_peer_memory(m.fd(), 1 << 16).unwrap();
    }

    #[test]
    fn region_rejects_out_of_bounds_and_wrapping_access() {
        let m = GuestMemory::create("t", 4096).unwrap();
        let r = m.region();
        assert!(r.load_u16("x", 4094, Ordering::Relaxed).is_ok());
        assert!(r.load_u16("x", 4096, Ordering::Relaxed).is_err());
        assert!(r.load_u16("x", 3, Ordering::Relaxed).is_err(), "misaligned");
        assert!(r.write("x", u64::MAX - 1, &[0; 4]).is_err(), "wrap-around");
        let mut b = [0u8; 8];
        assert!(r.read("x", 4090, &mut b).is_err());
        assert!(r.copy_from(4000, r, 0, 200).is_err());
        r.write("x", 100, b"hello").unwrap();
        r.copy_from(200, r, 100, 5).unwrap();
        r.read("x", 200, &mut b[..5]).unwrap();
        assert_eq!(&b[..5], b"hello");
    }
}
