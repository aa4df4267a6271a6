//! # The original transport: a pair of named FIFOs
//!
//! This is how the 2008 lguest launcher joined two guests. Two launchers
//! given the same `PATH` meet on two FIFOs, `PATH` and `PATH_`:
//!
//! 1. Under an exclusive `flock` on the directory (so two arrivals cannot
//!    both decide to be first), a launcher tries to open `PATH` for writing
//!    without blocking. If that works, a first launcher is already reading
//!    it: we are the *second*. If `PATH` is missing, or is a stale FIFO
//!    with no reader (`ENXIO`: its creator crashed), we are the *first*: we
//!    make both FIFOs mode 0600 under temporary names, open our read end,
//!    and rename them into place (replacing any stale ones atomically).
//! 2. The second opens `PATH_` for reading, then writes its handshake down
//!    `PATH`. The first reads it, opens `PATH_` for writing, writes its own
//!    handshake back, and unlinks both names: the pair is set up and the
//!    path is free for the next pair.
//! 3. Each side reaches the other's memory by opening `/proc/PID/fd/N` of
//!    the memfd named in the handshake (same uid only; the kernel enforces
//!    ptrace-style access too). The pid and the fd number are the peer's
//!    word, so we look first (`stat` follows the link without opening) and
//!    open only a regular file, with `O_NOCTTY | O_NONBLOCK` and a second
//!    look at what we got: a terminal named there would otherwise become
//!    our controlling terminal, and a device's open could block.
//!
//! Every wait for the peer during the rendezvous honours the deadline,
//! including writing our handshake into a FIFO the peer filled and does
//! not read.
//!
//! From then on a notification is one byte written to the peer's FIFO. The
//! original wrote its kick back into its *read* fd — a bug that only worked
//! because a FIFO opened read-write loops back to itself; here each side
//! writes only to the FIFO the peer reads. A wake-up drains every pending
//! byte, so many kicks coalesce into one wake-up. When the peer dies its
//! write end closes and our read end reports hang-up: that is "peer gone".
//! A full FIFO (64 KiB of unread kicks) in nonblocking mode means the peer
//! already has a wake-up pending, so the write is counted as done.

#![deny(missing_docs)]

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::{getuid, mkfifo, read, unlink, write};
use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use transport::{
    accept_peer, path, poll_fds, set_nonblocking, ConnectOptions, Deadline, Error, Handshake,
    Notify, PeerInfo, Result, Transport, Wakeup, HANDSHAKE_LEN,
};

/// Reads of up to 256 kicks each per [`Transport::wait`], at most.
const MAX_DRAIN: usize = 16;

/// One launcher's end of a FIFO pair.
#[derive(Debug)]
pub struct Fifo {
    /// The FIFO the peer writes to (our wake-ups).
    rx: OwnedFd,
    /// The FIFO the peer reads (our notifications).
    tx: OwnedFd,
    peer_pid: u32,
}

fn sibling(path: &Path) -> PathBuf {
    let mut s: OsString = path.as_os_str().to_owned();
    s.push("_");
    PathBuf::from(s)
}

fn tmp_name(path: &Path, tag: &str) -> PathBuf {
    let mut s: OsString = path.as_os_str().to_owned();
    s.push(format!(".{tag}.{}.tmp", std::process::id()));
    PathBuf::from(s)
}

/// Open `p` close-on-exec (std's default), never following a symlink.
/// `flags` picks the access mode (`O_RDONLY`/`O_WRONLY`) and extra flags
/// such as `O_NONBLOCK`.
fn open_fd(p: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
    let write = flags.contains(OFlag::O_WRONLY);
    let extra = (flags - OFlag::O_WRONLY) | OFlag::O_NOFOLLOW;
    std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(extra.bits())
        .open(p)
        .map(OwnedFd::from)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(Errno::EIO as i32)))
}

/// Which role this launcher took at rendezvous.
enum Role {
    /// We created the FIFOs and read `PATH`.
    First { rx: OwnedFd },
    /// We found a live first side and write `PATH`.
    Second { tx: OwnedFd },
}

