//! The command line: flags, subcommands, and checked values.
//!
//! Every flag is optional here so a profile's values can fill the gaps;
//! [`RunArgs::settings`] applies the documented defaults and
//! [`RunArgs::resolve`] checks what a run needs on top (the rendezvous).
//! Bad values are refused by clap with the flag named and exit code 2; the
//! same checks ([`check_count`], [`check_queue_size`], ...) refuse them in a
//! profile, so a value means the same wherever it is written.

use super::usage::{check_rendezvous, UsageError};
use super::values::*;
use crate::cli::config::{
    Offloads, Payload, RunConfig, Settings, Share, Spec, Wait, Workload, Writes,
};
use crate::guest::plan::Layout;
use crate::virtq::NotifyMode;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

const EXAMPLES: &str = "\
Examples:
  # two terminals, one pair over the original FIFO rendezvous:
  lguest-launcher --sharenet fifo:/tmp/sn0 --workload sink --count 200000
  lguest-launcher --sharenet fifo:/tmp/sn0 --workload stream --count 200000 --size 1500

  # ping/echo over eventfds, stats as JSON:
  lguest-launcher --sharenet eventfd:/tmp/sn1 --workload echo --count 10000
  lguest-launcher --sharenet eventfd:/tmp/sn1 --workload ping --count 10000 --stats-json ping.json

  # a pair from two profiles:
  lguest-launcher --profile profiles/fifo-left.toml
  lguest-launcher --profile profiles/fifo-right.toml
  lguest-launcher --profile profiles/fifo-left.toml --count 5000 --print-config

  # every transport side by side:
  lguest-launcher demo";

/// sharenet: two launchers move virtio-net packets ring to ring through
/// each other's guest memory, woken over a pluggable transport.
#[derive(Debug, Parser)]
#[command(
    name = "lguest-launcher",
    version,
    about = "Run one side of a sharenet pair (or `demo` / `bench`)",
    long_about = "Run one side of a sharenet pair: a synthetic virtio-net guest whose packets \
                  cross to a peer launcher's guest through shared memory. Two launchers given \
                  the same --sharenet KIND:PATH are a pair, whichever starts first.",
    after_help = EXAMPLES,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// `demo`, `bench`, `status`, `vhost-user`, `completions` or `man`; without one,
    /// run one side of a pair.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags for one side of a pair.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stream and ping over every transport (default modes; pings also
    /// with --wait sleep) and print one table at the end.
    #[command(after_help = crate::demo::HELP)]
    Demo(DemoArgs),
    /// Compare every transport and mode against same-run baselines.
    Bench(crate::bench::BenchArgs),
    /// Serve a QEMU VM's virtio-net device over vhost-user, joined to a peer launcher.
    #[command(
        name = "vhost-user",
        after_help = "Example (see scripts/vm-pair):\n  lguest-launcher vhost-user --socket /tmp/vm-a.sock --sharenet unix:/tmp/vmlink\n  qemu-system-x86_64 ... -object memory-backend-memfd,id=mem,size=256M,share=on -numa node,memdev=mem \\\n    -chardev socket,id=c0,path=/tmp/vm-a.sock -netdev vhost-user,id=n0,chardev=c0 \\\n    -device virtio-net-pci,netdev=n0,mac=52:54:00:00:00:01,vectors=0"
    )]
    VhostUser(crate::vhost_user::VhostArgs),
    /// Ask the running launchers on a rendezvous path for their live state
    /// (one column per launcher of the pair).
    #[command(
        after_help = "Examples:\n  lguest-launcher status --sharenet unix:/tmp/sn0\n  lguest-launcher status --sharenet unix:/tmp/sn0 --watch 1\n  lguest-launcher status --sharenet unix:/tmp/sn0 --json\nExit status: 0 when a launcher answered, 1 when none did (no control socket, or its launcher is gone), 2 on a usage error."
    )]
    Status(crate::status::StatusArgs),
    /// Join many launchers (and a host TAP device) on one switch: members
    /// use --sharenet KIND:PATH naming it, as they would name a peer.
    #[command(after_help = crate::switch::HELP)]
    Switch(crate::switch::SwitchArgs),
    /// Print a shell completion script for lguest-launcher to stdout.
    #[command(
        after_help = "Install, e.g.:\n  lguest-launcher completions bash > /usr/share/bash-completion/completions/lguest-launcher\n  lguest-launcher completions zsh > /usr/share/zsh/vendor-completions/_lguest-launcher\n  lguest-launcher completions fish > /usr/share/fish/vendor_completions.d/lguest-launcher.fish"
    )]
    Completions(super::docs::CompletionsArgs),
    /// Write the man pages (one per subcommand), generated from these flags.
    Man(super::docs::ManArgs),
    /// One side of a two-process benchmark baseline (started by `bench`).
    #[command(hide = true)]
    BenchChild(crate::bench::ChildArgs),
}

