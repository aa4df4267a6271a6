//! A Linux TAP device: Ethernet frames to and from the host's own stack.
//!
//! A switch's `--tap NAME` port reads the frames the host sends out of
//! interface NAME and writes the frames its members send to it. The
//! device is opened as `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR` with a 12-byte
//! header (`TUNSETVNETHDRSZ`): each `read` and `write` is one whole
//! Ethernet frame after the same 12-byte `virtio_net_hdr` (with
//! `num_buffers`) the members' rings carry, so GSO frames and checksum
//! offload flags go between the members and the host's stack unchanged,
//! and the kernel segments or checksums where a side cannot. Which
//! offloads the kernel may hand *us* is set with `TUNSETOFFLOAD`
//! ([`Tap::set_offloads`]): a switch asks only for what every member
//! accepts. The device is nonblocking: a switch never waits on the host,
//! a full queue is a drop.

use crate::{Error, Result};
use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::{read, write};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};

/// `TUNSETIFF`: `_IOW('T', 202, int)`.
const TUNSETIFF: nix::libc::c_ulong = 0x4004_54ca;
/// `TUNSETOFFLOAD`: `_IOW('T', 208, unsigned int)`.
const TUNSETOFFLOAD: nix::libc::c_ulong = 0x4004_54d0;
/// `TUNSETVNETHDRSZ`: `_IOW('T', 216, int)`.
const TUNSETVNETHDRSZ: nix::libc::c_ulong = 0x4004_54d8;
const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;
const IFF_VNET_HDR: i16 = 0x4000;
/// Bytes of `virtio_net_hdr` (with `num_buffers`) before every frame.
pub const VNET_HDR_LEN: usize = 12;
/// `TUN_F_CSUM`: we take frames whose checksum is still to be done.
pub const TUN_F_CSUM: u32 = 0x01;
/// `TUN_F_TSO4`: we take TCP/IPv4 GSO frames.
pub const TUN_F_TSO4: u32 = 0x02;
/// `TUN_F_TSO6`: we take TCP/IPv6 GSO frames.
pub const TUN_F_TSO6: u32 = 0x04;
/// `TUN_F_TSO_ECN`: ... with ECN.
pub const TUN_F_TSO_ECN: u32 = 0x08;

/// virtio-net feature bits (of a guest's receive offloads).
const VIRTIO_NET_F_GUEST_CSUM: u32 = 1 << 1;
const VIRTIO_NET_F_GUEST_TSO4: u32 = 1 << 7;
const VIRTIO_NET_F_GUEST_TSO6: u32 = 1 << 8;
const VIRTIO_NET_F_GUEST_ECN: u32 = 1 << 9;

/// The `TUN_F_*` flags a reader that passes frames on to guests accepting
/// `guest` (virtio-net feature bits 0..31 of their receive offloads) may
/// ask the TAP for: checksum offload only with `GUEST_CSUM`, and TSO only
/// with it too (a GSO frame always needs its checksum done).
pub fn offloads_from_virtio(guest: u32) -> u32 {
    if guest & VIRTIO_NET_F_GUEST_CSUM == 0 {
        return 0;
    }
    let mut f = TUN_F_CSUM;
    if guest & VIRTIO_NET_F_GUEST_TSO4 != 0 {
        f |= TUN_F_TSO4;
    }
    if guest & VIRTIO_NET_F_GUEST_TSO6 != 0 {
        f |= TUN_F_TSO6;
    }
    if f & (TUN_F_TSO4 | TUN_F_TSO6) != 0 && guest & VIRTIO_NET_F_GUEST_ECN != 0 {
        f |= TUN_F_TSO_ECN;
    }
    f
}
/// `IFNAMSIZ`.
const IFNAMSIZ: usize = 16;

/// `struct ifreq` as `TUNSETIFF` reads it: the name, the flags, and the
/// rest of the 40-byte union.
#[repr(C)]
struct IfReq {
    name: [u8; IFNAMSIZ],
    flags: i16,
    _pad: [u8; 22],
}

/// An open TAP device.
#[derive(Debug)]
pub struct Tap {
    fd: OwnedFd,
    name: String,
}

