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
//! The functions in the "socket rendezvous" section apply to transports
//! that meet on a `SOCK_SEQPACKET` socket at `PATH` (`unix:` and
//! `eventfd:`): hostile peers are played by bare sockets.
#![allow(missing_docs)]

use crate::test_utils::*;
use crate::{ConnectOptions, Error, Handshake, Notify, PeerInfo, Transport, Wakeup};
use crate::{HANDSHAKE_LEN, VERSION};
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::stat::{lstat, Mode, SFlag};
use nix::unistd::{chown, mkfifo, Gid, Uid};
use std::any::Any;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

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
            raw_fd_turns_readable_on_a_kick,
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

/// A connected side: the link, what it learned about the peer, and its
/// own memfd (kept open: a FIFO peer reaches it through /proc).
pub type Side<T> = (T, PeerInfo, OwnedFd);

/// Connect one side with a fresh sealed memfd.
pub fn connect_side<T: Transport>(
    s: &Suite,
    path: &Path,
    tag: u64,
    opts: &ConnectOptions,
) -> crate::Result<Side<T>> {
    let memory = sealed_memfd(MEM);
    let (link, peer) = T::connect(path, &(s.handshake)(tag, &memory), memory.as_fd(), opts)?;
    Ok((link, peer, memory))
}

/// One side of a pair, connecting in its own thread with its own memfd.
pub fn spawn_side<T: Subject>(
    s: &Suite,
    path: &Path,
    tag: u64,
    opts: ConnectOptions,
) -> JoinHandle<crate::Result<Side<T>>> {
    let (s, path) = (*s, path.to_path_buf());
    thread::spawn(move || connect_side(&s, &path, tag, &opts))
}

/// Start side 1, then side 2 after `gap`, and return both once they met.
pub fn pair<T: Subject>(s: &Suite, path: &Path, gap: Duration) -> (Side<T>, Side<T>) {
    let a = spawn_side::<T>(s, path, 1, opts(5));
    thread::sleep(gap);
    let b = spawn_side::<T>(s, path, 2, opts(5));
    let a = a.join().unwrap().expect("side 1 connects");
    let b = b.join().unwrap().expect("side 2 connects");
    (a, b)
}

/// The tag [`handshake`] put into the peer's features.
pub fn features_tag(peer: &PeerInfo) -> u64 {
    peer.handshake.features >> 8
}

/// What this process's fds point at (for leak reports).
pub fn open_fds() -> Vec<PathBuf> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .collect()
}

/// What `/proc/self/fd/FD` points at.
pub fn readlink_fd(fd: i32) -> String {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn assert_names_gone(s: &Suite, path: &Path, dir: &TempDir) {
    for name in (s.names)(path) {
        assert!(lstat(&name).is_err(), "{} left behind", name.display());
    }
    assert_eq!(
        std::fs::read_dir(&dir.0).unwrap().count(),
        0,
        "PATH or a temporary name left behind"
    );
}

fn connect_with_memory<T: Transport>(
    s: &Suite,
    path: &Path,
    memory: &OwnedFd,
    opts: &ConnectOptions,
) -> crate::Result<(T, PeerInfo)> {
    T::connect(path, &(s.handshake)(1, memory), memory.as_fd(), opts)
}

// ---- meeting ------------------------------------------------------------

pub fn pair_meets_in_either_start_order<T: Subject>(s: &Suite) {
    let _g = serial();
    let dir = TempDir::new();
    // Tag 1 first (it waits), then tag 2 first.
    for (first, second) in [(1u64, 2u64), (2, 1)] {
        let path = dir.path(&format!("link{first}"));
        let early = spawn_side::<T>(s, &path, first, opts(5));
        wait_for_path(&path);
        thread::sleep(Duration::from_millis(20));
        let late = spawn_side::<T>(s, &path, second, opts(5));
        let (a, a_peer, _am) = early.join().unwrap().expect("first side connects");
        let (b, b_peer, _bm) = late.join().unwrap().expect("second side connects");
        // Each side received the other's handshake and memory.
        assert_eq!(features_tag(&a_peer), second);
        assert_eq!(features_tag(&b_peer), first);
        assert_eq!(a_peer.handshake.mem_size, MEM);
        assert_eq!(a.peer_pid(), std::process::id());
        assert_eq!(b.peer_pid(), std::process::id());
        // The names are free again once the pair has met, and no temporary
        // name is left behind.
        assert_names_gone(s, &path, &dir);
    }
}

pub fn pair_meets_when_both_start_at_once<T: Subject>(s: &Suite) {
    let _g = serial();
    let dir = TempDir::new();
    for i in 0..25 {
        let path = dir.path(&format!("race{i}"));
        let barrier = Arc::new(Barrier::new(2));
        let sides: Vec<_> = (1..=2u64)
            .map(|tag| {
                let (s, path, barrier) = (*s, path.clone(), barrier.clone());
                thread::spawn(move || {
                    let memory = sealed_memfd(MEM);
                    barrier.wait();
                    T::connect(
                        &path,
                        &(s.handshake)(tag, &memory),
                        memory.as_fd(),
                        &opts(5),
                    )
                    .map(|(link, peer)| (link, peer, memory))
                })
            })
            .collect();
        // Join both before dropping either (a FIFO peer may still be
        // opening our memory).
        let sides: Vec<Side<T>> = sides
            .into_iter()
            .map(|h| h.join().unwrap().expect("racing sides meet"))
            .collect();
        let tags: Vec<u64> = sides.iter().map(|(_, p, _)| features_tag(p)).collect();
        assert_eq!(tags, vec![2, 1], "round {i}");
    }
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 0);
}

