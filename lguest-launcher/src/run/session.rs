//! One run across its link generations: connect, check a returning peer, resume.

use super::*;
use super::{meet::*, synthetic::*};
use crate::cli::config::{RunConfig, Share, Wait, Workload};
use crate::copier::Copier;
use crate::guest::plan::Layout;
use crate::guest::{Guest, Work};
use crate::link::PairMark;
use crate::memory::{map_peer, GuestMap, GuestMemory};
use crate::stats::Stats;
use crate::virtq::{DeviceQueue, NotifyMode};
use std::time::{Duration, Instant};
use terms::LinkTerms;
use transport::{Handshake, Transport};

mod terms;

/// Run one launcher over transport `T`. Returns the final stats; on error,
/// the stats so far are in `shared`.
///
/// # Link generations (`--reconnect`)
/// A run is a loop over links. The guest, its memory and its rings belong
/// to the run; a link — the transport, the peer's mapping and the
/// [`Copier`] that owns both — belongs to one *generation*. When the peer
/// leaves, the copier is dropped with its link, the guest stays, and the
/// next `connect` on the same path builds a new copier:
///
/// 1. **Generation number.** Each side proposes 1 + the links it had before
///    in its [`Handshake::generation`] and both take the larger, so a
///    restarted peer (proposing 1) and its survivor (proposing N + 1) agree
///    on N + 1 and print the same number.
/// 2. **Where the peer's TX ring resumes.** Not from anything a thread
///    remembers: the new copier reads the peer's TX *used* index from
///    shared memory ([`Copier::resume_peer_tx`]). For a fresh peer that is
///    0; for a survivor it is what the dead copier completed, so chains the
///    dead peer had taken but not completed are delivered by the next one,
///    and none twice. The survivor's own TX ring (its guest's
///    [`DriverQueue`](crate::virtq::DriverQueue)) keeps its chains in
///    flight until the new peer completes them.
/// 3. **Where our RX ring resumes.** Our copier is the only device side of
///    our RX ring, so the new copier starts where the old one stopped
///    ([`Copier::rx_state`] → [`Copier::with_rx_state`]), and the guest is
///    told from which RX used index on frames come from the new peer
///    ([`Guest::link_up`]), for its per-sender records.
/// 4. **What a returning peer must match.** The guest was set up for the
///    first link: its notification mode (which suppression fields it
///    maintains), and the queue and memory size of its peer. A peer that
///    offers less or differs is refused with both values named
///    (`LinkTerms::check`), and we keep waiting.
pub fn run<T: Transport>(cfg: &RunConfig, shared: &SharedStats) -> Result<Stats, RunError> {
    let start = Instant::now();
    let stats = Stats {
        transport: cfg.spec.kind.name().into(),
        workload: cfg.workload.name().into(),
        notify: cfg.notify.name().into(),
        writes: cfg.writes.name().into(),
        wait: cfg.wait.name().into(),
        payload: cfg.payload.name().into(),
        size: cfg.size,
        offloads: cfg.offloads.synthetic_features(),
        mtu: cfg.mtu.unwrap_or(0),
        ..Stats::default()
    };
    let stats = Stats {
        mac: crate::guest::frame::format_mac(&cfg.mac()),
        dst: crate::guest::frame::format_mac(&cfg.dst.unwrap_or(crate::guest::frame::BROADCAST)),
        ..stats
    };
    *lock(shared) = stats.clone();
    if let Some(cpu) = cfg.cpu {
        pin_this_thread(cpu)?;
    }

    // What a wake-up costs here, over a channel of this kind: the adaptive
    // spin starts from it (see `wait`), the stats report it. Measured
    // before the rendezvous, so the peer never waits on it: a peer that
    // publishes at once finds us polling. Only `adaptive` uses it: `spin`
    // never sleeps and `sleep` never spins, and the probe's cross-core
    // ping-pong at start disturbs where the scheduler places a spinner.
    let probe = if cfg.wait == Wait::Adaptive {
        crate::wakeup::probe(cfg.spec.kind, cfg.cpu)
    } else {
        crate::wakeup::WakeupProbe::none()
    };

    let layout = Layout::plan(cfg.queue_size);
    let mem = GuestMemory::create(&cfg.name, cfg.memory_mib << 20)?;
    if !cfg.quiet {
        eprintln!("[{}] waiting for peer on {} ...", cfg.name, cfg.spec);
    }
    let mut stats = stats;
    stats.set_wakeups(&probe.hist);
    let mut session = Session {
        cfg,
        shared,
        wake: probe.calibration(),
        stats,
        guest: None,
        generation: 0,
        terms: None,
        rx_state: (0, 0),
        down_since: None,
        started: None,
        deadline: cfg.run_limit().map(|t| start + t),
    };
    // `--share exchange`: the peer maps a second memfd holding only our TX
    // ring and TX buffers (at the layout's offsets; our guest writes its
    // frames there, so it costs no copy); RX stays in `mem`, private.
    let exchange = match cfg.share {
        Share::Guest => None,
        Share::Exchange => Some(GuestMemory::create(
            &format!("{}-exchange", cfg.name),
            layout.rx_bufs.div_ceil(4096) * 4096,
        )?),
    };
    let result = session.generations::<T>(&mem, exchange.as_ref().unwrap_or(&mem), layout);
    session.finish(result)
}

