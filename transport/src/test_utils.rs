//! Test support shared by the transport crates' tests (feature
//! `test-utils`, as rust-vmm keeps its mocks): real memfds, real sockets, a
//! private temp dir, hostile raw peers, and a lock so tests that count fds
//! or fork do not see each other's fds.
#![allow(missing_docs)]

use crate::{ConnectOptions, Handshake, RingInfo, F_EVENT_IDX};
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use nix::sys::socket::{
    connect, sendmsg, socket, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr,
};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ftruncate, getpid, ForkResult, Gid, Uid};
use std::ffi::CString;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Guest memory size used by every test handshake.
pub const MEM: u64 = 1 << 20;
/// The uid a "foreign" process or file gets.
pub const NOBODY: u32 = 65534;

static SERIAL: Mutex<()> = Mutex::new(());

/// Run tests of this binary one at a time: fd counts and fork() must not
/// see another test's fds.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A private directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl TempDir {
    pub fn new() -> Self {
        let dir = nix::unistd::mkdtemp("/tmp/sharenet-test-XXXXXX").expect("mkdtemp");
        TempDir(dir)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    /// Let other users traverse it (for the foreign-uid tests).
    pub fn open_up(&self) {
        std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A memfd of `size` bytes, sealed against shrinking and growing.
pub fn sealed_memfd(size: u64) -> OwnedFd {
    let fd = unsealed_memfd(size);
    let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
    fcntl(fd.as_raw_fd(), FcntlArg::F_ADD_SEALS(seals)).expect("F_ADD_SEALS");
    fd
}

/// A memfd of `size` bytes that could still be truncated under a mapping.
pub fn unsealed_memfd(size: u64) -> OwnedFd {
    let name = CString::new("sharenet-test").unwrap();
    let fd = memfd_create(
        &name,
        MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
    )
    .expect("memfd_create");
    ftruncate(&fd, size as i64).expect("ftruncate");
    fd
}

/// A valid handshake from this process; `tag` goes into the features so a
/// test can tell which side's handshake it received.
pub fn handshake(tag: u64) -> Handshake {
    let tx = RingInfo {
        desc: 0,
        avail: 4096,
        used: 8192,
        size: 256,
    };
    let rx = RingInfo {
        desc: 12288,
        avail: 16384,
        used: 20480,
        size: 256,
    };
    Handshake::new(
        getpid().as_raw() as u32,
        F_EVENT_IDX | (tag << 8),
        MEM,
        -1,
        tx,
        rx,
    )
}

/// Connect options with a short timeout.
pub fn opts(secs: u64) -> ConnectOptions {
    ConnectOptions {
        nonblocking_writes: true,
        timeout: Some(Duration::from_secs(secs)),
    }
}

/// How many fds this process has open.
pub fn count_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Wait until something exists at `path`.
pub fn wait_for_path(path: &Path) {
    let start = Instant::now();
    while nix::sys::stat::lstat(path).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A bare SOCK_SEQPACKET client connected to the listener at `path`: it
/// plays a peer that sends whatever the test crafts.
pub fn raw_client(path: &Path) -> OwnedFd {
    wait_for_path(path);
    let sock = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    connect(sock.as_raw_fd(), &UnixAddr::new(path).unwrap()).expect("raw connect");
    sock
}

/// Send one record with fds attached, as a peer would.
pub fn raw_send(sock: &OwnedFd, bytes: &[u8], fds: &[RawFd]) {
    let iov = [IoSlice::new(bytes)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    sendmsg::<UnixAddr>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)
        .expect("raw sendmsg");
}

/// Fork a child that becomes uid/gid 65534 and connects to `path`, then
/// waits (at most 10 s) for the listener to hang up. Returns a closure that
/// reaps the child and returns its exit code.
pub fn connect_as_nobody(path: &Path) -> impl FnOnce() -> i32 {
    wait_for_path(path);
    // Everything the child needs is prepared here: after fork() in a
    // threaded process the child may only make raw syscalls.
    let addr = UnixAddr::new(path).unwrap();
    // SAFETY: the child branch below only makes async-signal-safe syscalls
    // (alarm, setgid, setuid, socket, connect, read) and leaves with _exit;
    // it allocates nothing and takes no locks.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            nix::unistd::alarm::set(10);
            let code = (|| {
                nix::unistd::setgroups(&[]).map_err(|_| 11)?;
                nix::unistd::setgid(Gid::from_raw(NOBODY)).map_err(|_| 12)?;
                nix::unistd::setuid(Uid::from_raw(NOBODY)).map_err(|_| 13)?;
                let sock = socket(
                    AddressFamily::Unix,
                    SockType::SeqPacket,
                    SockFlag::SOCK_CLOEXEC,
                    None,
                )
                .map_err(|_| 14)?;
                connect(sock.as_raw_fd(), &addr).map_err(|_| 15)?;
                let mut buf = [0u8; 256];
                // The listener must refuse us without sending its handshake:
                // the first thing we read must be EOF.
                match nix::unistd::read(sock.as_raw_fd(), &mut buf) {
                    Ok(0) => Ok(0),
                    _ => Err(16),
                }
            })()
            .unwrap_or_else(|c| c);
            // SAFETY: _exit ends the child without running the parent's
            // atexit handlers or destructors.
            unsafe { nix::libc::_exit(code) }
        }
        ForkResult::Parent { child } => move || match waitpid(child, None).expect("waitpid") {
            WaitStatus::Exited(_, code) => code,
            other => panic!("child ended oddly: {other:?}"),
        },
    }
}

/// True when we may chown files and switch uid (the foreign-uid tests).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Environment variable that turns the helper test into a peer process.
pub const CHILD_ENV: &str = "SHARENET_TEST_CHILD_PATH";

/// Run this test binary again as a separate process executing only
/// `helper_test`, which plays a peer at `path` (see `CHILD_ENV`).
pub fn spawn_peer_process(helper_test: &str, path: &Path) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([helper_test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, path)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn peer process")
}