impl Tap {
    /// Create (or attach to) TAP device `name`, nonblocking.
    pub fn open(name: &str) -> Result<Tap> {
        if name.is_empty() || name.len() >= IFNAMSIZ || name.contains(['/', ' ', ':']) {
            return Err(Error::BadPath {
                path: name.into(),
                reason: format!(
                    "is not an interface name (1..{IFNAMSIZ} bytes, no `/`, `:` or space)"
                ),
            });
        }
        let raw = open(
            "/dev/net/tun",
            OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::sys("open /dev/net/tun", e))?;
        // SAFETY: `open` just returned this fd and nobody else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut req = IfReq {
            name: [0; IFNAMSIZ],
            flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`; `req` is a
        // live, properly sized and aligned `#[repr(C)]` ifreq for the whole
        // call, and `fd` is an open /dev/net/tun descriptor.
        let rc = unsafe {
            nix::libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                TUNSETIFF as _,
                &mut req as *mut IfReq,
            )
        };
        if rc < 0 {
            return Err(Error::sys(format!("TUNSETIFF {name}"), Errno::last()));
        }
        let hdr: nix::libc::c_int = VNET_HDR_LEN as nix::libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one `int` through the pointer;
        // `hdr` lives for the whole call and `fd` is the open TAP.
        let rc = unsafe {
            nix::libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                TUNSETVNETHDRSZ as _,
                &hdr as *const nix::libc::c_int,
            )
        };
        if rc < 0 {
            return Err(Error::sys(
                format!("TUNSETVNETHDRSZ {VNET_HDR_LEN} on {name}"),
                Errno::last(),
            ));
        }
        let tap = Tap {
            fd,
            name: name.into(),
        };
        // Until members say what they accept: plain frames.
        tap.set_offloads(0)?;
        Ok(tap)
    }

    /// Let the kernel hand us frames with these offloads left to do
    /// (`TUN_F_*`; 0: every frame checksummed and segmented).
    pub fn set_offloads(&self, flags: u32) -> Result<()> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value (an unsigned
        // long), no pointer; `fd` is the open TAP.
        let rc = unsafe {
            nix::libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&self.fd),
                TUNSETOFFLOAD as _,
                flags as nix::libc::c_ulong,
            )
        };
        if rc < 0 {
            return Err(Error::sys(
                format!("TUNSETOFFLOAD {flags:#x} on {}", self.name),
                Errno::last(),
            ));
        }
        Ok(())
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// One frame the host sent, its `virtio_net_hdr` first, into `buf`;
    /// `None` when none is queued.
    pub fn recv(&self, buf: &mut [u8]) -> Result<Option<usize>> {
        loop {
            match read(std::os::fd::AsRawFd::as_raw_fd(&self.fd), buf) {
                Ok(n) => return Ok(Some(n)),
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return Ok(None),
                Err(e) => return Err(Error::sys(format!("read {}", self.name), e)),
            }
        }
    }

    /// Hand `frame` (its `virtio_net_hdr` first) to the host; false when
    /// its queue is full (or the interface is down): the frame is dropped.
    pub fn send(&self, frame: &[u8]) -> Result<bool> {
        loop {
            match write(self.fd.as_fd(), frame) {
                Ok(_) => return Ok(true),
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN | Errno::EIO | Errno::ENOBUFS) => return Ok(false),
                Err(e) => return Err(Error::sys(format!("write {}", self.name), e)),
            }
        }
    }

    /// Readable when the host has sent a frame.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_offloads_follow_what_guests_accept() {
        assert_eq!(offloads_from_virtio(0), 0);
        // TSO without checksum offload cannot be used.
        assert_eq!(offloads_from_virtio(VIRTIO_NET_F_GUEST_TSO4), 0);
        assert_eq!(offloads_from_virtio(VIRTIO_NET_F_GUEST_CSUM), TUN_F_CSUM);
        let all = VIRTIO_NET_F_GUEST_CSUM
            | VIRTIO_NET_F_GUEST_TSO4
            | VIRTIO_NET_F_GUEST_TSO6
            | VIRTIO_NET_F_GUEST_ECN;
        assert_eq!(
            offloads_from_virtio(all),
            TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN
        );
        // No member at all (every bit set): all of them.
        assert_eq!(offloads_from_virtio(u32::MAX), 0x0f);
    }
}
