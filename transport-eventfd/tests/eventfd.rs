//! `eventfd:PATH` end to end: two transports over a real rendezvous socket,
//! real memfds and eventfds, and hostile peers played by bare sockets or by
//! a forked child under another uid. The behaviour every transport shares
//! is `transport::conformance`; this file adds what only `eventfd:` does.

use nix::sys::eventfd::{EfdFlags, EventFd as KernelEventFd};
use std::os::fd::{AsRawFd, OwnedFd};
use transport::conformance::{listener_vs_raw_peer, pair, readlink_fd, Suite};
use transport::test_utils::*;
use transport::{Error, Transport};
use transport_eventfd::EventFd;

/// A fresh eventfd, as an honest peer would send.
fn new_eventfd() -> OwnedFd {
    KernelEventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .unwrap()
        .into()
}

/// `eventfd:` meets like `unix:` but sends its eventfd after the memfd; a
/// kick is one counter increment (it never fills in practice) and `notify`
/// cannot tell that the peer died (only `wait` watches the socket).
fn suite() -> Suite {
    Suite {
        raw_peer_fds: Some(|| vec![new_eventfd()]),
        kicks_that_fit: 1000,
        notify_sees_dead_peer: false,
        ..Suite::socket_rendezvous()
    }
}

transport::conformance_tests!(EventFd, suite(); @every_transport);
transport::conformance_tests!(EventFd, suite(); @socket_rendezvous);
// Not `nonblocking_notify_reports_already_pending_when_peer_is_full`: the
// eventfd counter does not fill up in any test-sized run.

#[test]
fn polled_fd_is_one_epoll_set_that_sees_the_peer_hang_up() {
    let _g = serial();
    let dir = TempDir::new();
    let ((a, _, _am), (b, _, _bm)) =
        pair::<EventFd>(&suite(), &dir.path("link"), std::time::Duration::ZERO);
    // One fd to wait on: the epoll set over our eventfd and the socket.
    assert_eq!(readlink_fd(a.as_fd().as_raw_fd()), "anon_inode:[eventpoll]");
    assert_eq!(readlink_fd(b.as_fd().as_raw_fd()), "anon_inode:[eventpoll]");
    drop(a);
    // Unlike a bare eventfd, it turns readable when the peer leaves.
    let [ready] =
        transport::poll_fds([b.as_fd()], Some(std::time::Duration::from_secs(1))).unwrap();
    assert!(ready.readable);
    assert!(b
        .wait(Some(std::time::Duration::ZERO))
        .unwrap_err()
        .is_peer_gone());
}

#[test]
fn rejects_peer_eventfd_that_is_a_pipe() {
    let _g = serial();
    let dir = TempDir::new();
    let memory = sealed_memfd(MEM);
    let (pipe_r, _pipe_w) = nix::unistd::pipe().unwrap();
    let err = listener_vs_raw_peer::<EventFd>(
        &suite(),
        &dir.path("link"),
        &handshake(2).encode(),
        &[&memory, &pipe_r],
    );
    assert!(
        matches!(err, Error::PeerRefused(ref m) if m.contains("pipe:") && m.contains("not an eventfd")),
        "{err}"
    );
}

#[test]
fn rejects_handshake_without_exactly_two_fds() {
    let _g = serial();
    let dir = TempDir::new();
    let s = suite();
    let record = handshake(2).encode();
    let memory = sealed_memfd(MEM);
    let err = listener_vs_raw_peer::<EventFd>(&s, &dir.path("one"), &record, &[&memory]);
    assert!(
        matches!(err, Error::PeerRefused(ref m) if m.contains("1 fds")),
        "{err}"
    );
    let (e1, e2) = (new_eventfd(), new_eventfd());
    let three = [&memory, &e1, &e2];
    let err = listener_vs_raw_peer::<EventFd>(&s, &dir.path("three"), &record, &three);
    assert!(
        matches!(err, Error::PeerRefused(ref m) if m.contains("3 fds")),
        "{err}"
    );
}

/// A `unix:` peer sends its handshake with only its memfd; the refusal
/// names the likely mix-up. (`transport-unixsock` checks the other way.)
#[test]
fn refuses_unix_peer_and_names_its_kind() {
    let _g = serial();
    let dir = TempDir::new();
    let memory = sealed_memfd(MEM);
    let err = listener_vs_raw_peer::<EventFd>(
        &suite(),
        &dir.path("link"),
        &handshake(2).encode(),
        &[&memory],
    );
    assert!(
        matches!(err, Error::PeerRefused(ref m) if m.contains("1 fds") && m.contains("`unix:`")),
        "{err}"
    );
}
