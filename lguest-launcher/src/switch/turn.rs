//! One turn of the forwarding thread, and its idling: the switch as a
//! [`Device`] of the launcher's wait loop (see [`super::serve`]).

use super::serve::Switch;
use crate::wait::{Device, Slept, Turn};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};
use transport::Transport;

/// How often a busy switch asks every link whether its member is there.
const CHECK_LINKS_EVERY: Duration = Duration::from_millis(20);
/// How often the stats file is rewritten while running.
const WRITE_STATS_EVERY: Duration = Duration::from_millis(500);

impl<T: Transport + 'static> Device for Switch<'_, T> {
    type Error = std::convert::Infallible;

    fn turn(&mut self) -> Result<Turn, Self::Error> {
        if self.done.is_some() {
            return Ok(Turn::Done);
        }
        let now = self.now;
        for j in 0..self.ports.len() {
            if let Some(p) = self.ports[j].as_mut() {
                if let Err(e) = p.reap() {
                    self.leave(j, &format!("broke the port's TX ring: {e}"));
                }
            }
        }
        let mut moved = 0usize;
        for i in 0..self.ports.len() {
            let n = self.forward_from(i, now);
            if n > 0 {
                // This source's completions and its destinations' frames
                // go out now, not after every other port's burst: its
                // stream refills and its sink drains while the switch
                // serves the next source.
                self.publish();
            }
            moved += n;
        }
        moved += self.forward_from_tap(now);
        self.flush();
        Ok(if moved > 0 {
            self.stats.busy_turns += 1;
            Turn::Busy
        } else {
            self.stats.idle_turns += 1;
            Turn::Idle
        })
    }

    fn arm(&mut self, on: bool) -> Result<(), Self::Error> {
        for n in 0..self.ports.len() {
            if let Some(p) = self.ports[n].as_ref() {
                if let Err(e) = p.arm(on) {
                    self.leave(n, &format!("broke a ring: {e}"));
                }
            }
        }
        Ok(())
    }

    fn has_work(&mut self) -> Result<bool, Self::Error> {
        // A frame the TAP holds wakes the poll in `sleep` (level-triggered).
        Ok(self
            .ports
            .iter()
            .flatten()
            .any(|p| p.has_work().unwrap_or(true))
            || self.done.is_some())
    }

    fn tick(&mut self, now: Instant) -> Result<(), Self::Error> {
        self.now = now;
        self.status_tick(now);
        self.check_stop();
        self.take_events();
        if now.duration_since(self.last_check) >= CHECK_LINKS_EVERY {
            self.last_check = now;
            for n in 0..self.ports.len() {
                self.check_link(n);
            }
        }
        if now.duration_since(self.last_write) >= WRITE_STATS_EVERY {
            self.last_write = now;
            self.write_stats("running");
        }
        Ok(())
    }

    /// Wait on every member's link, the TAP and the acceptors' wake-up
    /// socket, at most until the earliest hold ends.
    fn sleep(&mut self, max: Duration) -> Result<Slept, Self::Error> {
        let mut max = max;
        for p in self.ports.iter().flatten() {
            if let Some(since) = p.full_since {
                let end = since + self.cfg.hold;
                max = max.min(end.saturating_duration_since(self.now));
            }
        }
        if let Some(t) = self.cfg.timeout {
            max = max.min((self.started + t).saturating_duration_since(self.now));
        }
        let max = max.max(Duration::from_millis(1));
        let mut ready = std::mem::take(&mut self.ready);
        self.sleeper.wait(
            &self.ports,
            self.wake.as_fd(),
            self.tap.as_ref().map(|t| t.as_fd()),
            max,
            &mut ready,
        );
        self.stats.wakeups += 1;
        // The acceptors' wake-ups: drained here only, never per turn (a
        // system call per turn costs more than the frames it would move).
        let mut buf = [0u8; 16];
        while self.wake.recv(&mut buf).is_ok() {}
        self.now = Instant::now();
        // Only the links the set named: a kick to drain, or a member gone.
        for &n in &ready {
            self.check_link(n);
        }
        self.ready = ready;
        self.last_check = self.now;
        self.take_events();
        self.check_stop();
        Ok(Slept::Woke)
    }
}
