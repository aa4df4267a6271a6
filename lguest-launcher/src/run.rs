//! One launcher run: memory, rendezvous, then the loop.
//!
//! The synthetic guest and the copier run to completion in one thread, as
//! DPDK's virtio-user polls its own device: each turn the guest does what
//! it can (reap, receive, send) and the copier pulls what the peer offers.
//! When neither made progress the launcher idles as `--wait` says:
//!
//! * `spin` polls again (and checks every millisecond that the peer lives);
//! * `sleep` re-enables notifications, re-checks the rings, and only then
//!   sleeps in the transport — the classic race: a peer that published just
//!   before we re-enabled would otherwise never kick us;
//! * `adaptive` spins for a bounded time, then sleeps.
//!
//! Kicks to the peer (our TX avail moved) and interrupts to the peer (its TX
//! used moved) both cross the transport, each only when the peer's
//! suppression state asks for it.

use crate::config::{RunConfig, Wait, Workload, Writes};
use crate::copier::{notify, Copier, CopyError};
use crate::layout::Layout;
use crate::memory::{map_peer, GuestMap, GuestMemory};
use crate::ring::{NotifyMode, RingError};
use crate::stats::Stats;
use crate::workload::Guest;
use std::sync::atomic::{fence, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use transport::{ConnectOptions, Handshake, Transport, Wakeup};

/// How long `adaptive` spins before sleeping: about the cost of one
/// cross-core wake-up on this kind of machine (see LIMITS.md).
pub const ADAPTIVE_SPIN: Duration = Duration::from_micros(50);
/// How often a busy or spinning launcher checks that the peer lives.
const LIVENESS_EVERY: Duration = Duration::from_millis(1);
/// Busy turns of the run loop between two looks at the clock.
const CLOCK_EVERY: u32 = 64;
/// Longest single sleep, so deadlines are honoured.
const MAX_SLEEP: Duration = Duration::from_millis(100);

/// Why a run failed (runtime failures: exit 1).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Setting up memory failed.
    #[error("guest memory: {0}")]
    Memory(#[from] crate::memory::MemoryError),
    /// Rendezvous or notification failed (includes "peer gone").
    #[error("{0}")]
    Transport(#[from] transport::Error),
    /// The copier stopped the link.
    #[error("peer {pid}: {err}; disconnecting")]
    Copy {
        /// The peer's pid.
        pid: u32,
        /// What the copier found.
        err: CopyError,
    },
    /// Our own rings are broken, or the peer wrote impossible used entries.
    #[error("peer {pid} broke our TX ring: {err}")]
    Ring {
        /// The peer's pid.
        pid: u32,
        /// What it wrote.
        err: RingError,
    },
    /// `--timeout` passed before the workload finished.
    #[error("timed out after {0:.1} s before the workload finished")]
    Timeout(f64),
}

/// Stats shared with the watchdog, which writes them if the run hangs.
pub type SharedStats = Arc<Mutex<Stats>>;

/// Run one launcher over transport `T`. Returns the final stats; on error,
/// the stats so far are in `shared`.
pub fn run<T: Transport>(cfg: &RunConfig, shared: &SharedStats) -> Result<Stats, RunError> {
    let start = Instant::now();
    let deadline = start + cfg.timeout;
    let mode: NotifyMode = cfg.notify.into();
    let mut stats = Stats {
        transport: cfg.spec.kind.name().into(),
        workload: cfg.workload.name().into(),
        notify: cfg.notify.name().into(),
        writes: cfg.writes.name().into(),
        wait: cfg.wait.name().into(),
        size: cfg.size,
        ..Stats::default()
    };
    *lock(shared) = stats.clone();

    let layout = Layout::plan(cfg.queue_size);
    let mem = GuestMemory::create(&cfg.name, cfg.memory_mib << 20)?;
    let local = Handshake::new(
        std::process::id(),
        mode.features(),
        mem.region().len(),
        mem.raw_fd(),
        layout.tx,
        layout.rx,
    );
    if !cfg.quiet {
        eprintln!("waiting for peer on {} ...", cfg.spec);
    }
    let opts = ConnectOptions {
        nonblocking_writes: cfg.writes == Writes::Nonblocking,
        timeout: Some(cfg.timeout),
    };
    let (t, peer) = T::connect(&cfg.spec.path, &local, mem.fd(), &opts)?;
    let t = Arc::new(t);
    let peer_pid = peer.handshake.pid;
    // Each side maintains the suppression fields of its own mode; the pair
    // uses the lower of the two so neither waits on a field nobody writes.
    let mode = mode.min(NotifyMode::from_features(peer.handshake.features));
    let peer_tx = peer.handshake.tx;
    let peer_mem = GuestMap::new(
        map_peer(peer.memory, peer.handshake.mem_size)?,
        peer.handshake.regions(),
    );
    stats.peer_pid = peer_pid;
    stats.notify_effective = mode.name().into();
    if !cfg.quiet {
        eprintln!(
            "connected to peer pid {peer_pid} over {}: peer memory {} MiB, queue {}; notify {} (asked {}), writes {}, wait {}",
            cfg.spec.kind.name(),
            peer_mem.region().len() >> 20,
            peer_tx.size,
            mode.name(),
            cfg.notify.name(),
            cfg.writes.name(),
            cfg.wait.name()
        );
    }

    let ring_err = |err| RunError::Ring { pid: peer_pid, err };
    let copy_err = |err| match err {
        CopyError::Transport(e) => RunError::Transport(e),
        err => RunError::Copy { pid: peer_pid, err },
    };
    let mut guest = Guest::new(
        mem.region().clone(),
        layout,
        mode,
        cfg.workload,
        cfg.count,
        cfg.size,
        cfg.rx_delay,
    )
    .map_err(ring_err)?;
    let own_map = GuestMap::identity(mem.region().clone());
    let mut copier = Copier::new(t.clone(), &peer_mem, &peer_tx, &own_map, &layout.rx, mode)
        .map_err(ring_err)?;
    // Start "awake" (the peer kicks us until we first go idle), except when
    // spinning: then we never want a kick.
    copier
        .set_notifications(cfg.wait != Wait::Spin)
        .map_err(copy_err)?;

    let started = Instant::now();
    let mut last_check = started;
    let mut idle_since: Option<Instant> = None;
    let mut turns: u32 = 0;
    let result = (|| -> Result<(), RunError> {
        loop {
            let step = guest.step(&mut stats).map_err(ring_err)?;
            if let Some((old, new)) = step.tx_published {
                if guest.tx.kick_needed(mode, old, new).map_err(ring_err)? {
                    notify(&*t, &mut stats)?;
                } else {
                    stats.notifications_suppressed += 1;
                }
            }
            let moved = copier.poll(&mut stats).map_err(copy_err)?;
            if guest.done() {
                return Ok(());
            }
            // Reading the clock costs as much as moving a small packet:
            // look at it every CLOCK_EVERY busy turns, and whenever idle.
            turns = turns.wrapping_add(1);
            let busy = step.progress || moved > 0;
            if busy && !turns.is_multiple_of(CLOCK_EVERY) {
                idle_since = None;
                continue;
            }
            let now = Instant::now();
            if now.duration_since(last_check) >= LIVENESS_EVERY {
                last_check = now;
                if now >= deadline {
                    return Err(RunError::Timeout(cfg.timeout.as_secs_f64()));
                }
                // Non-blocking look: drains kicks and notices a dead peer.
                t.wait(Some(Duration::ZERO))?;
                publish(shared, &stats, started);
            }
            if busy {
                idle_since = None;
                continue;
            }
            let spin_more = match cfg.wait {
                Wait::Spin => true,
                Wait::Sleep => false,
                Wait::Adaptive => {
                    now.duration_since(*idle_since.get_or_insert(now)) < ADAPTIVE_SPIN
                }
            };
            if spin_more {
                std::hint::spin_loop();
                continue;
            }
            idle_since = None;
            // Re-enable notifications, then re-check: a peer that published
            // before seeing our re-enable did not kick, so we must look again.
            copier.set_notifications(true).map_err(copy_err)?;
            guest.set_interrupts(true).map_err(ring_err)?;
            // Full fence: the re-enable stores must be visible to the peer
            // before we read its indexes (pairs with its fence between
            // publishing and reading our suppression state).
            fence(Ordering::SeqCst);
            let work =
                copier.has_work().map_err(copy_err)? || guest.has_work().map_err(ring_err)?;
            if !work {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(RunError::Timeout(cfg.timeout.as_secs_f64()));
                }
                if t.wait(Some(left.min(MAX_SLEEP)))? == Wakeup::Notified {
                    stats.wakeups += 1;
                }
            }
            copier.set_notifications(false).map_err(copy_err)?;
            guest.set_interrupts(false).map_err(ring_err)?;
        }
    })();

    let result = match result {
        // The peer may leave right after finishing its part (a stream that
        // saw its last packet consumed). Its memory stays mapped, so take a
        // last look before calling this a failure.
        Err(RunError::Transport(e)) if e.is_peer_gone() => {
            // Drain what already arrived (a slow sink may be far behind).
            while !guest.done() {
                let step = guest.step(&mut stats).map(|s| s.progress).unwrap_or(false);
                let moved = copier.poll(&mut stats).map(|n| n > 0).unwrap_or(false);
                if !step && !moved {
                    break;
                }
            }
            if guest.done() {
                Ok(())
            } else {
                Err(RunError::Transport(e))
            }
        }
        r => r,
    };
    guest.report(&mut stats);
    stats.finish(started.elapsed().as_secs_f64());
    if cfg.workload == Workload::Stream && result.is_ok() {
        stats.lost = 0;
    }
    stats.result = match &result {
        Ok(()) => "ok".into(),
        Err(e) => e.to_string(),
    };
    *lock(shared) = stats.clone();
    result.map(|_| stats)
}

fn lock(s: &SharedStats) -> std::sync::MutexGuard<'_, Stats> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

fn publish(shared: &SharedStats, stats: &Stats, started: Instant) {
    let mut s = stats.clone();
    s.finish(started.elapsed().as_secs_f64());
    *lock(shared) = s;
}
