//! The resolved configuration of one launcher run, and its modes.
//!
//! Command-line flags and profile values are merged into [`Settings`]
//! (every default applied; what `--print-config` shows), then finished into
//! a [`RunConfig`] once the rendezvous is known to be usable; everything
//! below `main` sees only that. Notification suppression is
//! [`NotifyMode`], the same type the rings use.

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

/// A `KIND:PATH` that cannot be parsed (`--sharenet`, or `sharenet` in a
/// profile's `[net]`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// No `:` between kind and path.
    #[error("`{0}` is not KIND:PATH; expected fifo:PATH, unix:PATH or eventfd:PATH")]
    NotKindPath(String),
    /// The kind is not one we know.
    #[error("unknown transport `{0}`; expected one of fifo, unix, eventfd")]
    UnknownKind(String),
    /// Nothing after the `:`.
    #[error("`{spec}` has an empty PATH; expected e.g. {kind}:/tmp/sharenet0", kind = kind.name())]
    EmptyPath {
        /// What the user wrote.
        spec: String,
        /// The (valid) kind before the `:`.
        kind: Kind,
    },
}

impl std::str::FromStr for Spec {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        let (kind, path) = s
            .split_once(':')
            .ok_or_else(|| SpecError::NotKindPath(s.into()))?;
        let kind = Kind::from_str(kind, false).map_err(|_| SpecError::UnknownKind(kind.into()))?;
        if path.is_empty() {
            return Err(SpecError::EmptyPath {
                spec: s.into(),
                kind,
            });
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

/// `--share`: what memory the peer launcher may map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Share {
    /// A dedicated, sealed exchange memfd: the TX ring and its packet
    /// buffers, nothing else.
    Exchange,
    /// All of the guest's memory (a synthetic guest's rings and buffers, a
    /// VM's RAM).
    Guest,
}

impl Share {
    /// The spelling used on the command line, in profiles and in stats.
    pub fn name(self) -> &'static str {
        match self {
            Share::Exchange => "exchange",
            Share::Guest => "guest",
        }
    }
}

/// `--payload`: how much of each synthetic frame is written and checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Payload {
    /// The full pattern and a checksum over every byte, on both sides.
    Verify,
    /// Only a header (sequence, length, a checksum of the header): the
    /// sender fills its buffers once and the receiver never reads the
    /// payload, so what is measured is the link's own cost.
    Stamp,
}

impl Payload {
    /// The spelling used on the command line and in stats.
    pub fn name(self) -> &'static str {
        match self {
            Payload::Verify => "verify",
            Payload::Stamp => "stamp",
        }
    }
}

/// `--offloads`: does our guest take offloaded frames on receive (and a
/// VM send them)? One type for synthetic runs and `vhost-user`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Offloads {
    /// Partial checksums and TCP GSO frames arrive as the peer sent them (a
    /// VM is offered CSUM, TSO4/6, ECN and mergeable RX buffers).
    On,
    /// Our copier completes checksums and segments GSO frames in software
    /// (a VM is offered only what was offered before offloads existed).
    Off,
}

impl Offloads {
    /// The spelling used on the command line, in profiles and in stats.
    pub fn name(self) -> &'static str {
        match self {
            Offloads::On => "on",
            Offloads::Off => "off",
        }
    }

    /// The receive features a synthetic guest accepts (virtio-net bits).
    pub fn synthetic_features(self) -> u64 {
        match self {
            Offloads::On => crate::offload::SYNTHETIC_OFFLOADS,
            Offloads::Off => 0,
        }
    }
}

/// The MSS of a `--gso` stream without `--mtu`: Ethernet's 1500-byte MTU
/// less the IPv4 and TCP headers.
pub const DEFAULT_GSO_MTU: u32 = 1500;

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

