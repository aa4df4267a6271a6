//! # sharenet transports
//!
//! Two launcher processes each own a guest's memory. At rendezvous they swap
//! a [`Handshake`] (who they are, where their rings are, how big their memory
//! is) and a way to reach each other's memory; from then on the only thing a
//! transport carries is the *notification*: "look at the rings, something
//! changed". The 2008 lguest launcher did this with two named FIFOs and one
//! byte per kick; `transport-unixsock` and `transport-eventfd` do it with a
//! Unix socket and with eventfds. The copier in `lguest-launcher` is generic
//! over [`Transport`], so all three run the same data path.
//!
//! ## Trust policy (what a transport checks, and what happens when it fails)
//! Everything the peer sends is hostile until checked:
//! * the handshake: magic, version, pid, queue sizes (powers of two, at most
//!   32768), every ring inside the memory with checked arithmetic —
//!   [`Handshake::validate`];
//! * the memory fd: a regular file on tmpfs (not hugetlbfs, where a hole
//!   the peer punches may never be refilled) carrying at least
//!   `F_SEAL_SHRINK` and `F_SEAL_GROW` (so the peer cannot truncate it
//!   under our mapping and SIGBUS us) whose size equals the handshake's
//!   `mem_size` — [`check_shareable`], [`check_peer_memory`];
//! * the peer process: same uid as ours (and, for sockets, the pid in the
//!   handshake must match `SO_PEERCRED`).
//!
//! A failed check refuses the peer at connect with an [`Error`] that names
//! the field and the value sent. Later, while running, a malformed
//! descriptor chain is dropped and counted by the copier and the link
//! carries on; ring state that cannot happen with an honest peer (an avail
//! index that jumps by more than the queue size) disconnects the peer with
//! one clear error. The rendezvous paths are created mode 0600; a symlink at
//! the path, or a path owned by another uid, is refused.
//!
//! ## What lives where
//! * [`Transport`], [`check_peer_memory`], [`accept_peer`]: this file — the
//!   contract and the checks every `connect` ends with;
//! * `handshake.rs`: the wire record and its validation;
//! * `error.rs`: the one [`Error`] enum;
//! * [`path`]: looking at a rendezvous path without following it;
//! * `rendezvous.rs`: meeting on a `SOCK_SEQPACKET` socket at `PATH`
//!   ([`rendezvous()`], [`Rendezvous::exchange`]), shared by `unix:` and
//!   `eventfd:`;
//! * `fdpass.rs`: records with fds attached ([`send_with_fds`],
//!   [`recv_with_fds`]);
//! * `poll.rs`: [`Deadline`], [`poll_fds`], [`WaitSet`] (one epoll set
//!   built at connect), [`set_nonblocking`];
//! * `conformance/` and `test_utils.rs` (feature `test-utils`): the one
//!   behaviour suite every transport runs, and its helpers.

#![deny(missing_docs)]

#[cfg(feature = "test-utils")]
pub mod conformance;
mod error;
mod fdpass;
mod handshake;
pub mod path;
mod poll;
mod rendezvous;
pub mod tap;
#[cfg(feature = "test-utils")]
pub mod test_utils;

pub use error::{Error, Result};
pub use fdpass::{recv_with_fds, send_with_fds, Received};
pub use handshake::{
    translate, Handshake, MemRegion, RingInfo, F_EVENT_IDX, F_NOTIFY_FLAGS, F_RX_PUSH, F_SWITCH,
    HANDSHAKE_LEN, KNOWN_FEATURES, MAGIC, MAX_QUEUE_SIZE, MAX_REGIONS, VERSION,
};
pub use poll::{interrupt_flag, interrupted, poll_fds, set_nonblocking, Deadline, Ready, WaitSet};
pub use rendezvous::{rendezvous, serve_many, Rendezvous, Served};

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::stat::{fstat, SFlag};
use nix::sys::statfs::{fstatfs, HUGETLBFS_MAGIC, TMPFS_MAGIC};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

/// How a transport should behave, chosen by the launcher.
#[derive(Clone, Copy, Debug)]
pub struct ConnectOptions {
    /// `--writes nonblocking`: a notification write that would block counts
    /// as already pending instead of waiting on the peer.
    pub nonblocking_writes: bool,
    /// Give up waiting for a peer after this long (`None`: wait forever).
    pub timeout: Option<Duration>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            nonblocking_writes: true,
            timeout: Some(Duration::from_secs(30)),
        }
    }
}

/// What we learned about the peer at rendezvous.
#[derive(Debug)]
pub struct PeerInfo {
    /// The peer's handshake, already validated.
    pub handshake: Handshake,
    /// The peer's guest memory, already checked with [`check_peer_memory`].
    pub memory: OwnedFd,
}

/// Why [`Transport::wait`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wakeup {
    /// The peer notified us (any number of coalesced notifications).
    Notified,
    /// The timeout passed with no notification.
    Timeout,
}

/// What [`Transport::notify`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notify {
    /// The notification was written.
    Sent,
    /// The channel was full (nonblocking writes only): the peer has unread
    /// notifications, so it will wake anyway and nothing is lost.
    AlreadyPending,
}

/// A notification channel between two launchers.
///
/// Shaped after rust-vmm's `VhostUserBackend`: few required methods, each
/// with one job. Implementations are `Send + Sync`; `notify` and `wait` may
/// be called from different threads.
pub trait Transport: Send + Sync {
    /// The `KIND` in `--sharenet KIND:PATH` (`"fifo"`, `"unix"`,
    /// `"eventfd"`): how launchers and test reports name this transport.
    const KIND: &'static str;

