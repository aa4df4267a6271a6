//! `fifo:PATH` end to end: two transports meeting on real named FIFOs in a
//! private directory, with real sealed memfds reached through /proc.

use nix::sys::stat::{lstat, Mode, SFlag};
use nix::unistd::{chown, mkfifo, Gid, Uid};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use transport::test_utils::*;
use transport::{Error, Handshake, Notify, PeerInfo, Transport, Wakeup};
use transport_fifo::Fifo;

type Side = (Fifo, PeerInfo, OwnedFd);

fn fifo_handshake(tag: u64, mem: &OwnedFd) -> Handshake {
    Handshake {
        mem_fd: mem.as_raw_fd(),
        ..handshake(tag)
    }
}

fn spawn_side_with(
    path: &Path,
    tag: u64,
    memory: OwnedFd,
    secs: u64,
) -> JoinHandle<transport::Result<Side>> {
    let path = path.to_path_buf();
    thread::spawn(move || {
        let (link, peer) = Fifo::connect(
            &path,
            &fifo_handshake(tag, &memory),
            memory.as_fd(),
            &opts(secs),
        )?;
        Ok((link, peer, memory))
    })
}

fn spawn_side(path: &Path, tag: u64) -> JoinHandle<transport::Result<Side>> {
    spawn_side_with(path, tag, sealed_memfd(MEM), 5)
}

fn sibling(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}_", path.display()))
}

fn pair(path: &Path) -> (Side, Side) {
    let a = spawn_side(path, 1);
    wait_for_path(path);
    let b = spawn_side(path, 2);
    (
        a.join().unwrap().expect("side 1"),
        b.join().unwrap().expect("side 2"),
    )
}

#[test]
fn pair_meets_in_either_start_order_and_cleans_up_the_fifos() {
    let _g = serial();
    let dir = TempDir::new();
    for (first, second) in [(1u64, 2u64), (2, 1)] {
        let path = dir.path(&format!("link{first}"));
        let early = spawn_side(&path, first);
        wait_for_path(&path);
        let late = spawn_side(&path, second);
        // Keep both memfds open: the FIFO transport reaches the peer's
        // memory through /proc while the peer still holds it.
        let (_a, a_peer, _a_mem) = early.join().unwrap().expect("first side");
        let (_b, b_peer, _b_mem) = late.join().unwrap().expect("second side");
        assert_eq!(a_peer.handshake.features >> 8, second);
        assert_eq!(b_peer.handshake.features >> 8, first);
        assert!(lstat(&path).is_err(), "PATH left behind");
        assert!(lstat(&sibling(&path)).is_err(), "PATH_ left behind");
        assert_eq!(
            std::fs::read_dir(&dir.0).unwrap().count(),
            0,
            "temporary names left behind"
        );
    }
}

#[test]
fn fifos_are_created_mode_0600() {
    let _g = serial();
    let dir = TempDir::new();
    let path = dir.path("modes");
    let first = spawn_side(&path, 1);
    wait_for_path(&path);
    for p in [path.clone(), sibling(&path)] {
        let st = lstat(&p).unwrap();
        assert_eq!(
            SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT,
            SFlag::S_IFIFO
        );
        assert_eq!(st.st_mode & 0o777, 0o600, "{}", p.display());
    }
    let second = spawn_side(&path, 2);
    let _a = first.join().unwrap().unwrap();
    let _b = second.join().unwrap().unwrap();
}

#[test]
fn notify_wakes_peer_and_kicks_coalesce() {
    let _g = serial();
    let dir = TempDir::new();
    let ((a, _, _), (b, _, _)) = pair(&dir.path("kick"));
    assert_eq!(b.wait(Some(Duration::ZERO)).unwrap(), Wakeup::Timeout);
    for _ in 0..10 {
        assert_eq!(a.notify().unwrap(), Notify::Sent);
    }
    assert_eq!(
        b.wait(Some(Duration::from_secs(1))).unwrap(),
        Wakeup::Notified
    );
    // All ten kicks were drained by the one wake-up.
    assert_eq!(b.wait(Some(Duration::ZERO)).unwrap(), Wakeup::Timeout);
    // And the other direction (the original wrote back to its read fd).
    b.notify().unwrap();
    assert_eq!(
        a.wait(Some(Duration::from_secs(1))).unwrap(),
        Wakeup::Notified
    );
}

