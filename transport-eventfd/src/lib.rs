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
//! An eventfd is a 64-bit counter in the kernel with a wait queue: every
//! `write(2)` adds its value and wakes whoever waits on the queue. Kicks
//! therefore **coalesce by construction**: a thousand kicks before the
//! peer looks are one wake-up, with no queue to drain and no buffer to
//! fill.
//!
//! ## A kick that cannot block, a wake-up that needs no read
//! Passing an fd shares its *open file description*, and with it the
//! `O_NONBLOCK` flag: each side holds the very description the other
//! reads or writes, and the kernel offers no way to open a second one (an
//! eventfd cannot be reopened through `/proc/self/fd`: `ENXIO`). So a
//! hostile peer can clear `O_NONBLOCK` with `F_SETFL` whatever we set. A
//! plain design — kick = write 1, wake-up = read the counter — then hangs
//! us two ways: the peer fills its own counter to 2^64 - 2 and our next
//! `write(1)` blocks forever (in vhost-user mode under the backend lock:
//! the VM's data path stops); or the peer reads our counter between our
//! `epoll_wait` and our `read(2)`, which then blocks forever. No flag we
//! set can prevent either, so neither call is made:
//!
//! * **A kick writes 0.** The kernel blocks an eventfd write only while
//!   `counter + value` would pass 2^64 - 2; with value 0 that never holds,
//!   whatever the counter and whatever the flags. (It still wakes the
//!   counter's wait queue.)
//! * **A wake-up is never read.** Each side creates its eventfd with
//!   counter 1 and watches it *edge-triggered* (`EPOLLET`) in its
//!   [`WaitSet`]: epoll reports it once per write the peer makes, even a
//!   write of 0, as long as the counter is not 0 — and nobody honest ever
//!   reads it back to 0. The initial readiness is swallowed at connect,
//!   before the peer has the fd.
//!
//! What a hostile peer can still do: read our counter to 0 or fill it
//! (then its own kicks stop waking us: it loses its own wake-ups), kick
//! in a tight loop (each kick costs it a syscall and us a wake-up: no
//! amplification), and stop kicking. It cannot block a thread of ours.
//! `--writes` has no effect here: a kick never waits.
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
#![deny(missing_docs)]

use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd as KernelEventFd};
use nix::sys::socket::{recv, MsgFlags};
use nix::unistd::write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;
use transport::{
    accept_peer, rendezvous, ConnectOptions, Deadline, Error, Handshake, Notify, PeerInfo, Result,
    Transport, WaitSet, Wakeup,
};

/// Stray records read off the rendezvous socket per [`Transport::wait`] at
/// most.
const MAX_DRAIN: usize = 64;

/// What `/proc/self/fd/N` reads for an eventfd.
const EVENTFD_LINK: &str = "anon_inode:[eventfd]";

/// An `eventfd:PATH` link to one peer.
#[derive(Debug)]
pub struct EventFd {
    /// Ours: the peer writes it to wake us; [`EventFd::waits`] watches it
    /// (edge-triggered). Never read or written by us after connect.
    _ours: OwnedFd,
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
        // The peer will write this one to wake us. Counter 1, never read
        // back to 0: see "A kick that cannot block" above.
        let ours: OwnedFd =
            KernelEventFd::from_value_and_flags(1, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                .map_err(|e| Error::sys("eventfd", e))?
                .into();
        let waits = WaitSet::with_edges([ours.as_fd(), meeting.socket.as_fd()], [true, false])?;
        // Registering a readable eventfd edge-triggered reports it once:
        // swallow that before the peer can kick (it has not got the fd
        // yet). The socket is level-triggered and reports again.
        waits.wait(Some(Duration::ZERO))?;
        let (handshake, fds) = meeting.exchange(local, &[memory, ours.as_fd()])?;
        let (peer_memory, theirs) = memory_and_eventfd(fds)?;
        let peer = accept_peer(handshake, peer_memory, memory)?;
        check_is_eventfd(theirs.as_fd())?;
        // `opts.nonblocking_writes` does not matter: a kick writes 0,
        // which never blocks, whatever flags the peer leaves on `theirs`.
        let link = EventFd {
            _ours: ours,
            theirs,
            socket: meeting.socket,
            waits,
            peer_pid: peer.handshake.pid,
        };
        Ok((link, peer))
    }

    fn notify(&self) -> Result<Notify> {
        // 0, not 1: an eventfd write of 0 can never block (nor fail with
        // EAGAIN), even on a description whose O_NONBLOCK the peer cleared
        // and whose counter it filled; it still wakes the peer's epoll.
        loop {
            match write(self.theirs.as_fd(), &0u64.to_ne_bytes()) {
                Ok(_) => return Ok(Notify::Sent),
                Err(Errno::EINTR) => continue,
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
            // Edge-triggered: reported once per batch of kicks, never read.
            if kick.readable {
                return Ok(Wakeup::Notified);
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
    /// The socket carries nothing after the handshake, so readable means
    /// EOF (the peer closed or died). Stray records from a peer that sends
    /// them anyway are read and ignored, at most [`MAX_DRAIN`] per call: a
    /// peer sending as fast as it can must not keep us here (what is left
    /// keeps the socket readable for the next `wait`).
    fn check_socket(&self, hangup: bool) -> Result<()> {
        let mut buf = [0u8; 64];
        for _ in 0..MAX_DRAIN {
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
        Ok(())
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
