//! Notifications: a kick wakes the peer, many kicks are one wake-up, the
//! polled fd turns readable, and a full channel is a wake-up already
//! pending.

use super::harness::*;
use super::{Subject, Suite};
use crate::test_utils::*;
use crate::{ConnectOptions, Notify, Wakeup};
use std::thread;
use std::time::{Duration, Instant};

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

pub fn polled_fd_turns_readable_on_a_kick<T: Subject>(s: &Suite) {
    let _g = serial();
    let dir = TempDir::new();
    let ((a, _, _am), (b, _, _bm)) = pair::<T>(s, &dir.path("link"), Duration::ZERO);
    // What a launcher hands to poll/epoll.
    let fd = b.as_fd();
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
