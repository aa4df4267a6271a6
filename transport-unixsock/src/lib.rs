//! # `unix:PATH` — one Unix socket for everything
//!
//! The 2008 lguest launcher met its peer through two named FIFOs and found
//! the peer's memory by pid. This transport does it all over one
//! `AF_UNIX` socket of type `SOCK_SEQPACKET`:
//!
//! 1. **Rendezvous** ([`transport::rendezvous()`]): the first launcher to
//!    arrive binds `PATH` (mode 0600) and waits; the second connects.
//!    Either may start first; a socket left by a dead launcher is
//!    recognised (nobody accepts) and replaced. Once connected, `PATH` is
//!    unlinked.
//! 2. **Who is there**: `SO_PEERCRED` gives the peer's uid and pid as the
//!    kernel knows them. Another uid is refused before we send anything;
//!    the pid in the peer's handshake must be the kernel's.
//! 3. **Handshake**: each side sends its [`Handshake`] as one
//!    record with its memory fd attached (`SCM_RIGHTS`), so no one needs
//!    `/proc/PID/fd` access to reach the other's memory. The received memfd
//!    is checked by [`transport::accept_peer`] (seals, size) before anyone
//!    maps it.
//! 4. **Notifications**: one 1-byte record per kick, on the same socket.
//!
//! ## Why `SOCK_SEQPACKET`
//! * *Records*: the handshake arrives whole or not at all, with its fds
//!   bound to it; a stream socket would need framing and could split the
//!   bytes from the fds.
//! * *Reliable and ordered*, unlike `SOCK_DGRAM`: no kick is dropped while
//!   the peer can still read.
//! * *Connected*: when the peer exits or dies, the kernel closes its end and
//!   we read EOF (and `POLLHUP`) — death is noticed without a heartbeat,
//!   and a kick to a dead peer is `EPIPE`, which we turn into
//!   [`Error::PeerGone`] (`MSG_NOSIGNAL`: never SIGPIPE).
//! * *Each kick is one record*, so waking up means draining records with
//!   `MSG_DONTWAIT` until `EAGAIN`; any number of kicks is one wake-up. When
//!   the peer has let its socket buffer fill with unread kicks, a
//!   nonblocking kick fails with `EAGAIN`, which is [`Notify::AlreadyPending`]:
//!   the peer has something to read, so it will wake anyway.
//!
//! Steps 1 to 3 are the `transport` crate's socket rendezvous
//! ([`transport::rendezvous()`], [`transport::Rendezvous::exchange`]);
//! `transport-eventfd` meets the same way. What this crate adds is the
//! choice of one fd per handshake and the kicks themselves.
//!
//! Every fd this crate creates or receives is close-on-exec.

#![deny(missing_docs)]

use nix::errno::Errno;
use nix::sys::socket::{recv, send, MsgFlags};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;
use transport::{
    accept_peer, poll_fds, rendezvous, ConnectOptions, Deadline, Error, Handshake, Notify,
    PeerInfo, Result, Transport, Wakeup,
};

/// Kicks drained per [`Transport::wait`] at most. A peer kicking as fast as
/// it can must not keep us in the drain loop forever; whatever is left keeps
/// the socket readable, so the next `wait` returns at once.
const MAX_DRAIN: usize = 256;

/// A `unix:PATH` link to one peer: the connected `SOCK_SEQPACKET` socket.
#[derive(Debug)]
pub struct UnixSock {
    socket: OwnedFd,
    peer_pid: u32,
    nonblocking_writes: bool,
}

impl Transport for UnixSock {
    const KIND: &'static str = "unix";

    fn connect(
        path: &Path,
        local: &Handshake,
        memory: BorrowedFd<'_>,
        opts: &ConnectOptions,
    ) -> Result<(Self, PeerInfo)> {
        let meeting = rendezvous(path, opts.timeout)?;
        let (handshake, fds) = meeting.exchange(local, &[memory])?;
        let theirs = exactly_one_fd(fds)?;
        let peer = accept_peer(handshake, theirs, memory)?;
        let link = UnixSock {
            socket: meeting.socket,
            peer_pid: peer.handshake.pid,
            nonblocking_writes: opts.nonblocking_writes,
        };
        Ok((link, peer))
    }

