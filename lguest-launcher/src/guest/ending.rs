//! The end of a stream: our end-of-stream frame, and what the peer's said;
//! when a workload is done, and the final numbers.

use super::*;

impl Guest {
    /// Put our end-of-stream frame on the TX ring (not published); false
    /// when the ring is full.
    pub(super) fn put_end(&mut self) -> Result<bool, RingError> {
        self.tx_only_stamps = false;
        let end = end_frame(self.sent);
        let eth = self.eth();
        let put = send_frame(
            &mut self.tx,
            &self.tx_mem,
            (self.layout.tx_bufs, self.tx_stride),
            &eth,
            end.len() as u32,
            |mem, at| Ok(mem.write("tx frame", at, &end)?),
        )?
        .is_some();
        self.end_sent |= put;
        Ok(put)
    }

    /// A `stream` that stops early (interrupted): announce what it sent so
    /// the receiver can tell lost from never sent. Returns the published
    /// TX range for the kick decision, if the frame went out.
    /// `Ok(None)` when the ring has no free slot yet (try again while the
    /// peer drains it) or there is nothing to announce.
    pub fn announce_end(&mut self) -> Result<Option<(u16, u16)>, RingError> {
        if !self.end_pending() {
            return Ok(None);
        }
        while self.tx.pop_used()?.is_some() {
            self.completed();
        }
        if !self.put_end()? {
            return Ok(None);
        }
        Ok(Some(self.tx.publish()?))
    }

    /// Our end-of-stream frame is not on the ring yet. Every workload sends
    /// one when it leaves cleanly (a stream as its last frame, the others
    /// on the way out), so the peer can tell a clean leave from a crash.
    ///
    /// On a switch, a guest that sends to broadcast and is not a stream
    /// leaves without one: its "sent 0" would reach every member, and a
    /// sink would take it for its own sender's end.
    pub fn end_pending(&self) -> bool {
        let quiet = self.on_switch && self.workload != Workload::Stream && is_group(&self.dst);
        !self.end_sent && !quiet
    }

    /// The peer said it finished (its end-of-stream frame arrived).
    pub fn peer_finished(&self) -> bool {
        self.peer_sent.is_some()
    }

    /// The sender's end-of-stream frame said fewer frames will come than a
    /// sink waits for.
    pub fn shortfall(&self) -> Option<Shortfall> {
        if self.reconnect || self.count == 0 {
            // Another sender may bring the rest; `--count 0` expects none.
            return None;
        }
        let peer_sent = self.peer_sent?;
        (self.workload == Workload::Sink && self.received < self.count).then_some(Shortfall {
            received: self.received,
            expected: self.count,
            peer_sent,
        })
    }

    /// The workload has finished.
    pub fn done(&self) -> bool {
        match self.workload {
            // Our end-of-stream frame is out; the peer need not take it.
            Workload::Stream => self.end_sent && self.consumed >= self.count,
            // Everything asked for, or the sender said nothing more comes.
            // `--count 0`: until the sender's end of stream.
            Workload::Sink if self.count == 0 => self.peer_sent.is_some(),
            // With `--reconnect` one sender's end of stream is not the end:
            // the next sender may bring the rest.
            Workload::Sink => {
                self.received >= self.count
                    || (!self.reconnect && self.peer_sent.is_some_and(|n| self.received >= n))
            }
            Workload::Ping => self.rtts.len() >= self.count,
            Workload::Echo => self.echoed >= self.count && self.tx.in_flight() == 0,
            Workload::Idle => false,
        }
    }

    /// Fill the final numbers into `stats`.
    pub fn report(&mut self, stats: &mut Stats) {
        stats.packets_sent = self.sent;
        stats.packets_consumed = self.consumed.min(self.sent);
        // `lost`: sent but never received. A sink knows what was sent only
        // from the sender's end-of-stream frame; without one (the sender was
        // killed) `lost` stays 0 and `missing` says what did not arrive.
        match self.workload {
            Workload::Sink if self.count == 0 => {
                // Lost: what the last sender said it sent from the first
                // frame we had of it on, minus what we had of it.
                if let (Some(sent), Some(s)) = (self.peer_sent, self.senders.last()) {
                    stats.lost = sent.saturating_sub(s.first_seq).saturating_sub(s.received);
                }
            }
            Workload::Sink => {
                stats.expected = self.count;
                stats.missing = self.count.saturating_sub(self.received);
                if let (Some(sent), false) = (self.peer_sent, self.reconnect) {
                    stats.lost = sent.saturating_sub(self.received);
                    stats.not_sent = self.count.saturating_sub(sent);
                }
            }
            Workload::Ping => {
                stats.expected = self.count;
                stats.missing = self.count.saturating_sub(self.received);
                stats.lost = self.sent.saturating_sub(self.received);
                stats.not_sent = self.count.saturating_sub(self.sent);
            }
            Workload::Echo => stats.lost = self.count.saturating_sub(self.echoed),
            _ => {}
        }
        stats.set_rtts(&self.rtts);
        stats.senders = self.senders.clone();
    }
}
