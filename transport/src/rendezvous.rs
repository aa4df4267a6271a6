//! Meeting the peer at `PATH` on a Unix socket.
//!
//! `unix:PATH` and `eventfd:PATH` both meet here; only what they attach to
//! their handshake differs. Two launchers are started with the same
//! `--sharenet KIND:PATH`, in either order, perhaps in the same
//! millisecond. Exactly one of them must end up listening on `PATH` and the
//! other connected to it. The decision goes:
//!
//! 1. Look at `PATH` without following it ([`crate::path::inspect`]):
//!    a symlink, a regular file or anything of another uid is refused.
//! 2. A socket is there: connect. Success means a peer is listening and we
//!    are the second side. `ECONNREFUSED` means nobody listens any more (a
//!    launcher died and left it behind): remove it — but only if it is still
//!    the very socket we tried, compared by device and inode — and decide
//!    again.
//! 3. Nothing is there: bind a socket under a private temporary name in the
//!    same directory, `chmod` it 0600, `listen`, and only then *hard-link*
//!    it to `PATH`. `link(2)` fails with `EEXIST` instead of replacing, so
//!    if both sides race here exactly one wins; the loser finds a live
//!    listener when it decides again. (A plain `bind` on `PATH` would leave
//!    a window where the path exists with the umask's mode, or where it
//!    exists but nobody listens yet, which a connecting peer would take for
//!    a stale socket.)
//! 4. The listener waits for one connection until the deadline. While it
//!    waits it checks now and then that `PATH` is still its own socket: if
//!    someone removed or replaced it (a racing peer that took it for stale),
//!    nobody could ever reach us, so we give up that socket and decide again.
//! 5. Once a peer is accepted, `PATH` is unlinked: the pair has met and the
//!    name is free for the next pair. Every path we created is removed on
//!    every error path too, if it is still ours.
//!
//! Then [`Rendezvous::exchange`] swaps handshakes. Before anything of ours
//! leaves, `SO_PEERCRED` tells us who connected as the kernel knows it: a
//! process of another uid is refused before it sees our memory fd, and the
//! pid in the peer's handshake must be the kernel's.

use crate::fdpass::{recv_with_fds, send_with_fds};
use crate::path::{inspect, parent_dir, Found};
use crate::{poll_fds, set_nonblocking, Deadline, Error, Handshake, Result, HANDSHAKE_LEN};
use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::socket::{
    accept4, bind, connect, getsockopt, listen, socket, sockopt::PeerCredentials, AddressFamily,
    Backlog, MsgFlags, SockFlag, SockType, UnixAddr,
};
use nix::sys::stat::lstat;
use nix::unistd::{getpid, getuid, linkat, unlink};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod many;

use many::{accept_served, served};
pub use many::{serve_many, Served};

/// How many times we re-decide who listens before declaring the path
/// unusable. Each retry follows a lost race or a stale socket removed;
/// an honest pair settles in two or three.
const MAX_ROUNDS: u32 = 64;
/// How often a waiting listener checks that `PATH` is still its socket.
const LISTEN_SLICE: Duration = Duration::from_millis(50);
/// Connections the listener lets queue. Only one is ever accepted; a
/// little room means a stray extra connect fails fast instead of blocking.
const BACKLOG: i32 = 4;

/// A connected rendezvous socket, and the deadline the rest of the set-up
/// (the handshake) still runs under.
#[derive(Debug)]
pub struct Rendezvous {
    /// The connected `SOCK_SEQPACKET` socket: blocking, close-on-exec.
    pub socket: OwnedFd,
    path: PathBuf,
    timeout: Option<Duration>,
    deadline: Deadline,
}

