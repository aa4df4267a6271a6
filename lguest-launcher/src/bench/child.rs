//! `lguest-launcher bench-child`: one side of a two-process baseline.
//!
//! The benchmark starts this binary twice per baseline run, once as the
//! `lead` (the side that measures: the sender of a stream, the pinger of a
//! round trip) and once as the `peer`. They meet exactly as unix-socket
//! launchers do ([`transport::rendezvous`], either may start
//! first). The lead then creates what the two will share — a
//! `SOCK_SEQPACKET` socketpair, two pipes, two eventfds, two FIFOs, or a
//! sealed memfd for the SPSC ring — and hands the peer its ends with
//! `SCM_RIGHTS` on the rendezvous socket (FIFOs go by name). The peer says
//! "ready" once it holds them, and only then does the lead start its clock,
//! so set-up is never measured.
//!
//! Each side prints one JSON line on stdout ([`ChildReport`]): the lead its
//! figures, both their CPU time. A watchdog ends a side that outlives
//! `--timeout` (an eventfd read never sees EOF when the peer dies).

use super::spsc;
use rtt::round_trips;

mod rtt;
use crate::memory::{map_peer, GuestMemory};
use anyhow::{anyhow, bail, Context};
use clap::{Args, ValueEnum};
use nix::sys::socket::{recv, send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
use serde::{Deserialize, Serialize};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Which baseline a child runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ChildBaseline {
    /// SOCK_SEQPACKET socketpair, one way.
    Seqpacket,
    /// Shared-memory SPSC ring, busy-polling.
    Spsc,
    /// The SPSC limit: one copy per packet, indexes per batch, pinned.
    SpscBatched,
    /// Round trips over two pipes.
    RttPipe,
    /// Round trips over two FIFOs.
    RttFifo,
    /// Round trips over two eventfds.
    RttEventfd,
    /// Round trips over a SOCK_SEQPACKET socketpair.
    RttUnix,
}

impl ChildBaseline {
    /// The spelling on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ChildBaseline::Seqpacket => "seqpacket",
            ChildBaseline::Spsc => "spsc",
            ChildBaseline::SpscBatched => "spsc-batched",
            ChildBaseline::RttPipe => "rtt-pipe",
            ChildBaseline::RttFifo => "rtt-fifo",
            ChildBaseline::RttEventfd => "rtt-eventfd",
            ChildBaseline::RttUnix => "rtt-unix",
        }
    }
}

/// Which side a child is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Creates the shared objects and measures.
    Lead,
    /// Receives its ends and answers.
    Peer,
}

impl Role {
    /// The spelling on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Role::Lead => "lead",
            Role::Peer => "peer",
        }
    }
}

/// `bench-child` flags (hidden: only `bench` starts it).
#[derive(Debug, Args, Clone)]
pub struct ChildArgs {
    /// The baseline.
    #[arg(long, value_enum)]
    pub baseline: ChildBaseline,
    /// This side's role.
    #[arg(long, value_enum)]
    pub role: Role,
    /// Rendezvous path (a unix socket; FIFOs are made beside it).
    #[arg(long)]
    pub path: PathBuf,
    /// Frame size in bytes.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(16..=65535))]
    pub size: u32,
    /// Packets or round trips.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: u64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
    /// Pin this side to a CPU [default for `spsc-batched`: lead on CPU 0,
    /// peer on CPU 1, when there are two; others: not pinned].
    #[arg(long)]
    pub cpu: Option<usize>,
}

/// What a child prints (one JSON line).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ChildReport {
    /// Packets or round trips measured (lead only).
    pub packets: u64,
    /// Seconds the measured part took (lead only).
    pub elapsed_s: f64,
    /// CPU seconds this process used.
    pub cpu_s: f64,
    /// Round trip median, µs (round trips only).
    pub p50_us: Option<f64>,
    /// Round trip 99th percentile, µs.
    pub p99_us: Option<f64>,
    /// Round trip 99.9th percentile, µs.
    pub p999_us: Option<f64>,
}

