//! The vhost-user sockets: `--socket`, where QEMU connects, and the
//! private socket behind the `qemu72_relay`.
//!
//! Whoever connects to a vhost-user socket first gets to describe "the
//! VM's" memory to us, and we re-share that memory with the peer launcher:
//! the connector must be QEMU. So:
//!
//! * **`--socket`** is created without a check-then-use race: bound under
//!   a private temporary name in the same directory, `chmod`ed, and only
//!   then renamed into place with `RENAME_NOREPLACE`. If something is
//!   already there, it is swapped out atomically (`RENAME_EXCHANGE`) and
//!   looked at where nobody else can change it: a socket (a stale one from
//!   a dead backend) is removed, anything else is swapped back untouched
//!   and refused. Nothing of someone else's is ever deleted on a guess.
//! * **Who connects** is checked with `SO_PEERCRED` before a byte is read:
//!   our own uid, or one named with `--allow-uid` (QEMU run as another
//!   user). Anyone else is refused with one line and the socket keeps
//!   waiting for QEMU. The socket is mode 0600, or 0666 when `--allow-uid`
//!   asks for other users (then `SO_PEERCRED` alone decides).
//! * **The private socket** lives in a fresh mode-0700 directory with an
//!   unpredictable name (not `$TMPDIR/sharenet-vhost-PID.sock`, which any
//!   local user could connect to, or squat on, before our relay did); the
//!   directory is removed once the backend accepted, and on exit.

use nix::errno::Errno;
use nix::fcntl::{renameat2, RenameFlags};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::sys::stat::{lstat, SFlag};
use nix::unistd::getuid;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// A fresh mode-0700 directory for the private socket, removed on drop.
pub(super) struct PrivateDir {
    path: PathBuf,
}

impl PrivateDir {
    /// `$TMPDIR/sharenet-vhost-PID-RANDOM/`, created (never reused: `mkdir`
    /// fails if the name exists, and we pick another).
    pub(super) fn create() -> std::io::Result<Self> {
        let base = std::env::temp_dir();
        let mut last = None;
        for _ in 0..16 {
            let path = base.join(format!(
                "sharenet-vhost-{}-{:016x}",
                std::process::id(),
                random()
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(PrivateDir { path }),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no name left")))
    }

    /// Where the backend listens for the relay.
    pub(super) fn socket(&self) -> PathBuf {
        self.path.join("backend.sock")
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// 64 bits nobody can guess from outside (the kernel's random source).
fn random() -> u64 {
    use std::io::Read;
    let mut b = [0u8; 8];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    if read.is_err() {
        // No urandom: the clock's nanoseconds still vary per run.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return t.as_nanos() as u64 ^ (std::process::id() as u64).rotate_left(32);
    }
    u64::from_ne_bytes(b)
}

/// Listen on `path` (QEMU's `-chardev socket,path=...`), mode 0600 — or
/// 0666 when other uids are allowed — replacing only a stale socket. The
/// error is the line to print.
pub(super) fn bind_public(path: &Path, others_allowed: bool) -> Result<UnixListener, String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let name = name.unwrap_or_else(|| "socket".into());
    let tmp = dir.join(format!(
        ".{name}.{}.{:08x}.tmp",
        std::process::id(),
        random() as u32
    ));
    let listener = UnixListener::bind(&tmp)
        .map_err(|e| format!("cannot listen on --socket {}: {e}", path.display()))?;
    let mode = if others_allowed { 0o666 } else { 0o600 };
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", tmp.display()))
        .and_then(|()| place(&tmp, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(listener)
}

/// Rename our socket at `tmp` to `path`, replacing only a socket.
fn place(tmp: &Path, path: &Path) -> Result<(), String> {
    let rename = |flags| renameat2(None, tmp, None, path, flags);
    match rename(RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => return Ok(()),
        Err(Errno::EEXIST) => {}
        Err(e) => return Err(format!("cannot put the socket at {}: {e}", path.display())),
    }
    // Something is there: swap it out, then look at it at our name.
    rename(RenameFlags::RENAME_EXCHANGE)
        .map_err(|e| format!("cannot put the socket at {}: {e}", path.display()))?;
    let was = lstat(tmp).map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT);
    if was == Ok(SFlag::S_IFSOCK) {
        // A socket left by a dead backend (or a live one we just took the
        // name from: QEMU connects to whoever has the path now).
        let _ = std::fs::remove_file(tmp);
        return Ok(());
    }
    // Not ours to remove: put it back as it was.
    let back = rename(RenameFlags::RENAME_EXCHANGE);
    Err(format!(
        "--socket {}: something that is not a socket is already there{}; remove it or pick another path",
        path.display(),
        if back.is_err() {
            format!(" (and putting it back failed: it is now at {})", tmp.display())
        } else {
            String::new()
        }
    ))
}

/// Accept connections on `listener` until one comes from our own uid or
/// from one in `allowed`; refuse the others with one line each.
pub(super) fn accept_qemu(
    listener: &UnixListener,
    allowed: &[u32],
    path: &Path,
) -> std::io::Result<UnixStream> {
    let me = getuid().as_raw();
    loop {
        let (s, _) = listener.accept()?;
        let cred = match getsockopt(&s, PeerCredentials) {
            Ok(c) => c,
            Err(e) => {
                eprintln!(
                    "refused a vhost-user connection on {}: cannot tell who it is (SO_PEERCRED: {e})",
                    path.display()
                );
                continue;
            }
        };
        let uid = cred.uid();
        if uid == me || allowed.contains(&uid) {
            return Ok(s);
        }
        eprintln!(
            "refused a vhost-user connection on {} from pid {} uid {uid}: not our uid {me}; \
             if QEMU runs as that user, pass --allow-uid {uid}",
            path.display(),
            cred.pid()
        );
    }
}
