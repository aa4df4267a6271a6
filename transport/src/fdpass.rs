//! Messages with fds attached (`SCM_RIGHTS`).
//!
//! On a socket rendezvous the handshake is one `SOCK_SEQPACKET` record: the
//! handshake bytes, with the sender's fds riding along as `SCM_RIGHTS` —
//! its memory fd for `unix:`, its memory fd and its eventfd for
//! `eventfd:`. These helpers send and receive such records. Receiving takes
//! ownership of every fd the kernel installed, so a peer that is refused
//! afterwards (wrong count, wrong kind) leaks nothing into our fd table.

use crate::{Error, Result};
use nix::errno::Errno;
#[cfg(test)]
use nix::sys::socket::AddressFamily;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags, UnixAddr};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The most fds the kernel lets one Unix socket message carry
/// (`SCM_MAX_FD`). We leave room for all of them when receiving: if the
/// control buffer were smaller, the kernel would install the fds that fit
/// and report `MSG_CTRUNC`, and we could not name them to close them.
const SCM_MAX_FD: usize = 253;

/// Bytes of control buffer for `n` fds (`CMSG_SPACE(n * sizeof(int))`).
fn control_space(n: usize) -> usize {
    let align = |x: usize| x.div_ceil(std::mem::size_of::<usize>()) * std::mem::size_of::<usize>();
    align(std::mem::size_of::<nix::libc::cmsghdr>()) + align(n * std::mem::size_of::<RawFd>())
}

/// Walk a control buffer the kernel filled (possibly cut short, with
/// `MSG_CTRUNC`) and close every fd an `SCM_RIGHTS` header in it names: the
/// kernel installed those in our table whether or not they all fitted.
/// Returns how many were closed. Only reads the buffer; a header that does
/// not fit ends the walk.
fn close_installed_fds(control: &[u8]) -> usize {
    let hdr = std::mem::size_of::<nix::libc::cmsghdr>();
    let word = std::mem::size_of::<usize>();
    let mut at = 0usize;
    let mut closed = 0;
    while let Some(h) = control.get(at..at + hdr) {
        // cmsghdr: cmsg_len (usize), cmsg_level (i32), cmsg_type (i32).
        let len = usize::from_ne_bytes(h[..word].try_into().unwrap_or_default());
        let level = i32::from_ne_bytes(h[word..word + 4].try_into().unwrap_or_default());
        let kind = i32::from_ne_bytes(h[word + 4..word + 8].try_into().unwrap_or_default());
        if len < hdr {
            break;
        }
        let data_end = (at + len).min(control.len());
        if level == nix::libc::SOL_SOCKET && kind == nix::libc::SCM_RIGHTS {
            for fd in control[at + hdr..data_end].chunks_exact(std::mem::size_of::<RawFd>()) {
                let fd = RawFd::from_ne_bytes(fd.try_into().unwrap_or_default());
                if fd >= 0 {
                    // SAFETY: the kernel installed `fd` in our table for
                    // this message (SCM_RIGHTS) and nothing else knows its
                    // number: we own it, and closing it is all we do.
                    drop(unsafe { OwnedFd::from_raw_fd(fd) });
                    closed += 1;
                }
            }
        }
        at += len.div_ceil(word) * word;
    }
    closed
}

/// Send `bytes` as one record with `fds` attached as `SCM_RIGHTS`.
///
/// `MSG_NOSIGNAL`: a peer that closed is [`Error::PeerGone`], never SIGPIPE.
/// The socket's own blocking mode applies.
pub fn send_with_fds(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let iov = [IoSlice::new(bytes)];
    let rights = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &rights };
    loop {
        match sendmsg::<UnixAddr>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(n) if n == bytes.len() => return Ok(()),
            // SOCK_SEQPACKET records are atomic; a short count would be a
            // kernel surprise, not a peer's doing.
            Ok(n) => {
                return Err(Error::io(
                    "sendmsg",
                    std::io::Error::other(format!("sent {n} of {} bytes", bytes.len())),
                ))
            }
            Err(Errno::EINTR) => continue,
            Err(e @ (Errno::EPIPE | Errno::ECONNRESET | Errno::ENOTCONN)) => {
                return Err(Error::PeerGone {
                    pid: 0,
                    reason: format!("closed the socket before our handshake went out ({e})"),
                })
            }
            Err(e) => return Err(Error::sys("sendmsg", e)),
        }
    }
}

