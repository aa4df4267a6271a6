//! The raw round-trip baselines (`rtt-pipe`, `rtt-fifo`, `rtt-eventfd`,
//! `rtt-unix`): a channel each way, and blocking round trips over it.

use super::{offer, ready, seqpair, take, ChildArgs, ChildBaseline, ChildReport, Role};
use anyhow::{anyhow, bail, Context};
use hdrhistogram::Histogram;
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::stat::Mode;
use nix::unistd::{mkfifo, pipe2};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A channel each way, as plain files: a write wakes the other side's
/// blocking read.
struct Duplex {
    tx: File,
    rx: File,
    /// What one wake-up writes: one byte, or an eventfd's 8-byte 1.
    word: Vec<u8>,
}

fn fifo_paths(path: &Path) -> (PathBuf, PathBuf) {
    (path.with_extension("ping"), path.with_extension("pong"))
}

fn open(p: &Path, write: bool) -> anyhow::Result<File> {
    OpenOptions::new()
        .read(!write)
        .write(write)
        .open(p)
        .with_context(|| format!("open {}", p.display()))
}

/// Set up the two directions of a round-trip baseline.
fn duplex(args: &ChildArgs, sock: BorrowedFd<'_>) -> anyhow::Result<Duplex> {
    let byte = vec![1u8];
    let file = File::from;
    match (args.baseline, args.role) {
        (ChildBaseline::RttPipe, Role::Lead) => {
            let (peer_rx, tx) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
            let (rx, peer_tx) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
            offer(sock, 0, &[peer_rx.as_fd(), peer_tx.as_fd()])?;
            Ok(Duplex {
                tx: file(tx),
                rx: file(rx),
                word: byte,
            })
        }
        (ChildBaseline::RttEventfd, Role::Lead) => {
            let to_peer = OwnedFd::from(EventFd::from_flags(EfdFlags::EFD_CLOEXEC)?);
            let to_lead = OwnedFd::from(EventFd::from_flags(EfdFlags::EFD_CLOEXEC)?);
            offer(sock, 0, &[to_peer.as_fd(), to_lead.as_fd()])?;
            Ok(Duplex {
                tx: file(to_peer),
                rx: file(to_lead),
                word: 1u64.to_ne_bytes().to_vec(),
            })
        }
        (ChildBaseline::RttUnix, Role::Lead) => {
            let (mine, theirs) = seqpair()?;
            offer(sock, 0, &[theirs.as_fd()])?;
            let tx = file(mine);
            Ok(Duplex {
                rx: tx.try_clone()?,
                tx,
                word: byte,
            })
        }
        (ChildBaseline::RttFifo, Role::Lead) => {
            let (ping, pong) = fifo_paths(&args.path);
            for p in [&ping, &pong] {
                let _ = std::fs::remove_file(p);
                mkfifo(p, Mode::S_IRUSR | Mode::S_IWUSR)
                    .with_context(|| format!("mkfifo {}", p.display()))?;
            }
            offer(sock, 0, &[])?;
            // Opens block until the other end opens too; the peer opens in
            // the same order, so neither waits for the other forever.
            let tx = open(&ping, true)?;
            let rx = open(&pong, false)?;
            let _ = std::fs::remove_file(&ping);
            let _ = std::fs::remove_file(&pong);
            Ok(Duplex { tx, rx, word: byte })
        }
        (kind @ (ChildBaseline::RttPipe | ChildBaseline::RttEventfd), Role::Peer) => {
            let (_, mut fds) = take(sock, 2)?;
            let tx = fds.pop().ok_or_else(|| anyhow!("missing fd"))?;
            let rx = fds.pop().ok_or_else(|| anyhow!("missing fd"))?;
            Ok(Duplex {
                tx: file(tx),
                rx: file(rx),
                word: match kind {
                    ChildBaseline::RttEventfd => 1u64.to_ne_bytes().to_vec(),
                    _ => byte,
                },
            })
        }
        (ChildBaseline::RttUnix, Role::Peer) => {
            let (_, mut fds) = take(sock, 1)?;
            let tx = file(fds.remove(0));
            Ok(Duplex {
                rx: tx.try_clone()?,
                tx,
                word: byte,
            })
        }
        (ChildBaseline::RttFifo, Role::Peer) => {
            take(sock, 0)?;
            let (ping, pong) = fifo_paths(&args.path);
            let rx = open(&ping, false)?;
            let tx = open(&pong, true)?;
            Ok(Duplex { tx, rx, word: byte })
        }
        (other, _) => bail!("{} is not a round-trip baseline", other.name()),
    }
}

/// Raw blocking round trips: the lead writes a word and blocks reading the
/// answer; the peer blocks reading, then answers. The first tenth (at most
/// 200) are warm-up and not recorded.
pub(super) fn round_trips(args: &ChildArgs, sock: BorrowedFd<'_>) -> anyhow::Result<ChildReport> {
    let mut d = duplex(args, sock)?;
    ready(sock, args.role)?;
    let warmup = (args.count / 10).clamp(1, 200);
    let mut got = vec![0u8; d.word.len()];
    match args.role {
        Role::Lead => {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)
                .map_err(|e| anyhow!("histogram: {e}"))?;
            let mut start = Instant::now();
            for i in 0..warmup + args.count {
                if i == warmup {
                    start = Instant::now();
                }
                let t = Instant::now();
                d.tx.write_all(&d.word).context("write")?;
                d.rx.read_exact(&mut got).context("read")?;
                if i >= warmup {
                    let ns = t.elapsed().as_nanos().clamp(1, 60_000_000_000) as u64;
                    hist.saturating_record(ns);
                }
            }
            let us = |q: f64| Some(hist.value_at_quantile(q) as f64 / 1000.0);
            Ok(ChildReport {
                packets: args.count,
                elapsed_s: start.elapsed().as_secs_f64(),
                p50_us: us(0.50),
                p99_us: us(0.99),
                p999_us: us(0.999),
                ..Default::default()
            })
        }
        Role::Peer => {
            for _ in 0..warmup + args.count {
                d.rx.read_exact(&mut got).context("read")?;
                d.tx.write_all(&d.word).context("write")?;
            }
            Ok(ChildReport::default())
        }
    }
}