pub fn two_pairs_on_different_paths_do_not_interfere<T: Subject>(s: &Suite) {
    let _g = serial();
    let dir = TempDir::new();
    let (p, q) = (dir.path("p"), dir.path("q"));
    let sides = [
        spawn_side::<T>(s, &p, 1, opts(5)),
        spawn_side::<T>(s, &q, 3, opts(5)),
        spawn_side::<T>(s, &p, 2, opts(5)),
        spawn_side::<T>(s, &q, 4, opts(5)),
    ];
    let sides: Vec<Side<T>> = sides
        .into_iter()
        .map(|h| h.join().unwrap().expect("connects"))
        .collect();
    let tags: Vec<u64> = sides.iter().map(|(_, p, _)| features_tag(p)).collect();
    assert_eq!(tags, vec![2, 4, 1, 3]);
}

pub fn replaces_stale_rendezvous_left_by_dead_launcher<T: Subject>(s: &Suite) {
    let _g = serial();
    let dir = TempDir::new();
    let path = dir.path("link");
    // A launcher that made PATH and died: the names stay, nobody waits.
    drop((s.occupy)(&path));
    assert!(path.exists());
    let ((a, a_peer, _am), (b, _, _bm)) = pair::<T>(s, &path, Duration::from_millis(50));
    assert_eq!(features_tag(&a_peer), 2);
    a.notify().unwrap();
    assert_eq!(
        b.wait(Some(Duration::from_secs(1))).unwrap(),
        Wakeup::Notified
    );
}

pub fn times_out_when_no_peer_arrives_and_cleans_up<T: Subject>(s: &Suite) {
    let _g = serial();
    let dir = TempDir::new();
    let path = dir.path("link");
    let memory = sealed_memfd(MEM);
    let quick = ConnectOptions {
        nonblocking_writes: true,
        timeout: Some(Duration::from_millis(200)),
    };
    let start = Instant::now();
    let err = connect_with_memory::<T>(s, &path, &memory, &quick).unwrap_err();
    assert!(matches!(err, Error::ConnectTimeout { .. }), "{err}");
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_names_gone(s, &path, &dir);
}

pub fn rendezvous_nodes_are_mode_0600<T: Subject>(s: &Suite) {
    let _g = serial();
    let dir = TempDir::new();
    let path = dir.path("link");
    let first = spawn_side::<T>(s, &path, 1, opts(5));
    wait_for_path(&path);
    for p in (s.names)(&path) {
        let st = lstat(&p).unwrap();
        assert_eq!(
            SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT,
            s.node_kind,
            "{}",
            p.display()
        );
        assert_eq!(st.st_mode & 0o777, 0o600, "{}", p.display());
    }
    // Let the waiting side finish.
    let second = spawn_side::<T>(s, &path, 2, opts(5));
    let _a = first.join().unwrap().unwrap();
    let _b = second.join().unwrap().unwrap();
}

// ---- path safety ----------------------------------------------------------