/// Step 1 of the rendezvous, under the directory lock.
fn choose_role(path: &Path) -> Result<Role> {
    let dir = path::parent_dir(path)?;
    let dir_fd = std::fs::File::open(dir)
        .map_err(|e| Error::io(format!("open directory {}", dir.display()), e))?;
    // Held until this function returns; dropping it unlocks.
    let _lock = Flock::lock(dir_fd, FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::sys(format!("lock directory {}", dir.display()), e))?;
    let side = sibling(path);
    match path::inspect(path)? {
        path::Found::Fifo => match open_fd(path, OFlag::O_WRONLY | OFlag::O_NONBLOCK) {
            Ok(tx) => return Ok(Role::Second { tx }),
            Err(Errno::ENXIO) => {} // stale: nobody reads it; replace below
            Err(e) => return Err(Error::sys(format!("open {}", path.display()), e)),
        },
        path::Found::Socket => {
            return Err(Error::RefusedPath {
                path: path.to_path_buf(),
                reason: "it is a socket (a unix:/eventfd: launcher?), not a FIFO".into(),
            })
        }
        path::Found::Missing => {}
    }
    // The sibling must also be ours to replace.
    if path::inspect(&side)? == path::Found::Socket {
        return Err(Error::RefusedPath {
            path: side,
            reason: "it is a socket, not a FIFO".into(),
        });
    }
    let (tmp_a, tmp_b) = (tmp_name(path, "a"), tmp_name(path, "b"));
    let _ = unlink(&tmp_a);
    let _ = unlink(&tmp_b);
    let mk = |p: &Path| {
        mkfifo(p, Mode::S_IRUSR | Mode::S_IWUSR)
            .map_err(|e| Error::sys(format!("mkfifo {}", p.display()), e))
    };
    mk(&tmp_a)?;
    if let Err(e) = mk(&tmp_b) {
        let _ = unlink(&tmp_a);
        return Err(e);
    }
    let result = (|| {
        let rx = open_fd(&tmp_a, OFlag::O_RDONLY | OFlag::O_NONBLOCK)
            .map_err(|e| Error::sys(format!("open {}", tmp_a.display()), e))?;
        std::fs::rename(&tmp_b, &side)
            .map_err(|e| Error::io(format!("rename to {}", side.display()), e))?;
        std::fs::rename(&tmp_a, path)
            .map_err(|e| Error::io(format!("rename to {}", path.display()), e))?;
        Ok(Role::First { rx })
    })();
    if result.is_err() {
        let _ = unlink(&tmp_a);
        let _ = unlink(&tmp_b);
    }
    result
}

