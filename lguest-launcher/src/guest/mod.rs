//! The synthetic guest: a small virtio-net driver with a workload.
//!
//! It drives two rings in our memory, exactly as a guest kernel would: it
//! posts every RX slot as a device-writable buffer, puts frames on TX, and
//! reaps used entries. The peer's copier pulls from our TX ring and writes
//! its used entries (so those are checked: see [`DriverQueue::pop_used`]);
//! our own copier fills our RX ring.
//!
//! Workloads: `stream` sends COUNT frames, then one end-of-stream frame
//! announcing how many it sent ([`frame::end_frame`]), and is done once the
//! peer has consumed all of them; `sink` is done after COUNT intact frames; `ping`
//! sends one frame at a time and times its echo; `echo` sends back each
//! frame it receives; `idle` does nothing.
//!
//! With `--payload stamp` ([`frame::stamp`]) the guest writes each TX
//! buffer's payload once, here in [`Guest::new`], and then only a 16-byte
//! header per frame; on receive it reads the header alone. What is left
//! per packet is the link's own work: descriptors, indexes, the copier's
//! copy.
//!
//! # Across link generations (`--reconnect`)
//! The guest outlives its peers: its rings, in-flight TX chains and
//! counters stay put while the launcher waits for the next peer, whose
//! copier resumes our TX ring where the last one left it. A sink or echo
//! keeps one [`Sender`] record per peer launcher: a restarted sender is a
//! new process with a new sequence, so gaps and duplicates are judged per
//! sender. Which sender a frame came from is decided by its position in
//! our RX used ring: [`Guest::link_up`] names the used index from which the
//! new peer's frames start (the new copier starts exactly there), so frames
//! of the old peer still waiting in the ring are not charged to the new one.

pub mod frame;
pub mod plan;

use crate::cli::config::{Payload, Workload};
use crate::guest::frame::{
    check_stamp, end_frame, header_seq, stamp, verify, Pattern, Verdict, END_SEQ, FRAME_HDR,
};
use crate::guest::plan::{Layout, BUF_SIZE, NET_HDR_LEN};
use crate::memory::Region;
use crate::stats::{Sender, Stats};
use crate::virtq::{DriverQueue, NotifyMode, RingError};
use hdrhistogram::Histogram;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// What one [`Guest::step`] did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Step {
    /// Anything happened.
    pub progress: bool,
    /// TX entries were published: `(old, new)` avail indexes, for the kick
    /// decision.
    pub tx_published: Option<(u16, u16)>,
}

/// The synthetic guest.
pub struct Guest {
    mem: Region,
    layout: Layout,
    /// Our TX ring (the peer's copier consumes it).
    pub tx: DriverQueue,
    rx: DriverQueue,
    mode: NotifyMode,
    workload: Workload,
    payload: Payload,
    count: u64,
    pattern: Pattern,
    sent: u64,
    consumed: u64,
    received: u64,
    ping_in_flight: Option<(u64, Instant)>,
    /// Ping round trips, ns: a fixed-size histogram, not a list.
    rtts: Histogram<u64>,
    echo_queue: VecDeque<Vec<u8>>,
    echoed: u64,
    rx_delay: Duration,
    frame: Vec<u8>,
    /// Our end-of-stream frame is on the TX ring.
    end_sent: bool,
    /// The peer's end-of-stream frame said it sent this many.
    peer_sent: Option<u64>,
    /// `--reconnect`: more senders may come after one ends its stream.
    reconnect: bool,
    /// One record per sender, in the order they first sent (sink, echo).
    senders: Vec<Sender>,
    /// The peer whose frames we are reading now, and whether a frame of it
    /// was out of sequence already (reported once).
    sender: Option<(u32, bool)>,
    /// Peers that connected, each with the RX used index its frames start at.
    switches: VecDeque<(u16, u32)>,
    /// Lines for the launcher to print (first frame of a sender, first
    /// frame out of sequence).
    notes: Vec<String>,
}

/// What a synthetic guest is asked to do.
#[derive(Clone, Copy, Debug)]
pub struct Work {
    /// The workload.
    pub workload: Workload,
    /// Full payloads or stamps.
    pub payload: Payload,
    /// `--count`.
    pub count: u64,
    /// Frame size in bytes.
    pub size: u32,
    /// Per-packet delay in the receiving guest (a slow sink, for tests).
    pub rx_delay: Duration,
}

