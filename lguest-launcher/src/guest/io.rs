//! Moving frames: posting RX buffers, filling and sending TX frames, receiving.

use super::*;

/// Payload bytes of a hello: the frame padded to Ethernet's 60-byte minimum.
pub(super) const HELLO_LEN: u32 = 46;

impl Guest {
    /// The Ethernet header of our data frames.
    pub(super) fn eth(&self) -> [u8; ETH_HDR] {
        eth_header(self.dst, self.mac, ETH_P_SHARENET)
    }

    /// The hello a guest sends once when it joins a switch (see
    /// [`frame`]); false when the TX ring is full.
    pub(super) fn send_hello(&mut self) -> Result<bool, RingError> {
        self.tx_only_stamps = false;
        let eth = eth_header(BROADCAST, self.mac, ETH_P_HELLO);
        // Padded to the Ethernet minimum of 60 bytes.
        let slot = send_frame(
            &mut self.tx,
            &self.tx_mem,
            (self.layout.tx_bufs, self.tx_stride),
            &eth,
            HELLO_LEN,
            |mem, at| Ok(mem.write("tx hello", at, &[0u8; HELLO_LEN as usize])?),
        )?;
        match slot {
            Some(at) if prefills_tx(self.payload, self.workload) => self.hello_slots.push(at),
            _ => {}
        }
        Ok(slot.is_some())
    }

    /// A stamped stream or ping that sent hellos: once they are back (no
    /// hello in flight), write what [`Guest::prefill_tx`] wrote into
    /// their slots again, so every slot holds our data frame's header and
    /// filler and a frame is one 16-byte stamp again (`send_stamps`, the
    /// burst path a stream on a direct link takes). Nothing is done once
    /// the end-of-stream frame is out (no stamp follows it).
    /// Called on every step: a guest with no hello slot to restore (every
    /// one but a stamped sender that just joined a switch) looks no further.
    pub(super) fn restore_stamped_slots(&mut self) -> Result<(), RingError> {
        if self.hello_slots.is_empty()
            || self.hello_out > 0
            || self.end_sent
            || self.gso_mss.is_some()
        {
            return Ok(());
        }
        for at in std::mem::take(&mut self.hello_slots) {
            self.prefill_slot(at)?;
        }
        self.tx_only_stamps = true;
        Ok(())
    }

    pub(super) fn rx_slot(&self, id: u16) -> u64 {
        self.layout.rx_bufs + id as u64 * BUF_SIZE
    }

    /// Post one RX buffer: the slot of whatever descriptor id comes free.
    pub(super) fn post_rx(&mut self) -> Result<(), RingError> {
        self.rx
            .add_slot(self.layout.rx_bufs, BUF_SIZE, BUF_SIZE as u32, true)?;
        Ok(())
    }

    /// Take every RX completion there is (a sink: up to its count), read
    /// each frame and post its buffer again, unpublished (the caller
    /// publishes after the turn). True when anything arrived.
    ///
    /// Completions are taken in batches ([`DriverQueue::recycle_used`]):
    /// one call per batch, not a pop, a receive and a repost per frame.
    /// With `rx_delay` (a slow sink, for tests) one frame per turn.
    pub(super) fn receive_all(&mut self, stats: &mut Stats) -> Result<bool, RingError> {
        // Nothing new (an idle turn): one look at the used index, with the
        // check every later look makes.
        if self.rx.used_pending()? == 0 {
            return Ok(false);
        }
        let mut any = false;
        let stamps = self.stamps_in();
        let mut batch = std::mem::take(&mut self.rx_batch);
        let result = loop {
            // A sink takes exactly COUNT: what arrives after stays in the
            // ring (`--count 0`: everything, until the end of stream).
            let max = match self.workload {
                Workload::Sink if self.count > 0 => self.count.saturating_sub(self.received),
                _ => u64::MAX,
            };
            let max = if self.rx_delay.is_zero() {
                max
            } else {
                max.min(1)
            };
            if max == 0 {
                break Ok(());
            }
            // A sink of stamps: bursts of the sender's next frames, and the
            // one frame that stops a burst the general way below.
            let max = if stamps {
                match self.receive_stamps(max, stats) {
                    Ok((n, left)) => {
                        any |= n > 0;
                        match (n, left) {
                            (0, false) => break Ok(()),
                            (0, true) => 1,
                            _ => continue,
                        }
                    }
                    Err(e) => break Err(e),
                }
            } else {
                max
            };
            let first = self.rx.last_used();
            batch.clear();
            let max = usize::try_from(max)
                .unwrap_or(usize::MAX)
                .min(batch.capacity().max(1));
            let freed = match self.rx.recycle_used(max, &mut batch) {
                Ok(n) => n,
                Err(e) => break Err(e),
            };
            if batch.is_empty() {
                break Ok(());
            }
            any = true;
            let mut failed = None;
            for (i, &(id, len)) in batch.iter().enumerate() {
                self.switch_sender(first.wrapping_add(i as u16));
                if let Err(e) = self.receive(id, len, stats) {
                    failed = Some(e);
                    break;
                }
            }
            // Chains of several descriptors were freed, not reposted.
            if let Some(e) = failed.or_else(|| (0..freed).find_map(|_| self.post_rx().err())) {
                break Err(e);
            }
            if !self.rx_delay.is_zero() {
                std::thread::sleep(self.rx_delay);
                break Ok(());
            }
        };
        self.rx_batch = batch;
        result.map(|()| any)
    }