/// Run one side; exit 0 with the report on stdout, or 1 with one line on
/// stderr.
pub fn run(args: &ChildArgs) -> ExitCode {
    let timeout = Duration::from_secs_f64(args.timeout.clamp(0.1, 86400.0));
    std::thread::spawn(move || {
        std::thread::sleep(timeout + Duration::from_secs(1));
        eprintln!(
            "error: bench-child timed out after {:.1} s",
            timeout.as_secs_f64()
        );
        std::process::exit(1);
    });
    match side(args, timeout) {
        Ok(mut report) => {
            report.cpu_s = crate::stats::cpu_seconds();
            match serde_json::to_string(&report) {
                Ok(line) => {
                    println!("{line}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Err(e) => {
            eprintln!(
                "error: bench-child {} {}: {e:#}",
                args.baseline.name(),
                args.role.name()
            );
            ExitCode::from(1)
        }
    }
}

fn side(args: &ChildArgs, timeout: Duration) -> anyhow::Result<ChildReport> {
    let deadline = Instant::now() + timeout;
    let meet = transport::rendezvous(&args.path, Some(timeout))
        .with_context(|| format!("rendezvous at {}", args.path.display()))?;
    let sock = meet.socket.as_fd();
    let cpu = args.cpu.or(match (args.baseline, args.role) {
        _ if crate::cli::online_cpus() < 2 => None,
        (ChildBaseline::SpscBatched, Role::Lead) => Some(0),
        (ChildBaseline::SpscBatched, Role::Peer) => Some(1),
        _ => None,
    });
    if let Some(cpu) = cpu {
        crate::run::pin_this_thread(cpu)?;
    }
    match args.baseline {
        ChildBaseline::Seqpacket => seqpacket(args, sock),
        ChildBaseline::Spsc | ChildBaseline::SpscBatched => spsc_side(args, sock, deadline),
        ChildBaseline::RttPipe
        | ChildBaseline::RttFifo
        | ChildBaseline::RttEventfd
        | ChildBaseline::RttUnix => round_trips(args, sock),
    }
}

/// Lead: hand the peer its fds (and 8 bytes of data).
fn offer(sock: BorrowedFd<'_>, data: u64, fds: &[BorrowedFd<'_>]) -> anyhow::Result<()> {
    transport::send_with_fds(sock, &data.to_le_bytes(), fds).context("send set-up")
}

/// Peer: take what the lead offers.
fn take(sock: BorrowedFd<'_>, want_fds: usize) -> anyhow::Result<(u64, Vec<OwnedFd>)> {
    let mut buf = [0u8; 8];
    let got = transport::recv_with_fds(sock, &mut buf, MsgFlags::empty())
        .context("receive set-up")?
        .ok_or_else(|| anyhow!("no set-up message"))?;
    if got.len != 8 || got.fds.len() != want_fds {
        bail!(
            "set-up message of {} bytes with {} fds; expected 8 bytes and {want_fds} fds",
            got.len,
            got.fds.len()
        );
    }
    Ok((u64::from_le_bytes(buf), got.fds))
}

/// Peer says it is ready; the lead waits for that before its clock starts.
fn ready(sock: BorrowedFd<'_>, role: Role) -> anyhow::Result<()> {
    let mut b = [0u8; 1];
    match role {
        Role::Peer => send(sock.as_raw_fd(), b"r", MsgFlags::MSG_NOSIGNAL)
            .map(|_| ())
            .context("send ready"),
        Role::Lead => match recv(sock.as_raw_fd(), &mut b, MsgFlags::empty()) {
            Ok(1) => Ok(()),
            Ok(_) => bail!("the peer left before it was ready"),
            Err(e) => Err(anyhow!("wait for ready: {e}")),
        },
    }
}

fn seqpair() -> anyhow::Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .context("socketpair")
}

fn send_all(fd: BorrowedFd<'_>, buf: &[u8]) -> anyhow::Result<()> {
    loop {
        match send(fd.as_raw_fd(), buf, MsgFlags::MSG_NOSIGNAL) {
            Ok(n) if n == buf.len() => return Ok(()),
            Ok(n) => bail!("short send: {n} of {} bytes", buf.len()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => bail!("send: {e}"),
        }
    }
}

fn recv_one(fd: BorrowedFd<'_>, buf: &mut [u8]) -> anyhow::Result<usize> {
    loop {
        match recv(fd.as_raw_fd(), buf, MsgFlags::empty()) {
            Ok(0) => bail!("the other side closed the socket"),
            Ok(n) => return Ok(n),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => bail!("recv: {e}"),
        }
    }
}

/// SOCK_SEQPACKET one way: the lead sends `count` records of `size` bytes,
/// the peer receives them all and acknowledges with one byte.
fn seqpacket(args: &ChildArgs, sock: BorrowedFd<'_>) -> anyhow::Result<ChildReport> {
    let size = args.size as usize;
    match args.role {
        Role::Lead => {
            let (mine, theirs) = seqpair()?;
            offer(sock, 0, &[theirs.as_fd()])?;
            drop(theirs);
            ready(sock, Role::Lead)?;
            let mut frame = vec![0x5au8; size];
            let start = Instant::now();
            for seq in 0..args.count {
                frame[..8].copy_from_slice(&seq.to_le_bytes());
                send_all(mine.as_fd(), &frame)?;
            }
            let mut ack = [0u8; 1];
            recv_one(mine.as_fd(), &mut ack)?;
            Ok(ChildReport {
                packets: args.count,
                elapsed_s: start.elapsed().as_secs_f64(),
                ..Default::default()
            })
        }
        Role::Peer => {
            let (_, mut fds) = take(sock, 1)?;
            let data = fds.remove(0);
            ready(sock, Role::Peer)?;
            // One spare byte: a longer record would show up as one.
            let mut buf = vec![0u8; size + 1];
            for seq in 0..args.count {
                let n = recv_one(data.as_fd(), &mut buf)?;
                let got = u64::from_le_bytes(buf[..8].try_into().unwrap_or_default());
                if n != size || got != seq {
                    bail!("record {seq}: {n} bytes, sequence {got}; expected {size} bytes");
                }
            }
            send_all(data.as_fd(), b"k")?;
            Ok(ChildReport::default())
        }
    }
}

/// The SPSC ring: the lead makes and shares the memfd and produces; the
/// peer maps it and consumes.
fn spsc_side(
    args: &ChildArgs,
    sock: BorrowedFd<'_>,
    deadline: Instant,
) -> anyhow::Result<ChildReport> {
    let bytes = spsc::memory_size(args.size);
    match args.role {
        Role::Lead => {
            let mem = GuestMemory::create("bench-spsc", bytes)?;
            offer(sock, bytes, &[mem.fd()])?;
            ready(sock, Role::Lead)?;
            let start = Instant::now();
            if args.baseline == ChildBaseline::SpscBatched {
                spsc::produce_batched(mem.region(), args.size, args.count, deadline)?;
            } else {
                spsc::produce(mem.region(), args.size, args.count, deadline)?;
            }
            Ok(ChildReport {
                packets: args.count,
                elapsed_s: start.elapsed().as_secs_f64(),
                ..Default::default()
            })
        }
        Role::Peer => {
            let (size, mut fds) = take(sock, 1)?;
            if size != bytes {
                bail!("the lead's ring is {size} bytes; expected {bytes}");
            }
            let fd = fds.remove(0);
            transport::check_peer_memory(fd.as_fd(), size)?;
            let region = map_peer(fd, size)?;
            ready(sock, Role::Peer)?;
            if args.baseline == ChildBaseline::SpscBatched {
                spsc::consume_batched(&region, args.size, args.count, deadline)?;
            } else {
                spsc::consume(&region, args.size, args.count, deadline)?;
            }
            Ok(ChildReport::default())
        }
    }
}