/// `demo` flags; the table's columns are explained in [`crate::demo::HELP`].
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Packets streamed per transport (default modes, --size B frames).
    #[arg(long, default_value_t = 200_000, value_parser = parse_count)]
    pub count: u64,
    /// Frame size in bytes for the stream.
    #[arg(long, default_value_t = 1500, value_parser = parse_size)]
    pub size: u32,
    /// Pings per transport and wait mode (64 B; once with --wait adaptive,
    /// once with --wait sleep).
    #[arg(long, default_value_t = 2000, value_parser = parse_count)]
    pub pings: u64,
    /// Only these transports (comma-separated).
    #[arg(long, value_delimiter = ',', value_enum)]
    pub transports: Vec<crate::cli::config::Kind>,
}

/// Flags of one side of a pair (all optional: defaults apply in `resolve`).
#[derive(Debug, Args, Default, Clone)]
pub struct RunArgs {
    /// Read defaults from this TOML profile (flags override it): a path
    /// (with a `/` or ending in .toml), or a NAME looked up as NAME.toml in
    /// $XDG_CONFIG_HOME/sharenet/profiles, then /etc/sharenet/profiles.
    #[arg(long, value_name = "NAME|FILE.toml", value_hint = clap::ValueHint::FilePath)]
    pub profile: Option<PathBuf>,
    /// Print the merged configuration as TOML (with where each value came
    /// from) and exit; works without --sharenet.
    #[arg(long)]
    pub print_config: bool,
    /// Transport and rendezvous path: fifo:PATH, unix:PATH or eventfd:PATH.
    #[arg(long, value_name = "KIND:PATH")]
    pub sharenet: Option<Spec>,
    /// What the synthetic guest does [default: stream].
    #[arg(long, value_enum)]
    pub workload: Option<Workload>,
    /// Packets to send or receive, at least 1; a sink also takes 0:
    /// receive until the sender marks its last packet [default: 100000].
    #[arg(long, value_name = "N", value_parser = parse_run_count)]
    pub count: Option<u64>,
    /// Frame size in bytes, 16..=65535 [default: 1500].
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub size: Option<u32>,
    /// What synthetic frames carry: `verify`, the full pattern and a
    /// checksum of every byte on both sides; `stamp`, only a header
    /// (sequence, length, header checksum), so the link's own cost shows
    /// [default: verify].
    #[arg(long, value_enum)]
    pub payload: Option<Payload>,
    /// What memory the peer may map: `guest`, all of this guest's memory
    /// (its rings and packet buffers); `exchange`, a separate sealed memfd
    /// with only the TX ring and TX buffers (the guest writes its frames
    /// there; its RX ring and buffers stay private) [default: guest].
    #[arg(long, value_enum)]
    pub share: Option<Share>,
    /// Notification suppression [default: event-idx].
    #[arg(long, value_enum)]
    pub notify: Option<NotifyMode>,
    /// May a notification write block? [default: nonblocking].
    #[arg(long, value_enum)]
    pub writes: Option<Writes>,
    /// What to do when idle [default: adaptive].
    #[arg(long, value_enum)]
    pub wait: Option<Wait>,
    /// Guest memory in MiB, 1..=65536 [default: 64, or the least that holds
    /// the rings and packet buffers of --queue-size when that is more, e.g.
    /// 129 for --queue-size 1024].
    #[arg(long, value_name = "MIB", value_parser = parse_memory)]
    pub memory: Option<u64>,
    /// Entries per ring: a power of two up to 32768 [default: 256].
    #[arg(long, value_name = "N", value_parser = parse_queue_size)]
    pub queue_size: Option<u32>,
    /// Pin the launcher's busy thread (guest, copier and wait loop) to this
    /// CPU, 0..N-1 [default: not pinned].
    #[arg(long, value_name = "N", value_parser = parse_cpu)]
    pub cpu: Option<usize>,
    /// Bound on the whole run in seconds, waiting for the peer included [default: 60].
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub timeout: Option<f64>,
    /// Write the stats JSON object here at exit (also on failure).
    #[arg(long, value_name = "PATH")]
    pub stats_json: Option<PathBuf>,
    /// Write a pcapng capture of what the peer sends us here: one
    /// interface (NAME-rx) with the guest's name and MAC, nanosecond
    /// timestamps, every dropped chain as a packet whose comment names the
    /// reason. Off the hot path: a full queue skips records and says so.
    #[arg(long, value_name = "FILE.pcapng", value_hint = clap::ValueHint::FilePath)]
    pub capture: Option<PathBuf>,
    /// Bytes kept per captured frame, 64..=65535 (needs --capture) [default: 65535].
    #[arg(long, value_name = "BYTES", value_parser = parse_snaplen)]
    pub snaplen: Option<u32>,
    /// Guest name, used in messages [default: guest-PID].
    #[arg(long)]
    pub name: Option<String>,
    /// A stream sends at most this many packets per second (paced from its
    /// first packet; to measure CPU per packet of a wait mode at a given
    /// load) [default: as fast as the peer takes them].
    #[arg(long, value_name = "PPS", value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: Option<u64>,
    /// Sleep this many microseconds per received packet (a slow sink, for tests).
    #[arg(long, value_name = "US", hide = true)]
    pub rx_delay_us: Option<u64>,
    /// No progress or connection lines on stderr.
    #[arg(long, short)]
    pub quiet: bool,
    /// When the peer leaves, keep the guest and its queues and wait on the
    /// same path for the next peer (no deadline unless --timeout is given).
    #[arg(long)]
    pub reconnect: bool,
    /// The synthetic guest's MAC address, e.g. 02:00:00:00:00:01
    /// [default: 02: and 40 bits derived from --name].
    #[arg(long, value_name = "MAC", value_parser = crate::guest::frame::parse_mac)]
    pub mac: Option<crate::guest::frame::Mac>,
    /// Where stream/ping frames go [default: ff:ff:ff:ff:ff:ff, broadcast:
    /// on a direct link that is the peer; through a switch it floods, so
    /// name the receiver's --mac there].
    #[arg(long, value_name = "MAC", value_parser = crate::guest::frame::parse_mac)]
    pub dst: Option<crate::guest::frame::Mac>,
    /// The link's MTU in bytes, 68..=65535: stated to the peer at link-up
    /// (a peer stating another MTU is refused, both named; one stating none
    /// is accepted), and a --gso stream's segments are MTU - 40 payload
    /// bytes [default: none stated; --gso cuts at 1500].
    #[arg(long, value_name = "BYTES", value_parser = parse_mtu)]
    pub mtu: Option<u32>,
    /// What the synthetic guest takes on receive: `on`, partial checksums
    /// and TCP GSO frames as the peer sent them (GUEST_CSUM, GUEST_TSO4/6,
    /// GUEST_ECN); `off`, none: our launcher completes checksums and cuts
    /// GSO frames into MTU-sized segments before delivery [default: on].
    #[arg(long, value_enum)]
    pub offloads: Option<Offloads>,
    /// A stream sends TCP/IPv4 GSO frames (Ethernet, IPv4, TCP headers,
    /// NEEDS_CSUM with the pseudo-header sum in place, segments of MTU - 40
    /// bytes), each carrying one --size-byte synthetic frame as its TCP
    /// payload (--size at most 65481); the sink checks every byte, whole
    /// or segmented.
    #[arg(long)]
    pub gso: bool,
}