    /// `--payload stamp` ([`prefills_tx`]): write every TX buffer's
    /// `virtio_net_hdr` and payload once, so a frame costs only its
    /// 16-byte stamp afterwards.
    pub(super) fn prefill_tx(&mut self) -> Result<(), RingError> {
        for id in 0..u64::from(self.layout.tx.size) {
            self.prefill_slot(self.layout.tx_bufs + id * self.tx_stride)?;
        }
        self.tx_only_stamps = true;
        Ok(())
    }

    /// One TX slot (at `at`) as [`Guest::prefill_tx`] leaves it: a plain
    /// `virtio_net_hdr`, our Ethernet header, the payload's filler after
    /// where the stamp goes.
    fn prefill_slot(&self, at: u64) -> Result<(), RingError> {
        let hdr = [0u8; NET_HDR_LEN as usize];
        self.tx_mem.write("tx prefill", at, &hdr)?;
        self.tx_mem
            .write("tx prefill", at + NET_HDR_LEN, &self.eth())?;
        self.tx_mem.write(
            "tx prefill",
            at + NET_HDR_LEN + (ETH_HDR + FRAME_HDR) as u64,
            self.pattern.filler(),
        )?;
        Ok(())
    }

    pub(super) fn send_seq(&mut self, seq: u64) -> Result<bool, RingError> {
        if let Some(mss) = self.gso_mss {
            return self.send_gso(seq, mss);
        }
        let size = self.pattern.size() as u32;
        if self.payload == Payload::Stamp {
            // Header only: the rest of the buffer was filled at start.
            let Some((_, slot)) = self.tx.add_slot(
                self.layout.tx_bufs,
                self.tx_stride,
                (NET_HDR_LEN + ETH_HDR as u64) as u32 + size,
                false,
            )?
            else {
                return Ok(false);
            };
            if self.tx_only_stamps {
                // The slot holds what `prefill_tx` wrote: one 16-byte store.
                let at = slot + NET_HDR_LEN + ETH_HDR as u64;
                self.tx_mem
                    .store_u128("tx stamp", at, stamp_word(seq, size))?;
                return Ok(true);
            }
            // The Ethernet header too: a hello or end-of-stream frame may
            // have used this slot since it was prefilled.
            let mut head = [0u8; ETH_HDR + FRAME_HDR];
            head[..ETH_HDR].copy_from_slice(&self.eth());
            head[ETH_HDR..].copy_from_slice(&stamp(seq, size));
            self.tx_mem.write("tx stamp", slot + NET_HDR_LEN, &head)?;
            return Ok(true);
        }
        let (h, payload) = self.pattern.frame(seq);
        let eth = self.eth();
        send_frame(
            &mut self.tx,
            &self.tx_mem,
            (self.layout.tx_bufs, self.tx_stride),
            &eth,
            size,
            |mem, at| {
                mem.write("tx frame", at, &h)?;
                mem.write("tx frame", at + h.len() as u64, payload)?;
                Ok(())
            },
        )
        .map(|slot| slot.is_some())
    }

