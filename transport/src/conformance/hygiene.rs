//! Hostile memory and fd hygiene: unsealed memory is refused, every fd is
//! close-on-exec, and no set-up or refusal leaks an fd.

use super::harness::*;
use super::{Subject, Suite};
use crate::test_utils::*;
use crate::{ConnectOptions, Error};
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use std::os::fd::{AsFd, AsRawFd};
use std::thread;
use std::time::Duration;

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
    for fd in [a.as_fd().as_raw_fd(), a_peer.memory.as_raw_fd()] {
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