#[test]
fn nonblocking_notify_to_a_full_fifo_is_already_pending() {
    let _g = serial();
    let dir = TempDir::new();
    let ((a, _, _), (b, _, _)) = pair(&dir.path("full"));
    let mut pending = 0;
    for _ in 0..200_000 {
        if a.notify().unwrap() == Notify::AlreadyPending {
            pending += 1;
            break;
        }
    }
    assert_eq!(
        pending, 1,
        "a 64 KiB FIFO must fill within 200000 one-byte kicks"
    );
    assert_eq!(b.wait(Some(Duration::ZERO)).unwrap(), Wakeup::Notified);
}

#[test]
fn peer_that_drops_is_peer_gone_for_wait_and_notify() {
    let _g = serial();
    let dir = TempDir::new();
    let ((a, _, _), b) = pair(&dir.path("gone"));
    drop(b);
    let start = Instant::now();
    let e = a.wait(Some(Duration::from_secs(5))).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(1));
    assert!(matches!(e, Error::PeerGone { .. }), "{e}");
    assert!(e.to_string().contains("disconnected"), "{e}");
    let e = a.notify().unwrap_err();
    assert!(matches!(e, Error::PeerGone { .. }), "{e}");
}

#[test]
fn stale_fifos_from_a_crashed_run_are_replaced() {
    let _g = serial();
    let dir = TempDir::new();
    let path = dir.path("stale");
    mkfifo(&path, Mode::S_IRUSR | Mode::S_IWUSR).unwrap();
    mkfifo(&sibling(&path), Mode::S_IRUSR | Mode::S_IWUSR).unwrap();
    let ((a, _, _), (b, _, _)) = pair(&path);
    a.notify().unwrap();
    assert_eq!(
        b.wait(Some(Duration::from_secs(1))).unwrap(),
        Wakeup::Notified
    );
}

#[test]
fn refuses_symlink_regular_file_and_foreign_fifo_at_path() {
    let _g = serial();
    let dir = TempDir::new();
    let target = dir.path("target");
    mkfifo(&target, Mode::S_IRUSR | Mode::S_IWUSR).unwrap();
    let link = dir.path("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let e = spawn_side(&link, 1).join().unwrap().unwrap_err();
    assert!(
        matches!(e, Error::RefusedPath { .. }) && e.to_string().contains("symlink"),
        "{e}"
    );

    let file = dir.path("file");
    std::fs::write(&file, b"x").unwrap();
    let e = spawn_side(&file, 1).join().unwrap().unwrap_err();
    assert!(matches!(e, Error::RefusedPath { .. }), "{e}");

    if is_root() {
        let foreign = dir.path("foreign");
        mkfifo(&foreign, Mode::S_IRUSR | Mode::S_IWUSR).unwrap();
        chown(
            &foreign,
            Some(Uid::from_raw(NOBODY)),
            Some(Gid::from_raw(NOBODY)),
        )
        .unwrap();
        let e = spawn_side(&foreign, 1).join().unwrap().unwrap_err();
        assert!(e.to_string().contains("owned by uid 65534"), "{e}");
    }
}

#[test]
fn rejects_peer_memory_without_seals() {
    let _g = serial();
    let dir = TempDir::new();
    let path = dir.path("unsealed");
    let honest = spawn_side(&path, 1);
    wait_for_path(&path);
    let hostile = spawn_side_with(&path, 2, unsealed_memfd(MEM), 5);
    let e = honest.join().unwrap().unwrap_err();
    assert!(matches!(e, Error::BadPeerMemory(_)), "{e}");
    assert!(e.to_string().contains("F_SEAL_SHRINK"), "{e}");
    // The hostile side got a valid peer; it may see us leave at any time.
    let _ = hostile.join().unwrap();
}

#[test]
fn times_out_when_no_peer_arrives_and_cleans_up() {
    let _g = serial();
    let dir = TempDir::new();
    let path = dir.path("lonely");
    let e = spawn_side_with(&path, 1, sealed_memfd(MEM), 1)
        .join()
        .unwrap()
        .unwrap_err();
    assert!(matches!(e, Error::ConnectTimeout { .. }), "{e}");
    assert!(lstat(&path).is_err() && lstat(&sibling(&path)).is_err());
}

#[test]
fn set_up_and_tear_down_leak_no_fds() {
    let _g = serial();
    let dir = TempDir::new();
    // Warm up lazily opened fds (thread machinery, /proc handles).
    drop(pair(&dir.path("warm")));
    let before = count_fds();
    for i in 0..5 {
        drop(pair(&dir.path(&format!("leak{i}"))));
    }
    assert_eq!(count_fds(), before);
}
