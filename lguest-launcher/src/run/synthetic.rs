//! A synthetic guest and its copier for one link generation, as the wait loop drives them.

use super::*;
use super::{session::*, signals::*};
use crate::cli::config::{Wait, Workload};
use crate::copier::{Copier, CopyError, Outcome};
use crate::guest::Guest;
use crate::stats::Stats;
use crate::virtq::{NotifyMode, RingError};
use crate::wait::{Device, Slept, Turn, WaitLoop};
use std::time::{Duration, Instant};
use transport::{Transport, Wakeup};

/// Longest pause of a paced stream (`--rate`) taken as a plain sleep
/// rather than a transport wait, whose timeout counts whole milliseconds.
const PACE_SLEEP_MAX: Duration = Duration::from_millis(1);

/// A synthetic guest and its copier for one link generation, as the wait
/// loop drives them.
pub(super) struct Synthetic<'a, T: Transport> {
    pub(super) guest: Guest,
    pub(super) copier: Copier<T>,
    pub(super) stats: Stats,
    pub(super) mode: NotifyMode,
    pub(super) peer_pid: u32,
    pub(super) deadline: Option<Instant>,
    pub(super) timeout: Duration,
    pub(super) shared: &'a SharedStats,
    pub(super) started: Instant,
    pub(super) name: &'a str,
    pub(super) quiet: bool,
    /// The outage this link ended, until its first packet moves.
    pub(super) outage: Option<Outage>,
    /// TX chains completed when this link came up.
    pub(super) consumed_at_up: u64,
    /// The peer's kick stamp, for the wake-up latency histogram.
    pub(super) peer_stamp: Option<crate::wait::latency::PeerStamp>,
    /// RX push: the peer (a switch) serves our RX ring and writes frames
    /// straight into it; our copier idles (the port's ring stays empty),
    /// and we kick the peer when it asks for our RX buffers.
    pub(super) push: bool,
}

impl<'a, T: Transport> Synthetic<'a, T> {
    pub(super) fn ring_err(&self, err: RingError) -> RunError {
        RunError::Ring {
            pid: self.peer_pid,
            err,
        }
    }
    pub(super) fn copy_err(&self, err: CopyError) -> RunError {
        match err {
            CopyError::Transport(e) => RunError::Transport(e),
            err => RunError::Copy {
                pid: self.peer_pid,
                err,
            },
        }
    }
    pub(super) fn timeout(&self) -> RunError {
        RunError::Timeout(self.timeout.as_secs_f64())
    }

    /// Print what the guest noted (a sender's first frame, a frame out of
    /// sequence).
    pub(super) fn print_notes(&mut self) {
        for note in self.guest.take_notes() {
            if !self.quiet {
                eprintln!("[{}] {note}", self.name);
            }
        }
    }

    /// Run this link until the workload is done or the link fails.
    pub(super) fn drive(&mut self, wait: Wait, wake: Duration) -> Result<(), RunError> {
        // Start "awake" (the peer kicks us until we first go idle), except
        // when spinning: then we never want a kick.
        if self.push {
            // The switch fills our RX ring and never reports it short, as
            // our copier does: post the whole ring (a burst from several
            // members lands at once).
            self.guest.post_all_rx().map_err(|e| self.ring_err(e))?;
            self.guest
                .set_rx_interrupts(wait != Wait::Spin)
                .map_err(|e| self.ring_err(e))?;
        } else {
            self.copier
                .set_notifications(wait != Wait::Spin)
                .map_err(|e| self.copy_err(e))?;
        }
        // A push member's frames, and its TX completions, come from the
        // switch, a third process that needs a CPU too: its spin is
        // calibrated as the switch's own is.
        let wake = match self.push {
            true => crate::switch::spin_wakeup(wake),
            false => wake,
        };
        let mut waiter = WaitLoop::calibrated(wait, wake);
        let result = waiter.run(self).map(|_| ());
        // Counters add up across link generations.
        let counters = waiter.counters();
        self.counters(counters);
        self.stats.spin_hits += counters.spin_hits;
        self.stats.sleeps += counters.sleeps;
        if wait == Wait::Adaptive {
            self.stats.spin_budget_us = Some(waiter.spin_budget().get().as_secs_f64() * 1e6);
        }
        result
    }