/// Meet the peer at `path`: whichever side comes first listens, the other
/// connects (see the module docs for the exact steps and races). Gives up
/// with [`Error::ConnectTimeout`] after `timeout` (`None`: never).
pub fn rendezvous(path: &Path, timeout: Option<Duration>) -> Result<Rendezvous> {
    let dir = parent_dir(path)?;
    let addr = UnixAddr::new(path).map_err(|e| Error::BadPath {
        path: path.to_path_buf(),
        reason: format!("cannot be a Unix socket address ({e}; at most 107 bytes)"),
    })?;
    let deadline = Deadline::after(timeout);
    let done = |socket| Rendezvous {
        socket,
        path: path.to_path_buf(),
        timeout,
        deadline,
    };
    if let Some(listener) = served(path) {
        // A switch holds `path` open: take the next member, nobody decides.
        // The timeout bounded the wait for a member; its handshake gets a
        // whole one of its own (one that arrived just before the wait ran
        // out would otherwise be dropped mid-handshake: EPIPE on its side).
        let socket = accept_served(path, &listener, &deadline, timeout)?;
        return Ok(Rendezvous {
            socket,
            path: path.to_path_buf(),
            timeout,
            deadline: Deadline::after(timeout),
        });
    }
    for round in 0..MAX_ROUNDS {
        match inspect(path)? {
            Found::Socket => match try_connect(path, &addr, &deadline, timeout)? {
                Connect::Connected(sock) => return Ok(done(sock)),
                Connect::Refused(id) => unlink_if_same(path, id),
                Connect::Vanished => {}
            },
            Found::Missing => match try_listen(path, dir, &deadline, timeout)? {
                Listen::Accepted(sock) => return Ok(done(sock)),
                Listen::Lost => {}
            },
            Found::Fifo => {
                return Err(Error::RefusedPath {
                    path: path.to_path_buf(),
                    reason: "it is a FIFO; is the peer using `fifo:` instead of a socket \
                             transport?"
                        .into(),
                })
            }
        }
        if deadline.expired() {
            return Err(Error::connect_timeout(path, timeout));
        }
        // An honest race settles at once; only back off if it does not.
        if round >= 8 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    Err(Error::RefusedPath {
        path: path.to_path_buf(),
        reason: format!(
            "could not settle who listens after {MAX_ROUNDS} attempts: something keeps \
             removing or replacing it"
        ),
    })
}

impl Rendezvous {
    /// The [`Error::ConnectTimeout`] for this rendezvous.
    fn timeout_error(&self) -> Error {
        Error::connect_timeout(&self.path, self.timeout)
    }

    /// Swap handshakes: check the peer's uid, send `local` with `fds`
    /// attached, receive the peer's record, decode it (length, magic,
    /// version) and check its pid against `SO_PEERCRED`.
    ///
    /// Returns the decoded, *not yet validated* handshake and every fd that
    /// came with it; the caller checks how many it expects and ends with
    /// [`crate::accept_peer`].
    pub fn exchange(
        &self,
        local: &Handshake,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(Handshake, Vec<OwnedFd>)> {
        // Before anything of ours leaves: is the peer one of us?
        let cred = peer_cred(self.socket.as_fd())?;
        send_with_fds(self.socket.as_fd(), &local.encode(), fds)?;

        // One spare byte: a longer record then shows up as too long.
        let mut buf = [0u8; HANDSHAKE_LEN + 1];
        let got = loop {
            let [ready] = poll_fds([self.socket.as_fd()], self.deadline.remaining())?;
            if !ready.readable && !ready.hangup {
                if self.deadline.expired() {
                    return Err(self.timeout_error());
                }
                continue;
            }
            match recv_with_fds(self.socket.as_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(Some(got)) => break got,
                // Hung up with nothing to read: there will never be a record.
                Ok(None) if ready.hangup => return Err(gone_before_handshake(cred.pid, "hang-up")),
                Ok(None) => continue,
                Err(Error::PeerGone { reason, .. }) => {
                    return Err(gone_before_handshake(cred.pid, &reason))
                }
                Err(e) => return Err(e),
            }
        };
        if got.len == 0 && got.fds.is_empty() {
            return Err(gone_before_handshake(cred.pid, "EOF"));
        }
        let len = got.len.min(buf.len());
        let handshake = match Handshake::decode(&buf[..len]) {
            Ok(h) => h,
            Err(Error::ShortHandshake { expected, .. }) => {
                return Err(Error::ShortHandshake {
                    got: got.len,
                    expected,
                })
            }
            Err(e) => return Err(e),
        };
        cred.check_pid(handshake.pid)?;
        Ok((handshake, got.fds))
    }
}

/// The peer process as the kernel saw it when the connection was made
/// (its uid is ours: [`peer_cred`] refuses any other).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PeerCred {
    /// The peer's pid (in our pid namespace).
    pid: u32,
}

impl PeerCred {
    /// Check the pid a handshake claims against the pid the kernel reports.
    /// A mismatch means the record was forwarded or forged by someone who is
    /// not the process that will share its memory with us.
    fn check_pid(&self, claimed: u32) -> Result<()> {
        if claimed != self.pid {
            return Err(Error::PeerRefused(format!(
                "handshake pid {claimed} but SO_PEERCRED says {}",
                self.pid
            )));
        }
        Ok(())
    }
}

/// Ask the kernel who is on the other end of `sock` (`SO_PEERCRED`) and
/// refuse anyone running under another uid. Call this *before* sending our
/// memory fd: a process of another user must not get it.
fn peer_cred(sock: BorrowedFd<'_>) -> Result<PeerCred> {
    let cred = getsockopt(&sock, PeerCredentials).map_err(|e| Error::sys("SO_PEERCRED", e))?;
    let ours = getuid().as_raw();
    if cred.uid() != ours {
        return Err(Error::PeerRefused(format!(
            "peer uid {} differs from ours ({ours})",
            cred.uid()
        )));
    }
    // A pid the kernel cannot map into our namespace reads as 0, and 0 is
    // never a valid handshake pid, so `check_pid` will refuse it.
    let pid = u32::try_from(cred.pid()).unwrap_or(0);
    Ok(PeerCred { pid })
}

fn gone_before_handshake(cred_pid: u32, what: &str) -> Error {
    Error::PeerGone {
        pid: 0,
        reason: format!(
            "process {cred_pid} closed the socket before sending its handshake ({what})"
        ),
    }
}

/// Device and inode: which filesystem object a path names right now.
type Identity = (nix::libc::dev_t, nix::libc::ino_t);

fn identity(path: &Path) -> Option<Identity> {
    lstat(path).ok().map(|st| (st.st_dev, st.st_ino))
}

/// Remove `path` if it still names `id`. The check and the unlink are two
/// steps, so a racing peer can slip in between; the listener's "is `PATH`
/// still mine" check (step 4 of the module docs) recovers from that.
fn unlink_if_same(path: &Path, id: Option<Identity>) {
    if id.is_some() && identity(path) == id {
        let _ = unlink(path);
    }
}

/// A path we created, removed when dropped if it is still ours.
#[derive(Debug)]
struct Placed {
    path: PathBuf,
    id: Option<Identity>,
}

impl Drop for Placed {
    fn drop(&mut self) {
        unlink_if_same(&self.path, self.id);
    }
}

enum Connect {
    Connected(OwnedFd),
    /// Nobody listens on the socket that had this identity.
    Refused(Option<Identity>),
    /// The path went away between looking and connecting.
    Vanished,
}

fn new_socket(nonblocking: bool) -> Result<OwnedFd> {
    let mut flags = SockFlag::SOCK_CLOEXEC;
    if nonblocking {
        flags |= SockFlag::SOCK_NONBLOCK;
    }
    socket(AddressFamily::Unix, SockType::SeqPacket, flags, None)
        .map_err(|e| Error::sys("socket(AF_UNIX, SOCK_SEQPACKET)", e))
}

fn try_connect(
    path: &Path,
    addr: &UnixAddr,
    deadline: &Deadline,
    timeout: Option<Duration>,
) -> Result<Connect> {
    let id = identity(path);
    // Nonblocking so a listener with a full backlog (not ours, or stopped)
    // cannot hold us past the deadline: Unix sockets then say EAGAIN.
    let sock = new_socket(true)?;
    loop {
        match connect(sock.as_raw_fd(), addr) {
            Ok(()) | Err(Errno::EISCONN) => break,
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => {
                if deadline.expired() {
                    return Err(Error::connect_timeout(path, timeout));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(Errno::ECONNREFUSED) => return Ok(Connect::Refused(id)),
            Err(Errno::ENOENT) => return Ok(Connect::Vanished),
            Err(Errno::EPROTOTYPE) => {
                return Err(Error::RefusedPath {
                    path: path.to_path_buf(),
                    reason: "a socket of another type (not SOCK_SEQPACKET) listens there".into(),
                })
            }
            Err(e) => return Err(Error::sys(format!("connect {}", path.display()), e)),
        }
    }
    set_nonblocking(sock.as_fd(), false)?;
    Ok(Connect::Connected(sock))
}

enum Listen {
    Accepted(OwnedFd),
    /// Someone else's socket is at `PATH` now (we lost the race, or were
    /// displaced): decide again.
    Lost,
}

/// Temporary names must differ between threads of one process too.
static TEMP_SERIAL: AtomicU32 = AtomicU32::new(0);

/// Steps 3 of the module docs: bind under a private name, chmod 0600,
/// listen, and hard-link to `path`. `None` when someone else's socket got
/// there first.
fn publish_listener(path: &Path, dir: &Path) -> Result<Option<(OwnedFd, Placed)>> {
    let sock = new_socket(true)?;

    // Bind under a private name first. Short, so that it fits a sockaddr
    // wherever PATH itself does (give or take a long directory name).
    let mut attempt = 0;
    let temp = loop {
        let n = TEMP_SERIAL.fetch_add(1, Ordering::Relaxed);
        let temp = dir.join(format!(".sn{}.{n}", getpid()));
        let temp_addr = UnixAddr::new(&temp).map_err(|e| Error::BadPath {
            path: path.to_path_buf(),
            reason: format!("temporary socket name {} is unusable ({e})", temp.display()),
        })?;
        match bind(sock.as_raw_fd(), &temp_addr) {
            Ok(()) => break temp,
            // Left over by a dead process that had our pid: take another.
            Err(Errno::EADDRINUSE) if attempt < 16 => attempt += 1,
            Err(e) => return Err(Error::sys(format!("bind {}", temp.display()), e)),
        }
    };
    // bind succeeded, so `temp` is the socket we just created (bind never
    // reuses an existing name or follows a symlink).
    let temp = Placed {
        id: identity(&temp),
        path: temp,
    };
    std::fs::set_permissions(&temp.path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(format!("chmod 0600 {}", temp.path.display()), e))?;
    let backlog = Backlog::new(BACKLOG).map_err(|e| Error::sys("listen backlog", e))?;
    listen(&sock, backlog).map_err(|e| Error::sys("listen", e))?;

    // Publish: link(2) never replaces, so of two racing sides one wins.
    match linkat(None, temp.path.as_path(), None, path, AtFlags::empty()) {
        Ok(()) => {}
        Err(Errno::EEXIST) => return Ok(None),
        Err(e) => {
            return Err(Error::sys(
                format!("link {} to {}", temp.path.display(), path.display()),
                e,
            ))
        }
    }
    let placed = Placed {
        path: path.to_path_buf(),
        id: temp.id,
    };
    drop(temp);
    Ok(Some((sock, placed)))
}

fn try_listen(
    path: &Path,
    dir: &Path,
    deadline: &Deadline,
    timeout: Option<Duration>,
) -> Result<Listen> {
    let Some((sock, placed)) = publish_listener(path, dir)? else {
        return Ok(Listen::Lost);
    };

    // Wait for the peer. `placed` unlinks PATH however we leave, as long as
    // it is still our socket.
    loop {
        let slice = deadline
            .remaining()
            .map_or(LISTEN_SLICE, |left| left.min(LISTEN_SLICE));
        let [ready] = poll_fds([sock.as_fd()], Some(slice))?;
        if ready.readable {
            if let Some(conn) = accept_one(sock.as_fd())? {
                return Ok(Listen::Accepted(conn));
            }
            continue;
        }
        if identity(path) != placed.id {
            // Displaced. A peer may have connected just before that.
            return Ok(match accept_one(sock.as_fd())? {
                Some(conn) => Listen::Accepted(conn),
                None => Listen::Lost,
            });
        }
        if deadline.expired() {
            return Err(Error::connect_timeout(path, timeout));
        }
    }
}

/// Accept one pending connection, if there is one.
fn accept_one(listener: BorrowedFd<'_>) -> Result<Option<OwnedFd>> {
    match accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
        Ok(fd) => {
            // SAFETY: accept4 just returned this new fd; nobody else has it.
            let conn = unsafe { OwnedFd::from_raw_fd(fd) };
            // Accepted sockets do not inherit O_NONBLOCK on Linux, but be sure.
            set_nonblocking(conn.as_fd(), false)?;
            Ok(Some(conn))
        }
        Err(Errno::EAGAIN | Errno::EINTR | Errno::ECONNABORTED) => Ok(None),
        Err(e) => Err(Error::sys("accept4", e)),
    }
}