/// Built-in `--queue-size`.
pub const DEFAULT_QUEUE_SIZE: u32 = 256;
/// Built-in `--memory` floor in MiB (more when the queue size needs it).
pub const DEFAULT_MEMORY_MIB: u64 = 64;
/// Built-in `--count`.
pub const DEFAULT_COUNT: u64 = 100_000;
/// Built-in `--size`.
pub const DEFAULT_SIZE: u32 = 1500;
/// Largest `--size` with `--gso`: one IP packet less the Ethernet, IPv4
/// and TCP headers.
pub const MAX_GSO_SIZE: u32 = 65535 - 14 - 20 - 20;
/// Built-in `--timeout` in seconds.
pub const DEFAULT_TIMEOUT_SECS: f64 = 60.0;

/// The memory a run gets when `--memory` is not given: [`DEFAULT_MEMORY_MIB`],
/// or the least that holds the rings and packet buffers of `queue_size` when
/// that is more. Packet slots are sized for the largest frame, so `--size`
/// does not change it.
pub fn default_memory_mib(queue_size: u32) -> u64 {
    Layout::plan(queue_size)
        .needed_mib()
        .max(DEFAULT_MEMORY_MIB)
}

impl RunArgs {
    /// Apply defaults and the checks that do not need the rendezvous
    /// (`--print-config` shows the result even without `--sharenet`).
    pub fn settings(&self) -> Result<Settings, UsageError> {
        let queue_size = self.queue_size.unwrap_or(DEFAULT_QUEUE_SIZE);
        let need = Layout::plan(queue_size).needed_mib();
        let memory_mib = match self.memory {
            Some(m) if m < need => {
                return Err(UsageError::MemoryTooSmall {
                    memory_mib: m,
                    queue_size,
                    need,
                })
            }
            Some(m) => m,
            None => default_memory_mib(queue_size),
        };
        let workload = self.workload.unwrap_or(Workload::Stream);
        let count = self.count.unwrap_or(DEFAULT_COUNT);
        if count == 0 && workload != Workload::Sink {
            return Err(UsageError::ZeroCount {
                workload: workload.name(),
            });
        }
        let size = self.size.unwrap_or(DEFAULT_SIZE);
        if self.gso && workload != Workload::Stream {
            return Err(UsageError::GsoNotStream {
                workload: workload.name(),
            });
        }
        if self.gso && self.payload == Some(Payload::Stamp) {
            return Err(UsageError::GsoStamp);
        }
        if self.gso && size > MAX_GSO_SIZE {
            return Err(UsageError::GsoSizeTooLarge {
                size,
                max: MAX_GSO_SIZE,
            });
        }
        if let Some(cpu) = self.cpu.filter(|&c| !cpu_allowed(c)) {
            return Err(UsageError::NoSuchCpu {
                cpu,
                online: online_cpus(),
                section: "guest",
            });
        }
        Ok(Settings {
            name: self.name.clone(),
            spec: self.sharenet.clone(),
            workload,
            count,
            size,
            payload: self.payload.unwrap_or(Payload::Verify),
            notify: self.notify.unwrap_or(NotifyMode::EventIdx),
            writes: self.writes.unwrap_or(Writes::Nonblocking),
            wait: self.wait.unwrap_or(Wait::Adaptive),
            memory_mib,
            cpu: self.cpu,
            queue_size,
            timeout: Duration::from_secs_f64(self.timeout.unwrap_or(DEFAULT_TIMEOUT_SECS)),
            reconnect: self.reconnect,
            share: self.share.unwrap_or(Share::Guest),
            capture: self.capture.clone(),
            snaplen: self.snaplen,
            mtu: self.mtu,
            offloads: self.offloads.unwrap_or(Offloads::On),
            gso: self.gso,
        })
    }