pub fn refuses_symlink_at_path<T: Subject>(s: &Suite) {
    let _g = serial();
    let dir = TempDir::new();
    let memory = sealed_memfd(MEM);
    // Dangling, and pointing at a FIFO that would be tempting to use.
    let target = dir.path("target");
    mkfifo(&target, Mode::S_IRUSR | Mode::S_IWUSR).unwrap();
    for (name, to) in [("link", dir.path("elsewhere")), ("to-fifo", target)] {
        let path = dir.path(name);
        std::os::unix::fs::symlink(&to, &path).unwrap();
        let err = connect_with_memory::<T>(s, &path, &memory, &opts(1)).unwrap_err();
        assert!(
            matches!(err, Error::RefusedPath { ref reason, .. } if reason.contains("symlink")),
            "{err}"
        );
    }
    assert!(!dir.path("elsewhere").exists(), "followed the symlink");
}

pub fn refuses_regular_file_at_path<T: Subject>(s: &Suite) {
    let _g = serial();
    let dir = TempDir::new();
    let memory = sealed_memfd(MEM);
    let file = dir.path("file");
    std::fs::write(&file, b"x").unwrap();
    let err = connect_with_memory::<T>(s, &file, &memory, &opts(1)).unwrap_err();
    assert!(matches!(err, Error::RefusedPath { .. }), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"x", "the file was touched");
}

pub fn refuses_path_owned_by_another_uid<T: Subject>(s: &Suite) {
    let _g = serial();
    if !is_root() {
        eprintln!("skipped: needs root to chown");
        return;
    }
    let dir = TempDir::new();
    let path = dir.path("link");
    let _foreign = (s.occupy)(&path);
    chown(
        &path,
        Some(Uid::from_raw(NOBODY)),
        Some(Gid::from_raw(NOBODY)),
    )
    .unwrap();
    let memory = sealed_memfd(MEM);
    let err = connect_with_memory::<T>(s, &path, &memory, &opts(1)).unwrap_err();
    assert!(
        matches!(err, Error::RefusedPath { ref reason, .. } if reason.contains("owned by uid 65534")),
        "{err}"
    );
    assert!(path.exists(), "someone else's node must be left alone");
}

// ---- notifications --------------------------------------------------------

pub fn notify_wakes_peer_and_kicks_coalesce<T: Subject>(s: &Suite) {
    let _g = serial();
    let dir = TempDir::new();
    let ((a, _, _am), (b, _, _bm)) = pair::<T>(s, &dir.path("link"), Duration::ZERO);

    // Nothing pending: a zero timeout is a cheap poll.
    let start = Instant::now();
    assert_eq!(b.wait(Some(Duration::ZERO)).unwrap(), Wakeup::Timeout);
    assert!(start.elapsed() < Duration::from_millis(20));

    for _ in 0..s.kicks_that_fit {
        assert_eq!(a.notify().unwrap(), Notify::Sent);
    }
    // All those kicks are one wake-up, and the wake-up consumed them all.
    assert_eq!(
        b.wait(Some(Duration::from_secs(1))).unwrap(),
        Wakeup::Notified
    );
    assert_eq!(b.wait(Some(Duration::ZERO)).unwrap(), Wakeup::Timeout);

    // The other direction, with the waiter blocked before the kick arrives.
    let waiter = thread::spawn(move || (a.wait(Some(Duration::from_secs(5))), a));
    thread::sleep(Duration::from_millis(50));
    assert_eq!(b.notify().unwrap(), Notify::Sent);
    let (woke, _a) = waiter.join().unwrap();
    assert_eq!(woke.unwrap(), Wakeup::Notified);

    // A timeout with nothing sent is a timeout, not an error.
    let start = Instant::now();
    assert_eq!(
        b.wait(Some(Duration::from_millis(30))).unwrap(),
        Wakeup::Timeout
    );
    assert!(start.elapsed() >= Duration::from_millis(30));
}

pub fn raw_fd_turns_readable_on_a_kick<T: Subject>(s: &Suite) {
    let _g = serial();
    let dir = TempDir::new();
    let ((a, _, _am), (b, _, _bm)) = pair::<T>(s, &dir.path("link"), Duration::ZERO);
    // SAFETY: `b` owns this fd and outlives every use of the borrow below.
    let fd = unsafe { BorrowedFd::borrow_raw(b.as_raw_fd()) };
    let [ready] = crate::poll_fds([fd], Some(Duration::ZERO)).unwrap();
    assert!(!ready.readable);
    a.notify().unwrap();
    let [ready] = crate::poll_fds([fd], Some(Duration::from_secs(1))).unwrap();
    assert!(ready.readable);
    assert_eq!(b.wait(Some(Duration::ZERO)).unwrap(), Wakeup::Notified);
}

