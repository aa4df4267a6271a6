//! # `eventfd:PATH` — kicks as eventfd writes
//!
//! The launchers meet exactly as with `unix:PATH`, on the `transport`
//! crate's socket rendezvous ([`transport::rendezvous()`], with its
//! `SO_PEERCRED` checks and fd passing): first side binds `PATH` mode 0600,
//! second side connects, `PATH` is unlinked once they met. What travels
//! with each handshake differs:
//!
//! * the sender's **memory fd**, checked by [`transport::accept_peer`]
//!   (seals, size) before anyone maps it, and
//! * an **eventfd the sender created for itself**: the receiver writes it
//!   to wake the sender. Each side polls its own eventfd and writes the
//!   peer's, so each eventfd has one reader and one writer.
//!
//! The received eventfd is checked to *be* an eventfd (its `/proc/self/fd`
//! link reads `anon_inode:[eventfd]`); a peer sending a pipe or a file in
//! its place is refused.
//!
//! ## Why eventfds
//! An eventfd is a 64-bit counter in the kernel. A kick adds 1; a read
//! returns the sum and resets it to 0. So kicks **coalesce by
//! construction**: a thousand kicks before the peer looks are one
//! wake-up and one 8-byte read, with no queue to drain and no buffer to
//! fill. A write only blocks (or, nonblocking, fails with `EAGAIN`) when
//! the counter would pass 2^64 - 2 — then the peer has a wake-up pending
//! for certain, which is exactly [`Notify::AlreadyPending`]. In practice a
//! kick is one `write(2)` that never waits, whatever `--writes` says.
//!
//! ## Learning that the peer died
//! An eventfd never hangs up: we hold a reference to the peer's, so writing
//! it succeeds even after the peer exited. The rendezvous socket therefore
//! stays open after the handshake, carrying nothing; when the peer's process
//! ends, the kernel closes its end and [`Transport::wait`] reports
//! [`Error::PeerGone`]. Both fds go into one epoll set built at connect
//! ([`transport::WaitSet`]), so a wait is one `epoll_wait` on one fd — not
//! a `poll(2)` that hooks onto two wait queues and unhooks again on every
//! sleep — and that epoll fd is what [`Transport::as_fd`] returns: readable
//! on a kick *and* on the peer hanging up. `notify` cannot
//! tell — it would cost a second syscall per kick — so a dead peer is
//! noticed at the next `wait`, which the copier does whenever it runs out of
//! work. Kicks that arrived before the peer closed are delivered first.
//!
//! ## Shared file descriptions
//! Passing an fd shares its open file description: the peer could read our
//! eventfd or change its `O_NONBLOCK` flag. Only a process of our own uid
//! gets that far (checked with `SO_PEERCRED` before we send anything), and
//! such a process could already ptrace us, so this is no new exposure; a
//! peer doing so only loses its own wake-ups.

#![deny(missing_docs)]

