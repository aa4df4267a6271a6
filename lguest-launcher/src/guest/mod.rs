//! The synthetic guest: a small virtio-net driver with a workload.
//!
//! It drives two rings in our memory, exactly as a guest kernel would: it
//! posts RX slots as device-writable buffers ([`RX_POSTED`] of them until
//! the copier finds that too few, then all), puts frames on TX, and reaps
//! used entries. The peer's copier pulls from our TX ring and writes
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

mod buffers;
mod burst;
mod ending;
mod interrupts;
mod io;
mod senders;
mod tcp;
#[cfg(test)]
mod tests;

pub use buffers::{RX_POSTED, TX_IN_FLIGHT_SPIN_BYTES};
use io::send_frame;

use crate::cli::config::{Payload, Workload};
use crate::guest::frame::{
    check_stamp, end_frame, eth_header, header_seq, is_group, stamp, stamp_word, verify, Mac,
    Pattern, Verdict, BROADCAST, END_SEQ, ETH_HDR, ETH_P_HELLO, ETH_P_SHARENET, FRAME_HDR,
};
use crate::guest::plan::{Layout, BUF_SIZE, NET_HDR_LEN};
use crate::memory::Region;
use crate::stats::{Sender, Stats};
use crate::virtq::{DriverQueue, NotifyMode, RingError};
use hdrhistogram::Histogram;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Most TX slots a stream waits to have free before it refills its ring
/// (a quarter of the ring when that is less).
pub const TX_BATCH: u16 = 32;

/// `--rate`: a stream's pace.
#[derive(Clone, Copy, Debug)]
struct Pace {
    /// Packets per second.
    pps: u64,
    /// The first packet's time.
    start: Option<Instant>,
}

/// What one [`Guest::step`] did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Step {
    /// Anything happened.
    pub progress: bool,
    /// TX entries were published: `(old, new)` avail indexes, for the kick
    /// decision.
    pub tx_published: Option<(u16, u16)>,
    /// RX buffers were posted again: the `(old, new)` avail indexes.
    pub rx_published: Option<(u16, u16)>,
}

/// The synthetic guest.
pub struct Guest {
    mem: Region,
    /// Where the TX ring and TX buffers live: `mem`, or the exchange area
    /// (`--share exchange`: only it is offered to the peer).
    tx_mem: Region,
    layout: Layout,
    /// Bytes between two TX buffer slots: a whole [`BUF_SIZE`] slot when
    /// frames vary (echo), else just what the frame (or the end-of-stream
    /// frame) needs, 64-byte aligned. The slots of a 64 B stream then
    /// share 8 pages instead of spanning 256 x 16, and the pages the peer's
    /// copier reads fit its TLB (this VM has no huge pages for a memfd).
    tx_stride: u64,
    /// A stream refills its TX ring only once this many slots are free
    /// (or the rest of the stream fits): a batch per publication, so the
    /// two sides never settle into handing single packets back and forth
    /// (DPDK's `tx_free_thresh`).
    tx_batch: u16,
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
    /// Frames to echo, each with the MAC it came from (the reply's
    /// destination).
    echo_queue: VecDeque<(Mac, Vec<u8>)>,
    /// Buffers of frames already echoed, reused for the next ones (an
    /// allocation and a free per frame were a tenth of an echo's turn).
    echo_spare: Vec<Vec<u8>>,
    echoed: u64,
    rx_delay: Duration,
    /// `--rate`: when the stream started and how fast it may go.
    pace: Option<Pace>,
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
    /// Our MAC address (`--mac`).
    mac: Mac,
    /// Where our data frames go (`--dst`).
    dst: Mac,
    /// A hello is to be sent (we joined a switch).
    hello_due: bool,
    /// We are linked to a switch (its handshake said so).
    on_switch: bool,
    /// Hellos on our TX ring not yet completed: their completions are not
    /// data frames consumed.
    hello_out: u64,
    /// The TX slots hellos were written into, until a stamped sender
    /// writes its data frame's header there again
    /// ([`Guest::restore_stamped_slots`]); more than one when a reconnect
    /// sends the next hello before the last was restored.
    hello_slots: Vec<u64>,
    /// `--gso`: a stream's TCP segment size (its frames are TCP GSO frames).
    gso_mss: Option<u16>,
    /// The receive offloads we accepted (virtio-net feature bits).
    offloads: u64,
    /// The headers of the next `--gso` frame (reused).
    tcp_head: Vec<u8>,
    /// A sink's TCP stream, rebuilt by sequence number.
    tcp: tcp::Reassembly,
    /// RX completions taken in one go (`(id, len)`; reused).
    rx_batch: Vec<(u16, u32)>,
    /// Only `stamp` data frames have gone out on TX so far: every slot
    /// still holds the Ethernet header `prefill_tx` wrote, so a stamp is
    /// the 16-byte frame header alone. Cleared by any other frame.
    tx_only_stamps: bool,
    /// Most TX chains a stream keeps in flight ([`Guest::with_tx_in_flight`];
    /// the ring's size unless set).
    tx_cap: u16,
    /// The destination and EtherType of the last data frame the receive
    /// filter let through ([`burst::eth_key`]), and its length as the used
    /// entry gave it: a burst of stamps takes the frames that match both
    /// without asking the filter again (a stream's frames are all alike).
    rx_key: u128,
    rx_len: u32,
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
    /// A stream's packets per second at most (`--rate`).
    pub rate: Option<u64>,
    /// Our MAC address.
    pub mac: Mac,
    /// Where data frames go.
    pub dst: Mac,
    /// `--gso`: a stream sends TCP GSO frames with segments of this size.
    pub gso_mss: Option<u16>,
    /// The receive offloads our guest accepts (`--offloads`).
    pub offloads: u64,
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
    /// A guest over `layout` in `mem`, posting [`RX_POSTED`] RX buffers.
    pub fn new(
        mem: Region,
        layout: Layout,
        mode: NotifyMode,
        work: Work,
    ) -> Result<Self, RingError> {
        Self::split(mem.clone(), mem, layout, mode, work)
    }

