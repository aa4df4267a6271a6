//! `fifo:PATH` end to end: two transports meeting on real named FIFOs in a
//! private directory, with real sealed memfds reached through /proc. The
//! behaviour every transport shares is `transport::conformance`.

use nix::sys::stat::{Mode, SFlag};
use nix::unistd::mkfifo;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use transport::conformance::Suite;
use transport::test_utils::*;
use transport::Handshake;
use transport_fifo::Fifo;

/// The handshake names the memfd's real fd number: the peer opens
/// `/proc/PID/fd/N`, so the memfd stays open until both sides connected
/// (the conformance tests keep every side's memfd with its link).
fn fifo_handshake(tag: u64, mem: &OwnedFd) -> Handshake {
    Handshake {
        mem_fd: mem.as_raw_fd(),
        ..handshake(tag)
    }
}

/// The second FIFO, `PATH_`.
fn sibling(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}_", path.display()))
}

/// `fifo:` meets on `PATH` and `PATH_`; a kick is one byte in a 64 KiB
/// FIFO.
fn suite() -> Suite {
    Suite {
        handshake: fifo_handshake,
        names: |path| vec![path.to_path_buf(), sibling(path)],
        node_kind: SFlag::S_IFIFO,
        occupy: |path| {
            for p in [path.to_path_buf(), sibling(path)] {
                mkfifo(&p, Mode::S_IRUSR | Mode::S_IWUSR).unwrap();
            }
            Box::new(())
        },
        gone_reason: "FIFO closed",
        notify_sees_dead_peer: true,
        kicks_that_fit: 10,
        fills_within: 200_000,
        raw_peer_fds: None,
    }
}

transport::conformance_tests!(Fifo, suite(); @every_transport);
// The 64 KiB FIFO fills up (unlike an eventfd counter).
transport::conformance_tests!(Fifo, suite();
    nonblocking_notify_reports_already_pending_when_peer_is_full,
);
