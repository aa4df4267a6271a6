//! `unix:PATH` end to end: two transports over a real socket in a private
//! directory, real memfds, and hostile peers played by bare sockets or by
//! a forked child under another uid. The behaviour every transport shares
//! is `transport::conformance`; this file adds what only `unix:` does.

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