    /// Apply defaults and cross-field checks, and check that the rendezvous
    /// can be created: everything a run needs.
    pub fn resolve(&self) -> Result<RunConfig, UsageError> {
        let spec = self.sharenet.clone().ok_or(UsageError::MissingSharenet)?;
        let s = self.settings()?;
        let capture = match (&self.capture, self.snaplen) {
            (None, Some(n)) => return Err(UsageError::SnaplenWithoutCapture(n)),
            (None, None) => None,
            (Some(path), snaplen) => Some(crate::capture::CaptureConfig {
                path: path.clone(),
                snaplen: snaplen.unwrap_or(crate::capture::DEFAULT_SNAPLEN),
            }),
        };
        check_rendezvous(&spec)?;
        Ok(RunConfig {
            name: s
                .name
                .unwrap_or_else(|| format!("guest-{}", std::process::id())),
            spec,
            workload: s.workload,
            count: s.count,
            size: s.size,
            payload: s.payload,
            notify: s.notify,
            writes: s.writes,
            wait: s.wait,
            memory_mib: s.memory_mib,
            cpu: s.cpu,
            queue_size: s.queue_size,
            timeout: s.timeout,
            stats_json: self.stats_json.clone(),
            rx_delay: Duration::from_micros(self.rx_delay_us.unwrap_or(0)),
            rate: self.rate,
            quiet: self.quiet,
            reconnect: s.reconnect,
            share: s.share,
            timeout_given: self.timeout.is_some(),
            capture,
            mac: self.mac,
            dst: self.dst,
            mtu: s.mtu,
            offloads: s.offloads,
            gso: s.gso,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::frame::MIN_FRAME;
    use crate::guest::plan::MAX_FRAME;

    #[test]
    fn count_zero_says_at_least_1() {
        assert_eq!(
            parse_count("0").unwrap_err().to_string(),
            "0 is out of range; expected at least 1"
        );
        assert_eq!(parse_count("18446744073709551615").unwrap(), u64::MAX);
        assert!(matches!(
            parse_count("abc"),
            Err(ValueError::NotANumber { .. })
        ));
    }

    #[test]
    fn count_zero_is_for_a_sink_only() {
        assert_eq!(parse_run_count("0").unwrap(), 0);
        let args = |w| RunArgs {
            workload: Some(w),
            count: Some(0),
            ..RunArgs::default()
        };
        assert_eq!(args(Workload::Sink).settings().unwrap().count, 0);
        for w in [Workload::Stream, Workload::Ping, Workload::Echo] {
            let e = args(w).settings().unwrap_err().to_string();
            assert!(e.contains("--count 0") && e.contains(w.name()), "{e}");
        }
    }

    #[test]
    fn reconnect_has_no_deadline_unless_a_timeout_is_given() {
        let args = |reconnect, timeout| RunArgs {
            sharenet: Some("unix:/tmp/sharenet-unit-unused".parse().unwrap()),
            reconnect,
            timeout,
            ..RunArgs::default()
        };
        let limit = |a: RunArgs| a.resolve().unwrap().run_limit();
        let default = Some(Duration::from_secs_f64(DEFAULT_TIMEOUT_SECS));
        assert_eq!(limit(args(false, None)), default);
        assert_eq!(limit(args(true, None)), None);
        assert_eq!(limit(args(true, Some(5.0))), Some(Duration::from_secs(5)));
    }

    #[test]
    fn size_range_words_match_the_limits() {
        assert_eq!(SIZE_RANGE, format!("{MIN_FRAME}..={MAX_FRAME} bytes"));
        assert_eq!(
            parse_size(&MIN_FRAME.to_string()).unwrap(),
            MIN_FRAME as u32
        );
        assert!(parse_size(&(MIN_FRAME - 1).to_string()).is_err());
    }

    #[test]
    fn queue_size_must_be_a_power_of_two_up_to_32768() {
        assert_eq!(parse_queue_size("1024").unwrap(), 1024);
        assert_eq!(parse_queue_size("3"), Err(ValueError::NotPowerOfTwo(3)));
        assert_eq!(
            parse_queue_size("65536"),
            Err(ValueError::NotPowerOfTwo(65536))
        );
        assert!(parse_queue_size("0").is_err());
    }

    #[test]
    fn default_memory_follows_queue_size() {
        assert_eq!(default_memory_mib(256), DEFAULT_MEMORY_MIB);
        assert_eq!(default_memory_mib(1024), 129);
        let args = RunArgs {
            queue_size: Some(1024),
            ..RunArgs::default()
        };
        assert_eq!(args.settings().unwrap().memory_mib, 129);
        let args = RunArgs {
            queue_size: Some(1024),
            memory: Some(64),
            ..RunArgs::default()
        };
        assert!(matches!(
            args.settings(),
            Err(UsageError::MemoryTooSmall { need: 129, .. })
        ));
    }

    #[test]
    fn rendezvous_directory_must_exist_and_be_writable() {
        let check = |s: &str| check_rendezvous(&s.parse().unwrap());
        assert!(matches!(
            check("fifo:/nonexistent-dir/x"),
            Err(UsageError::NoSuchDirectory { .. })
        ));
        assert!(matches!(
            check("fifo:/proc/nope"),
            Err(UsageError::NotWritable { .. })
        ));
        check("unix:/tmp/sharenet-unit-unused").unwrap();
        check("eventfd:relative-name").unwrap();
    }
}
