//! The yardsticks, measured in the same run as the matrix.
//!
//! * **seqpacket** — AF_UNIX `SOCK_SEQPACKET` socketpair between two
//!   processes, one record per packet, one way: the "just use a socket"
//!   answer every sharenet stream cell is compared with.
//! * **SPSC** — the least a shared-memory ring can do: one producer, one
//!   consumer, busy-polling, one copy in and one copy out per packet (see
//!   [`super::spsc`]). The ceiling for `--wait spin`.
//! * **memcpy** — one thread copying frames between two cache-resident
//!   buffers: the copy ceiling (the copier does one such copy per packet).
//! * **devq** — the device side of a split queue alone, ours
//!   ([`crate::virtq::DeviceQueue`]) and rust-vmm's `virtio_queue::Queue`,
//!   on the same ring in one thread (see [`super::devq`]): what our own
//!   queue code costs or saves against the hardened crate.
//! * **raw round trips** over a pipe, two FIFOs, two eventfds and a unix
//!   socket, both sides blocking: the floor for a ping over the transport
//!   of the same kind.
//!
//! Every two-process baseline is two `bench-child` processes (see
//! [`super::child`]) that meet on a path in the scratch directory; memcpy
//! and devq run in this process, which is otherwise idle at that point.

use super::child::{ChildBaseline, ChildReport, Role};
use super::devq::{self, DevqImpl};
use super::error::BenchError;
use super::measure::measure as measure_runs;
use super::pair::run_pair;
use super::row::{Row, RowKey};
use super::summary::Measurement;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Which baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BaselineKind {
    /// AF_UNIX SOCK_SEQPACKET one-way.
    Seqpacket,
    /// Shared-memory SPSC ring, busy-polling.
    Spsc,
    /// The limit: one copy per packet, indexes published per batch, both
    /// sides polling, pinned to different CPUs.
    SpscBatched,
    /// Single-thread memcpy.
    Memcpy,
    /// The device side of a split queue, in one thread.
    Devq(DevqImpl),
    /// Raw blocking round trips over one kind of channel.
    Rtt(RttKind),
}

/// The channels raw round trips are timed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RttKind {
    /// An anonymous pipe each way.
    Pipe,
    /// A named FIFO each way.
    Fifo,
    /// An eventfd each way.
    Eventfd,
    /// One unix SOCK_SEQPACKET socketpair.
    Unix,
}

/// One planned baseline measurement.
#[derive(Clone, Debug)]
pub struct Baseline {
    /// What is measured.
    pub kind: BaselineKind,
    /// Frame size in bytes (64 for round trips).
    pub size: u32,
    /// Packets, round trips or copies per run.
    pub count: u64,
}

impl Baseline {
    /// The `transport` column of its row.
    pub fn transport(&self) -> &'static str {
        match self.kind {
            BaselineKind::Seqpacket => "baseline-seqpacket",
            BaselineKind::Spsc => "baseline-spsc",
            BaselineKind::SpscBatched => "baseline-spsc-batched",
            BaselineKind::Memcpy => "baseline-memcpy",
            BaselineKind::Devq(which) => which.transport(),
            BaselineKind::Rtt(RttKind::Pipe) => "baseline-rtt-pipe",
            BaselineKind::Rtt(RttKind::Fifo) => "baseline-rtt-fifo",
            BaselineKind::Rtt(RttKind::Eventfd) => "baseline-rtt-eventfd",
            BaselineKind::Rtt(RttKind::Unix) => "baseline-rtt-unix",
        }
    }

    /// A short label for the progress bar.
    pub fn label(&self) -> String {
        format!("{} {} B", self.transport(), self.size)
    }

    fn workload(&self) -> &'static str {
        match self.kind {
            BaselineKind::Seqpacket | BaselineKind::Spsc | BaselineKind::SpscBatched => "stream",
            BaselineKind::Memcpy => "memcpy",
            BaselineKind::Devq(_) => "devq",
            BaselineKind::Rtt(_) => "ping",
        }
    }

    fn child(&self) -> Option<ChildBaseline> {
        Some(match self.kind {
            BaselineKind::Seqpacket => ChildBaseline::Seqpacket,
            BaselineKind::Spsc => ChildBaseline::Spsc,
            BaselineKind::SpscBatched => ChildBaseline::SpscBatched,
            BaselineKind::Memcpy | BaselineKind::Devq(_) => return None,
            BaselineKind::Rtt(RttKind::Pipe) => ChildBaseline::RttPipe,
            BaselineKind::Rtt(RttKind::Fifo) => ChildBaseline::RttFifo,
            BaselineKind::Rtt(RttKind::Eventfd) => ChildBaseline::RttEventfd,
            BaselineKind::Rtt(RttKind::Unix) => ChildBaseline::RttUnix,
        })
    }
}

fn scaled(n: u64, scale: f64, min: u64) -> u64 {
    ((n as f64 * scale).round() as u64).max(min)
}