    /// Wind the link down after [`Synthetic::drive`]: announce our end
    /// when we leave cleanly (or are interrupted), take what a departed
    /// peer left in its ring,
    /// and hand back the parts.
    pub(super) fn end(
        mut self,
        result: Result<(), RunError>,
    ) -> (Guest, Copier<T>, Stats, Result<(), RunError>) {
        // A signal may surface as a transport error (an interrupted poll).
        let result = match (result, transport::interrupted()) {
            (Err(_), Some(sig)) => Err(RunError::Interrupted(sig)),
            (r, _) => r,
        };
        // `idle` runs for its duration (`--timeout`): reaching it is success.
        let result = match result {
            Err(RunError::Timeout(_)) if self.guest.workload() == Workload::Idle => Ok(()),
            r => r,
        };
        if matches!(result, Ok(()) | Err(RunError::Interrupted(_))) {
            // Leaving cleanly: tell the peer how many we sent (lost vs
            // never sent; a clean leave, not a crash), giving it a moment
            // to free a TX slot.
            let until = Instant::now() + END_GRACE;
            while self.guest.end_pending() && Instant::now() < until {
                match self.guest.announce_end() {
                    Ok(Some(_)) => {
                        // Always kick: the peer may be asleep on a full ring.
                        let _ = notify(self.copier.link(), &mut self.stats);
                    }
                    Ok(None) => std::thread::sleep(Duration::from_micros(200)),
                    Err(_) => break,
                }
            }
        }
        let result = match result {
            // The peer may leave right after finishing its part (a stream
            // that saw its last packet consumed). Its memory stays mapped,
            // so take a last look before calling this a failure.
            Err(RunError::Transport(e)) if e.is_peer_gone() => {
                self.drain();
                let idle_left =
                    self.guest.workload() == Workload::Idle && self.guest.peer_finished();
                if self.guest.done() || idle_left {
                    // An idle side whose peer left cleanly is done too.
                    Ok(())
                } else {
                    Err(RunError::Transport(e))
                }
            }
            r => r,
        };
        self.print_notes();
        if let Some(o) = self.outage.take() {
            // No packet moved on this link: it was up from `o.up` on.
            o.close(o.up, &mut self.stats);
        }
        let Synthetic {
            guest,
            copier,
            stats,
            ..
        } = self;
        (guest, copier, stats, result)
    }

    /// The peer is gone: take what it already published (a slow sink may be
    /// far behind), notifying nobody.
    pub(super) fn drain(&mut self) {
        while !self.guest.done() {
            let step = self
                .guest
                .step(&mut self.stats)
                .map(|s| s.progress)
                .unwrap_or(false);
            let moved = match self.poll() {
                Ok(out) => {
                    // The peer is gone: count, but notify nobody.
                    let _ = account(
                        &mut self.copier,
                        &Outcome {
                            peer_wants_kick: false,
                            ..out
                        },
                        &mut self.stats,
                    );
                    out.finished() > 0
                }
                Err(_) => false,
            };
            if !step && !moved {
                break;
            }
        }
    }
}

