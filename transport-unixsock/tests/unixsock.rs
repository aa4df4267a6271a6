//! `unix:PATH` end to end: two transports over a real socket in a private
//! directory, real memfds, and hostile peers played by bare sockets or by
//! a forked child under another uid.

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use transport::test_utils::*;
use transport::{
    ConnectOptions, Error, Notify, PeerInfo, Transport, Wakeup, HANDSHAKE_LEN, VERSION,
};
use transport_unixsock::UnixSock;

type Side = (UnixSock, PeerInfo, OwnedFd);

/// One side of a pair, connecting in its own thread with its own memfd.
fn spawn_side(path: &Path, tag: u64, opts: ConnectOptions) -> JoinHandle<transport::Result<Side>> {
    let path = path.to_path_buf();
    thread::spawn(move || {
        let memory = sealed_memfd(MEM);
        let (link, peer) = UnixSock::connect(&path, &handshake(tag), memory.as_fd(), &opts)?;
        Ok((link, peer, memory))
    })
}

/// Start side 1, then side 2 after `gap`, and return both once they met.
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
                    UnixSock::connect(&path, &handshake(tag), memory.as_fd(), &opts(5))
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
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 0);
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

    // Nothing pending: a zero timeout is a cheap poll.
    let start = Instant::now();
    assert_eq!(b.wait(Some(Duration::ZERO)).unwrap(), Wakeup::Timeout);
    assert!(start.elapsed() < Duration::from_millis(20));

    for _ in 0..5 {
        assert_eq!(a.notify().unwrap(), Notify::Sent);
    }
    // Five kicks are one wake-up, and the wake-up consumed them all.
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

#[test]
fn nonblocking_notify_reports_already_pending_when_peer_is_full() {
    let _g = serial();
    let dir = TempDir::new();
    let ((a, _, _am), (b, _, _bm)) = pair(&dir.path("link"), Duration::ZERO);
    let mut sent = 0;
    while a.notify().unwrap() == Notify::Sent {
        sent += 1;
        assert!(sent < 1_000_000, "socket never filled up");
    }
    assert!(sent > 0);
    assert_eq!(
        b.wait(Some(Duration::from_secs(1))).unwrap(),
        Wakeup::Notified
    );
    // Draining made room again.
    assert_eq!(a.notify().unwrap(), Notify::Sent);
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
    let pid = std::process::id();
    match r {
        Err(Error::PeerGone { pid: p, reason }) => {
            assert_eq!(p, pid);
            assert!(reason.contains("EOF"), "{reason}");
        }
        other => panic!("expected PeerGone, got {other:?}"),
    }
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // It stays gone, and kicking a dead peer is PeerGone, not SIGPIPE.
    assert!(b.wait(Some(Duration::ZERO)).unwrap_err().is_peer_gone());
    assert!(b.notify().unwrap_err().is_peer_gone());
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
    drop(b);
    assert!(a.notify().unwrap_err().is_peer_gone());
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
    let memory = sealed_memfd(MEM);
    let err = listener_vs_raw_peer(&dir.path("link"), &record, &[&memory]);
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
    let path = dir.path("link");
    let good = spawn_side(&path, 1, opts(5));
    let unsealed = unsealed_memfd(MEM);
    let bad = UnixSock::connect(&path, &handshake(2), unsealed.as_fd(), &opts(5));
    let err = good
        .join()
        .unwrap()
        .expect_err("unsealed memory must be refused");
    assert!(
        matches!(err, Error::BadPeerMemory(ref m) if m.contains("F_SEAL_SHRINK")),
        "{err}"
    );
    // The side that offered it got a sound memfd and sees the refusal as the
    // peer going away.
    let (bad, _) = bad.expect("the other side's memory was fine");
    assert!(bad
        .wait(Some(Duration::from_secs(1)))
        .unwrap_err()
        .is_peer_gone());
}

#[test]
fn rejects_memory_whose_size_differs_from_handshake() {
    let _g = serial();
    let dir = TempDir::new();
    let small = sealed_memfd(MEM / 2);
    let err = listener_vs_raw_peer(&dir.path("link"), &handshake(2).encode(), &[&small]);
    assert!(
        matches!(err, Error::BadPeerMemory(ref m) if m.contains("mem_size")),
        "{err}"
    );
}