/// The baselines of a run (all of them in both modes; quick uses smaller
/// counts).
pub fn plan(quick: bool, scale: f64) -> Vec<Baseline> {
    let seq_n = scaled(if quick { 200_000 } else { 500_000 }, scale, 1);
    // Jumbo frames move ~5× fewer packets per second: fewer of them.
    let spsc_n = |size: u32| scaled(if size > 1500 { 1_000_000 } else { 5_000_000 }, scale, 1);
    let copies = scaled(2_000_000, scale, 1);
    let chains = scaled(if quick { 2_000_000 } else { 5_000_000 }, scale, 1);
    let rtts = scaled(5_000, scale, 10);
    let mut v = Vec::new();
    for size in [64, 1500, 9000] {
        v.push(Baseline {
            kind: BaselineKind::Seqpacket,
            size,
            count: seq_n,
        });
    }
    for size in [64, 1500, 9000] {
        v.push(Baseline {
            kind: BaselineKind::Spsc,
            size,
            count: spsc_n(size),
        });
    }
    for size in [64, 1500, 9000] {
        v.push(Baseline {
            kind: BaselineKind::SpscBatched,
            size,
            count: spsc_n(size) * 4,
        });
    }
    for size in [1500, 9000] {
        v.push(Baseline {
            kind: BaselineKind::Memcpy,
            size,
            count: copies,
        });
    }
    for which in [DevqImpl::Sharenet, DevqImpl::VirtioQueue] {
        v.push(Baseline {
            kind: BaselineKind::Devq(which),
            size: devq::BUF_LEN,
            count: chains,
        });
    }
    for k in [
        RttKind::Pipe,
        RttKind::Fifo,
        RttKind::Eventfd,
        RttKind::Unix,
    ] {
        v.push(Baseline {
            kind: BaselineKind::Rtt(k),
            size: 64,
            count: rtts,
        });
    }
    v
}

/// Run a baseline `runs` times and fold the runs into a row.
pub fn measure(b: &Baseline, runs: u32, dir: &Path, timeout: Duration, tick: impl FnMut()) -> Row {
    let headline = match b.kind {
        BaselineKind::Memcpy => "gbytes_per_s",
        BaselineKind::Rtt(_) => "p50_us",
        _ => "mpps",
    };
    let key = RowKey {
        transport: b.transport().into(),
        notify: None,
        writes: None,
        wait: None,
        size: b.size,
        workload: b.workload().into(),
    };
    let once = |run: u32| {
        let path = dir.join(format!(
            "{}-{}-r{run}",
            b.transport().trim_start_matches("baseline-"),
            b.size
        ));
        match (b.kind, b.child()) {
            (_, Some(which)) => run_children(b, which, &path, timeout),
            (BaselineKind::Devq(which), None) => devq::run(which, b.count),
            _ => Ok(memcpy(b.size, b.count)),
        }
    };
    measure_runs(key, runs, headline, once, tick)
}

fn child_command(
    b: &Baseline,
    which: ChildBaseline,
    role: Role,
    path: &Path,
    timeout: Duration,
) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap_or_else(|_| "lguest-launcher".into()));
    c.arg("bench-child")
        .args(["--baseline", which.name()])
        .args(["--role", role.name()])
        .arg("--path")
        .arg(path)
        .args(["--size", &b.size.to_string()])
        .args(["--count", &b.count.to_string()])
        .args(["--timeout", &format!("{:.1}", timeout.as_secs_f64())]);
    c
}

fn parse_report(stdout: &str, who: &'static str) -> Result<ChildReport, BenchError> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or(BenchError::NoReport { who })?;
    serde_json::from_str(line).map_err(|source| BenchError::BadReport { who, source })
}

fn run_children(
    b: &Baseline,
    which: ChildBaseline,
    path: &Path,
    timeout: Duration,
) -> Result<Measurement, BenchError> {
    let lead = child_command(b, which, Role::Lead, path, timeout);
    let peer = child_command(b, which, Role::Peer, path, timeout);
    let (fl, fp) = run_pair(lead, peer, timeout + Duration::from_secs(5))?;
    if let Some(e) = fl.failure("lead").or_else(|| fp.failure("peer")) {
        return Err(e);
    }
    let rl = parse_report(&fl.stdout, "lead")?;
    let rp = parse_report(&fp.stdout, "peer")?;
    let n = rl.packets as f64;
    if rl.packets == 0 || rl.elapsed_s <= 0.0 {
        return Err(BenchError::NothingMeasured);
    }
    let mut m = Measurement {
        packets: rl.packets,
        cpu_s_per_mpkt: Some((rl.cpu_s + rp.cpu_s) / (n / 1e6)),
        ..Default::default()
    };
    match b.kind {
        BaselineKind::Rtt(_) => {
            m.p50_us = rl.p50_us;
            m.p99_us = rl.p99_us;
            m.p999_us = rl.p999_us;
        }
        _ => {
            let mpps = n / rl.elapsed_s / 1e6;
            m.mpps = Some(mpps);
            m.gbps = Some(mpps * 1e6 * b.size as f64 * 8.0 / 1e9);
        }
    }
    Ok(m)
}

/// Copy `count` frames of `size` bytes between two cache-resident sets of
/// 32 buffers: the copy ceiling of one core.
fn memcpy(size: u32, count: u64) -> Measurement {
    const SLOTS: usize = 32;
    let size = size as usize;
    let src: Vec<u8> = (0..SLOTS * size).map(|i| i as u8).collect();
    let mut dst = vec![0u8; SLOTS * size];
    // One untimed pass so page faults and cache misses of the first touch
    // are not in the figure.
    dst.copy_from_slice(&src);
    let start = Instant::now();
    for i in 0..count as usize {
        let s = (i % SLOTS) * size;
        let d = ((i + 7) % SLOTS) * size;
        dst[d..d + size].copy_from_slice(std::hint::black_box(&src[s..s + size]));
        std::hint::black_box(&mut dst);
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    let bytes = count as f64 * size as f64;
    Measurement {
        packets: count,
        mpps: Some(count as f64 / secs / 1e6),
        gbps: Some(bytes * 8.0 / secs / 1e9),
        gbytes_per_s: Some(bytes / secs / 1e9),
        cpu_s_per_mpkt: Some(secs / (count as f64 / 1e6)),
        ..Default::default()
    }
}
