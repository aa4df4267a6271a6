//! `eventfd:PATH` end to end: two transports over a real rendezvous socket,
//! real memfds and eventfds, and hostile peers played by bare sockets or by
//! a forked child under another uid.

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::eventfd::{EfdFlags, EventFd as KernelEventFd};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use transport::test_utils::*;
use transport::{ConnectOptions, Error, Notify, PeerInfo, Transport, Wakeup, VERSION};
use transport_eventfd::EventFd;
use transport_unixsock::UnixSock;

type Side = (EventFd, PeerInfo, OwnedFd);

fn spawn_side(path: &Path, tag: u64, opts: ConnectOptions) -> JoinHandle<transport::Result<Side>> {
    let path = path.to_path_buf();
    thread::spawn(move || {
        let memory = sealed_memfd(MEM);
        let (link, peer) = EventFd::connect(&path, &handshake(tag), memory.as_fd(), &opts)?;
        Ok((link, peer, memory))
    })
}

fn pair(path: &Path, gap: Duration) -> (Side, Side) {
    let a = spawn_side(path, 1, opts(5));
    thread::sleep(gap);
    let b = spawn_side(path, 2, opts(5));
    let a = a.join().unwrap().expect("side 1 connects");
    let b = b.join().unwrap().expect("side 2 connects");
    (a, b)
}

fn features_tag(peer: &PeerInfo) -> u64 {
    peer.handshake.features >> 8
}

/// A fresh eventfd, as an honest peer would send.
fn new_eventfd() -> OwnedFd {
    KernelEventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .unwrap()
        .into()
}

