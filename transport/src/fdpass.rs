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
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags, UnixAddr};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The most fds the kernel lets one Unix socket message carry
/// (`SCM_MAX_FD`). We leave room for all of them when receiving: if the
/// control buffer were smaller, the kernel would install the fds that fit
/// and report `MSG_CTRUNC`, and we could not name them to close them.
const SCM_MAX_FD: usize = 253;

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
    let mut cmsg = nix::cmsg_space!([RawFd; SCM_MAX_FD]);
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
    // control data cannot be truncated; if it somehow is, nix will not let us
    // walk it and we report that rather than guess.
    let cmsgs = msg.cmsgs().map_err(|_| {
        Error::PeerRefused(
            "its message carried more control data than fits (truncated); no sharenet \
             peer sends that"
                .into(),
        )
    })?;
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
