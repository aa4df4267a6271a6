//! Which sender a frame came from, and its sequence accounting (`--reconnect`).

use super::*;

impl Guest {
    /// A new peer (`pid`) is linked; its frames start at our RX used index
    /// `rx_from` (where its copier starts filling our RX ring).
    pub fn link_up(&mut self, pid: u32, rx_from: u16) {
        self.switches.push_back((rx_from, pid));
    }

    /// TX chains the peers have completed so far.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Pop every TX completion the peer has published (the link went down:
    /// what it completed is final).
    pub fn reap(&mut self) -> Result<(), RingError> {
        let done = self.tx.reap_used()?;
        self.completed_n(u64::from(done));
        Ok(())
    }

    /// Lines to print since the last call.
    pub fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }

    /// Per-sender records (sink, echo).
    pub fn senders(&self) -> &[Sender] {
        &self.senders
    }

    /// Frames at our RX used index `at` and on come from the next peer;
    /// call it with the used index of each frame before reading it.
    #[inline]
    pub(super) fn switch_sender(&mut self, at: u16) {
        while let Some(&(from, pid)) = self.switches.front() {
            if from != at {
                break;
            }
            self.switches.pop_front();
            self.sender = Some((pid, false));
        }
    }

    /// Account one intact data frame `seq` to the current sender; false
    /// when it is out of sequence.
    #[inline]
    pub(super) fn account_seq(&mut self, seq: u64) -> bool {
        // Every frame but a sender's first and those out of sequence: the
        // next of the sender we have a record for.
        let pid = self.sender.map_or(0, |(p, _)| p);
        if let Some(s) = self.senders.last_mut() {
            if s.pid == pid && seq == s.last_seq.wrapping_add(1) && seq > s.last_seq {
                s.received += 1;
                s.last_seq = seq;
                return true;
            }
        }
        self.account_seq_slow(seq)
    }

    /// [`Guest::account_seq`] for a new sender or a frame out of sequence.
    #[inline(never)]
    fn account_seq_slow(&mut self, seq: u64) -> bool {
        let pid = self.sender.map_or(0, |(p, _)| p);
        let fresh = self.senders.last().is_none_or(|s| s.pid != pid);
        if fresh {
            self.senders.push(Sender {
                pid,
                first_seq: seq,
                last_seq: seq,
                received: 1,
                gaps: 0,
                duplicates: 0,
            });
            if self.workload == Workload::Sink || self.workload == Workload::Echo {
                self.notes
                    .push(format!("first frame from peer {pid}: seq {seq}"));
            }
            return true;
        }
        let Some(s) = self.senders.last_mut() else {
            return true;
        };
        let next = s.last_seq.wrapping_add(1);
        s.received += 1;
        let in_order = seq == next;
        if seq > next {
            // Peer-controlled: saturate rather than overflow.
            s.gaps = s.gaps.saturating_add(seq - next);
        } else if seq < next {
            s.duplicates += 1;
        }
        if seq >= next {
            s.last_seq = seq;
        }
        if !in_order {
            if let Some((_, told)) = &mut self.sender {
                if !*told {
                    *told = true;
                    self.notes.push(format!(
                        "frame from peer {pid} out of sequence: expected seq {next}, got {seq}"
                    ));
                }
            }
        }
        in_order
    }
}