    /// Rendezvous with the peer at `path`, swap handshakes and reach the
    /// peer's memory. `memory` is our own memory fd, offered to the peer.
    /// Whichever side arrives first waits for the other.
    fn connect(
        path: &Path,
        local: &Handshake,
        memory: BorrowedFd<'_>,
        opts: &ConnectOptions,
    ) -> Result<(Self, PeerInfo)>
    where
        Self: Sized;

    /// Tell the peer that something changed. In nonblocking mode this never
    /// blocks: a full channel means a wake-up is already pending. A dead
    /// peer is [`Error::PeerGone`] (EPIPE is never a signal: launchers
    /// ignore SIGPIPE).
    fn notify(&self) -> Result<Notify>;

    /// Wait until the peer notified us or `timeout` passed (`Some(ZERO)`
    /// polls). Consumes every pending notification. [`Error::PeerGone`] when
    /// the peer closed or died, even while no notification is due.
    fn wait(&self, timeout: Option<Duration>) -> Result<Wakeup>;

    /// The fd that becomes readable on a notification (for poll/epoll).
    /// Borrowed: it stays the transport's and lives as long as it does.
    /// Readable means a kick may be pending (another thread may take it
    /// first); `wait(Some(Duration::ZERO))` consumes it and says whether the
    /// peer is gone. Every transport's fd also turns readable when the peer
    /// hangs up (`eventfd:` hands out an epoll set over its eventfd and its
    /// rendezvous socket, as an eventfd alone never hangs up).
    fn as_fd(&self) -> BorrowedFd<'_>;

    /// The peer's pid from its handshake.
    fn peer_pid(&self) -> u32;
}

/// Can memory in `fd` be mapped by one side while the other holds it,
/// without the holder being able to SIGBUS the mapper? It must be
///
/// * a regular file (a memfd), not a device, pipe or socket;
/// * on tmpfs, i.e. a plain shmem memfd: on hugetlbfs a sealed file still
///   lets its holder punch a hole (`fallocate`), and once the free huge
///   pages are gone nothing can fill it again — the mapper's next touch
///   is SIGBUS; on a disk filesystem the pages are not ours either;
/// * sealed with at least `F_SEAL_SHRINK | F_SEAL_GROW`, so no `ftruncate`
///   can cut it under a mapping.
///
/// The error is the reason, for the caller to wrap (ours for the peer's
/// memory, the VM's with the QEMU option that fixes it).
pub fn check_shareable(fd: BorrowedFd<'_>) -> std::result::Result<(), String> {
    let st = fstat(fd.as_raw_fd()).map_err(|e| format!("fstat: {e}"))?;
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    if kind != SFlag::S_IFREG {
        return Err(format!("not a regular file/memfd (mode {:#o})", st.st_mode));
    }
    let fs = fstatfs(fd).map_err(|e| format!("fstatfs: {e}"))?;
    let fs = fs.filesystem_type();
    if fs != TMPFS_MAGIC {
        let what = if fs == HUGETLBFS_MAGIC {
            "hugetlbfs (a MFD_HUGETLB memfd): a hole punched in it cannot be refilled once \
             the free huge pages are gone, and our next touch would be SIGBUS"
                .to_string()
        } else {
            format!("a filesystem of type {:#x}, not tmpfs", fs.0)
        };
        return Err(format!(
            "it lives on {what}; only a plain (tmpfs) memfd is shared"
        ));
    }
    let seals = fcntl(fd.as_raw_fd(), FcntlArg::F_GET_SEALS)
        .map_err(|e| format!("cannot read its seals ({e}); is it a memfd?"))?;
    let seals = SealFlag::from_bits_truncate(seals);
    let need = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW;
    if !seals.contains(need) {
        return Err(format!(
            "seals {:?} lack F_SEAL_SHRINK|F_SEAL_GROW: its holder could truncate it under a \
             mapping (SIGBUS)",
            seals
        ));
    }
    Ok(())
}

/// Check the peer's memory fd before mapping it: [`check_shareable`]
/// (a sealed tmpfs memfd) and exactly `expected_size` bytes long.
pub fn check_peer_memory(fd: BorrowedFd<'_>, expected_size: u64) -> Result<()> {
    check_shareable(fd).map_err(Error::BadPeerMemory)?;
    let st = fstat(fd.as_raw_fd()).map_err(|e| Error::sys("fstat peer memory", e))?;
    if st.st_size as u64 != expected_size {
        return Err(Error::BadPeerMemory(format!(
            "size is {} bytes but the handshake says mem_size = {}",
            st.st_size, expected_size
        )));
    }
    Ok(())
}

/// Validate a received handshake and the memory fd that came with it, and
/// bundle them as [`PeerInfo`]. Every transport ends its `connect` here,
/// with `ours`, the memory it offered the peer: a peer that hands our own
/// memfd back as its memory (`fifo:` names it by our pid and fd number)
/// would have us map our pages twice, its "TX ring" being ours.
pub fn accept_peer(
    handshake: Handshake,
    memory: OwnedFd,
    ours: BorrowedFd<'_>,
) -> Result<PeerInfo> {
    handshake.validate()?;
    let theirs = fstat(memory.as_raw_fd()).map_err(|e| Error::sys("fstat peer memory", e))?;
    let mine = fstat(ours.as_raw_fd()).map_err(|e| Error::sys("fstat our memory", e))?;
    if (theirs.st_dev, theirs.st_ino) == (mine.st_dev, mine.st_ino) {
        return Err(Error::BadPeerMemory(format!(
            "it is our own memory (device {:#x}, inode {}): the peer offered our memfd back as \
             its own",
            mine.st_dev, mine.st_ino
        )));
    }
    check_peer_memory(memory.as_fd(), handshake.mem_size)?;
    Ok(PeerInfo { handshake, memory })
}