pub fn nonblocking_notify_reports_already_pending_when_peer_is_full<T: Subject>(s: &Suite) {
    let _g = serial();
    let dir = TempDir::new();
    let ((a, _, _am), (b, _, _bm)) = pair::<T>(s, &dir.path("link"), Duration::ZERO);
    let mut sent = 0;
    while a.notify().unwrap() == Notify::Sent {
        sent += 1;
        assert!(
            sent < s.fills_within,
            "channel did not fill within {} kicks",
            s.fills_within
        );
    }
    assert!(sent > 0);
    // The unread kicks are a wake-up already pending.
    assert_eq!(b.wait(Some(Duration::ZERO)).unwrap(), Wakeup::Notified);
    // Draining made room again.
    assert_eq!(a.notify().unwrap(), Notify::Sent);
}

pub fn blocking_notify_round_trips<T: Subject>(s: &Suite) {
    let _g = serial();
    let dir = TempDir::new();
    let path = dir.path("link");
    let blocking = ConnectOptions {
        nonblocking_writes: false,
        timeout: Some(Duration::from_secs(5)),
    };
    let a = spawn_side::<T>(s, &path, 1, blocking);
    let b = spawn_side::<T>(s, &path, 2, blocking);
    let (a, _, _am) = a.join().unwrap().unwrap();
    let (b, _, _bm) = b.join().unwrap().unwrap();
    assert_eq!(a.notify().unwrap(), Notify::Sent);
    assert_eq!(b.wait(None).unwrap(), Wakeup::Notified);
    drop(b);
    if s.notify_sees_dead_peer {
        assert!(a.notify().unwrap_err().is_peer_gone());
    }
}

// ---- the peer going away -------------------------------------------------

/// Side `waiter` blocks in `wait` while `dropped` goes away.
fn peer_gone_within_a_second<T: Subject>(s: &Suite, waiter: T, dropped: T) {
    let waiter = thread::spawn(move || {
        let start = Instant::now();
        let r = waiter.wait(Some(Duration::from_secs(5)));
        (r, start.elapsed(), waiter)
    });
    thread::sleep(Duration::from_millis(50));
    drop(dropped);
    let (r, took, b) = waiter.join().unwrap();
    match r {
        Err(ref e @ Error::PeerGone { pid, ref reason }) => {
            assert_eq!(pid, std::process::id());
            assert!(reason.contains(s.gone_reason), "{reason}");
            assert!(e.to_string().contains("disconnected"), "{e}");
        }
        other => panic!("expected PeerGone, got {other:?}"),
    }
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // It stays gone, at once for a zero timeout and for a long one.
    assert!(b.wait(Some(Duration::ZERO)).unwrap_err().is_peer_gone());
    let start = Instant::now();
    assert!(b
        .wait(Some(Duration::from_secs(5)))
        .unwrap_err()
        .is_peer_gone());
    assert!(start.elapsed() < Duration::from_secs(1));
    // Kicking a dead peer is PeerGone, not SIGPIPE.
    if s.notify_sees_dead_peer {
        let e = b.notify().unwrap_err();
        assert!(matches!(e, Error::PeerGone { .. }), "{e}");
    }
}

pub fn wait_reports_peer_gone_within_a_second_of_drop<T: Subject>(s: &Suite) {
    let _g = serial();
    let dir = TempDir::new();
    // Side 2 waits while side 1 goes, then the other way round.
    let ((a, _, _am), (b, _, _bm)) = pair::<T>(s, &dir.path("one"), Duration::ZERO);
    peer_gone_within_a_second(s, b, a);
    let ((a, _, _am), (b, _, _bm)) = pair::<T>(s, &dir.path("two"), Duration::ZERO);
    peer_gone_within_a_second(s, a, b);
}

pub fn kicks_sent_before_close_are_seen_before_peer_gone<T: Subject>(s: &Suite) {
    let _g = serial();
    let dir = TempDir::new();
    let ((a, _, _am), (b, _, _bm)) = pair::<T>(s, &dir.path("link"), Duration::ZERO);
    a.notify().unwrap();
    drop(a);
    assert_eq!(
        b.wait(Some(Duration::from_secs(1))).unwrap(),
        Wakeup::Notified
    );
    assert!(b
        .wait(Some(Duration::from_secs(1)))
        .unwrap_err()
        .is_peer_gone());
}

