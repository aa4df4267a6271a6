//! The resolved configuration of one launcher run, and its modes.
//!
//! Command-line flags (and, later, profile values) are merged into a
//! [`RunConfig`]; everything below `main` sees only this.

use crate::virtq::NotifyMode;
use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Which transport carries notifications (`KIND` in `--sharenet KIND:PATH`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Two named FIFOs, one byte per notification (the original).
    Fifo,
    /// A Unix SOCK_SEQPACKET socket.
    Unix,
    /// eventfds passed over a Unix socket.
    Eventfd,
}

impl Kind {
    /// The spelling used on the command line and in stats.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Fifo => "fifo",
            Kind::Unix => "unix",
            Kind::Eventfd => "eventfd",
        }
    }
    /// All kinds, in display order.
    pub const ALL: [Kind; 3] = [Kind::Fifo, Kind::Unix, Kind::Eventfd];
}

/// `--sharenet KIND:PATH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    /// Transport kind.
    pub kind: Kind,
    /// Rendezvous path.
    pub path: PathBuf,
}

impl std::fmt::Display for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind.name(), self.path.display())
    }
}

impl std::str::FromStr for Spec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, path) = s.split_once(':').ok_or_else(|| {
            format!("`{s}` is not KIND:PATH; expected fifo:PATH, unix:PATH or eventfd:PATH")
        })?;
        let kind = Kind::from_str(kind, false).map_err(|_| {
            format!("unknown transport `{kind}`; expected one of fifo, unix, eventfd")
        })?;
        if path.is_empty() {
            return Err(format!(
                "`{s}` has an empty PATH; expected e.g. {}:/tmp/sharenet0",
                kind.name()
            ));
        }
        Ok(Spec {
            kind,
            path: PathBuf::from(path),
        })
    }
}

/// What the synthetic guest does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Send COUNT packets of SIZE bytes; exit 0 once the peer consumed them.
    Stream,
    /// Receive COUNT packets; exit 1 with what is missing otherwise.
    Sink,
    /// Send COUNT packets one at a time and time each echo.
    Ping,
    /// Send back what arrives (COUNT packets).
    Echo,
    /// Do nothing; stay connected until the peer leaves or the timeout.
    Idle,
}

impl Workload {
    /// The spelling used on the command line and in stats.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Stream => "stream",
            Workload::Sink => "sink",
            Workload::Ping => "ping",
            Workload::Echo => "echo",
            Workload::Idle => "idle",
        }
    }
}

/// `--notify`: how notifications are suppressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Notify {
    /// After every batch.
    Always,
    /// VRING_*_F_NO_* flags.
    Flags,
    /// VIRTIO_F_EVENT_IDX.
    EventIdx,
}

impl Notify {
    /// The spelling used on the command line and in stats.
    pub fn name(self) -> &'static str {
        match self {
            Notify::Always => "always",
            Notify::Flags => "flags",
            Notify::EventIdx => "event-idx",
        }
    }
}

impl From<Notify> for NotifyMode {
    fn from(n: Notify) -> Self {
        match n {
            Notify::Always => NotifyMode::Always,
            Notify::Flags => NotifyMode::Flags,
            Notify::EventIdx => NotifyMode::EventIdx,
        }
    }
}

/// `--writes`: may a notification write block?
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Writes {
    /// Wait for room (bounded only by `--timeout`).
    Blocking,
    /// A full channel means a wake-up is already pending.
    Nonblocking,
}

impl Writes {
    /// The spelling used on the command line and in stats.
    pub fn name(self) -> &'static str {
        match self {
            Writes::Blocking => "blocking",
            Writes::Nonblocking => "nonblocking",
        }
    }
}

/// `--wait`: what a launcher does when there is no work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Wait {
    /// Re-enable notifications and sleep in the transport.
    Sleep,
    /// Poll the rings; never sleep.
    Spin,
    /// Spin a bounded time, then sleep.
    Adaptive,
}

impl Wait {
    /// The spelling used on the command line and in stats.
    pub fn name(self) -> &'static str {
        match self {
            Wait::Sleep => "sleep",
            Wait::Spin => "spin",
            Wait::Adaptive => "adaptive",
        }
    }
}

/// Everything one launcher run needs.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Guest name (for messages and the memfd name).
    pub name: String,
    /// Transport and rendezvous path.
    pub spec: Spec,
    /// What the guest does.
    pub workload: Workload,
    /// Packets to send/receive.
    pub count: u64,
    /// Frame size in bytes.
    pub size: u32,
    /// Notification suppression.
    pub notify: Notify,
    /// Notification write behaviour.
    pub writes: Writes,
    /// Idle behaviour.
    pub wait: Wait,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// Entries per ring.
    pub queue_size: u32,
    /// Bound on the whole run (connect included).
    pub timeout: Duration,
    /// Where to write the stats JSON.
    pub stats_json: Option<PathBuf>,
    /// Per-packet delay in the receiving guest (to test a slow sink).
    pub rx_delay: Duration,
    /// No progress output, no connect lines.
    pub quiet: bool,
}
