//! Safe handling of rendezvous paths: never follow a symlink, never touch
//! something owned by another uid, create with mode 0600.

use crate::{Error, Result};
use nix::sys::stat::{lstat, SFlag};
use nix::unistd::{getuid, Uid};
use std::path::Path;

/// What is at a rendezvous path (looked at with `lstat`, never followed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// Nothing.
    Missing,
    /// A FIFO owned by us.
    Fifo,
    /// A Unix socket owned by us.
    Socket,
}

/// Look at `path` without following symlinks. Anything that is not ours to
/// use or replace (a symlink, a regular file, a directory, anything owned by
/// another uid) is refused with an error that says what was found.
pub fn inspect(path: &Path) -> Result<Found> {
    let st = match lstat(path) {
        Ok(st) => st,
        Err(nix::errno::Errno::ENOENT) => return Ok(Found::Missing),
        Err(e) => return Err(Error::sys(format!("lstat {}", path.display()), e)),
    };
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    let refuse = |reason: String| {
        Err(Error::RefusedPath {
            path: path.to_path_buf(),
            reason,
        })
    };
    if Uid::from_raw(st.st_uid) != getuid() {
        return refuse(format!(
            "it is owned by uid {}, we run as uid {}",
            st.st_uid,
            getuid()
        ));
    }
    if kind == SFlag::S_IFIFO {
        Ok(Found::Fifo)
    } else if kind == SFlag::S_IFSOCK {
        Ok(Found::Socket)
    } else if kind == SFlag::S_IFLNK {
        refuse("it is a symlink (rendezvous paths are never followed)".into())
    } else {
        refuse(format!(
            "it is not a FIFO or socket of ours (mode {:#o}); remove it or pick another path",
            st.st_mode
        ))
    }
}

/// The directory a rendezvous path lives in, which must exist.
pub fn parent_dir(path: &Path) -> Result<&Path> {
    if path.as_os_str().is_empty() {
        return Err(Error::BadPath {
            path: path.to_path_buf(),
            reason: "empty path".into(),
        });
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(Error::BadPath {
            path: path.to_path_buf(),
            reason: format!("directory {} does not exist", dir.display()),
        });
    }
    Ok(dir)
}
