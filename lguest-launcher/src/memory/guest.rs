//! Our own guest memory (a sealed memfd) and the mapping of the peer's.

use super::{MemoryError, Region};
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

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

/// Before we hand a VM's memory to the peer (vhost-user, `--share guest`):
/// the peer maps it too, so it must be memory nobody can pull out from
/// under a mapping — a sealed tmpfs memfd ([`transport::check_shareable`]).
/// QEMU's `memory-backend-memfd` is that by default (`seal=on`); the error
/// names the options that are not.
pub fn check_vm_memory_shareable(fd: BorrowedFd<'_>) -> Result<(), MemoryError> {
    transport::check_shareable(fd).map_err(|why| {
        MemoryError::Os(
            "share the VM's memory with the peer",
            std::io::Error::other(format!(
                "{why}; start QEMU with -object memory-backend-memfd,id=mem,size=...,share=on \
                 (seal=on is its default: not seal=off, not hugetlb=on, not \
                 memory-backend-file)"
            )),
        )
    })
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
    use std::sync::atomic::Ordering;

    #[test]
    fn vm_memory_that_is_unsealed_or_hugetlb_is_not_shared_and_the_fix_is_named() {
        let unsealed = memfd_create(
            &CString::new("vm").unwrap(),
            MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
        )
        .unwrap();
        File::from(unsealed.try_clone().unwrap())
            .set_len(1 << 16)
            .unwrap();
        let err = check_vm_memory_shareable(unsealed.as_fd())
            .unwrap_err()
            .to_string();
        assert!(err.contains("lack F_SEAL_SHRINK|F_SEAL_GROW"), "{err}");
        assert!(err.contains("memory-backend-memfd"), "{err}");
        seal(unsealed.as_fd()).unwrap();
        check_vm_memory_shareable(unsealed.as_fd()).unwrap();
        // A sealed hugetlbfs memfd passes the seal check but not this one.
        if let Ok(huge) = memfd_create(
            &CString::new("vm-huge").unwrap(),
            MemFdCreateFlag::MFD_CLOEXEC
                | MemFdCreateFlag::MFD_ALLOW_SEALING
                | MemFdCreateFlag::MFD_HUGETLB,
        ) {
            if File::from(huge.try_clone().unwrap())
                .set_len(2 << 20)
                .is_ok()
            {
                seal(huge.as_fd()).unwrap();
                let err = check_vm_memory_shareable(huge.as_fd())
                    .unwrap_err()
                    .to_string();
                assert!(err.contains("hugetlbfs"), "{err}");
                assert!(err.contains("not hugetlb=on"), "{err}");
            }
        }
    }

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