/// Not a test on its own: with `CHILD_ENV` set, this process is the peer
/// for [`peer_process_killed_is_peer_gone`] (kick once, then wait to die).
pub fn helper_peer_process<T: Subject>(s: &Suite) {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let (link, _, _memory) =
        connect_side::<T>(s, Path::new(&path), 9, &opts(5)).expect("child connects");
    link.notify().unwrap();
    while link.wait(None).is_ok() {}
}

pub fn peer_process_killed_is_peer_gone<T: Subject>(s: &Suite) {
    let _g = serial();
    let dir = TempDir::new();
    let path = dir.path("link");
    let mut child = spawn_peer_process("helper_peer_process", &path);
    let (link, peer, _memory) =
        connect_side::<T>(s, &path, 1, &opts(10)).expect("connects to the peer process");
    assert_eq!(link.peer_pid(), child.id());
    assert_eq!(features_tag(&peer), 9);
    assert_eq!(
        link.wait(Some(Duration::from_secs(5))).unwrap(),
        Wakeup::Notified
    );

    child.kill().unwrap();
    let start = Instant::now();
    let err = link.wait(Some(Duration::from_secs(5))).unwrap_err();
    assert!(
        matches!(err, Error::PeerGone { pid, .. } if pid == child.id()),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(1));
    child.wait().unwrap();
    if s.notify_sees_dead_peer {
        assert!(link.notify().unwrap_err().is_peer_gone());
    }
}

// ---- hostile peers and hygiene ------------------------------------------

pub fn rejects_peer_memory_without_seals<T: Subject>(s: &Suite) {
    let _g = serial();
    let dir = TempDir::new();
    let path = dir.path("link");
    // The honest side keeps its memfd open even after refusing (a FIFO
    // peer reaches it through /proc).
    let honest = {
        let (s, path) = (*s, path.clone());
        thread::spawn(move || {
            let memory = sealed_memfd(MEM);
            let r = connect_with_memory::<T>(&s, &path, &memory, &opts(5));
            (r, memory)
        })
    };
    let unsealed = unsealed_memfd(MEM);
    let hostile = T::connect(
        &path,
        &(s.handshake)(2, &unsealed),
        unsealed.as_fd(),
        &opts(5),
    );
    let (err, _honest_memory) = honest.join().unwrap();
    let err = err.expect_err("unsealed memory must be refused");
    assert!(
        matches!(err, Error::BadPeerMemory(ref m) if m.contains("F_SEAL_SHRINK")),
        "{err}"
    );
    // The side that offered it got a sound memfd and sees the refusal as the
    // peer going away.
    let (hostile, _) = hostile.expect("the other side's memory was fine");
    assert!(hostile
        .wait(Some(Duration::from_secs(1)))
        .unwrap_err()
        .is_peer_gone());
}

pub fn all_fds_are_close_on_exec<T: Subject>(s: &Suite) {
    let _g = serial();
    let dir = TempDir::new();
    let ((a, a_peer, _am), _b) = pair::<T>(s, &dir.path("link"), Duration::ZERO);
    for fd in [a.as_raw_fd(), a_peer.memory.as_raw_fd()] {
        let flags = FdFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFD).unwrap());
        assert!(
            flags.contains(FdFlag::FD_CLOEXEC),
            "fd {fd} lacks FD_CLOEXEC"
        );
    }
    // Every eventfd, socket, memfd and FIFO the pair holds (all such fds of
    // this process past stdio) must be close-on-exec too.
    let ours = dir.0.to_string_lossy().into_owned();
    let mut checked = 0;
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let fd: i32 = entry
            .unwrap()
            .file_name()
            .to_string_lossy()
            .parse()
            .unwrap();
        let Ok(flags) = fcntl(fd, FcntlArg::F_GETFD) else {
            continue;
        };
        let target = readlink_fd(fd);
        if fd > 2
            && (target.contains("eventfd")
                || target.starts_with("socket:")
                || target.starts_with("/memfd:")
                || target.starts_with(&ours))
        {
            checked += 1;
            assert!(
                FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC),
                "fd {fd} ({target}) lacks FD_CLOEXEC"
            );
        }
    }
    assert!(checked >= 2, "found only {checked} fds of the pair");
}

