//! Where the switch sleeps: one epoll set over every member's link, the
//! TAP and the acceptors' wake-up socket, built again only when the ports
//! change.
//!
//! `poll(2)` on N fds hooks the thread onto N wait queues before it
//! sleeps and unhooks it from all of them when it wakes. The unhooking
//! takes each queue's lock, which the member that kicked us may still
//! hold while its `write(2)` wakes us (on two vCPUs that wake-up is an
//! IPI, several µs): `perf` put 8% of the switch's CPU in `poll_freewait`
//! alone (2 pairs, 1500 B). An epoll set keeps its hooks between sleeps.

use super::port::Port;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use std::os::fd::BorrowedFd;
use std::time::Duration;
use transport::Transport;

/// The epoll data of the wake-up socket (a port's is its index).
const WAKE: u64 = u64::MAX;
/// The epoll data of the TAP.
const TAP: u64 = u64::MAX - 1;
/// Ready fds one wait reports at most (the rest stay ready: level-triggered).
const EVENTS: usize = 64;

/// The switch's epoll set, and which members it was built for.
#[derive(Default)]
pub(super) struct Sleeper {
    epoll: Option<Epoll>,
    /// Per port, the serial of the member the set watches (0: none), then
    /// 1 if it watches a TAP.
    built_for: Vec<u64>,
    /// The same, as of now: compared before every wait.
    now: Vec<u64>,
}

impl Sleeper {
    /// Sleep until a link, the TAP or the wake-up socket is readable (or
    /// hung up), or `max` passed; the ports whose links are, in `ready`.
    /// A set that can't be built falls back to sleeping at most 1 ms and
    /// naming no port: the tick still asks every link whether its member
    /// is there (every 20 ms), and the next sleep tries to build it again.
    pub(super) fn wait<T: Transport>(
        &mut self,
        ports: &[Option<Port<T>>],
        wake: BorrowedFd<'_>,
        tap: Option<BorrowedFd<'_>>,
        max: Duration,
        ready: &mut Vec<usize>,
    ) {
        ready.clear();
        self.now.clear();
        self.now
            .extend(ports.iter().map(|p| p.as_ref().map_or(0, |p| p.serial)));
        self.now.push(u64::from(tap.is_some()));
        if self.epoll.is_none() || self.now != self.built_for {
            self.epoll = build(ports, wake, tap).ok();
            std::mem::swap(&mut self.built_for, &mut self.now);
        }
        let Some(epoll) = &self.epoll else {
            std::thread::sleep(max.min(Duration::from_millis(1)));
            return;
        };
        let mut events = [EpollEvent::empty(); EVENTS];
        let ms = u16::try_from(max.as_millis()).unwrap_or(u16::MAX);
        let Ok(n) = epoll.wait(&mut events, EpollTimeout::from(ms)) else {
            // EINTR: a signal the tick looks at next.
            return;
        };
        ready.extend(
            events[..n]
                .iter()
                .map(EpollEvent::data)
                .filter(|&d| d < ports.len() as u64)
                .map(|d| d as usize),
        );
    }
}

/// An epoll set watching every member's link (data: its port), the
/// wake-up socket and the TAP for input and hang-up.
fn build<T: Transport>(
    ports: &[Option<Port<T>>],
    wake: BorrowedFd<'_>,
    tap: Option<BorrowedFd<'_>>,
) -> nix::Result<Epoll> {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    let add =
        |fd: BorrowedFd<'_>, data: u64| epoll.add(fd, EpollEvent::new(EpollFlags::EPOLLIN, data));
    for (n, p) in ports.iter().enumerate() {
        if let Some(p) = p {
            add(p.link.as_fd(), n as u64)?;
        }
    }
    add(wake, WAKE)?;
    if let Some(t) = tap {
        add(t, TAP)?;
    }
    Ok(epoll)
}