    /// Handle one received buffer (its caller has posted it again, to be
    /// published once it is read).
    #[inline]
    pub(super) fn receive(
        &mut self,
        id: u16,
        len: u32,
        stats: &mut Stats,
    ) -> Result<(), RingError> {
        let flen = len as u64;
        let before = NET_HDR_LEN + ETH_HDR as u64;
        if !(before..=BUF_SIZE).contains(&flen) {
            stats.corrupted += 1;
            return Ok(());
        }
        // The Ethernet header and the two bytes after it, in one 16-byte
        // load (still inside the slot, which is BUF_SIZE long): one vector
        // move instead of a 14-byte copy in pieces.
        // Loaded into a register (a byte array filled by a 16-byte load is
        // stored and read back in pieces).
        let eth = self
            .mem
            .load_u128("rx ethernet header", self.rx_slot(id) + NET_HDR_LEN)?
            .to_le_bytes();
        let dst: Mac = eth[0..6].try_into().unwrap_or_default();
        let src: Mac = eth[6..12].try_into().unwrap_or_default();
        // A NIC's address filter: unicast for another guest (a switch
        // flooding an address it has not learned yet) is not ours.
        if dst != self.mac && !is_group(&dst) {
            stats.not_for_us += 1;
            return Ok(());
        }
        match u16::from_be_bytes([eth[12], eth[13]]) {
            // What a burst of stamps lets through without asking again.
            ETH_P_SHARENET => {
                (self.rx_key, self.rx_len) = (burst::eth_key(&dst, ETH_P_SHARENET), len)
            }
            ETH_P_HELLO => return Ok(()),
            t @ (tcp::ETH_P_IP | tcp::ETH_P_IPV6) if self.workload != Workload::Echo => {
                return self.receive_tcp(id, len, t, stats);
            }
            _ => {
                stats.foreign += 1;
                return Ok(());
            }
        }
        let flen = (flen - before) as usize;
        let at = self.rx_slot(id) + before;
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
                let mut f = self.echo_spare.pop().unwrap_or_default();
                f.resize(flen, 0);
                self.mem.read("rx frame", at, &mut f)?;
                if let Verdict::Good(seq) = verify(&f) {
                    self.account_seq(seq);
                }
                self.echo_queue.push_back((src, f));
                stats.packets_received += 1;
                stats.bytes_received += flen as u64;
            }
            return Ok(());
        }
        let verdict = match self.payload {
            Payload::Stamp if flen >= FRAME_HDR => {
                let h = self.mem.load_u128("rx stamp", at)?.to_le_bytes();
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
        self.account_verdict(verdict, flen, stats);
        Ok(())
    }

    /// Count a received data frame of `flen` bytes by its verdict (inlined
    /// into the per-frame path: it was a call per frame).
    #[inline(always)]
    pub(super) fn account_verdict(&mut self, verdict: Verdict, flen: usize, stats: &mut Stats) {
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
    }
}

/// Does a guest of this payload and workload prefill its TX buffers
/// ([`Guest::prefill_tx`]), so that its frames are stamps only?
pub(super) fn prefills_tx(payload: Payload, workload: Workload) -> bool {
    payload == Payload::Stamp && matches!(workload, Workload::Stream | Workload::Ping)
}

/// Put one TX frame of `len` bytes behind the Ethernet header `eth`, in
/// the slot of the descriptor it gets (`(base, stride)`: see
/// [`Guest::tx_stride`]); `fill` writes the frame at the given offset
/// (after the `virtio_net_hdr` and `eth`). The slot it took; `None` when
/// the ring is full.
pub(super) fn send_frame(
    tx: &mut DriverQueue,
    mem: &Region,
    (tx_bufs, stride): (u64, u64),
    eth: &[u8; ETH_HDR],
    len: u32,
    fill: impl FnOnce(&Region, u64) -> Result<(), RingError>,
) -> Result<Option<u64>, RingError> {
    let before = NET_HDR_LEN + ETH_HDR as u64;
    let Some((_, slot)) = tx.add_slot(tx_bufs, stride, before as u32 + len, false)? else {
        return Ok(None);
    };
    mem.write("tx header", slot, &[0u8; NET_HDR_LEN as usize])?;
    mem.write("tx header", slot + NET_HDR_LEN, eth)?;
    fill(mem, slot + before)?;
    Ok(Some(slot))
}
