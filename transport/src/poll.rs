//! Waiting on fds: a deadline for the whole set-up, `poll(2)` that
//! survives signals, and the `O_NONBLOCK` switch.
//!
//! Every transport waits the same way: poll its fds for input until a
//! [`Deadline`] (or forever), retry on `EINTR`, and read `POLLHUP` /
//! `POLLERR` as a hint that the peer may be gone. Whether a write to the
//! peer may block is the file's `O_NONBLOCK` flag, set with
//! [`set_nonblocking`] (`--writes nonblocking`, and the rendezvous
//! sockets, which connect without blocking and then block again).

use crate::{Error, Result};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Set (to the signal's number) by a launcher's SIGINT/SIGTERM/SIGHUP
/// handler: every wait in this crate gives up instead of retrying, so a
/// launcher stops within a poll and the rendezvous files it created are
/// removed on the way out (the same paths as any other connect error).
static INTERRUPT: OnceLock<Arc<AtomicUsize>> = OnceLock::new();

/// The flag a signal handler sets to interrupt every wait (for
/// `signal_hook::flag::register_usize`: store the signal number).
pub fn interrupt_flag() -> Arc<AtomicUsize> {
    INTERRUPT
        .get_or_init(|| Arc::new(AtomicUsize::new(0)))
        .clone()
}

/// The signal that interrupted this process, if one did.
pub fn interrupted() -> Option<i32> {
    match INTERRUPT.get()?.load(Ordering::Relaxed) {
        0 => None,
        sig => Some(sig as i32),
    }
}

/// A point in time after which connect gives up.
#[derive(Clone, Copy, Debug)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    /// `timeout` from now (`None`: never).
    pub fn after(timeout: Option<Duration>) -> Self {
        Deadline(timeout.map(|t| Instant::now() + t))
    }
    /// Time left, `None` for no deadline; zero once passed, and zero once
    /// the process was [`interrupted`].
    pub fn remaining(&self) -> Option<Duration> {
        if interrupted().is_some() {
            return Some(Duration::ZERO);
        }
        self.0.map(|d| d.saturating_duration_since(Instant::now()))
    }
    /// True once the deadline has passed.
    pub fn expired(&self) -> bool {
        self.remaining() == Some(Duration::ZERO)
    }
}

/// Result of [`poll_fds`] for each fd: was it readable, did it hang up.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ready {
    /// POLLIN was set.
    pub readable: bool,
    /// POLLHUP or POLLERR was set.
    pub hangup: bool,
}

fn poll_timeout(timeout: Option<Duration>) -> PollTimeout {
    match timeout {
        None => PollTimeout::NONE,
        Some(d) => {
            // Round up so a 0.5 ms wait does not become a busy poll.
            let ms = d.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
        }
    }
}

/// Several fds to wait on as one: an epoll set built once, at connect.
///
/// `poll(2)` on N fds hooks the sleeping thread onto N wait queues and
/// unhooks it again on every call; an epoll set keeps the interest list in
/// the kernel, so each wait is one `epoll_wait` on one fd whatever N is.
/// That fd is also what [`crate::Transport::as_fd`] hands a caller's own
/// poll or epoll: it turns readable when any member is readable or hung up.
#[derive(Debug)]
pub struct WaitSet<const N: usize> {
    epoll: Epoll,
}

impl<const N: usize> WaitSet<N> {
    /// A close-on-exec epoll set watching `fds` for input and hang-up;
    /// [`WaitSet::wait`] reports them in this order.
    pub fn new(fds: [BorrowedFd<'_>; N]) -> Result<Self> {
        Self::with_edges(fds, [false; N])
    }

    /// As [`WaitSet::new`], with the members where `edge` is true watched
    /// edge-triggered (`EPOLLET`): such a member is reported once per
    /// wake-up the kernel gives its wait queue (for an eventfd: once per
    /// `write(2)`, whatever the counter held), not for as long as it stays
    /// readable, so it never needs to be read to stop reporting.
    pub fn with_edges(fds: [BorrowedFd<'_>; N], edge: [bool; N]) -> Result<Self> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .map_err(|e| Error::sys("epoll_create1", e))?;
        for (i, (fd, edge)) in fds.iter().zip(edge).enumerate() {
            let mut flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
            if edge {
                flags |= EpollFlags::EPOLLET;
            }
            let ev = EpollEvent::new(flags, i as u64);
            epoll
                .add(fd, ev)
                .map_err(|e| Error::sys("epoll_ctl(ADD)", e))?;
        }
        Ok(WaitSet { epoll })
    }

    /// Wait until a member is readable or hung up, or `timeout` passed
    /// (`None`: forever). EINTR retries, unless the process was
    /// [`interrupted`]: then [`Error::Interrupted`].
    pub fn wait(&self, timeout: Option<Duration>) -> Result<[Ready; N]> {
        let mut events = [EpollEvent::empty(); N];
        let to = poll_timeout(timeout);
        let n = loop {
            match self.epoll.wait(&mut events, to) {
                Ok(n) => break n,
                Err(nix::errno::Errno::EINTR) => match interrupted() {
                    None => continue,
                    Some(signal) => return Err(Error::Interrupted { signal }),
                },
                Err(e) => return Err(Error::sys("epoll_wait", e)),
            }
        };
        let mut out = [Ready::default(); N];
        for ev in &events[..n] {
            if let Some(o) = out.get_mut(ev.data() as usize) {
                let r = ev.events();
                o.readable = r.contains(EpollFlags::EPOLLIN);
                o.hangup = r.intersects(
                    EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR | EpollFlags::EPOLLRDHUP,
                );
            }
        }
        Ok(out)
    }

    /// The epoll fd: readable when a member is.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }
}

/// Poll `fds` for input with a timeout (`None`: forever). EINTR retries,
/// unless the process was [`interrupted`]: then [`Error::Interrupted`].
pub fn poll_fds<const N: usize>(
    fds: [BorrowedFd<'_>; N],
    timeout: Option<Duration>,
) -> Result<[Ready; N]> {
    let mut pfds: Vec<PollFd> = fds
        .iter()
        .map(|f| PollFd::new(*f, PollFlags::POLLIN))
        .collect();
    let to = poll_timeout(timeout);
    loop {
        match poll(&mut pfds, to) {
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => match interrupted() {
                None => continue,
                Some(signal) => return Err(Error::Interrupted { signal }),
            },
            Err(e) => return Err(Error::sys("poll", e)),
        }
    }
    let mut out = [Ready::default(); N];
    for (o, p) in out.iter_mut().zip(&pfds) {
        let r = p.revents().unwrap_or(PollFlags::empty());
        o.readable = r.contains(PollFlags::POLLIN);
        o.hangup = r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL);
    }
    Ok(out)
}

/// Turn `O_NONBLOCK` on or off for the open file description behind `fd`
/// (shared with every other fd for it, a peer's included).
pub fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> Result<()> {
    let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL).map_err(|e| Error::sys("F_GETFL", e))?;
    let mut flags = OFlag::from_bits_truncate(flags);
    flags.set(OFlag::O_NONBLOCK, on);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags)).map_err(|e| Error::sys("F_SETFL", e))?;
    Ok(())
}