pub fn set_up_and_tear_down_leak_no_fds<T: Subject>(s: &Suite) {
    let _g = serial();
    let dir = TempDir::new();
    // Warm up: the first thread spawn and similar may open fds for good.
    drop(pair::<T>(s, &dir.path("warm"), Duration::ZERO));
    let before = count_fds();

    // A full pair, a round trip, and teardown.
    {
        let ((a, _, _am), (b, _, _bm)) = pair::<T>(s, &dir.path("link"), Duration::from_millis(20));
        a.notify().unwrap();
        b.wait(Some(Duration::from_secs(1))).unwrap();
        drop(a);
        assert!(b.wait(Some(Duration::from_secs(1))).is_err());
    }
    // More pairs set up and dropped.
    for i in 0..5 {
        drop(pair::<T>(s, &dir.path(&format!("leak{i}")), Duration::ZERO));
    }
    // Peers refused mid-handshake (their extra fds must be closed).
    if s.raw_peer_fds.is_some() {
        let (memory, m2, m3) = (sealed_memfd(MEM), sealed_memfd(MEM), sealed_memfd(MEM));
        let (pipe_r, pipe_w) = nix::unistd::pipe().unwrap();
        let record = handshake(2).encode();
        for (name, fds) in [
            ("memfds", [&memory, &m2, &m3].as_slice()),
            ("pipes", &[&memory, &pipe_r, &pipe_w]),
            ("pipe", &[&memory, &pipe_r]),
        ] {
            listener_vs_raw_peer::<T>(s, &dir.path(name), &record, fds);
        }
    }
    // A side that times out.
    {
        let memory = sealed_memfd(MEM);
        let quick = ConnectOptions {
            nonblocking_writes: true,
            timeout: Some(Duration::from_millis(50)),
        };
        let _ = connect_with_memory::<T>(s, &dir.path("alone"), &memory, &quick);
    }

    assert_eq!(count_fds(), before, "fds leaked: {:?}", open_fds());
}

// ---- socket rendezvous: hostile peers played by bare sockets -------------

/// Listen with a real transport while the test plays the peer by hand,
/// sending `record` with `fds` attached; returns the listener's refusal.
pub fn listener_vs_raw_peer<T: Subject>(
    s: &Suite,
    path: &Path,
    record: &[u8],
    fds: &[&OwnedFd],
) -> Error {
    let listener = spawn_side::<T>(s, path, 1, opts(5));
    let sock = raw_client(path);
    let raw: Vec<_> = fds.iter().map(|f| f.as_raw_fd()).collect();
    raw_send(&sock, record, &raw);
    let err = listener.join().unwrap().expect_err("listener must refuse");
    drop(sock);
    err
}

/// An honest raw peer's fds: `memory`, then what the transport adds.
fn raw_refusal<T: Subject>(s: &Suite, path: &Path, record: &[u8], memory: &OwnedFd) -> Error {
    let extra = (s.raw_peer_fds.expect("a socket-rendezvous transport"))();
    let fds: Vec<&OwnedFd> = std::iter::once(memory).chain(&extra).collect();
    listener_vs_raw_peer::<T>(s, path, record, &fds)
}

pub fn rejects_peer_with_wrong_handshake_version<T: Subject>(s: &Suite) {
    let _g = serial();
    let dir = TempDir::new();
    let mut record = handshake(2).encode();
    record[8..12].copy_from_slice(&7u32.to_le_bytes());
    let memory = sealed_memfd(MEM);
    let err = raw_refusal::<T>(s, &dir.path("link"), &record, &memory);
    assert!(
        matches!(
            err,
            Error::VersionMismatch {
                got: 7,
                expected: VERSION
            }
        ),
        "{err}"
    );
}

pub fn listener_rejects_raw_peer_memory_without_seals<T: Subject>(s: &Suite) {
    let _g = serial();
    let dir = TempDir::new();
    let memory = unsealed_memfd(MEM);
    let err = raw_refusal::<T>(s, &dir.path("link"), &handshake(2).encode(), &memory);
    assert!(
        matches!(err, Error::BadPeerMemory(ref m) if m.contains("F_SEAL_SHRINK")),
        "{err}"
    );
}