/// One launcher run across its link generations: what outlives a link.
pub(super) struct Session<'a> {
    pub(super) cfg: &'a RunConfig,
    /// One-way wake-up cost measured at start (calibrates `adaptive`).
    pub(super) wake: Duration,
    pub(super) shared: &'a SharedStats,
    pub(super) stats: Stats,
    /// Built at the first link (it needs the negotiated notify mode).
    pub(super) guest: Option<Guest>,
    /// The generation of the last link (0 before the first).
    pub(super) generation: u32,
    pub(super) terms: Option<LinkTerms>,
    /// Our RX ring's device position, handed from copier to copier.
    pub(super) rx_state: (u16, u16),
    /// The link went down at (while waiting for the next peer).
    pub(super) down_since: Option<Instant>,
    /// The first link came up at.
    pub(super) started: Option<Instant>,
    pub(super) deadline: Option<Instant>,
}

impl Session<'_> {
    /// Run links until the workload is done, or a link ends in a way
    /// `--reconnect` does not cover.
    fn generations<T: Transport>(
        &mut self,
        mem: &GuestMemory,
        offered: &GuestMemory,
        layout: Layout,
    ) -> Result<(), RunError> {
        let cfg = self.cfg;
        let own_map = GuestMap::identity(mem.region().clone());
        loop {
            // After the first link, offer the mode the guest runs, so the
            // new peer cannot settle on a higher one than ours.
            let offer = self.terms.map_or(cfg.notify, |t| t.mode);
            // RX push (see `switch/push.rs`): our RX ring is in the memory
            // we share, unless `--share exchange`; a member that captures
            // keeps its copier, where its tap sees every frame.
            let push_offer = if cfg.share == Share::Guest && cfg.capture.is_none() {
                transport::F_RX_PUSH
            } else {
                0
            };
            let local = Handshake::new(
                std::process::id(),
                offer.features() | push_offer,
                offered.region().len(),
                offered.raw_fd(),
                layout.tx,
                layout.rx,
            )
            .with_generation(self.generation + 1)
            .with_mtu(cfg.mtu.unwrap_or(0))
            .with_offloads(cfg.offloads.synthetic_features() as u32);
            let (t, peer) =
                match connect::<T>(cfg, offered, &local, self.deadline, self.guest.is_none()) {
                    // A peer that went in the middle of the handshake (a
                    // switch stopping as we joined it): `--reconnect`
                    // waits for the next one, as after any link.
                    Err(RunError::Transport(e)) if cfg.reconnect && gone_mid_handshake(&e) => {
                        eprintln!(
                            "[{}] the peer left during the handshake ({e}); still waiting on {}",
                            cfg.name, cfg.spec
                        );
                        std::thread::sleep(HANDSHAKE_RETRY);
                        continue;
                    }
                    r => r?,
                };
            let up_at = Instant::now();
            let hs = peer.handshake;
            let peer_pid = hs.pid;
            let refusal = match crate::offload::mtu::check_pair(cfg.mtu.unwrap_or(0), hs.mtu) {
                // The first peer: the pair is misconfigured, say so and stop.
                Err(err) if self.terms.is_none() => {
                    return Err(RunError::Mtu { pid: peer_pid, err })
                }
                Err(err) => Some(err.to_string()),
                Ok(()) => self
                    .terms
                    .and_then(|terms| terms.check(&hs).err())
                    .map(|m| m.to_string()),
            };
            if let Some(why) = refusal {
                eprintln!(
                    "[{}] refused peer {peer_pid}: {why}; still waiting on {}",
                    cfg.name, cfg.spec
                );
                self.stats.refused += 1;
                drop((t, peer));
                wait_gone(peer_pid, REFUSED_GRACE);
                if let Some(g) = self.guest.as_mut() {
                    g.reap()
                        .map_err(|err| RunError::Ring { pid: peer_pid, err })?;
                }
                continue;
            }
            let generation = crate::link::next_generation(self.generation, hs.generation);
            let _mark = PairMark::claim(&cfg.spec.path, std::process::id(), peer_pid);
            // Each side maintains the suppression fields of its own mode;
            // the pair uses the lower of the two so neither waits on a
            // field nobody writes.
            let mode = match self.terms {
                Some(t) => t.mode,
                None => cfg.notify.min(NotifyMode::from_features(hs.features)),
            };
            let peer_mem = GuestMap::new(map_peer(peer.memory, hs.mem_size)?, hs.regions());
            // Push only to a switch that offered it too (a launcher peer
            // offers the bit as a member would, never F_SWITCH).
            let want = transport::F_SWITCH | transport::F_RX_PUSH;
            let push = push_offer != 0 && hs.features & want == want;
            self.stats.rx_push = push;
            self.stats.peer_pid = peer_pid;
            self.stats.peer_offloads = u64::from(hs.offloads);
            self.stats.notify_effective = mode.name().into();
            self.stats.generation = generation;
            if !cfg.quiet {
                if let Some(down) = self.down_since {
                    eprintln!(
                        "[{}] link up (generation {generation}) after {:.1} ms: peer pid {peer_pid}",
                        cfg.name,
                        ms(up_at - down)
                    );
                } else {
                    eprintln!(
                        "[{}] connected to peer pid {peer_pid} over {}: peer memory {} MiB, queue {}; notify {} (asked {}), writes {}, wait {}; link generation {generation}",
                        cfg.name,
                        cfg.spec.kind.name(),
                        peer_mem.region().len() >> 20,
                        hs.tx.size,
                        mode.name(),
                        cfg.notify.name(),
                        cfg.writes.name(),
                        cfg.wait.name()
                    );
                }
            }
            let ring_err = |err| RunError::Ring { pid: peer_pid, err };
            let mut guest = match self.guest.take() {
                Some(g) => g,
                None => Guest::split(
                    mem.region().clone(),
                    offered.region().clone(),
                    layout,
                    mode,
                    Work {
                        workload: cfg.workload,
                        payload: cfg.payload,
                        count: cfg.count,
                        size: cfg.size,
                        rx_delay: cfg.rx_delay,
                        rate: cfg.rate,
                        mac: cfg.mac(),
                        dst: cfg.dst.unwrap_or(crate::guest::frame::BROADCAST),
                        gso_mss: cfg.gso_mss(),
                        offloads: cfg.offloads.synthetic_features(),
                    },
                )
                .map_err(ring_err)?
                .with_reconnect(cfg.reconnect)
                .spinning(cfg.wait == Wait::Spin),
            };
            guest.link_up(peer_pid, self.rx_state.1);
            if hs.features & transport::F_SWITCH != 0 {
                // Tell the switch where we are before anyone sends to us.
                guest.hello();
            }
            self.terms.get_or_insert(LinkTerms::of(&hs, mode));
            let started = *self.started.get_or_insert(up_at);
            let consumed_at_up = guest.consumed();
            let copier = Copier::new(t, &peer_mem, &hs.tx, &own_map, &layout.rx, mode)
                .and_then(Copier::resume_peer_tx)
                .map(|c| c.with_rx_state(self.rx_state.0, self.rx_state.1));
            let copier = match copier {
                Ok(mut c) => {
                    c.set_guest_features(cfg.offloads.synthetic_features());
                    c
                }
                Err(e) => {
                    self.guest = Some(guest);
                    return Err(ring_err(e));
                }
            };
            let mut dev = Synthetic {
                guest,
                copier,
                stats: std::mem::take(&mut self.stats),
                mode,
                peer_pid,
                deadline: self.deadline,
                timeout: cfg.timeout,
                shared: self.shared,
                started,
                name: &cfg.name,
                quiet: cfg.quiet,
                outage: self
                    .down_since
                    .take()
                    .map(|down| Outage { down, up: up_at }),
                consumed_at_up,
                peer_stamp: crate::wait::latency::PeerStamp::open(&cfg.spec.path, peer_pid),
                push,
            };
            let result = dev.drive(cfg.wait, self.wake);
            let (guest, copier, stats, result) = dev.end(result);
            self.rx_state = if push {
                // The switch served our RX ring: the next device side
                // starts where it published.
                let used = DeviceQueue::new(&own_map, &layout.rx)
                    .and_then(|q| q.published_used())
                    .map_err(ring_err)?;
                (used, used)
            } else {
                copier.rx_state()
            };
            // The link ends here: the transport and the peer's mapping go
            // with the copier that owns them.
            drop(copier);
            self.stats = stats;
            self.generation = generation;
            let mut guest = guest;
            let recoverable = match &result {
                Err(RunError::Transport(e)) => e.is_peer_gone(),
                Err(RunError::Copy { .. }) => true,
                _ => false,
            };
            // The peer is gone: what it completed of our TX ring is final.
            if recoverable {
                guest.reap().map_err(ring_err)?;
            }
            if cfg.workload == Workload::Stream {
                self.stats
                    .consumed_per_generation
                    .push(guest.consumed() - consumed_at_up);
            }
            let done = guest.done();
            self.guest = Some(guest);
            match result {
                Err(e) if cfg.reconnect && recoverable && !done => {
                    if !cfg.quiet {
                        eprintln!(
                            "[{}] link down (generation {generation}): {e}; waiting for the next peer on {}",
                            cfg.name, cfg.spec
                        );
                    }
                    self.down_since = Some(Instant::now());
                }
                r => return r,
            }
        }
    }

    /// The final stats and result, from whatever link ended the run.
    pub(super) fn finish(mut self, result: Result<(), RunError>) -> Result<Stats, RunError> {
        let cfg = self.cfg;
        // Nobody ever came (or the first peer was refused): nothing to add.
        let Some(mut guest) = self.guest.take() else {
            return result.map(|_| self.stats);
        };
        let result = match (result, guest.shortfall()) {
            (Ok(()), Some(short)) => Err(RunError::Short(short)),
            (Err(RunError::Transport(e)), Some(short)) if e.is_peer_gone() => {
                Err(RunError::Short(short))
            }
            (r, _) => r,
        };
        let stats = &mut self.stats;
        guest.report(stats);
        stats.finish(self.started.map_or(0.0, |s| s.elapsed().as_secs_f64()));
        if cfg.workload == Workload::Stream && result.is_ok() {
            stats.lost = 0;
        }
        stats.result = match &result {
            Ok(()) => "ok".into(),
            Err(e) => e.to_string(),
        };
        *lock(self.shared) = stats.clone();
        result.map(|_| self.stats)
    }
}

