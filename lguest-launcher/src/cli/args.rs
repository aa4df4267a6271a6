//! The command line: flags, subcommands, and checked values.
//!
//! Every flag is optional here so profile values (issue: profiles) can fill
//! the gaps; [`RunArgs::resolve`] applies the documented defaults. Bad values
//! are refused by clap with the flag named and exit code 2.

use crate::cli::config::{Notify, RunConfig, Spec, Wait, Workload, Writes};
use crate::guest::frame::MIN_FRAME;
use crate::guest::plan::{Layout, MAX_FRAME};
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
    /// `demo` or `bench`; without one, run one side of a pair.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags for one side of a pair.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a pair over every transport and print a table.
    #[command(
        after_help = "Example:\n  lguest-launcher demo\n  lguest-launcher demo --count 50000 --size 64"
    )]
    Demo(DemoArgs),
    /// Compare every transport and mode against same-run baselines.
    Bench(crate::bench::BenchArgs),
    /// Serve a QEMU VM's virtio-net device over vhost-user, joined to a peer launcher.
    #[command(
        name = "vhost-user",
        after_help = "Example (see scripts/vm-pair):\n  lguest-launcher vhost-user --socket /tmp/vm-a.sock --sharenet unix:/tmp/vmlink\n  qemu-system-x86_64 ... -object memory-backend-memfd,id=mem,size=256M,share=on -numa node,memdev=mem \\\n    -chardev socket,id=c0,path=/tmp/vm-a.sock -netdev vhost-user,id=n0,chardev=c0 \\\n    -device virtio-net-pci,netdev=n0,mac=52:54:00:00:00:01,vectors=0"
    )]
    VhostUser(crate::vhost_user::VhostArgs),
    /// One side of a two-process benchmark baseline (started by `bench`).
    #[command(hide = true)]
    BenchChild(crate::bench::ChildArgs),
}

/// `demo` flags.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Packets streamed per transport.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: u64,
    /// Frame size in bytes for the stream.
    #[arg(long, default_value_t = 1500, value_parser = clap::value_parser!(u32).range(MIN_FRAME as i64..=MAX_FRAME as i64))]
    pub size: u32,
    /// Pings per transport.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    pub pings: u64,
    /// Only these transports (comma-separated).
    #[arg(long, value_delimiter = ',', value_enum)]
    pub transports: Vec<crate::cli::config::Kind>,
}

/// Flags of one side of a pair (all optional: defaults apply in `resolve`).
#[derive(Debug, Args, Default, Clone)]
pub struct RunArgs {
    /// Read defaults from this TOML profile (flags override it).
    #[arg(long, value_name = "FILE.toml")]
    pub profile: Option<PathBuf>,
    /// Print the merged configuration as TOML (with where each value came
    /// from) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Transport and rendezvous path: fifo:PATH, unix:PATH or eventfd:PATH.
    #[arg(long, value_name = "KIND:PATH")]
    pub sharenet: Option<Spec>,
    /// What the synthetic guest does [default: stream].
    #[arg(long, value_enum)]
    pub workload: Option<Workload>,
    /// Packets to send or receive [default: 100000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Frame size in bytes, 16..=65535 [default: 1500].
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(MIN_FRAME as i64..=MAX_FRAME as i64))]
    pub size: Option<u32>,
    /// Notification suppression [default: event-idx].
    #[arg(long, value_enum)]
    pub notify: Option<Notify>,
    /// May a notification write block? [default: nonblocking].
    #[arg(long, value_enum)]
    pub writes: Option<Writes>,
    /// What to do when idle [default: adaptive].
    #[arg(long, value_enum)]
    pub wait: Option<Wait>,
    /// Guest memory in MiB [default: 64].
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub memory: Option<u64>,
    /// Entries per ring: a power of two up to 32768 [default: 256].
    #[arg(long, value_name = "N", value_parser = parse_queue_size)]
    pub queue_size: Option<u32>,
    /// Bound on the whole run in seconds, waiting for the peer included [default: 60].
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub timeout: Option<f64>,
    /// Write the stats JSON object here at exit (also on failure).
    #[arg(long, value_name = "PATH")]
    pub stats_json: Option<PathBuf>,
    /// Guest name, used in messages [default: guest-PID].
    #[arg(long)]
    pub name: Option<String>,
    /// Sleep this many microseconds per received packet (a slow sink, for tests).
    #[arg(long, value_name = "US", hide = true)]
    pub rx_delay_us: Option<u64>,
    /// No progress or connection lines on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

/// `--queue-size`: a power of two, 1..=32768.
pub fn parse_queue_size(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number; expected a power of two from 1 to 32768"))?;
    if n == 0 || !n.is_power_of_two() || n > 32768 {
        return Err(format!(
            "{n} is not a power of two from 1 to 32768 (try 256)"
        ));
    }
    Ok(n)
}

fn parse_secs(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(v > 0.0 && v <= 86400.0) {
        return Err(format!(
            "{v} is out of range; expected seconds in (0, 86400]"
        ));
    }
    Ok(v)
}

/// A usage error: the flag or key at fault and the message.
#[derive(Debug)]
pub struct UsageError(pub String);

impl RunArgs {
    /// Apply defaults and cross-field checks.
    pub fn resolve(&self) -> Result<RunConfig, UsageError> {
        let spec = self.sharenet.clone().ok_or_else(|| {
            UsageError(
                "missing --sharenet KIND:PATH (e.g. --sharenet fifo:/tmp/sn0, or `sharenet = ...` in a profile's [net]); or run `lguest-launcher demo`"
                    .into(),
            )
        })?;
        let queue_size = self.queue_size.unwrap_or(256);
        let memory_mib = self.memory.unwrap_or(64);
        let need = Layout::plan(queue_size).needed_mib();
        if memory_mib < need {
            return Err(UsageError(format!(
                "--memory {memory_mib} MiB is too small for --queue-size {queue_size} (or memory_mib/queue_size in a profile's [guest]): the rings and buffers need {need} MiB; raise --memory or lower --queue-size"
            )));
        }
        Ok(RunConfig {
            name: self
                .name
                .clone()
                .unwrap_or_else(|| format!("guest-{}", std::process::id())),
            spec,
            workload: self.workload.unwrap_or(Workload::Stream),
            count: self.count.unwrap_or(100_000),
            size: self.size.unwrap_or(1500),
            notify: self.notify.unwrap_or(Notify::EventIdx),
            writes: self.writes.unwrap_or(Writes::Nonblocking),
            wait: self.wait.unwrap_or(Wait::Adaptive),
            memory_mib,
            queue_size,
            timeout: Duration::from_secs_f64(self.timeout.unwrap_or(60.0)),
            stats_json: self.stats_json.clone(),
            rx_delay: Duration::from_micros(self.rx_delay_us.unwrap_or(0)),
            quiet: self.quiet,
        })
    }
}