#[test]
fn rejects_handshake_pid_that_differs_from_peercred() {
    let _g = serial();
    let dir = TempDir::new();
    let mut hs = handshake(2);
    hs.pid += 1;
    let memory = sealed_memfd(MEM);
    let err = listener_vs_raw_peer(&dir.path("link"), &hs.encode(), &[&memory]);
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

#[test]
fn rejects_handshake_without_exactly_one_fd() {
    let _g = serial();
    let dir = TempDir::new();
    let record = handshake(2).encode();
    let err = listener_vs_raw_peer(&dir.path("none"), &record, &[]);
    assert!(
        matches!(err, Error::PeerRefused(ref m) if m.contains("0 fds")),
        "{err}"
    );
    let (m1, m2) = (sealed_memfd(MEM), sealed_memfd(MEM));
    let err = listener_vs_raw_peer(&dir.path("two"), &record, &[&m1, &m2]);
    assert!(
        matches!(err, Error::PeerRefused(ref m) if m.contains("2 fds")),
        "{err}"
    );
}

#[test]
fn rejects_truncated_and_oversized_handshakes() {
    let _g = serial();
    let dir = TempDir::new();
    let memory = sealed_memfd(MEM);
    let record = handshake(2).encode();
    let err = listener_vs_raw_peer(&dir.path("short"), &record[..50], &[&memory]);
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
    let err = listener_vs_raw_peer(&dir.path("long"), &long, &[&memory]);
    assert!(
        matches!(err, Error::ShortHandshake { got: 404, .. }),
        "{err}"
    );
}

#[test]
fn peer_that_hangs_up_during_handshake_is_peer_gone() {
    let _g = serial();
    let dir = TempDir::new();
    let path = dir.path("link");
    let listener = spawn_side(&path, 1, opts(5));
    drop(raw_client(&path));
    let err = listener.join().unwrap().expect_err("no handshake came");
    assert!(err.is_peer_gone(), "{err}");
}

#[test]
fn times_out_when_no_peer_arrives_and_cleans_up() {
    let _g = serial();
    let dir = TempDir::new();
    let path = dir.path("link");
    let memory = sealed_memfd(MEM);
    let quick = ConnectOptions {
        nonblocking_writes: true,
        timeout: Some(Duration::from_millis(200)),
    };
    let start = Instant::now();
    let err = UnixSock::connect(&path, &handshake(1), memory.as_fd(), &quick).unwrap_err();
    assert!(matches!(err, Error::ConnectTimeout { .. }), "{err}");
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(
        std::fs::read_dir(&dir.0).unwrap().count(),
        0,
        "socket left behind"
    );
}

#[test]
fn replaces_stale_socket_left_by_dead_launcher() {
    let _g = serial();
    let dir = TempDir::new();
    let path = dir.path("link");
    // A launcher that bound PATH and died: the name stays, nobody listens.
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let ((_a, a_peer, _am), _b) = pair(&path, Duration::from_millis(50));
    assert_eq!(features_tag(&a_peer), 2);
}

#[test]
fn listener_socket_is_mode_0600() {
    let _g = serial();
    let dir = TempDir::new();
    let path = dir.path("link");
    let side = spawn_side(&path, 1, opts(5));
    wait_for_path(&path);
    let st = nix::sys::stat::lstat(&path).unwrap();
    assert_eq!(st.st_mode & 0o777, 0o600);
    // Let the waiting side finish.
    let (_b, _, _bm) = spawn_side(&path, 2, opts(5)).join().unwrap().unwrap();
    side.join().unwrap().unwrap();
}

#[test]
fn refuses_symlink_at_path() {
    let _g = serial();
    let dir = TempDir::new();
    let path = dir.path("link");
    std::os::unix::fs::symlink(dir.path("elsewhere"), &path).unwrap();
    let memory = sealed_memfd(MEM);
    let err = UnixSock::connect(&path, &handshake(1), memory.as_fd(), &opts(1)).unwrap_err();
    assert!(
        matches!(err, Error::RefusedPath { ref reason, .. } if reason.contains("symlink")),
        "{err}"
    );
    assert!(!dir.path("elsewhere").exists(), "followed the symlink");
}

#[test]
fn refuses_regular_file_and_fifo_at_path() {
    let _g = serial();
    let dir = TempDir::new();
    let memory = sealed_memfd(MEM);
    let file = dir.path("file");
    std::fs::write(&file, b"x").unwrap();
    let err = UnixSock::connect(&file, &handshake(1), memory.as_fd(), &opts(1)).unwrap_err();
    assert!(matches!(err, Error::RefusedPath { .. }), "{err}");
    let fifo = dir.path("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let err = UnixSock::connect(&fifo, &handshake(1), memory.as_fd(), &opts(1)).unwrap_err();
    assert!(
        matches!(err, Error::RefusedPath { ref reason, .. } if reason.contains("FIFO")),
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
    let err = UnixSock::connect(&path, &handshake(1), memory.as_fd(), &opts(1)).unwrap_err();
    assert!(
        matches!(err, Error::RefusedPath { ref reason, .. } if reason.contains("uid 65534")),
        "{err}"
    );
    assert!(path.exists(), "someone else's socket must be left alone");
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
    // The child read EOF first: our handshake and memfd never reached it.
    assert_eq!(reap(), 0);
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
}

#[test]
fn set_up_and_tear_down_leak_no_fds() {
    let _g = serial();
    let dir = TempDir::new();
    // Warm up: the first thread spawn and similar may open fds for good.
    drop(pair(&dir.path("warm"), Duration::ZERO));
    let before = count_fds();

    // A full pair, a round trip, and teardown.
    {
        let ((a, _, _am), (b, _, _bm)) = pair(&dir.path("link"), Duration::from_millis(20));
        a.notify().unwrap();
        b.wait(Some(Duration::from_secs(1))).unwrap();
        drop(a);
        assert!(b.wait(Some(Duration::from_secs(1))).is_err());
    }
    // A peer refused mid-handshake (its extra fds must be closed).
    {
        let (m1, m2, m3) = (sealed_memfd(MEM), sealed_memfd(MEM), sealed_memfd(MEM));
        let record = handshake(2).encode();
        listener_vs_raw_peer(&dir.path("refused"), &record, &[&m1, &m2, &m3]);
    }
    // A listener that times out.
    {
        let memory = sealed_memfd(MEM);
        let quick = ConnectOptions {
            nonblocking_writes: true,
            timeout: Some(Duration::from_millis(50)),
        };
        let _ = UnixSock::connect(&dir.path("alone"), &handshake(1), memory.as_fd(), &quick);
    }

    assert_eq!(count_fds(), before, "fds leaked: {:?}", open_fds());
}

fn open_fds() -> Vec<PathBuf> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .collect()
}

#[test]
fn listener_recovers_when_its_path_is_removed() {
    let _g = serial();
    let dir = TempDir::new();
    let path = dir.path("link");
    let first = spawn_side(&path, 1, opts(5));
    wait_for_path(&path);
    // Someone (a racing peer that took it for stale, an admin) removes the
    // listener's socket. The next side becomes a listener itself; the first
    // one must notice and connect to it instead of waiting forever.
    std::fs::remove_file(&path).unwrap();
    let second = spawn_side(&path, 2, opts(5));
    let (_a, a_peer, _am) = first.join().unwrap().expect("first side recovers");
    let (_b, b_peer, _bm) = second.join().unwrap().expect("second side connects");
    assert_eq!(features_tag(&a_peer), 2);
    assert_eq!(features_tag(&b_peer), 1);
}

/// Not a test on its own: with `CHILD_ENV` set, this process is the peer
/// for `peer_process_killed_is_peer_gone` (kick once, then wait to die).
#[test]
fn helper_peer_process() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let memory = sealed_memfd(MEM);
    let (link, _) = UnixSock::connect(Path::new(&path), &handshake(9), memory.as_fd(), &opts(5))
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
    let (link, peer) = UnixSock::connect(&path, &handshake(1), memory.as_fd(), &opts(10))
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
    assert!(link.notify().unwrap_err().is_peer_gone());
}
