//! A Linux TAP device: Ethernet frames to and from the host's own stack.
//!
//! A switch's `--tap NAME` port reads the frames the host sends out of
//! interface NAME and writes the frames its members send to it. The
//! device is opened as `IFF_TAP | IFF_NO_PI` (each `read` is one whole
//! Ethernet frame, no packet-info prefix) and nonblocking: a switch never
//! waits on the host, a full queue is a drop.

use crate::{Error, Result};
use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::{read, write};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};

/// `TUNSETIFF`: `_IOW('T', 202, int)`.
const TUNSETIFF: nix::libc::c_ulong = 0x4004_54ca;
const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;
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
            flags: IFF_TAP | IFF_NO_PI,
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
        Ok(Tap {
            fd,
            name: name.into(),
        })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// One frame the host sent, into `buf`; `None` when none is queued.
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

    /// Hand `frame` to the host; false when its queue is full (or the
    /// interface is down): the frame is dropped.
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
