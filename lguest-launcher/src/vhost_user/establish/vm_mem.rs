//! The VM's memory as `establish` needs it: the memfd and its regions (what
//! the peer is told and maps), and our own view of it (the backend's
//! mapping, borrowed).

use super::super::backend::Mem;
use super::EstablishError;
use crate::memory::{GuestMap, Region};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use transport::MemRegion;
use vm_memory::{GuestAddressSpace, GuestMemoryBackend, GuestMemoryRegion};

/// The VM's memfd and its regions by file offset (what the peer maps):
/// QEMU's `memory-backend-memfd` gives every RAM region as the same file at
/// different offsets.
pub(super) fn vm_memory(mem: &Mem) -> Result<(File, u64, Vec<MemRegion>), EstablishError> {
    let guard = mem.memory();
    let mut file: Option<File> = None;
    let mut ino = None;
    let mut regions = Vec::new();
    let os = |what| move |err| EstablishError::VmFile { what, err };
    for r in guard.iter() {
        let fo = r.file_offset().ok_or(EstablishError::NoFile {
            gpa: r.start_addr().0,
        })?;
        let meta = fo.file().metadata().map_err(os("fstat"))?;
        let id = (meta.dev(), meta.ino());
        match ino {
            None => {
                ino = Some(id);
                file = Some(fo.file().try_clone().map_err(os("dup"))?);
            }
            Some(i) if i != id => return Err(EstablishError::SeveralFiles),
            _ => {}
        }
        regions.push(MemRegion {
            gpa: r.start_addr().0,
            size: r.len(),
            offset: fo.start(),
        });
    }
    let file = file.ok_or(EstablishError::NoRegions)?;
    let size = file.metadata().map_err(os("fstat"))?.len();
    Ok((file, size, regions))
}

/// Our own view of the VM's memory: the backend's mapping, borrowed.
///
/// `Region` is one contiguous range. QEMU sends one region for a VM whose
/// RAM is one `memory-backend-memfd` below the 32-bit PCI hole (everything
/// up to 2-3 GiB, all our VMs): that region's mapping, as rust-vmm's
/// backend made it, becomes the region, and it is kept alive by an `Arc` of
/// the backend's memory for as long as any clone of it lives. A VM with
/// several regions (RAM above 4 GiB) has several mappings at unrelated
/// addresses; there we map the memfd once more as one range, as before,
/// until `GuestMap` can hold several regions.
pub(super) fn vm_map(
    mem: &Mem,
    file: &File,
    size: u64,
    regions: &[MemRegion],
) -> Result<GuestMap, EstablishError> {
    let snapshot = mem.memory().into_inner();
    if snapshot.num_regions() == 1 {
        if let Some(r) = snapshot.iter().next() {
            let (base, len, gpa) = (r.as_ptr(), r.len(), r.start_addr().0);
            // SAFETY: `base..base+len` is the backend's shared, read-write
            // mapping of this region (vm-memory's MmapRegion, MAP_SHARED
            // with PROT_READ|PROT_WRITE as vhost-user-backend maps the memory
            // table); it stays mapped while the `Arc<GuestMemoryMmap>` we
            // hand over as owner lives, whatever memory table the backend
            // installs next. We never make Rust references into it.
            let region = unsafe { Region::from_raw_parts(base, len, snapshot.clone()) };
            let whole = MemRegion {
                gpa,
                size: len,
                offset: 0,
            };
            return Ok(GuestMap::new(region, &[whole]));
        }
    }
    let region = Region::map(file, size).map_err(|err| EstablishError::Map { whose: "VM", err })?;
    Ok(GuestMap::new(region, regions))
}

/// The VM memory as the peer would be told it: the memfd's inode and the
/// regions (`None` if it cannot be shared at all).
pub(in crate::vhost_user) fn memory_layout(mem: &Mem) -> Option<(u64, Vec<MemRegion>)> {
    let (file, _, regions) = vm_memory(mem).ok()?;
    Some((file.metadata().ok()?.ino(), regions))
}