use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd as KernelEventFd};
use nix::sys::socket::{recv, MsgFlags};
use nix::unistd::{read, write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;
use transport::{
    accept_peer, rendezvous, set_nonblocking, ConnectOptions, Deadline, Error, Handshake, Notify,
    PeerInfo, Result, Transport, WaitSet, Wakeup,
};

/// What `/proc/self/fd/N` reads for an eventfd.
const EVENTFD_LINK: &str = "anon_inode:[eventfd]";

/// An `eventfd:PATH` link to one peer.
#[derive(Debug)]
pub struct EventFd {
    /// Ours: the peer writes it to wake us; we poll and read it.
    ours: OwnedFd,
    /// The peer's: we write it to wake the peer.
    theirs: OwnedFd,
    /// The rendezvous socket, kept only to see the peer hang up.
    socket: OwnedFd,
    /// `ours` and `socket` as one fd to wait on.
    waits: WaitSet<2>,
    peer_pid: u32,
}

impl Transport for EventFd {
    const KIND: &'static str = "eventfd";

    fn connect(
        path: &Path,
        local: &Handshake,
        memory: BorrowedFd<'_>,
        opts: &ConnectOptions,
    ) -> Result<(Self, PeerInfo)> {
        let meeting = rendezvous(path, opts.timeout)?;
        // The peer will write this one to wake us. Nonblocking so a wait
        // never sits in read(2) when another thread consumed the count.
        let ours: OwnedFd =
            KernelEventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                .map_err(|e| Error::sys("eventfd", e))?
                .into();
        let (handshake, fds) = meeting.exchange(local, &[memory, ours.as_fd()])?;
        let (memory, theirs) = memory_and_eventfd(fds)?;
        let peer = accept_peer(handshake, memory)?;
        check_is_eventfd(theirs.as_fd())?;
        if opts.nonblocking_writes {
            // The peer created it nonblocking; an honest peer wants this too
            // (the flag lives in the description both of us share).
            set_nonblocking(theirs.as_fd(), true)?;
        }
        let waits = WaitSet::new([ours.as_fd(), meeting.socket.as_fd()])?;
        let link = EventFd {
            ours,
            theirs,
            socket: meeting.socket,
            waits,
            peer_pid: peer.handshake.pid,
        };
        Ok((link, peer))
    }

    fn notify(&self) -> Result<Notify> {
        loop {
            match write(self.theirs.as_fd(), &1u64.to_ne_bytes()) {
                Ok(_) => return Ok(Notify::Sent),
                Err(Errno::EINTR) => continue,
                // The counter is full: the peer has a wake-up pending.
                Err(Errno::EAGAIN) => return Ok(Notify::AlreadyPending),
                Err(e) => return Err(Error::sys("write peer eventfd", e)),
            }
        }
    }

    fn wait(&self, timeout: Option<Duration>) -> Result<Wakeup> {
        let deadline = Deadline::after(timeout);
        loop {
            let [kick, sock] = self.waits.wait(deadline.remaining())?;
            // Kicks first: whatever the peer announced before it closed is
            // still in its memory, which we hold, so it gets processed.
            if kick.readable && self.consume_kicks()? {
                return Ok(Wakeup::Notified);
            }
            if kick.hangup && !kick.readable {
                // Only a counter overflow inside the kernel does this; poll
                // would report it forever, so stop instead of spinning.
                return Err(Error::io(
                    "poll our eventfd",
                    std::io::Error::other("POLLERR: the counter overflowed"),
                ));
            }
            if sock.readable || sock.hangup {
                self.check_socket(sock.hangup)?;
            }
            if deadline.expired() {
                return Ok(Wakeup::Timeout);
            }
        }
    }

    fn as_fd(&self) -> BorrowedFd<'_> {
        self.waits.as_fd()
    }

    fn peer_pid(&self) -> u32 {
        self.peer_pid
    }
}

impl EventFd {
    /// Read (and so reset) our counter. False when it was already zero:
    /// another thread took the kicks between poll and read.
    fn consume_kicks(&self) -> Result<bool> {
        let mut count = [0u8; 8];
        loop {
            match read(self.ours.as_raw_fd(), &mut count) {
                Ok(8) => return Ok(true),
                // An eventfd read is 8 bytes or an error; anything else
                // would be a kernel surprise, and there was no kick.
                Ok(_) => return Ok(false),
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return Ok(false),
                Err(e) => return Err(Error::sys("read our eventfd", e)),
            }
        }
    }

    /// The socket carries nothing after the handshake, so readable means
    /// EOF (the peer closed or died). Stray bytes from a peer that sends
    /// them anyway are read and ignored.
    fn check_socket(&self, hangup: bool) -> Result<()> {
        let mut buf = [0u8; 64];
        loop {
            match recv(self.socket.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => return Err(self.gone("socket closed (EOF)")),
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) if hangup => return Err(self.gone("socket hung up")),
                Err(Errno::EAGAIN) => return Ok(()),
                Err(e @ (Errno::ECONNRESET | Errno::ENOTCONN)) => {
                    return Err(self.gone(&format!("socket: {e}")))
                }
                Err(e) => return Err(Error::sys("recv on rendezvous socket", e)),
            }
        }
    }

    fn gone(&self, reason: &str) -> Error {
        Error::PeerGone {
            pid: self.peer_pid,
            reason: reason.to_string(),
        }
    }
}

/// The handshake must bring exactly two fds, in this order: the peer's
/// memory and the peer's eventfd. Anything else is closed and refused.
fn memory_and_eventfd(fds: Vec<OwnedFd>) -> Result<(OwnedFd, OwnedFd)> {
    let count = fds.len();
    let mut fds = fds.into_iter();
    match (fds.next(), fds.next(), fds.next()) {
        (Some(memory), Some(eventfd), None) => Ok((memory, eventfd)),
        _ => {
            let hint = if count == 1 {
                "; is the peer using `unix:`?"
            } else {
                ""
            };
            Err(Error::PeerRefused(format!(
                "its handshake carried {count} fds, expected exactly 2 (its memory fd and its \
                 eventfd){hint}"
            )))
        }
    }
}

/// Refuse a "peer eventfd" that is something else (a pipe, a file, a
/// socket): writing it would not wake anyone, or would do who knows what.
fn check_is_eventfd(fd: BorrowedFd<'_>) -> Result<()> {
    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let target = nix::fcntl::readlink(link.as_str())
        .map_err(|e| Error::sys(format!("readlink {link}"), e))?;
    if target != EVENTFD_LINK {
        return Err(Error::PeerRefused(format!(
            "the fd it sent as its eventfd is {}, not an eventfd",
            target.to_string_lossy()
        )));
    }
    Ok(())
}
