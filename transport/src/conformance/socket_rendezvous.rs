//! Transports that meet on a `SOCK_SEQPACKET` socket at `PATH` (`unix:`
//! and `eventfd:`): hostile peers played by bare sockets, a foreign uid, a
//! FIFO at `PATH`, and a listener whose path is taken away.

use super::harness::*;
use super::{Subject, Suite};
use crate::test_utils::*;
use crate::Error;
use crate::{HANDSHAKE_LEN, VERSION};
use nix::sys::stat::Mode;
use nix::unistd::mkfifo;

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