/// A sink that learned, from the sender's end-of-stream frame, that fewer
/// frames than it waits for will ever come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shortfall {
    /// Intact frames received.
    pub received: u64,
    /// `--count`.
    pub expected: u64,
    /// What the sender said it sent.
    pub peer_sent: u64,
}

impl Guest {
    /// A guest over `layout` in `mem`, posting all RX buffers.
    pub fn new(
        mem: Region,
        layout: Layout,
        mode: NotifyMode,
        work: Work,
    ) -> Result<Self, RingError> {
        let Work {
            workload,
            payload,
            count,
            size,
            rx_delay,
        } = work;
        let tx = DriverQueue::new(mem.clone(), &layout.tx);
        let rx = DriverQueue::new(mem.clone(), &layout.rx);
        let mut g = Guest {
            mem,
            layout,
            tx,
            rx,
            mode,
            workload,
            payload,
            count,
            pattern: Pattern::new(size as usize),
            sent: 0,
            consumed: 0,
            received: 0,
            ping_in_flight: None,
            rtts: crate::stats::rtt_histogram(),
            echo_queue: VecDeque::new(),
            echoed: 0,
            rx_delay,
            frame: vec![0u8; BUF_SIZE as usize],
            end_sent: false,
            peer_sent: None,
            reconnect: false,
            senders: Vec::new(),
            sender: None,
            switches: VecDeque::new(),
            notes: Vec::new(),
        };
        while g.rx.num_free() > 0 {
            g.post_rx()?;
        }
        g.rx.publish()?;
        g.tx.set_interrupts(mode, false, 0)?;
        if payload == Payload::Stamp && matches!(workload, Workload::Stream | Workload::Ping) {
            g.prefill_tx()?;
        }
        Ok(g)
    }

    /// `--reconnect`: a sender's end of stream does not end a sink that
    /// counts (`--count N`); the next sender may bring the rest.
    pub fn with_reconnect(mut self, on: bool) -> Self {
        self.reconnect = on;
        self
    }

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
        while self.tx.pop_used()?.is_some() {
            self.consumed += 1;
        }
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

