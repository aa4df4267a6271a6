//! The behaviour every transport must show, written once over
//! `T: Transport` (feature `test-utils`). Each transport crate describes
//! itself with a [`Suite`] and instantiates the tests that apply with
//! [`conformance_tests!`](crate::conformance_tests):
//!
//! ```text
//! transport::conformance_tests!(UnixSock, suite(); @every_transport);
//! transport::conformance_tests!(UnixSock, suite(); @socket_rendezvous);
//! transport::conformance_tests!(UnixSock, suite();
//!     nonblocking_notify_reports_already_pending_when_peer_is_full,
//! );
//! ```
//!
//! Every test takes [`serial`] first (fd counts and fork must not see
//! another test), except [`helper_peer_process`], which is the peer process
//! of [`peer_process_killed_is_peer_gone`] and only acts with `CHILD_ENV`.
//!
//! One file per concern, in the order a link lives:
//! * `harness.rs`: setting up sides, pairs and hand-played raw peers;
//! * `meeting.rs`: finding each other at `PATH`, in any order, in time;
//! * `path_safety.rs`: what is already at `PATH` (symlinks, files, other
//!   uids) is refused and left alone;
//! * `notify.rs`: kicks wake the peer and coalesce;
//! * `peer_gone.rs`: a peer that goes away is noticed within a second;
//! * `hygiene.rs`: unsealed memory refused, close-on-exec, no fd leaks;
//! * `socket_rendezvous.rs`: only for transports that meet on a
//!   `SOCK_SEQPACKET` socket at `PATH` (`unix:` and `eventfd:`): hostile
//!   peers played by bare sockets.
//!
//! Failure messages name the transport by its [`Transport::KIND`].
#![allow(missing_docs)]

mod harness;
mod hygiene;
mod meeting;
mod notify;
mod path_safety;
mod peer_gone;
mod socket_rendezvous;

pub use harness::*;
pub use hygiene::*;
pub use meeting::*;
pub use notify::*;
pub use path_safety::*;
pub use peer_gone::*;
pub use socket_rendezvous::*;

use crate::test_utils::*;
use crate::{Handshake, Transport};
use nix::sys::stat::SFlag;
use std::any::Any;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

/// A transport under test: [`Transport`], printable in assertion messages,
/// and movable into threads.
pub trait Subject: Transport + std::fmt::Debug + 'static {}
impl<T: Transport + std::fmt::Debug + 'static> Subject for T {}

/// What a conformance test needs to know about a transport.
#[derive(Clone, Copy)]
pub struct Suite {
    /// The handshake a side sends, given the memfd it offers (and keeps
    /// open until both sides finished connecting).
    pub handshake: fn(tag: u64, memory: &OwnedFd) -> Handshake,
    /// Every name `connect` creates at or next to `PATH` while it waits.
    pub names: fn(path: &Path) -> Vec<PathBuf>,
    /// The file type of those names.
    pub node_kind: SFlag,
    /// Leave at `PATH` what a waiting launcher of this kind leaves there;
    /// dropping the guard is that launcher dying.
    pub occupy: fn(path: &Path) -> Box<dyn Any>,
    /// What `PeerGone`'s reason says when the peer closed its end.
    pub gone_reason: &'static str,
    /// Whether `notify` (not only `wait`) notices a dead peer.
    pub notify_sees_dead_peer: bool,
    /// Kicks the channel takes without being full.
    pub kicks_that_fit: usize,
    /// In nonblocking mode the channel is full within this many kicks.
    pub fills_within: usize,
    /// Socket rendezvous only: the fds an honest peer attaches after its
    /// memfd (`None`: the transport does not meet on a socket).
    pub raw_peer_fds: Option<fn() -> Vec<OwnedFd>>,
}

impl Suite {
    /// A transport meeting on a listening socket at `PATH` that sends only
    /// its memfd; override fields as needed.
    pub fn socket_rendezvous() -> Self {
        Suite {
            handshake: |tag, _| handshake(tag),
            names: |path| vec![path.to_path_buf()],
            node_kind: SFlag::S_IFSOCK,
            occupy: |path| Box::new(UnixListener::bind(path).expect("bind")),
            gone_reason: "EOF",
            notify_sees_dead_peer: true,
            kicks_that_fit: 5,
            fills_within: 1_000_000,
            raw_peer_fds: Some(Vec::new),
        }
    }
}

/// Instantiate conformance tests for a transport type: one `#[test]` per
/// name, at the call site's top level (so `helper_peer_process` keeps the
/// exact name `spawn_peer_process` runs). Two groups have a name:
/// `@every_transport` (what any transport must do) and
/// `@socket_rendezvous` (hostile peers played by bare sockets, for
/// transports that meet on a listening socket).
#[macro_export]
macro_rules! conformance_tests {
    ($transport:ty, $suite:expr; @every_transport) => {
        $crate::conformance_tests!($transport, $suite;
            pair_meets_in_either_start_order,
            pair_meets_when_both_start_at_once,
            two_pairs_on_different_paths_do_not_interfere,
            replaces_stale_rendezvous_left_by_dead_launcher,
            times_out_when_no_peer_arrives_and_cleans_up,
            rendezvous_nodes_are_mode_0600,
            refuses_symlink_at_path,
            refuses_regular_file_at_path,
            refuses_path_owned_by_another_uid,
            notify_wakes_peer_and_kicks_coalesce,
            polled_fd_turns_readable_on_a_kick,
            blocking_notify_round_trips,
            wait_reports_peer_gone_within_a_second_of_drop,
            kicks_sent_before_close_are_seen_before_peer_gone,
            helper_peer_process,
            peer_process_killed_is_peer_gone,
            rejects_peer_memory_without_seals,
            all_fds_are_close_on_exec,
            set_up_and_tear_down_leak_no_fds,
        );
    };
    ($transport:ty, $suite:expr; @socket_rendezvous) => {
        $crate::conformance_tests!($transport, $suite;
            rejects_peer_with_wrong_handshake_version,
            listener_rejects_raw_peer_memory_without_seals,
            rejects_memory_whose_size_differs_from_handshake,
            rejects_handshake_pid_that_differs_from_peercred,
            rejects_truncated_and_oversized_handshakes,
            peer_that_hangs_up_during_handshake_is_peer_gone,
            refuses_fifo_at_path,
            refuses_peer_running_as_another_uid,
            listener_recovers_when_its_path_is_removed,
        );
    };
    ($transport:ty, $suite:expr; $($name:ident),+ $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::conformance::$name::<$transport>(&$suite)
            }
        )+
    };
}
