//! The peer going away: dropped, closed after kicking, or killed as a
//! process, it is [`Error::PeerGone`](crate::Error::PeerGone) within a
//! second, and stays so.

use super::harness::*;
use super::{Subject, Suite};
use crate::test_utils::*;
use crate::{Error, Wakeup};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

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