impl<T: Transport> Device for Synthetic<'_, T> {
    type Error = RunError;

    fn turn(&mut self) -> Result<Turn, RunError> {
        let step = self
            .guest
            .step(&mut self.stats)
            .map_err(|e| self.ring_err(e))?;
        if let Some((old, new)) = step.tx_published {
            if self
                .guest
                .tx
                .kick_needed(self.mode, old, new)
                .map_err(|e| self.ring_err(e))?
            {
                notify(self.copier.link(), &mut self.stats)?;
            } else {
                self.stats.notifications_suppressed += 1;
            }
        }
        if let (true, Some((old, new))) = (self.push, step.rx_published) {
            // RX push: the switch waits for room in our RX ring.
            if self
                .guest
                .rx_kick_needed(old, new)
                .map_err(|e| self.ring_err(e))?
            {
                notify(self.copier.link(), &mut self.stats)?;
            }
        }
        let out = self.poll().map_err(|e| self.copy_err(e))?;
        account(&mut self.copier, &out, &mut self.stats)?;
        // Fewer RX buffers posted than the peer's frames need (a slow sink,
        // a segmented frame; see `guest::RX_POSTED`): all of them from now on.
        let grew = out.rx_full && self.guest.post_all_rx().map_err(|e| self.ring_err(e))?;
        if let Some(o) = self.outage {
            // The first packet after a reconnect, either way.
            if out.finished() > 0 || self.guest.consumed() != self.consumed_at_up {
                o.close(Instant::now(), &mut self.stats);
                self.outage = None;
            }
        }
        if self.guest.done() {
            return Ok(Turn::Done);
        }
        Ok(if step.progress || grew || out.finished() > 0 {
            Turn::Busy
        } else {
            Turn::Idle
        })
    }

    fn arm(&mut self, on: bool) -> Result<(), RunError> {
        if self.push {
            // The switch fills our RX ring: it interrupts us.
            self.guest
                .set_rx_interrupts(on)
                .map_err(|e| self.ring_err(e))?;
        } else {
            self.copier
                .set_notifications(on)
                .map_err(|e| self.copy_err(e))?;
        }
        self.guest.set_interrupts(on).map_err(|e| self.ring_err(e))
    }

    fn has_work(&mut self) -> Result<bool, RunError> {
        // RX push: the guest's RX used ring is the work (`Guest::has_work`).
        let copier = !self.push && self.copier.has_work().map_err(|e| self.copy_err(e))?;
        Ok(copier || self.guest.has_work().map_err(|e| self.ring_err(e))?)
    }

    fn tick(&mut self, now: Instant) -> Result<(), RunError> {
        if let Some(sig) = transport::interrupted() {
            return Err(RunError::Interrupted(sig));
        }
        if self.deadline.is_some_and(|d| now >= d) {
            return Err(self.timeout());
        }
        self.print_notes();
        // Non-blocking look: drains kicks and notices a dead peer.
        self.copier.link().wait(Some(Duration::ZERO))?;
        // Under RX push the switch fills our RX ring: our copier's index of
        // it stands still, so the fill comes from our guest's side.
        let occupancy = match self.push {
            true => (self.guest.rx_posted().ok())
                .and_then(|posted| self.copier.occupancy_pushed(posted).ok()),
            false => self.copier.occupancy().ok(),
        };
        if let Some(o) = occupancy {
            o.record(&mut self.stats);
        }
        publish(self.shared, &self.stats, self.started);
        Ok(())
    }

    fn next_work_in(&self) -> Option<Duration> {
        self.guest.next_send_in()
    }

    fn peer_notifications(&self) -> Option<u64> {
        // `always` notifies whether the peer asked or not.
        (self.mode != NotifyMode::Always).then_some(self.stats.notifications_sent)
    }

    fn counters(&mut self, c: crate::wait::WaitCounters) {
        self.stats.link_spin_hits = c.spin_hits;
        self.stats.link_sleeps = c.sleeps;
    }

    fn sleep(&mut self, max: Duration) -> Result<Slept, RunError> {
        let left = match self.deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => max,
        };
        if left.is_zero() {
            return Err(self.timeout());
        }
        // A paced stream (`--rate`) wakes itself for its next packet. A
        // transport wait counts whole milliseconds (epoll), so a shorter
        // pause is a plain sleep: a stream waits for nothing else then (its
        // TX completions keep until it wakes).
        if let Some(next) = self.guest.next_send_in().filter(|n| *n < left.min(max)) {
            if next < PACE_SLEEP_MAX {
                std::thread::sleep(next);
                return Ok(Slept::Woke);
            }
            return self.wait(next);
        }
        self.wait(left.min(max))
    }
}

impl<T: Transport> Synthetic<'_, T> {
    /// Our copier's poll; with RX push nothing to pull (the switch writes
    /// into our RX ring itself), and our RX ring is not ours to serve.
    #[inline]
    fn poll(&mut self) -> Result<Outcome, CopyError> {
        if self.push {
            return Ok(Outcome::default());
        }
        self.copier.poll()
    }

    /// Sleep in the transport for at most `max`; a notified wake-up is
    /// counted, with its latency (`wait::latency`).
    fn wait(&mut self, max: Duration) -> Result<Slept, RunError> {
        use crate::wait::latency::{monotonic_ns, record};
        let slept = monotonic_ns();
        if self.copier.link().wait(Some(max))? == Wakeup::Notified {
            let woke = monotonic_ns();
            self.stats.wakeups += 1;
            record(&mut self.stats, self.peer_stamp.as_mut(), slept, woke);
        }
        Ok(Slept::Woke)
    }
}