/// Every setting of a run with its default applied, before the rendezvous
/// is required: what `--print-config` shows and what
/// [`RunArgs::resolve`](crate::cli::RunArgs::resolve) finishes into a
/// [`RunConfig`]. `None` means "not set, and no fixed default".
#[derive(Clone, Debug)]
pub struct Settings {
    /// Guest name; `None`: derived from the pid at run time.
    pub name: Option<String>,
    /// Transport and rendezvous path; `None`: not given (a run needs one).
    pub spec: Option<Spec>,
    /// What the guest does.
    pub workload: Workload,
    /// Packets to send/receive.
    pub count: u64,
    /// Frame size in bytes.
    pub size: u32,
    /// What each frame carries and the receiver checks.
    pub payload: Payload,
    /// Notification suppression.
    pub notify: NotifyMode,
    /// Notification write behaviour.
    pub writes: Writes,
    /// Idle behaviour.
    pub wait: Wait,
    /// Guest memory in MiB (given, or the default for `queue_size`).
    pub memory_mib: u64,
    /// CPU the busy thread is pinned to; `None`: not pinned.
    pub cpu: Option<usize>,
    /// Entries per ring.
    pub queue_size: u32,
    /// Bound on the whole run (connect included).
    pub timeout: Duration,
    /// `--reconnect`: survive the peer leaving and wait for the next one.
    pub reconnect: bool,
    /// `--share`: what memory the peer may map.
    pub share: Share,
    /// `--capture FILE.pcapng`; `None`: no capture.
    pub capture: Option<PathBuf>,
    /// `--snaplen`; `None`: whole frames.
    pub snaplen: Option<u32>,
    /// `--mtu`; `None`: none stated.
    pub mtu: Option<u32>,
    /// `--offloads`.
    pub offloads: Offloads,
    /// `--gso`: a stream sends TCP GSO frames.
    pub gso: bool,
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
    /// What each frame carries and the receiver checks.
    pub payload: Payload,
    /// Notification suppression.
    pub notify: NotifyMode,
    /// Notification write behaviour.
    pub writes: Writes,
    /// Idle behaviour.
    pub wait: Wait,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// CPU the busy thread is pinned to; `None`: not pinned.
    pub cpu: Option<usize>,
    /// Entries per ring.
    pub queue_size: u32,
    /// Bound on the whole run (connect included).
    pub timeout: Duration,
    /// Where to write the stats JSON.
    pub stats_json: Option<PathBuf>,
    /// Per-packet delay in the receiving guest (to test a slow sink).
    pub rx_delay: Duration,
    /// `--rate`: a stream's packets per second at most.
    pub rate: Option<u64>,
    /// No progress output, no connect lines.
    pub quiet: bool,
    /// `--reconnect` (`[net] reconnect`): when the peer leaves, keep the
    /// guest and wait on the same path for the next peer.
    pub reconnect: bool,
    /// `--timeout` (or a profile's `timeout`) was given, not defaulted.
    pub timeout_given: bool,
    /// `--share`: what memory the peer may map.
    pub share: Share,
    /// `--capture FILE.pcapng [--snaplen N]`.
    pub capture: Option<crate::capture::CaptureConfig>,
    /// `--mac`: our guest's MAC address (`None`: derived from the name).
    pub mac: Option<crate::guest::frame::Mac>,
    /// `--dst`: where data frames go (`None`: broadcast, which on a
    /// direct link reaches exactly the peer).
    pub dst: Option<crate::guest::frame::Mac>,
    /// `--mtu`: stated to the peer at link-up; `None`: none stated.
    pub mtu: Option<u32>,
    /// `--offloads`: what our synthetic guest takes on receive.
    pub offloads: Offloads,
    /// `--gso`: a stream sends TCP/IPv4 GSO frames of `size` payload bytes.
    pub gso: bool,
}

impl RunConfig {
    /// Our guest's MAC address: `--mac`, or derived from the name.
    pub fn mac(&self) -> crate::guest::frame::Mac {
        self.mac
            .unwrap_or_else(|| crate::guest::frame::mac_from_name(&self.name))
    }

    /// A `--gso` stream's segment size: the MTU (`--mtu`, else 1500) less
    /// 40 bytes of IPv4 and TCP headers. `None` without `--gso`.
    pub fn gso_mss(&self) -> Option<u16> {
        self.gso
            .then(|| (self.mtu.unwrap_or(DEFAULT_GSO_MTU) - 40) as u16)
    }

    /// The bound on the whole run: `--timeout`, except that a reconnecting
    /// launcher waits for its next peer for ever unless a timeout was given
    /// explicitly (`None`: no deadline).
    pub fn run_limit(&self) -> Option<Duration> {
        (!self.reconnect || self.timeout_given).then_some(self.timeout)
    }
}
