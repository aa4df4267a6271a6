//! The one error enum shared by every transport.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything that can go wrong while meeting, checking or notifying a peer.
///
/// Each variant says what went wrong and, where the peer is to blame, what
/// the peer sent, so the launcher can print one clear line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `KIND:PATH` spec could not be used (empty path, bad directory).
    #[error("bad rendezvous path {path}: {reason}")]
    BadPath {
        /// The path that was given.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// Something already at the rendezvous path is not ours to use or replace
    /// (a symlink, a regular file, a FIFO or socket owned by another uid).
    #[error("refusing rendezvous path {path}: {reason}")]
    RefusedPath {
        /// The path that was given.
        path: PathBuf,
        /// What was found there.
        reason: String,
    },
    /// No peer arrived before the deadline.
    #[error("no peer arrived at {path} within {secs:.1} s")]
    ConnectTimeout {
        /// The rendezvous path.
        path: PathBuf,
        /// How long we waited.
        secs: f64,
    },
    /// The peer's handshake does not start with our magic number.
    #[error("peer handshake has bad magic {got:#018x} (expected {expected:#018x}): not a sharenet launcher")]
    BadMagic {
        /// What the peer sent.
        got: u64,
        /// What we expect.
        expected: u64,
    },
    /// The peer speaks another handshake version.
    #[error("peer speaks handshake version {got}, we speak {expected}")]
    VersionMismatch {
        /// What the peer sent.
        got: u32,
        /// What we speak.
        expected: u32,
    },
    /// The peer's handshake is well-formed but describes something impossible.
    #[error("peer handshake rejected: {field} = {value}: {reason}")]
    BadHandshake {
        /// The handshake field at fault.
        field: &'static str,
        /// The value the peer sent.
        value: u64,
        /// Why it cannot be right.
        reason: String,
    },
    /// The handshake arrived cut short.
    #[error("peer handshake is {got} bytes, expected {expected}")]
    ShortHandshake {
        /// Bytes received.
        got: usize,
        /// Bytes expected.
        expected: usize,
    },
    /// The peer process is not who it claims to be (uid or pid mismatch).
    #[error("peer refused: {0}")]
    PeerRefused(String),
    /// The peer's memory fd fails our checks (seals, size, kind).
    #[error("peer memory refused: {0}")]
    BadPeerMemory(String),
    /// The peer closed its end or died.
    #[error("peer {pid} disconnected: {reason}")]
    PeerGone {
        /// The peer's pid from its handshake (0 before the handshake).
        pid: u32,
        /// What we observed (EOF, EPIPE, hang-up).
        reason: String,
    },
    /// A signal (SIGINT, SIGTERM, SIGHUP) asked the launcher to stop.
    #[error("interrupted by signal {signal}")]
    Interrupted {
        /// The signal's number.
        signal: i32,
    },
    /// This transport kind exists in the CLI but is not built yet.
    #[error("transport `{0}` is not implemented yet")]
    NotImplemented(&'static str),
    /// An operating-system call failed.
    #[error("{op}: {source}")]
    Io {
        /// What we were doing.
        op: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Wrap an OS error with what we were doing.
    pub fn io(op: impl Into<String>, source: impl Into<io::Error>) -> Self {
        Error::Io {
            op: op.into(),
            source: source.into(),
        }
    }

    /// No peer came to `path` within `timeout` (`None` reads as 0 s: only
    /// a deadline that was set can pass).
    pub fn connect_timeout(path: &Path, timeout: Option<Duration>) -> Self {
        Error::ConnectTimeout {
            path: path.to_path_buf(),
            secs: timeout.map_or(0.0, |t| t.as_secs_f64()),
        }
    }

    /// Wrap a `nix` errno with what we were doing.
    pub fn sys(op: impl Into<String>, errno: nix::errno::Errno) -> Self {
        Error::io(op, io::Error::from_raw_os_error(errno as i32))
    }

    /// True when the error means the peer is gone (closed, died).
    pub fn is_peer_gone(&self) -> bool {
        matches!(self, Error::PeerGone { .. })
    }
}

/// Result alias for transports.
pub type Result<T> = std::result::Result<T, Error>;