    /// Frames at our RX used index `at` and on come from the next peer.
    fn switch_sender(&mut self) {
        let at = self.rx.last_used();
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
    fn account_seq(&mut self, seq: u64) -> bool {
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
            s.gaps += seq - next;
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

    fn rx_slot(&self, id: u16) -> u64 {
        self.layout.rx_bufs + id as u64 * BUF_SIZE
    }

    /// Post one RX buffer: the slot of whatever descriptor id comes free.
    fn post_rx(&mut self) -> Result<(), RingError> {
        self.rx
            .add_slot(self.layout.rx_bufs, BUF_SIZE, BUF_SIZE as u32, true)?;
        Ok(())
    }

    /// `--payload stamp`: write every TX buffer's `virtio_net_hdr` and
    /// payload once, so a frame costs only its 16-byte stamp afterwards.
    fn prefill_tx(&mut self) -> Result<(), RingError> {
        let hdr = [0u8; NET_HDR_LEN as usize];
        for id in 0..u64::from(self.layout.tx.size) {
            let at = self.layout.tx_bufs + id * BUF_SIZE;
            self.mem.write("tx prefill", at, &hdr)?;
            self.mem.write(
                "tx prefill",
                at + NET_HDR_LEN + FRAME_HDR as u64,
                self.pattern.filler(),
            )?;
        }
        Ok(())
    }

    fn send_seq(&mut self, seq: u64) -> Result<bool, RingError> {
        let size = self.pattern.size() as u32;
        if self.payload == Payload::Stamp {
            // Header only: the rest of the buffer was filled at start.
            let Some((_, slot)) = self.tx.add_slot(
                self.layout.tx_bufs,
                BUF_SIZE,
                NET_HDR_LEN as u32 + size,
                false,
            )?
            else {
                return Ok(false);
            };
            self.mem
                .write("tx stamp", slot + NET_HDR_LEN, &stamp(seq, size))?;
            return Ok(true);
        }
        let (h, payload) = self.pattern.frame(seq);
        send_frame(
            &mut self.tx,
            &self.mem,
            self.layout.tx_bufs,
            size,
            |mem, at| {
                mem.write("tx frame", at, &h)?;
                mem.write("tx frame", at + h.len() as u64, payload)?;
                Ok(())
            },
        )
    }

    /// Do everything possible without waiting.
    pub fn step(&mut self, stats: &mut Stats) -> Result<Step, RingError> {
        let mut step = Step::default();
        // Reap TX buffers the peer has consumed.
        while self.tx.pop_used()?.is_some() {
            self.consumed += 1;
            step.progress = true;
        }
        // Receive.
        let mut reposted = false;
        // A sink takes exactly COUNT: what arrives after stays in the ring
        // (`--count 0`: everything, until the end of stream).
        while !(self.workload == Workload::Sink && self.count > 0 && self.received >= self.count) {
            self.switch_sender();
            let Some((id, len)) = self.rx.pop_used()? else {
                break;
            };
            step.progress = true;
            self.receive(id, len, stats)?;
            self.post_rx()?;
            reposted = true;
            if !self.rx_delay.is_zero() {
                std::thread::sleep(self.rx_delay);
                break;
            }
        }
        // Produce.
        let before = self.sent;
        match self.workload {
            Workload::Stream => {
                while self.sent < self.count && self.send_seq(self.sent)? {
                    self.sent += 1;
                }
                if self.sent == self.count && !self.end_sent && self.put_end()? {
                    step.progress = true;
                    step.tx_published = Some(self.tx.publish()?);
                }
            }
            Workload::Ping => {
                if self.ping_in_flight.is_none()
                    && self.sent < self.count
                    && self.send_seq(self.sent)?
                {
                    self.ping_in_flight = Some((self.sent, Instant::now()));
                    self.sent += 1;
                }
            }
            Workload::Echo => {
                while let Some(frame) = self.echo_queue.front() {
                    let sent = send_frame(
                        &mut self.tx,
                        &self.mem,
                        self.layout.tx_bufs,
                        frame.len() as u32,
                        |mem, at| Ok(mem.write("tx frame", at, frame)?),
                    )?;
                    if !sent {
                        break;
                    }
                    self.echo_queue.pop_front();
                    self.sent += 1;
                    self.echoed += 1;
                }
            }
            Workload::Sink | Workload::Idle => {}
        }
        if reposted {
            self.rx.publish()?;
        }
        if self.sent != before {
            step.progress = true;
            step.tx_published = Some(self.tx.publish()?);
        }
        stats.packets_sent = self.sent;
        stats.packets_consumed = self.consumed.min(self.sent);
        Ok(step)
    }

    /// Put our end-of-stream frame on the TX ring (not published); false
    /// when the ring is full.
    fn put_end(&mut self) -> Result<bool, RingError> {
        let end = end_frame(self.sent);
        let put = send_frame(
            &mut self.tx,
            &self.mem,
            self.layout.tx_bufs,
            end.len() as u32,
            |mem, at| Ok(mem.write("tx frame", at, &end)?),
        )?;
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
            self.consumed += 1;
        }
        if !self.put_end()? {
            return Ok(None);
        }
        Ok(Some(self.tx.publish()?))
    }

    /// Our end-of-stream frame is not on the ring yet. Every workload sends
    /// one when it leaves cleanly (a stream as its last frame, the others
    /// on the way out), so the peer can tell a clean leave from a crash.
    pub fn end_pending(&self) -> bool {
        !self.end_sent
    }

    /// What this guest does.
    pub fn workload(&self) -> Workload {
        self.workload
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

    /// Handle one received buffer (the caller re-posts it afterwards).
    fn receive(&mut self, id: u16, len: u32, stats: &mut Stats) -> Result<(), RingError> {
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
            Workload::Stream => self.sent < self.count && self.tx.num_free() == 0,
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

    /// Is there something to do right now (re-check before sleeping)?
    pub fn has_work(&self) -> Result<bool, RingError> {
        Ok(self.rx.has_used()? || self.tx.has_used()?)
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

/// Put one TX frame of `len` bytes, which `fill` writes at the given offset
/// (after the `virtio_net_hdr`); false when the ring is full.
fn send_frame(
    tx: &mut DriverQueue,
    mem: &Region,
    tx_bufs: u64,
    len: u32,
    fill: impl FnOnce(&Region, u64) -> Result<(), RingError>,
) -> Result<bool, RingError> {
    let Some((_, slot)) = tx.add_slot(tx_bufs, BUF_SIZE, NET_HDR_LEN as u32 + len, false)? else {
        return Ok(false);
    };
    mem.write("tx header", slot, &[0u8; NET_HDR_LEN as usize])?;
    fill(mem, slot + NET_HDR_LEN)?;
    Ok(true)
}