/// One record received by [`recv_with_fds`].
#[derive(Debug)]
pub struct Received {
    /// The record's full length. It may exceed the buffer (the rest was
    /// cut off); 0 with no fds means the peer closed (EOF).
    pub len: usize,
    /// Every fd that came with the record, now ours and close-on-exec.
    /// Dropping them closes them, so a refused peer leaks nothing.
    pub fds: Vec<OwnedFd>,
}

/// Receive one record into `buf`, taking ownership of any fds attached.
///
/// Received fds are close-on-exec (`MSG_CMSG_CLOEXEC`). `flags` are added to
/// the ones we always pass; with `MsgFlags::MSG_DONTWAIT`, `Ok(None)` means
/// nothing is waiting. A reset connection is [`Error::PeerGone`] (pid 0: the
/// caller knows better); EOF is `Ok(Some(_))` with `len == 0` and no fds.
pub fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    flags: MsgFlags,
) -> Result<Option<Received>> {
    recv_with_room(sock, buf, flags, SCM_MAX_FD)
}

/// [`recv_with_fds`] with room for `room` fds in the control buffer.
fn recv_with_room(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    flags: MsgFlags,
    room: usize,
) -> Result<Option<Received>> {
    let mut cmsg = vec![0u8; control_space(room)];
    let mut iov = [IoSliceMut::new(buf)];
    // MSG_TRUNC makes the kernel report the record's real length, so an
    // oversized record is named as such instead of silently cut short.
    let flags = flags | MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_TRUNC;
    let msg = loop {
        match recvmsg::<UnixAddr>(sock.as_raw_fd(), &mut iov, Some(&mut cmsg), flags) {
            Ok(msg) => break msg,
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Ok(None),
            Err(e @ (Errno::ECONNRESET | Errno::ENOTCONN | Errno::EPIPE)) => {
                return Err(Error::PeerGone {
                    pid: 0,
                    reason: format!("recvmsg: {e}"),
                })
            }
            Err(e) => return Err(Error::sys("recvmsg", e)),
        }
    };
    // With room for SCM_MAX_FD fds and no SO_PASSCRED/SO_PASSSEC set, the
    // control data cannot be truncated. Should it be anyway (MSG_CTRUNC),
    // nix will not walk it — but the kernel has already installed the fds
    // that fitted: find them in the raw buffer and close them, then refuse.
    let Ok(cmsgs) = msg.cmsgs() else {
        let bytes = msg.bytes;
        let closed = close_installed_fds(&cmsg);
        return Err(Error::PeerRefused(format!(
            "its {bytes}-byte message carried more control data than fits (truncated; {closed} \
             fds it carried closed); no sharenet peer sends that"
        )));
    };
    let mut fds = Vec::new();
    for c in cmsgs {
        if let ControlMessageOwned::ScmRights(raw) = c {
            for fd in raw {
                // SAFETY: the kernel has just installed `fd` in our table for
                // this message (SCM_RIGHTS); nothing else knows its number, so
                // we are its only owner.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Ok(Some(Received {
        len: msg.bytes,
        fds,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{socketpair, SockFlag, SockType};
    use std::os::fd::AsFd;

    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// A record with more fds than the control buffer has room for: the
    /// kernel installs what fits and says MSG_CTRUNC. Those must be closed,
    /// not leaked, and the record refused.
    #[test]
    fn truncated_control_data_is_refused_and_its_fds_closed() {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let extra: Vec<OwnedFd> = (0..6)
            .map(|_| a.try_clone())
            .collect::<std::io::Result<_>>()
            .unwrap();
        let borrowed: Vec<BorrowedFd<'_>> = extra.iter().map(|f| f.as_fd()).collect();
        send_with_fds(a.as_fd(), b"hello", &borrowed).unwrap();
        let before = open_fds();
        let mut buf = [0u8; 16];
        let err = recv_with_room(b.as_fd(), &mut buf, MsgFlags::empty(), 2).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        assert_eq!(open_fds(), before, "fds of a truncated message leaked");
    }
}
