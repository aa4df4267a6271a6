//! Meeting: two sides given the same `PATH` find each other in either
//! order or at once, leave no name behind, replace what a dead launcher
//! left, give up in time, and create their nodes mode 0600.

use super::harness::*;
use super::{Subject, Suite};
use crate::test_utils::*;
use crate::{ConnectOptions, Error, Wakeup};
use nix::sys::stat::{lstat, SFlag};
use std::os::fd::AsFd;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

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