pub fn rejects_memory_whose_size_differs_from_handshake<T: Subject>(s: &Suite) {
    let _g = serial();
    let dir = TempDir::new();
    let small = sealed_memfd(MEM / 2);
    let err = raw_refusal::<T>(s, &dir.path("link"), &handshake(2).encode(), &small);
    assert!(
        matches!(err, Error::BadPeerMemory(ref m) if m.contains("mem_size")),
        "{err}"
    );
}

pub fn rejects_handshake_pid_that_differs_from_peercred<T: Subject>(s: &Suite) {
    let _g = serial();
    let dir = TempDir::new();
    let mut hs = handshake(2);
    hs.pid += 1;
    let memory = sealed_memfd(MEM);
    let err = raw_refusal::<T>(s, &dir.path("link"), &hs.encode(), &memory);
    let want = format!(
        "handshake pid {} but SO_PEERCRED says {}",
        hs.pid,
        std::process::id()
    );
    assert!(
        matches!(err, Error::PeerRefused(ref m) if *m == want),
        "{err}"
    );
}

pub fn rejects_truncated_and_oversized_handshakes<T: Subject>(s: &Suite) {
    let _g = serial();
    let dir = TempDir::new();
    let memory = sealed_memfd(MEM);
    let record = handshake(2).encode();
    let err = raw_refusal::<T>(s, &dir.path("short"), &record[..50], &memory);
    assert!(
        matches!(
            err,
            Error::ShortHandshake {
                got: 50,
                expected: HANDSHAKE_LEN
            }
        ),
        "{err}"
    );
    let long = [record.as_slice(), &[0u8; 300]].concat();
    let err = raw_refusal::<T>(s, &dir.path("long"), &long, &memory);
    assert!(
        matches!(err, Error::ShortHandshake { got, .. } if got == HANDSHAKE_LEN + 300),
        "{err}"
    );
}

pub fn peer_that_hangs_up_during_handshake_is_peer_gone<T: Subject>(s: &Suite) {
    let _g = serial();
    let dir = TempDir::new();
    let path = dir.path("link");
    let listener = spawn_side::<T>(s, &path, 1, opts(5));
    drop(raw_client(&path));
    let err = listener.join().unwrap().expect_err("no handshake came");
    assert!(err.is_peer_gone(), "{err}");
}

pub fn refuses_fifo_at_path<T: Subject>(s: &Suite) {
    let _g = serial();
    let dir = TempDir::new();
    let memory = sealed_memfd(MEM);
    let fifo = dir.path("fifo");
    mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
    let err = connect_with_memory::<T>(s, &fifo, &memory, &opts(1)).unwrap_err();
    assert!(
        matches!(err, Error::RefusedPath { ref reason, .. } if reason.contains("FIFO")),
        "{err}"
    );
}

pub fn refuses_peer_running_as_another_uid<T: Subject>(s: &Suite) {
    let _g = serial();
    if !is_root() {
        eprintln!("skipped: needs root to switch uid");
        return;
    }
    let dir = TempDir::new();
    dir.open_up();
    let path = dir.path("link");
    let listener = spawn_side::<T>(s, &path, 1, opts(5));
    wait_for_path(&path);
    // Mode 0600 alone keeps other users out; open it up to prove the
    // SO_PEERCRED check holds even when permissions are wrong.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let reap = connect_as_nobody(&path);
    let err = listener
        .join()
        .unwrap()
        .expect_err("foreign uid must be refused");
    let want = format!("peer uid {NOBODY} differs from ours (0)");
    assert!(
        matches!(err, Error::PeerRefused(ref m) if *m == want),
        "{err}"
    );
    assert_eq!(
        reap(),
        0,
        "the foreign child must read EOF, not our handshake"
    );
}

pub fn listener_recovers_when_its_path_is_removed<T: Subject>(s: &Suite) {
    let _g = serial();
    let dir = TempDir::new();
    let path = dir.path("link");
    let first = spawn_side::<T>(s, &path, 1, opts(5));
    wait_for_path(&path);
    // Someone (a racing peer that took it for stale, an admin) removes the
    // listener's socket. The next side becomes a listener itself; the first
    // one must notice and connect to it instead of waiting forever.
    std::fs::remove_file(&path).unwrap();
    let second = spawn_side::<T>(s, &path, 2, opts(5));
    let (_a, a_peer, _am) = first.join().unwrap().expect("first side recovers");
    let (_b, b_peer, _bm) = second.join().unwrap().expect("second side connects");
    assert_eq!(features_tag(&a_peer), 2);
    assert_eq!(features_tag(&b_peer), 1);
}
