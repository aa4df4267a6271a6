//! `unix:PATH` end to end: two transports over a real socket in a private
//! directory, real memfds, and hostile peers played by bare sockets or by
//! a forked child under another uid. The behaviour every transport shares
//! is `transport::conformance`; this file adds what only `unix:` does.

use nix::sys::eventfd::{EfdFlags, EventFd};
use std::os::fd::OwnedFd;
use transport::conformance::{listener_vs_raw_peer, Suite};
use transport::test_utils::*;
use transport::Error;
use transport_unixsock::UnixSock;

/// `unix:` meets on a listening socket and sends only its memfd.
fn suite() -> Suite {
    Suite::socket_rendezvous()
}

transport::conformance_tests!(UnixSock, suite(); @every_transport);
transport::conformance_tests!(UnixSock, suite(); @socket_rendezvous);
// The socket buffer fills up (unlike an eventfd counter).
transport::conformance_tests!(UnixSock, suite();
    nonblocking_notify_reports_already_pending_when_peer_is_full,
);

#[test]
fn rejects_handshake_without_exactly_one_fd() {
    let _g = serial();
    let dir = TempDir::new();
    let s = suite();
    let record = handshake(2).encode();
    let err = listener_vs_raw_peer::<UnixSock>(&s, &dir.path("none"), &record, &[]);
    assert!(
        matches!(err, Error::PeerRefused(ref m) if m.contains("0 fds")),
        "{err}"
    );
    let (m1, m2) = (sealed_memfd(MEM), sealed_memfd(MEM));
    let err = listener_vs_raw_peer::<UnixSock>(&s, &dir.path("two"), &record, &[&m1, &m2]);
    assert!(
        matches!(err, Error::PeerRefused(ref m) if m.contains("2 fds")),
        "{err}"
    );
}

/// An `eventfd:` peer sends its memfd and then its eventfd; the refusal
/// names the likely mix-up. (`transport-eventfd` checks the other way.)
#[test]
fn refuses_eventfd_peer_and_names_its_kind() {
    let _g = serial();
    let dir = TempDir::new();
    let memory = sealed_memfd(MEM);
    let eventfd: OwnedFd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC)
        .unwrap()
        .into();
    let err = listener_vs_raw_peer::<UnixSock>(
        &suite(),
        &dir.path("link"),
        &handshake(2).encode(),
        &[&memory, &eventfd],
    );
    assert!(
        matches!(err, Error::PeerRefused(ref m) if m.contains("2 fds") && m.contains("`eventfd:`")),
        "{err}"
    );
}
