//! Moving frames: posting RX buffers, filling and sending TX frames, receiving.

use super::*;

impl Guest {
    pub(super) fn rx_slot(&self, id: u16) -> u64 {
        self.layout.rx_bufs + id as u64 * BUF_SIZE
    }

    /// Post one RX buffer: the slot of whatever descriptor id comes free.
    pub(super) fn post_rx(&mut self) -> Result<(), RingError> {
        self.rx
            .add_slot(self.layout.rx_bufs, BUF_SIZE, BUF_SIZE as u32, true)?;
        Ok(())
    }

    /// `--payload stamp`: write every TX buffer's `virtio_net_hdr` and
    /// payload once, so a frame costs only its 16-byte stamp afterwards.
    pub(super) fn prefill_tx(&mut self) -> Result<(), RingError> {
        let hdr = [0u8; NET_HDR_LEN as usize];
        for id in 0..u64::from(self.layout.tx.size) {
            let at = self.layout.tx_bufs + id * self.tx_stride;
            self.tx_mem.write("tx prefill", at, &hdr)?;
            self.tx_mem.write(
                "tx prefill",
                at + NET_HDR_LEN + FRAME_HDR as u64,
                self.pattern.filler(),
            )?;
        }
        Ok(())
    }

    pub(super) fn send_seq(&mut self, seq: u64) -> Result<bool, RingError> {
        let size = self.pattern.size() as u32;
        if self.payload == Payload::Stamp {
            // Header only: the rest of the buffer was filled at start.
            let Some((_, slot)) = self.tx.add_slot(
                self.layout.tx_bufs,
                self.tx_stride,
                NET_HDR_LEN as u32 + size,
                false,
            )?
            else {
                return Ok(false);
            };
            self.tx_mem
                .write("tx stamp", slot + NET_HDR_LEN, &stamp(seq, size))?;
            return Ok(true);
        }
        let (h, payload) = self.pattern.frame(seq);
        send_frame(
            &mut self.tx,
            &self.tx_mem,
            (self.layout.tx_bufs, self.tx_stride),
            size,
            |mem, at| {
                mem.write("tx frame", at, &h)?;
                mem.write("tx frame", at + h.len() as u64, payload)?;
                Ok(())
            },
        )
    }

    /// Handle one received buffer (the caller re-posts it afterwards).
    pub(super) fn receive(
        &mut self,
        id: u16,
        len: u32,
        stats: &mut Stats,
    ) -> Result<(), RingError> {
        let flen = len as u64;
        if !(NET_HDR_LEN..=BUF_SIZE).contains(&flen) {
            stats.corrupted += 1;
            return Ok(());
        }
        let flen = (flen - NET_HDR_LEN) as usize;
        let at = self.rx_slot(id) + NET_HDR_LEN;
        if self.workload == Workload::Echo {
            // The peer's end-of-stream frame is not echoed.
            if flen == frame::END_FRAME {
                self.mem.read("rx frame", at, &mut self.frame[..flen])?;
                if let Verdict::End(sent) = verify(&self.frame[..flen]) {
                    self.peer_sent = Some(sent);
                    stats.peer_sent = Some(sent);
                    return Ok(());
                }
            }
            // Copy out: the RX slot goes straight back to the ring, and the
            // echo may have to wait for a free TX slot.
            if self.echoed + (self.echo_queue.len() as u64) < self.count {
                let mut f = vec![0u8; flen];
                self.mem.read("rx frame", at, &mut f)?;
                if let Verdict::Good(seq) = verify(&f) {
                    self.account_seq(seq);
                }
                self.echo_queue.push_back(f);
                stats.packets_received += 1;
                stats.bytes_received += flen as u64;
            }
            return Ok(());
        }
        let verdict = match self.payload {
            Payload::Stamp if flen >= FRAME_HDR => {
                let mut h = [0u8; FRAME_HDR];
                self.mem.read("rx stamp", at, &mut h)?;
                if header_seq(&h) == END_SEQ {
                    // End-of-stream frames carry the full checksum.
                    self.mem.read("rx frame", at, &mut self.frame[..flen])?;
                    verify(&self.frame[..flen])
                } else {
                    check_stamp(&h, flen)
                }
            }
            Payload::Stamp => Verdict::Corrupt,
            Payload::Verify => {
                self.mem.read("rx frame", at, &mut self.frame[..flen])?;
                verify(&self.frame[..flen])
            }
        };
        match verdict {
            Verdict::Corrupt => stats.corrupted += 1,
            Verdict::End(sent) => {
                self.peer_sent = Some(sent);
                stats.peer_sent = Some(sent);
            }
            Verdict::Good(seq) => {
                // In sequence per sender: a restarted sender starts anew,
                // and a sink that joins a stream midway starts where the
                // last receiver stopped.
                if !self.account_seq(seq) {
                    stats.out_of_order += 1;
                }
                self.received += 1;
                stats.packets_received += 1;
                stats.bytes_received += flen as u64;
                if let Some((want, t0)) = self.ping_in_flight {
                    if want == seq {
                        let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
                        self.rtts.saturating_record(ns);
                        self.ping_in_flight = None;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Put one TX frame of `len` bytes, which `fill` writes at the given offset
/// (after the `virtio_net_hdr`), in the slot of the descriptor it gets
/// (`(base, stride)`: see [`Guest::tx_stride`]); false when the ring is full.
pub(super) fn send_frame(
    tx: &mut DriverQueue,
    mem: &Region,
    (tx_bufs, stride): (u64, u64),
    len: u32,
    fill: impl FnOnce(&Region, u64) -> Result<(), RingError>,
) -> Result<bool, RingError> {
    let Some((_, slot)) = tx.add_slot(tx_bufs, stride, NET_HDR_LEN as u32 + len, false)? else {
        return Ok(false);
    };
    mem.write("tx header", slot, &[0u8; NET_HDR_LEN as usize])?;
    fill(mem, slot + NET_HDR_LEN)?;
    Ok(true)
}
