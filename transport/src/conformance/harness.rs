//! How a conformance test sets up its sides: one side per thread, each
//! with its own sealed memfd; a pair started in a chosen order; a listener
//! facing a peer played by hand on a bare socket; and the fd and name
//! checks the tests share.

use super::{Subject, Suite};
use crate::test_utils::*;
use crate::{ConnectOptions, Error, PeerInfo, Transport};
use nix::sys::stat::lstat;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// A connected side: the link, what it learned about the peer, and its
/// own memfd (kept open: a FIFO peer reaches it through /proc).
pub type Side<T> = (T, PeerInfo, OwnedFd);

/// Connect one side with a fresh sealed memfd.
pub(super) fn connect_side<T: Transport>(
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
pub(super) fn spawn_side<T: Subject>(
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
    let connected = |side: std::thread::Result<crate::Result<Side<T>>>, tag: u64| {
        side.unwrap()
            .unwrap_or_else(|e| panic!("{}: side {tag} did not connect: {e}", T::KIND))
    };
    (connected(a.join(), 1), connected(b.join(), 2))
}

/// The tag [`handshake`] put into the peer's features.
pub(super) fn features_tag(peer: &PeerInfo) -> u64 {
    peer.handshake.features >> 8
}

/// What this process's fds point at (for leak reports).
pub(super) fn open_fds() -> Vec<PathBuf> {
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

pub(super) fn assert_names_gone(s: &Suite, path: &Path, dir: &TempDir) {
    for name in (s.names)(path) {
        assert!(lstat(&name).is_err(), "{} left behind", name.display());
    }
    assert_eq!(
        std::fs::read_dir(&dir.0).unwrap().count(),
        0,
        "PATH or a temporary name left behind"
    );
}

pub(super) fn connect_with_memory<T: Transport>(
    s: &Suite,
    path: &Path,
    memory: &OwnedFd,
    opts: &ConnectOptions,
) -> crate::Result<(T, PeerInfo)> {
    T::connect(path, &(s.handshake)(1, memory), memory.as_fd(), opts)
}

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
    let err = match listener.join().unwrap() {
        Ok(_) => panic!("{} listener accepted a peer it must refuse", T::KIND),
        Err(e) => e,
    };
    drop(sock);
    err
}

/// An honest raw peer's fds: `memory`, then what the transport adds.
pub(super) fn raw_refusal<T: Subject>(
    s: &Suite,
    path: &Path,
    record: &[u8],
    memory: &OwnedFd,
) -> Error {
    let extra = (s.raw_peer_fds.expect("a socket-rendezvous transport"))();
    let fds: Vec<&OwnedFd> = std::iter::once(memory).chain(&extra).collect();
    listener_vs_raw_peer::<T>(s, path, record, &fds)
}