    /// A guest whose TX ring and TX buffers (at `layout`'s offsets) are in
    /// `tx_mem`, and everything else in `mem` (`--share exchange`).
    pub fn split(
        mem: Region,
        tx_mem: Region,
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
            rate,
            mac,
            dst,
            gso_mss,
            offloads,
        } = work;
        let tx = DriverQueue::new(tx_mem.clone(), &layout.tx);
        let rx = DriverQueue::new(mem.clone(), &layout.rx);
        let tx_stride = match workload {
            Workload::Stream | Workload::Ping => {
                let longest = (size as u64)
                    .max(frame::END_FRAME as u64)
                    .max(io::HELLO_LEN as u64);
                let tcp = if gso_mss.is_some() {
                    tcp::IP_TCP_HDR
                } else {
                    0
                };
                (NET_HDR_LEN + ETH_HDR as u64 + tcp + longest).div_ceil(64) * 64
            }
            _ => BUF_SIZE,
        };
        let mut g = Guest {
            mem,
            tx_mem,
            layout,
            tx_stride,
            tx_batch: (layout.tx.size / 4).clamp(1, TX_BATCH as u32) as u16,
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
            echo_spare: Vec::new(),
            echoed: 0,
            rx_delay,
            pace: rate.map(|pps| Pace { pps, start: None }),
            frame: vec![0u8; BUF_SIZE as usize],
            end_sent: false,
            peer_sent: None,
            reconnect: false,
            senders: Vec::new(),
            sender: None,
            switches: VecDeque::new(),
            notes: Vec::new(),
            mac,
            dst,
            hello_due: false,
            on_switch: false,
            hello_out: 0,
            hello_slots: Vec::new(),
            gso_mss,
            offloads,
            tcp_head: Vec::with_capacity(128),
            tcp: tcp::Reassembly::default(),
            rx_batch: Vec::with_capacity(layout.rx.size as usize),
            tx_only_stamps: false,
            tx_cap: u16::MAX,
            rx_key: burst::eth_key(&mac, ETH_P_SHARENET),
            rx_len: 0,
        };
        for _ in 0..g.rx.num_free().min(usize::from(RX_POSTED)) {
            g.post_rx()?;
        }
        g.rx.publish()?;
        g.tx.set_interrupts(mode, false, 0)?;
        if io::prefills_tx(payload, workload) {
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

    /// We joined a switch: announce our MAC with one hello before anything
    /// else we send, so the switch learns where we are.
    pub fn hello(&mut self) {
        self.hello_due = true;
        self.on_switch = true;
    }

    /// One TX chain came back: a data frame consumed, or a hello.
    pub(super) fn completed(&mut self) {
        self.completed_n(1);
    }

    /// `n` TX chains came back, in ring order: hellos (sent before any
    /// data frame still out) first, then data frames consumed.
    pub(super) fn completed_n(&mut self, n: u64) {
        let hellos = self.hello_out.min(n);
        self.hello_out -= hellos;
        self.consumed += n - hellos;
    }

    /// Do everything possible without waiting.
    pub fn step(&mut self, stats: &mut Stats) -> Result<Step, RingError> {
        let mut step = Step::default();
        // Reap TX buffers the peer has consumed.
        let done = self.tx.reap_used()?;
        if done > 0 {
            self.completed_n(u64::from(done));
            step.progress = true;
        }
        let mut hello_sent = false;
        if self.hello_due && self.send_hello()? {
            self.hello_due = false;
            self.hello_out += 1;
            hello_sent = true;
        }
        self.restore_stamped_slots()?;
        // Receive.
        let reposted = self.receive_all(stats)?;
        step.progress |= reposted;
        // Produce.
        let before = self.sent;
        match self.workload {
            Workload::Stream => {
                let quota = self.quota();
                if quota > 0 && self.tx_room(quota) {
                    let until = self.sent.saturating_add(quota.min(self.tx_free() as u64));
                    let end = self.count.min(until);
                    if self.tx_only_stamps && self.gso_mss.is_none() {
                        self.send_stamps(end.saturating_sub(self.sent))?;
                    } else {
                        while self.sent < end && self.send_seq(self.sent)? {
                            self.sent += 1;
                        }
                    }
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
                while let Some((to, frame)) = self.echo_queue.front() {
                    let eth = eth_header(*to, self.mac, ETH_P_SHARENET);
                    let sent = send_frame(
                        &mut self.tx,
                        &self.tx_mem,
                        (self.layout.tx_bufs, self.tx_stride),
                        &eth,
                        frame.len() as u32,
                        |mem, at| Ok(mem.write("tx frame", at, frame)?),
                    )?
                    .is_some();
                    if !sent {
                        break;
                    }
                    if let Some((_, spare)) = self.echo_queue.pop_front() {
                        self.echo_spare.push(spare);
                    }
                    self.sent += 1;
                    self.echoed += 1;
                }
            }
            Workload::Sink | Workload::Idle => {}
        }
        if reposted {
            step.rx_published = Some(self.rx.publish()?);
        }
        if self.sent != before || hello_sent {
            step.progress = true;
            step.tx_published = Some(self.tx.publish()?);
        }
        stats.packets_sent = self.sent;
        stats.packets_consumed = self.consumed.min(self.sent);
        Ok(step)
    }

    /// A stream has room for its next batch: [`Guest::tx_batch`] free TX
    /// slots, or all it has left to send, or all `quota` allows.
    fn tx_room(&self, quota: u64) -> bool {
        let want = (self.count - self.sent)
            .min(self.tx_batch as u64)
            .min(quota);
        self.tx_free() as u64 >= want.max(1)
    }

    /// How many more packets a stream may send now: unbounded without
    /// `--rate`; with it, what the rate allows since the first packet
    /// (one clock read per step, paced streams only).
    fn quota(&mut self) -> u64 {
        let Some(p) = &mut self.pace else {
            return u64::MAX;
        };
        let start = *p.start.get_or_insert_with(Instant::now);
        let due = (start.elapsed().as_secs_f64() * p.pps as f64) as u64 + 1;
        due.saturating_sub(self.sent)
    }

    /// A paced stream that has to wait for its next packet: how long. The
    /// wait loop sleeps no longer than this (nobody kicks us for it).
    pub fn next_send_in(&self) -> Option<Duration> {
        let p = self.pace.as_ref()?;
        let start = p.start?;
        if self.workload != Workload::Stream || self.sent >= self.count {
            return None;
        }
        let at = start + Duration::from_secs_f64(self.sent as f64 / p.pps as f64);
        Some(at.saturating_duration_since(Instant::now()))
    }

    /// What this guest does.
    pub fn workload(&self) -> Workload {
        self.workload
    }
}