fn readlink_fd(fd: i32) -> String {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn pair_meets_in_either_start_order() {
    let _g = serial();
    let dir = TempDir::new();
    // Tag 1 first (it listens), then tag 2 first.
    for (first, second) in [(1u64, 2u64), (2, 1)] {
        let path = dir.path(&format!("link{first}"));
        let early = spawn_side(&path, first, opts(5));
        wait_for_path(&path);
        thread::sleep(Duration::from_millis(20));
        let late = spawn_side(&path, second, opts(5));
        let (a, a_peer, _am) = early.join().unwrap().expect("first side connects");
        let (b, b_peer, _bm) = late.join().unwrap().expect("second side connects");
        // Each side received the other's handshake and memory.
        assert_eq!(features_tag(&a_peer), second);
        assert_eq!(features_tag(&b_peer), first);
        assert_eq!(a_peer.handshake.mem_size, MEM);
        assert_eq!(a.peer_pid(), std::process::id());
        assert_eq!(b.peer_pid(), std::process::id());
        // The name is free again once the pair has met, and no temporary
        // name is left behind.
        assert_eq!(
            std::fs::read_dir(&dir.0).unwrap().count(),
            0,
            "PATH left behind"
        );
    }
}

#[test]
fn pair_meets_when_both_start_at_once() {
    let _g = serial();
    let dir = TempDir::new();
    for i in 0..25 {
        let path = dir.path(&format!("race{i}"));
        let barrier = Arc::new(Barrier::new(2));
        let sides: Vec<_> = (1..=2u64)
            .map(|tag| {
                let (path, barrier) = (path.clone(), barrier.clone());
                thread::spawn(move || {
                    let memory = sealed_memfd(MEM);
                    barrier.wait();
                    EventFd::connect(&path, &handshake(tag), memory.as_fd(), &opts(5))
                        .map(|(_, peer)| features_tag(&peer))
                })
            })
            .collect();
        let tags: Vec<u64> = sides
            .into_iter()
            .map(|s| s.join().unwrap().expect("racing sides meet"))
            .collect();
        assert_eq!(tags, vec![2, 1], "round {i}");
    }
}

#[test]
fn two_pairs_on_different_paths_do_not_interfere() {
    let _g = serial();
    let dir = TempDir::new();
    let (p, q) = (dir.path("p"), dir.path("q"));
    let sides = [
        spawn_side(&p, 1, opts(5)),
        spawn_side(&q, 3, opts(5)),
        spawn_side(&p, 2, opts(5)),
        spawn_side(&q, 4, opts(5)),
    ];
    let tags: Vec<u64> = sides
        .into_iter()
        .map(|s| features_tag(&s.join().unwrap().expect("connects").1))
        .collect();
    assert_eq!(tags, vec![2, 4, 1, 3]);
}

#[test]
fn notify_wakes_peer_and_kicks_coalesce() {
    let _g = serial();
    let dir = TempDir::new();
    let ((a, _, _am), (b, _, _bm)) = pair(&dir.path("link"), Duration::ZERO);

    let start = Instant::now();
    assert_eq!(b.wait(Some(Duration::ZERO)).unwrap(), Wakeup::Timeout);
    assert!(start.elapsed() < Duration::from_millis(20));

    for _ in 0..1000 {
        assert_eq!(a.notify().unwrap(), Notify::Sent);
    }
    // A thousand kicks add up in one counter: one wake-up, one read.
    assert_eq!(
        b.wait(Some(Duration::from_secs(1))).unwrap(),
        Wakeup::Notified
    );
    assert_eq!(b.wait(Some(Duration::ZERO)).unwrap(), Wakeup::Timeout);

    let waiter = thread::spawn(move || (a.wait(Some(Duration::from_secs(5))), a));
    thread::sleep(Duration::from_millis(50));
    assert_eq!(b.notify().unwrap(), Notify::Sent);
    let (woke, _a) = waiter.join().unwrap();
    assert_eq!(woke.unwrap(), Wakeup::Notified);

    let start = Instant::now();
    assert_eq!(
        b.wait(Some(Duration::from_millis(30))).unwrap(),
        Wakeup::Timeout
    );
    assert!(start.elapsed() >= Duration::from_millis(30));
}

#[test]
fn raw_fd_is_our_eventfd_and_turns_readable_on_a_kick() {
    let _g = serial();
    let dir = TempDir::new();
    let ((a, _, _am), (b, _, _bm)) = pair(&dir.path("link"), Duration::ZERO);
    assert_eq!(readlink_fd(b.as_raw_fd()), "anon_inode:[eventfd]");
    // SAFETY: `b` owns this fd and outlives every use of the borrow below.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(b.as_raw_fd()) };
    let [ready] = transport::poll_fds([fd], Some(Duration::ZERO)).unwrap();
    assert!(!ready.readable);
    a.notify().unwrap();
    let [ready] = transport::poll_fds([fd], Some(Duration::from_secs(1))).unwrap();
    assert!(ready.readable);
    assert_eq!(b.wait(Some(Duration::ZERO)).unwrap(), Wakeup::Notified);
}

#[test]
fn wait_reports_peer_gone_within_a_second_of_drop() {
    let _g = serial();
    let dir = TempDir::new();
    let ((a, _, _am), (b, _, _bm)) = pair(&dir.path("link"), Duration::ZERO);
    let waiter = thread::spawn(move || {
        let start = Instant::now();
        let r = b.wait(Some(Duration::from_secs(5)));
        (r, start.elapsed(), b)
    });
    thread::sleep(Duration::from_millis(50));
    drop(a);
    let (r, took, b) = waiter.join().unwrap();
    match r {
        Err(Error::PeerGone { pid, reason }) => {
            assert_eq!(pid, std::process::id());
            assert!(reason.contains("EOF"), "{reason}");
        }
        other => panic!("expected PeerGone, got {other:?}"),
    }
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert!(b.wait(Some(Duration::ZERO)).unwrap_err().is_peer_gone());
}

#[test]
fn kicks_sent_before_close_are_seen_before_peer_gone() {
    let _g = serial();
    let dir = TempDir::new();
    let ((a, _, _am), (b, _, _bm)) = pair(&dir.path("link"), Duration::ZERO);
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

#[test]
fn blocking_notify_round_trips() {
    let _g = serial();
    let dir = TempDir::new();
    let path = dir.path("link");
    let blocking = ConnectOptions {
        nonblocking_writes: false,
        timeout: Some(Duration::from_secs(5)),
    };
    let a = spawn_side(&path, 1, blocking);
    let b = spawn_side(&path, 2, blocking);
    let (a, _, _am) = a.join().unwrap().unwrap();
    let (b, _, _bm) = b.join().unwrap().unwrap();
    assert_eq!(a.notify().unwrap(), Notify::Sent);
    assert_eq!(b.wait(None).unwrap(), Wakeup::Notified);
}

/// Listen with a real transport while the test plays the peer by hand.
fn listener_vs_raw_peer(path: &Path, record: &[u8], fds: &[&OwnedFd]) -> Error {
    let listener = spawn_side(path, 1, opts(5));
    let sock = raw_client(path);
    let raw: Vec<_> = fds.iter().map(|f| f.as_raw_fd()).collect();
    raw_send(&sock, record, &raw);
    let err = listener.join().unwrap().expect_err("listener must refuse");
    drop(sock);
    err
}

#[test]
fn rejects_peer_with_wrong_handshake_version() {
    let _g = serial();
    let dir = TempDir::new();
    let mut record = handshake(2).encode();
    record[8..12].copy_from_slice(&7u32.to_le_bytes());
    let (memory, efd) = (sealed_memfd(MEM), new_eventfd());
    let err = listener_vs_raw_peer(&dir.path("link"), &record, &[&memory, &efd]);
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

#[test]
fn rejects_peer_memory_without_seals() {
    let _g = serial();
    let dir = TempDir::new();
    let (memory, efd) = (unsealed_memfd(MEM), new_eventfd());
    let err = listener_vs_raw_peer(&dir.path("link"), &handshake(2).encode(), &[&memory, &efd]);
    assert!(
        matches!(err, Error::BadPeerMemory(ref m) if m.contains("F_SEAL_SHRINK")),
        "{err}"
    );
}

#[test]
fn rejects_peer_eventfd_that_is_a_pipe() {
    let _g = serial();
    let dir = TempDir::new();
    let memory = sealed_memfd(MEM);
    let (pipe_r, _pipe_w) = nix::unistd::pipe().unwrap();
    let err = listener_vs_raw_peer(
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
    let record = handshake(2).encode();
    let memory = sealed_memfd(MEM);
    let err = listener_vs_raw_peer(&dir.path("one"), &record, &[&memory]);
    assert!(
        matches!(err, Error::PeerRefused(ref m) if m.contains("1 fds")),
        "{err}"
    );
    let (e1, e2) = (new_eventfd(), new_eventfd());
    let err = listener_vs_raw_peer(&dir.path("three"), &record, &[&memory, &e1, &e2]);
    assert!(
        matches!(err, Error::PeerRefused(ref m) if m.contains("3 fds")),
        "{err}"
    );
}

#[test]
fn rejects_handshake_pid_that_differs_from_peercred() {
    let _g = serial();
    let dir = TempDir::new();
    let mut hs = handshake(2);
    hs.pid += 1;
    let (memory, efd) = (sealed_memfd(MEM), new_eventfd());
    let err = listener_vs_raw_peer(&dir.path("link"), &hs.encode(), &[&memory, &efd]);
    assert!(
        matches!(err, Error::PeerRefused(ref m) if m.contains("SO_PEERCRED")),
        "{err}"
    );
}

#[test]
fn unix_and_eventfd_peers_refuse_each_other() {
    let _g = serial();
    let dir = TempDir::new();
    let path = dir.path("link");
    let ev = spawn_side(&path, 1, opts(5));
    wait_for_path(&path);
    let memory = sealed_memfd(MEM);
    let unix = UnixSock::connect(&path, &handshake(2), memory.as_fd(), &opts(5));
    let ev = ev.join().unwrap().expect_err("a unix: peer sends one fd");
    assert!(
        matches!(ev, Error::PeerRefused(ref m) if m.contains("`unix:`")),
        "{ev}"
    );
    let unix = unix.expect_err("an eventfd: peer sends two fds");
    assert!(
        matches!(unix, Error::PeerRefused(ref m) if m.contains("`eventfd:`")),
        "{unix}"
    );
}

#[test]
fn times_out_when_no_peer_arrives_and_cleans_up() {
    let _g = serial();
    let dir = TempDir::new();
    let memory = sealed_memfd(MEM);
    let quick = ConnectOptions {
        nonblocking_writes: true,
        timeout: Some(Duration::from_millis(200)),
    };
    let err =
        EventFd::connect(&dir.path("link"), &handshake(1), memory.as_fd(), &quick).unwrap_err();
    assert!(matches!(err, Error::ConnectTimeout { .. }), "{err}");
    assert_eq!(
        std::fs::read_dir(&dir.0).unwrap().count(),
        0,
        "socket left behind"
    );
}

#[test]
fn refuses_symlink_at_path() {
    let _g = serial();
    let dir = TempDir::new();
    let path = dir.path("link");
    std::os::unix::fs::symlink(dir.path("elsewhere"), &path).unwrap();
    let memory = sealed_memfd(MEM);
    let err = EventFd::connect(&path, &handshake(1), memory.as_fd(), &opts(1)).unwrap_err();
    assert!(
        matches!(err, Error::RefusedPath { ref reason, .. } if reason.contains("symlink")),
        "{err}"
    );
}

#[test]
fn refuses_socket_owned_by_another_uid() {
    let _g = serial();
    if !is_root() {
        eprintln!("skipped: needs root to chown");
        return;
    }
    let dir = TempDir::new();
    let path = dir.path("link");
    let _listener = UnixListener::bind(&path).unwrap();
    nix::unistd::chown(&path, Some(nix::unistd::Uid::from_raw(NOBODY)), None).unwrap();
    let memory = sealed_memfd(MEM);
    let err = EventFd::connect(&path, &handshake(1), memory.as_fd(), &opts(1)).unwrap_err();
    assert!(
        matches!(err, Error::RefusedPath { ref reason, .. } if reason.contains("uid 65534")),
        "{err}"
    );
}

#[test]
fn refuses_peer_running_as_another_uid() {
    let _g = serial();
    if !is_root() {
        eprintln!("skipped: needs root to switch uid");
        return;
    }
    let dir = TempDir::new();
    dir.open_up();
    let path = dir.path("link");
    let listener = spawn_side(&path, 1, opts(5));
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

#[test]
fn all_fds_are_close_on_exec() {
    let _g = serial();
    let dir = TempDir::new();
    let ((a, a_peer, _am), _b) = pair(&dir.path("link"), Duration::ZERO);
    for fd in [a.as_raw_fd(), a_peer.memory.as_raw_fd()] {
        let flags = FdFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFD).unwrap());
        assert!(
            flags.contains(FdFlag::FD_CLOEXEC),
            "fd {fd} lacks FD_CLOEXEC"
        );
    }
    // Every eventfd and socket the pair holds (all fds of this process that
    // are not stdio) must be close-on-exec too.
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
        if target.contains("eventfd") || target.starts_with("socket:") {
            assert!(
                FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC),
                "fd {fd} ({target}) lacks FD_CLOEXEC"
            );
        }
    }
}

#[test]
fn set_up_and_tear_down_leak_no_fds() {
    let _g = serial();
    let dir = TempDir::new();
    drop(pair(&dir.path("warm"), Duration::ZERO));
    let before = count_fds();
    {
        let ((a, _, _am), (b, _, _bm)) = pair(&dir.path("link"), Duration::from_millis(20));
        a.notify().unwrap();
        b.wait(Some(Duration::from_secs(1))).unwrap();
        drop(a);
        assert!(b.wait(Some(Duration::from_secs(1))).is_err());
    }
    {
        let memory = sealed_memfd(MEM);
        let (pipe_r, pipe_w) = nix::unistd::pipe().unwrap();
        let record = handshake(2).encode();
        listener_vs_raw_peer(&dir.path("refused"), &record, &[&memory, &pipe_r, &pipe_w]);
        listener_vs_raw_peer(&dir.path("notefd"), &record, &[&memory, &pipe_r]);
    }
    {
        let memory = sealed_memfd(MEM);
        let quick = ConnectOptions {
            nonblocking_writes: true,
            timeout: Some(Duration::from_millis(50)),
        };
        let _ = EventFd::connect(&dir.path("alone"), &handshake(1), memory.as_fd(), &quick);
    }
    assert_eq!(count_fds(), before, "fds leaked: {:?}", open_fds());
}

fn open_fds() -> Vec<PathBuf> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .collect()
}

/// Not a test on its own: with `CHILD_ENV` set, this process is the peer
/// for `peer_process_killed_is_peer_gone` (kick once, then wait to die).
#[test]
fn helper_peer_process() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let memory = sealed_memfd(MEM);
    let (link, _) = EventFd::connect(Path::new(&path), &handshake(9), memory.as_fd(), &opts(5))
        .expect("child connects");
    link.notify().unwrap();
    while link.wait(None).is_ok() {}
}

#[test]
fn peer_process_killed_is_peer_gone() {
    let _g = serial();
    let dir = TempDir::new();
    let path = dir.path("link");
    let mut child = spawn_peer_process("helper_peer_process", &path);
    let memory = sealed_memfd(MEM);
    let (link, peer) = EventFd::connect(&path, &handshake(1), memory.as_fd(), &opts(10))
        .expect("connects to the peer process");
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
}
