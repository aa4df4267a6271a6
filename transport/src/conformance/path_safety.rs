//! Path safety: what is already at `PATH` is never followed, never
//! overwritten and never used when it is not ours.

use super::harness::*;
use super::{Subject, Suite};
use crate::test_utils::*;
use crate::Error;
use nix::sys::stat::Mode;
use nix::unistd::{chown, mkfifo, Gid, Uid};

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