/// Read exactly one handshake from `fd` (nonblocking), waiting up to the
/// deadline (set `timeout` ago, for the error). A writer that closes early
/// is reported as a short handshake.
fn read_handshake(
    fd: BorrowedFd<'_>,
    deadline: &Deadline,
    path: &Path,
    timeout: Option<Duration>,
) -> Result<Handshake> {
    let mut buf = [0u8; HANDSHAKE_LEN];
    let mut got = 0;
    let mut seen_writer = false;
    while got < HANDSHAKE_LEN {
        if deadline.expired() {
            return Err(Error::connect_timeout(path, timeout));
        }
        let wait = deadline
            .remaining()
            .map_or(Duration::from_millis(100), |r| {
                r.min(Duration::from_millis(100))
            });
        let [r] = poll_fds([fd], Some(wait))?;
        if !r.readable && !r.hangup {
            continue;
        }
        match read(fd.as_raw_fd(), &mut buf[got..]) {
            Ok(0) => {
                // No writer yet (before the peer opened) or the peer left.
                if seen_writer || got > 0 {
                    return Err(Error::ShortHandshake {
                        got,
                        expected: HANDSHAKE_LEN,
                    });
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(n) => {
                seen_writer = true;
                got += n;
            }
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
            Err(e) => return Err(Error::sys("read handshake", e)),
        }
    }
    Handshake::decode(&buf)
}

/// Write our handshake into the peer's FIFO (nonblocking), waiting for
/// room up to the deadline: a peer that filled its own FIFO and never
/// reads it must not keep us here forever.
fn write_all(
    fd: BorrowedFd<'_>,
    mut bytes: &[u8],
    deadline: &Deadline,
    path: &Path,
    timeout: Option<Duration>,
) -> Result<()> {
    while !bytes.is_empty() {
        match write(fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => {
                if deadline.expired() {
                    return Err(Error::connect_timeout(path, timeout));
                }
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(Errno::EPIPE) => {
                return Err(Error::PeerGone {
                    pid: 0,
                    reason: "FIFO closed during handshake".into(),
                })
            }
            Err(e) => return Err(Error::sys("write handshake", e)),
        }
    }
    Ok(())
}

/// Open the peer's memory through `/proc/PID/fd/N` after checking that the
/// process belongs to our uid.
fn open_peer_memory(h: &Handshake) -> Result<OwnedFd> {
    h.validate()?;
    let proc_dir = PathBuf::from(format!("/proc/{}", h.pid));
    let st = nix::sys::stat::stat(&proc_dir)
        .map_err(|e| Error::PeerRefused(format!("peer pid {} not found in /proc: {e}", h.pid)))?;
    if st.st_uid != getuid().as_raw() {
        return Err(Error::PeerRefused(format!(
            "peer pid {} runs as uid {}, we run as uid {}",
            h.pid,
            st.st_uid,
            getuid()
        )));
    }
    if h.mem_fd < 0 {
        return Err(Error::BadHandshake {
            field: "mem_fd",
            value: h.mem_fd as u32 as u64,
            reason: "the FIFO transport needs the peer's memory fd number".into(),
        });
    }
    let p = proc_dir.join("fd").join(h.mem_fd.to_string());
    // Look before opening: `stat` follows the magic link without opening
    // what is behind it. Opening a terminal would make it our controlling
    // terminal (we may be a session leader), opening a device may block or
    // have side effects; only a regular file (a memfd) is worth opening.
    let before = nix::sys::stat::stat(&p)
        .map_err(|e| Error::BadPeerMemory(format!("cannot look at {}: {e}", p.display())))?;
    check_regular(&p, before.st_mode)?;
    // Not O_NOFOLLOW: /proc/PID/fd/N is a magic link we mean to follow.
    // O_NOCTTY and O_NONBLOCK all the same: the peer may have put another
    // file under that number since we looked.
    let fd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags((OFlag::O_NOCTTY | OFlag::O_NONBLOCK).bits())
        .open(&p)
        .map(OwnedFd::from)
        .map_err(|e| Error::BadPeerMemory(format!("cannot open {}: {e}", p.display())))?;
    let after = nix::sys::stat::fstat(fd.as_raw_fd())
        .map_err(|e| Error::sys(format!("fstat {}", p.display()), e))?;
    check_regular(&p, after.st_mode)?;
    if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino) {
        return Err(Error::BadPeerMemory(format!(
            "{} changed between our look and our open; the peer swapped its fds",
            p.display()
        )));
    }
    Ok(fd)
}

/// The peer's memory fd must name a regular file (a memfd), nothing else.
fn check_regular(p: &Path, mode: u32) -> Result<()> {
    let kind = SFlag::from_bits_truncate(mode) & SFlag::S_IFMT;
    if kind == SFlag::S_IFREG {
        return Ok(());
    }
    let what = match kind {
        SFlag::S_IFCHR => "a character device (a terminal?)",
        SFlag::S_IFBLK => "a block device",
        SFlag::S_IFIFO => "a FIFO or pipe",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFDIR => "a directory",
        _ => "not a regular file",
    };
    Err(Error::BadPeerMemory(format!(
        "{} is {what}, not a memfd; refused without opening it",
        p.display()
    )))
}

impl Transport for Fifo {
    const KIND: &'static str = "fifo";

    fn connect(
        path: &Path,
        local: &Handshake,
        memory: BorrowedFd<'_>,
        opts: &ConnectOptions,
    ) -> Result<(Self, PeerInfo)> {
        let deadline = Deadline::after(opts.timeout);
        let side = sibling(path);
        let (rx, tx, peer) = match choose_role(path)? {
            Role::Second { tx } => {
                let rx = open_fd(&side, OFlag::O_RDONLY | OFlag::O_NONBLOCK)
                    .map_err(|e| Error::sys(format!("open {}", side.display()), e))?;
                write_all(tx.as_fd(), &local.encode(), &deadline, path, opts.timeout)?;
                let peer = read_handshake(rx.as_fd(), &deadline, path, opts.timeout)?;
                (rx, tx, peer)
            }
            Role::First { rx } => {
                let cleanup = || {
                    let _ = unlink(path);
                    let _ = unlink(&side);
                };
                let peer = match read_handshake(rx.as_fd(), &deadline, path, opts.timeout) {
                    Ok(p) => p,
                    Err(e) => {
                        cleanup();
                        return Err(e);
                    }
                };
                let tx = loop {
                    match open_fd(&side, OFlag::O_WRONLY | OFlag::O_NONBLOCK) {
                        Ok(fd) => break fd,
                        Err(Errno::ENXIO) if !deadline.expired() => {
                            std::thread::sleep(Duration::from_millis(1))
                        }
                        Err(e) => {
                            cleanup();
                            return Err(Error::sys(format!("open {}", side.display()), e));
                        }
                    }
                };
                // Both ends are open: the names have done their job.
                cleanup();
                write_all(tx.as_fd(), &local.encode(), &deadline, path, opts.timeout)?;
                (rx, tx, peer)
            }
        };
        let peer_memory = open_peer_memory(&peer)?;
        let info = accept_peer(peer, peer_memory, memory)?;
        set_nonblocking(tx.as_fd(), opts.nonblocking_writes)?;
        Ok((
            Fifo {
                rx,
                tx,
                peer_pid: info.handshake.pid,
            },
            info,
        ))
    }

    fn notify(&self) -> Result<Notify> {
        loop {
            match write(self.tx.as_fd(), &[1u8]) {
                Ok(_) => return Ok(Notify::Sent),
                Err(Errno::EAGAIN) => return Ok(Notify::AlreadyPending),
                Err(Errno::EINTR) => continue,
                Err(Errno::EPIPE) => {
                    return Err(Error::PeerGone {
                        pid: self.peer_pid,
                        reason: "its FIFO has no reader (EPIPE)".into(),
                    })
                }
                Err(e) => return Err(Error::sys("write notification", e)),
            }
        }
    }

    fn wait(&self, timeout: Option<Duration>) -> Result<Wakeup> {
        let [r] = poll_fds([self.rx.as_fd()], timeout)?;
        if !r.readable && !r.hangup {
            return Ok(Wakeup::Timeout);
        }
        // Drain the pending kicks: they coalesce into one wake-up. At most
        // MAX_DRAIN reads: a peer writing as fast as it can must not keep
        // us here; what is left keeps the FIFO readable for the next wait.
        let mut buf = [0u8; 256];
        let mut got = 0usize;
        for _ in 0..MAX_DRAIN {
            match read(self.rx.as_raw_fd(), &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    got += n;
                    if n < buf.len() {
                        break;
                    }
                }
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(Error::sys("read notification", e)),
            }
        }
        if got > 0 {
            Ok(Wakeup::Notified)
        } else if r.hangup {
            Err(Error::PeerGone {
                pid: self.peer_pid,
                reason: "its end of the FIFO closed".into(),
            })
        } else {
            Ok(Wakeup::Timeout)
        }
    }

    fn as_fd(&self) -> BorrowedFd<'_> {
        self.rx.as_fd()
    }

    fn peer_pid(&self) -> u32 {
        self.peer_pid
    }
}
