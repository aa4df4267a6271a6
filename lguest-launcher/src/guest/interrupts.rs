//! Notification suppression from the driver's side: which interrupts the
//! guest asks its rings' devices for before it sleeps (TX completions;
//! RX fills when a switch serves its RX ring), whether that device wants
//! a kick after RX buffers are posted, and the re-check before a sleep.

use super::*;

impl Guest {
    /// The used index at which we want the peer to interrupt us (TX
    /// completions), if we are waiting for any: half the ring when TX is
    /// full (batching), the last one when draining at the end.
    fn tx_interrupt_target(&self) -> Option<u16> {
        // Our end-of-stream frame need not be taken: never wait for it.
        let end_pending = self.end_sent && self.consumed <= self.sent;
        let in_flight = self.tx.in_flight().saturating_sub(end_pending as u16);
        if in_flight == 0 {
            return None;
        }
        let blocked = match self.workload {
            Workload::Stream => self.sent < self.count && !self.tx_room(u64::MAX),
            Workload::Echo => !self.echo_queue.is_empty() && self.tx.num_free() == 0,
            _ => false,
        };
        let draining = match self.workload {
            Workload::Stream => self.sent == self.count && self.end_sent,
            Workload::Echo => self.echoed >= self.count,
            _ => false,
        };
        let ahead = if blocked {
            (in_flight / 2).max(1)
        } else if draining {
            in_flight
        } else {
            return None;
        };
        Some(self.tx.last_used().wrapping_add(ahead - 1))
    }

    /// Before sleeping: ask the peer for the TX interrupts we need (or
    /// none). After waking: stop asking.
    pub fn set_interrupts(&self, sleeping: bool) -> Result<(), RingError> {
        match (sleeping, self.tx_interrupt_target()) {
            (true, Some(at)) => self.tx.set_interrupts(self.mode, true, at),
            _ => self.tx.set_interrupts(self.mode, false, 0),
        }
    }

    /// RX push (the peer serves our RX ring): before sleeping, ask it to
    /// interrupt us when it fills a buffer past what we read; after
    /// waking, stop asking. (Pulling, our own copier fills our RX ring in
    /// this thread and no interrupt is needed.)
    pub fn set_rx_interrupts(&self, sleeping: bool) -> Result<(), RingError> {
        self.rx
            .set_interrupts(self.mode, sleeping, self.rx.last_used())
    }

    /// RX push: after posting RX buffers `old..new`, does the peer (the
    /// device of our RX ring) want a kick? It asks while frames for us wait
    /// for room.
    pub fn rx_kick_needed(&self, old: u16, new: u16) -> Result<bool, RingError> {
        self.rx.kick_needed(self.mode, old, new)
    }

    /// Is there something to do right now (re-check before sleeping)?
    pub fn has_work(&self) -> Result<bool, RingError> {
        Ok(self.rx.has_used()? || self.tx.has_used()?)
    }
}