/// Milliseconds of `d`, as stats and messages give them.
pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One outage of the link, from noticing the peer gone (`down`) through
/// the next handshake (`up`) to the first packet moved after it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Outage {
    pub(super) down: Instant,
    pub(super) up: Instant,
}

impl Outage {
    /// The link carries packets again at `at` (or the generation ended
    /// before any moved: then `at` is `up`).
    pub(super) fn close(self, at: Instant, stats: &mut Stats) {
        let down = ms(at.saturating_duration_since(self.down));
        stats.reconnects += 1;
        stats.link_down_ms += down;
        stats.link_down_ms_each.push(down);
        stats
            .resume_ms_each
            .push(ms(at.saturating_duration_since(self.up)));
    }
}

/// `--cpu N`: pin the calling thread — the one that runs the guest, the
/// copier and the wait loop — to `cpu`. Only this thread: the watchdog and
/// progress threads, started before, keep the whole machine.
pub fn pin_this_thread(cpu: usize) -> Result<(), RunError> {
    use nix::sched::{sched_setaffinity, CpuSet};
    let mut set = CpuSet::new();
    set.set(cpu)
        .and_then(|()| sched_setaffinity(nix::unistd::Pid::from_raw(0), &set))
        .map_err(|source| RunError::Pin { cpu, source })
}