    fn notify(&self) -> Result<Notify> {
        let mut flags = MsgFlags::MSG_NOSIGNAL;
        if self.nonblocking_writes {
            flags |= MsgFlags::MSG_DONTWAIT;
        }
        loop {
            match send(self.socket.as_raw_fd(), &[1], flags) {
                Ok(_) => return Ok(Notify::Sent),
                Err(Errno::EINTR) => continue,
                // The peer's queue is full of kicks it has not read yet.
                Err(Errno::EAGAIN) => return Ok(Notify::AlreadyPending),
                Err(e @ (Errno::EPIPE | Errno::ECONNRESET | Errno::ENOTCONN)) => {
                    return Err(Error::PeerGone {
                        pid: self.peer_pid,
                        reason: format!("notification send failed: {e}"),
                    })
                }
                Err(e) => return Err(Error::sys("send notification", e)),
            }
        }
    }

    fn wait(&self, timeout: Option<Duration>) -> Result<Wakeup> {
        let deadline = Deadline::after(timeout);
        loop {
            let [ready] = poll_fds([self.socket.as_fd()], deadline.remaining())?;
            if !ready.readable && !ready.hangup {
                if deadline.expired() {
                    return Ok(Wakeup::Timeout);
                }
                continue;
            }
            match self.drain()? {
                Drained::Kicks => return Ok(Wakeup::Notified),
                Drained::Eof => return Err(self.gone("socket closed (EOF)")),
                // Readable but empty: another thread drained it first.
                Drained::Nothing if !ready.hangup => {
                    if deadline.expired() {
                        return Ok(Wakeup::Timeout);
                    }
                }
                Drained::Nothing => return Err(self.gone("socket hung up")),
            }
        }
    }

    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    fn peer_pid(&self) -> u32 {
        self.peer_pid
    }
}

enum Drained {
    /// At least one kick was read.
    Kicks,
    /// Nothing was waiting.
    Nothing,
    /// The peer closed and every kick before that is consumed.
    Eof,
}

impl UnixSock {
    /// Read every pending kick without blocking. Kicks read before an EOF
    /// win: the caller processes the rings once more, and the next `wait`
    /// sees the EOF (which stays).
    fn drain(&self) -> Result<Drained> {
        let mut kicks = 0;
        // Any record counts as a kick; its bytes carry no meaning. Fds a
        // peer might attach are discarded by the kernel: recv() offers no
        // room for them.
        let mut buf = [0u8; 16];
        while kicks < MAX_DRAIN {
            match recv(self.socket.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(0) if kicks == 0 => return Ok(Drained::Eof),
                Ok(0) => break,
                Ok(_) => kicks += 1,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => break,
                Err(e @ (Errno::ECONNRESET | Errno::ENOTCONN)) if kicks == 0 => {
                    return Err(self.gone(&format!("recv failed: {e}")))
                }
                Err(Errno::ECONNRESET | Errno::ENOTCONN) => break,
                Err(e) => return Err(Error::sys("recv notification", e)),
            }
        }
        Ok(if kicks > 0 {
            Drained::Kicks
        } else {
            Drained::Nothing
        })
    }

    fn gone(&self, reason: &str) -> Error {
        Error::PeerGone {
            pid: self.peer_pid,
            reason: reason.to_string(),
        }
    }
}

/// The handshake must bring exactly one fd: the peer's memory. Extra fds
/// are closed (by dropping them) before refusing.
fn exactly_one_fd(mut fds: Vec<OwnedFd>) -> Result<OwnedFd> {
    if fds.len() != 1 {
        let hint = if fds.len() == 2 {
            "; is the peer using `eventfd:`?"
        } else {
            ""
        };
        return Err(Error::PeerRefused(format!(
            "its handshake carried {} fds, expected exactly 1 (its memory fd){hint}",
            fds.len()
        )));
    }
    fds.pop()
        .ok_or_else(|| Error::PeerRefused("its handshake carried no memory fd".into()))
}
