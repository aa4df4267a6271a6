//! `--capture FILE.pcapng`: a tap on the link, drops included.
//!
//! Every packet our copier moves and every chain it drops passes
//! [`crate::run::account`], the one `match` on a poll's outcome. When a
//! capture is on, that match hands each event to the [`Tap`]: it takes at
//! most `--snaplen` bytes of the frame (after the 12-byte `virtio_net_hdr`,
//! so what is written is the Ethernet frame a VM sent) into this thread's
//! batch. A delivered frame is read straight from the first piece of our
//! RX chain, which the copier names in the event ([`Event::Delivered`]'s
//! `rx_first`): no chain is walked twice. At the end of the poll its
//! records are stamped with the wall clock in nanoseconds (one read per
//! poll: the frames of a poll share it) and the batch *tries* to join a
//! bounded queue (at most [`QUEUE_RECORDS`] records waiting). It never
//! waits, never allocates once its buffers have grown (the writer hands
//! emptied batches back), and never wakes the writer (which looks every
//! [`WRITER_NAP`]): a futex wake per packet would cost more than the copy.
//! When the writer is behind and the queue is full, the batch is skipped
//! and counted (`capture_skipped`), and the next record that is written
//! carries the number skipped before it (`epb_dropcount`); the file ends
//! with interface statistics blocks that say the same (`isb_osdrop`).
//! With no capture the hot path pays one branch per poll event.
//!
//! The writer thread (`writer.rs`) owns the file. It builds each block
//! whole in memory and hands the file only whole blocks, at most
//! [`FLUSH_EVERY`] apart, so a launcher killed with SIGKILL leaves a file
//! that readers open up to its last flush, never a block cut in half.
//!
//! What a record says:
//! * a launcher has one interface, 0, `NAME-rx`: what the peer sent us, in
//!   the order our copier took it; one enhanced packet block (EPB) per
//!   frame delivered. A switch has one interface per port
//!   (`switch/capture.rs`);
//! * a frame whose `virtio_net_hdr` asks for an offload (a VM's GSO or
//!   partial checksum: `flags`/`gso_type` non-zero) carries the comment
//!   `offload needs_csum gso=tcpv4 gso_size=1448 ...`: the header is
//!   stripped, so the comment is where a reader learns why a frame is
//!   larger than the MTU or its checksum looks wrong;
//! * a dropped chain is an EPB too, on the same interface, with whatever of
//!   the frame could still be read (nothing, for a chain that does not
//!   describe memory) and the comment `drop reason=NAME: DETAIL`, NAME
//!   being the drop reason's stable name ([`DropReason::name`], the key in
//!   the stats' `drops_by_reason` and in `status`); an oversized frame also
//!   sets the EPB's "packet too long" error flag;
//! * our guest having no RX buffer posted is not a drop — the peer's chain
//!   waits in its ring — but it is where frames stop flowing, so the start
//!   of each such stall is written as an empty EPB with the comment
//!   `stall reason=rx_ring_full: ...` (the stats field that counts it).

mod args;
mod writer;

pub use args::CaptureArgs;
pub use writer::{FLUSH_EVERY, WRITER_NAP};

use crate::copier::{Copier, DropReason, Event};
use crate::guest::plan::NET_HDR_LEN;
use crate::memory::Region;
use crate::stats::Stats;
use crate::virtq::Seg;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::DataLink;
use std::borrow::Cow;
use std::cell::RefCell;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use transport::Transport;
use writer::{Writer, FLUSH_BYTES};

/// Records the queue holds before the tap skips (about 8 ms of 1500 B
/// frames at full rate on this machine).
pub const QUEUE_RECORDS: usize = 16 * 1024;
/// `--snaplen` when not given: whole frames.
pub const DEFAULT_SNAPLEN: u32 = 65535;
/// EPB flags: inbound.
const FLAG_INBOUND: u32 = 0b01;
/// EPB flags, link-layer error bits: "packet too long".
const FLAG_TOO_LONG: u32 = 1 << 25;
/// `virtio_net_hdr.flags`: the checksum is partial (`csum_start`/`csum_offset`).
const HDR_F_NEEDS_CSUM: u8 = 1;
/// `virtio_net_hdr.flags`: the checksum was checked.
const HDR_F_DATA_VALID: u8 = 2;

/// Why a capture could not start.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The file could not be created.
    #[error("--capture {path}: cannot create the file: {source}; pick a writable path")]
    Create {
        /// The path given.
        path: String,
        /// What the kernel said.
        source: std::io::Error,
    },
    /// The pcapng header could not be written.
    #[error("--capture {path}: cannot write the pcapng header: {source}")]
    Header {
        /// The path given.
        path: String,
        /// What went wrong.
        source: pcap_file::PcapError,
    },
}

/// What to capture and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureConfig {
    /// The pcapng file.
    pub path: PathBuf,
    /// Bytes kept per frame (`--snaplen`).
    pub snaplen: u32,
}

/// One interface of the capture file (a launcher's RX side, a switch port).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Iface {
    /// `if_name`.
    pub name: String,
    /// `if_description`.
    pub description: String,
    /// `if_MACaddr`, when known.
    pub mac: Option<[u8; 6]>,
}

/// One record of a batch; its bytes are `data[off..off + len]` of the batch.
struct Rec {
    iface: u32,
    ts: Duration,
    orig_len: u32,
    off: usize,
    len: usize,
    comment: Option<String>,
    flags: u32,
}

/// The records of one poll, their bytes in one buffer.
#[derive(Default)]
struct Batch {
    data: Vec<u8>,
    recs: Vec<Rec>,
}

/// What the writer thread is sent.
enum Msg {
    Batch(Batch),
    /// Write the closing statistics (with this comment), flush, and say so.
    Finish(String, SyncSender<()>),
}

/// The tap [`crate::run::account`] feeds: see the module docs.
pub struct Tap {
    queue: SyncSender<Msg>,
    /// Emptied batches the writer hands back, so the hot path reuses
    /// their memory instead of faulting in fresh pages.
    spare: std::sync::Mutex<Receiver<Batch>>,
    snaplen: usize,
    /// Our guest had no RX buffer at the last poll (a stall is open).
    stalled: AtomicBool,
}

/// Records queued for the writer and not yet written.
static QUEUED: AtomicUsize = AtomicUsize::new(0);
/// Records skipped since the writer last wrote one (it reports them).
static SKIPPED: AtomicU64 = AtomicU64::new(0);

static TAP: OnceLock<Tap> = OnceLock::new();

thread_local! {
    /// Scratch for re-walking a chain (a drop, or a frame whose first
    /// RX piece is too short), per accounting thread.
    static SEGS: RefCell<Vec<Seg>> = const { RefCell::new(Vec::new()) };
    /// This thread's records of the current poll.
    static BATCH: RefCell<Batch> = RefCell::new(Batch::default());
}

/// The process's tap, if `--capture` started one.
#[inline]
pub fn tap() -> Option<&'static Tap> {
    TAP.get()
}

/// Start capturing into `cfg.path` with one interface, `NAME-rx` with
/// `mac` (a launcher): see [`start_with`].
pub fn start(cfg: &CaptureConfig, name: &str, mac: [u8; 6]) -> Result<(), CaptureError> {
    start_with(
        cfg,
        &[Iface {
            name: format!("{name}-rx"),
            description: format!(
                "sharenet launcher {name} (pid {}): frames the peer sent us, and drops",
                std::process::id()
            ),
            mac: Some(mac),
        }],
    )
}

/// Start capturing into `cfg.path` with these interfaces (index = the
/// `iface` of [`Tap::frame`]): the file is created and its header written
/// here, so a bad path fails before the rendezvous. One capture per
/// process; a second call keeps the first.
pub fn start_with(cfg: &CaptureConfig, ifaces: &[Iface]) -> Result<(), CaptureError> {
    let shown = cfg.path.display().to_string();
    let header = |source| CaptureError::Header {
        path: shown.clone(),
        source,
    };
    let file = File::create(&cfg.path).map_err(|source| CaptureError::Create {
        path: shown.clone(),
        source,
    })?;
    let mut w = PcapNgWriter::new(Vec::with_capacity(FLUSH_BYTES * 2)).map_err(header)?;
    for i in ifaces {
        let mut options = vec![
            InterfaceDescriptionOption::IfName(Cow::Owned(i.name.clone())),
            InterfaceDescriptionOption::IfDescription(Cow::Owned(i.description.clone())),
            // Nanosecond timestamps (pcap-file writes EPB times in ns).
            InterfaceDescriptionOption::IfTsResol(9),
        ];
        if let Some(mac) = i.mac {
            options.push(InterfaceDescriptionOption::IfMacAddr(Cow::Owned(
                mac.to_vec(),
            )));
        }
        let idb = InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen: cfg.snaplen,
            options,
        };
        w.write_pcapng_block(idb).map_err(header)?;
    }
    // Batches; the bound that matters is QUEUED's, in records.
    let (tx, rx) = sync_channel(QUEUE_RECORDS);
    let (spare_tx, spare_rx) = sync_channel(64);
    let mut writer = Writer {
        spare: spare_tx,
        w,
        file,
        path: shown,
        ifaces: ifaces.len() as u32,
        written: vec![0; ifaces.len()],
        last_flush: Instant::now(),
        failed: false,
    };
    writer.flush();
    std::thread::Builder::new()
        .name("capture".into())
        .spawn(move || writer.run(rx))
        .map_err(|source| CaptureError::Create {
            path: cfg.path.display().to_string(),
            source,
        })?;
    let _ = TAP.set(Tap {
        queue: tx,
        spare: std::sync::Mutex::new(spare_rx),
        snaplen: cfg.snaplen as usize,
        stalled: AtomicBool::new(false),
    });
    Ok(())
}

/// Write what is queued, the closing statistics, and flush: called once
/// when the run ends (a killed launcher keeps what was flushed before).
pub fn finish(stats: &mut Stats) {
    finish_with(
        stats,
        format!(
            "capture end: {} records written, {} skipped (writer behind); drops by reason: {}",
            stats.capture_records,
            stats.capture_skipped,
            reasons_line(stats)
        ),
    )
}

/// [`finish`] with the closing comment given (a switch names its ports).
pub fn finish_with(stats: &mut Stats, comment: String) {
    let Some(tap) = tap() else { return };
    tap.send_batch(stats);
    let (ack, done) = sync_channel(1);
    if tap.queue.send(Msg::Finish(comment, ack)).is_ok() {
        let _ = done.recv_timeout(Duration::from_secs(5));
    }
}

/// `name=count ...` of the drops by reason, or `none`.
pub fn reasons_line(stats: &Stats) -> String {
    if stats.drops_by_reason.is_empty() {
        return "none".into();
    }
    stats
        .drops_by_reason
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// A locally administered MAC for a synthetic guest (which has none of its
/// own): `02:53:4e` ("SN") and the low 24 bits of the pid.
pub fn synthetic_mac(pid: u32) -> [u8; 6] {
    let p = pid.to_be_bytes();
    [0x02, 0x53, 0x4e, p[1], p[2], p[3]]
}

/// The comment for a `virtio_net_hdr` that asks for offloads, `None` for
/// a plain one (all a synthetic guest sends).
pub fn offload_note(hdr: &[u8; NET_HDR_LEN as usize]) -> Option<String> {
    let (flags, gso) = (hdr[0], hdr[1]);
    if flags == 0 && gso == 0 {
        return None;
    }
    let mut s = String::from("offload");
    if flags & HDR_F_NEEDS_CSUM != 0 {
        let start = u16::from_le_bytes([hdr[6], hdr[7]]);
        let off = u16::from_le_bytes([hdr[8], hdr[9]]);
        s += &format!(" needs_csum csum_start={start} csum_offset={off}");
    }
    if flags & HDR_F_DATA_VALID != 0 {
        s += " data_valid";
    }
    let kind = match gso & 0x7f {
        0 => None,
        1 => Some("tcpv4"),
        3 => Some("udp"),
        4 => Some("tcpv6"),
        5 => Some("udp_l4"),
        _ => Some("unknown"),
    };
    if let Some(k) = kind {
        let size = u16::from_le_bytes([hdr[4], hdr[5]]);
        s += &format!(" gso={k} gso_size={size}");
    }
    if gso & 0x80 != 0 {
        s += " ecn";
    }
    Some(s)
}

impl Tap {
    /// One event of a copier poll (called from [`crate::run::account`]).
    #[inline]
    pub fn event<T: Transport>(&self, copier: &mut Copier<T>, ev: &Event) {
        let hdr = NET_HDR_LEN as usize;
        if let Event::Delivered { len, rx_first, .. } = *ev {
            let want = (len as usize).saturating_sub(hdr).min(self.snaplen);
            if rx_first.len as usize >= hdr + want && len as usize >= hdr {
                // The common case: the header and the kept bytes lie in
                // the first piece of our RX chain.
                return self.frame(
                    0,
                    copier.own_memory(),
                    rx_first.addr,
                    rx_first.len,
                    len,
                    None,
                    FLAG_INBOUND_DELIVERED,
                );
            }
        }
        let (comment, flags) = match ev {
            Event::Delivered { .. } => (None, FLAG_INBOUND_DELIVERED),
            Event::Dropped { reason, peer_head } => (
                Some(drop_comment(reason, *peer_head)),
                match reason {
                    DropReason::Oversized { .. } => FLAG_INBOUND | FLAG_TOO_LONG,
                    _ => FLAG_INBOUND,
                },
            ),
        };
        BATCH.with(|b| {
            let b = &mut *b.borrow_mut();
            let off = b.data.len();
            let chain_len = SEGS.with(|s| {
                copier.frame_bytes(ev, hdr, self.snaplen, &mut s.borrow_mut(), &mut b.data)
            });
            b.recs.push(Rec {
                iface: 0,
                ts: Duration::ZERO, // stamped at the end of the poll
                orig_len: chain_len.saturating_sub(hdr as u32),
                off,
                len: b.data.len() - off,
                comment,
                flags,
            });
        });
    }

    /// One frame of `len` bytes (its `virtio_net_hdr` included) whose
    /// first `avail` bytes lie at `addr` in `mem`, on interface `iface`:
    /// the header is read for its offload note and stripped, at most
    /// `--snaplen` bytes of the rest (and of what is available) are kept.
    /// `comment` (a drop's) replaces the offload note. A read outside
    /// `mem` keeps an empty record.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub fn frame(
        &self,
        iface: u32,
        mem: &Region,
        addr: u64,
        avail: u32,
        len: u32,
        comment: Option<String>,
        flags: u32,
    ) {
        let hdr_len = NET_HDR_LEN as usize;
        let n = (len.min(avail) as usize)
            .saturating_sub(hdr_len)
            .min(self.snaplen);
        let mut hdr = [0u8; NET_HDR_LEN as usize];
        let comment = match comment {
            Some(c) => Some(c),
            None => match mem.read("capture", addr, &mut hdr) {
                Ok(()) => offload_note(&hdr),
                Err(_) => None,
            },
        };
        BATCH.with(|b| {
            let b = &mut *b.borrow_mut();
            let off = b.data.len();
            b.data.resize(off + n, 0);
            if mem
                .read("capture", addr + hdr_len as u64, &mut b.data[off..])
                .is_err()
            {
                b.data.truncate(off);
            }
            b.recs.push(Rec {
                iface,
                ts: Duration::ZERO,
                orig_len: (len as usize).saturating_sub(hdr_len) as u32,
                off,
                len: b.data.len() - off,
                comment,
                flags,
            });
        });
    }

    /// A frame in a buffer of ours, `virtio_net_hdr` first (a switch's
    /// TAP port): as [`Tap::frame`].
    pub fn bytes(&self, iface: u32, frame: &[u8], comment: Option<String>, flags: u32) {
        let hdr_len = NET_HDR_LEN as usize;
        let n = frame.len().saturating_sub(hdr_len).min(self.snaplen);
        BATCH.with(|b| {
            let b = &mut *b.borrow_mut();
            let off = b.data.len();
            if n > 0 {
                b.data.extend_from_slice(&frame[hdr_len..hdr_len + n]);
            }
            b.recs.push(Rec {
                iface,
                ts: Duration::ZERO,
                orig_len: frame.len().saturating_sub(hdr_len) as u32,
                off,
                len: n,
                comment,
                flags,
            });
        });
    }

    /// An empty record with `comment` on `iface` (a stall, a switch's
    /// drop of a frame it could not read).
    pub fn note(&self, iface: u32, comment: String, flags: u32) {
        BATCH.with(|b| {
            let b = &mut *b.borrow_mut();
            b.recs.push(Rec {
                iface,
                ts: Duration::ZERO,
                orig_len: 0,
                off: b.data.len(),
                len: 0,
                comment: Some(comment),
                flags,
            })
        });
    }

    /// The end of a poll: note a stall's start (`rx_full`), then hand the
    /// poll's records to the writer, or count them skipped.
    #[inline]
    pub fn poll_done(&self, rx_full: bool, stats: &mut Stats) {
        let was = self.stalled.swap(rx_full, Ordering::Relaxed);
        if rx_full && !was {
            self.note(
                0,
                "stall reason=rx_ring_full: the peer has a frame but our guest \
                 has no RX buffer posted; the frame waits in the peer's ring \
                 (not lost)"
                    .into(),
                FLAG_INBOUND,
            );
        }
        self.send_batch(stats);
    }

    /// Hand this thread's records to the writer (or count them skipped):
    /// what [`Tap::poll_done`] does after its stall note.
    pub fn send_batch(&self, stats: &mut Stats) {
        BATCH.with(|b| {
            let b = &mut *b.borrow_mut();
            let n = b.recs.len();
            if n == 0 {
                return;
            }
            let skip = |b: &mut Batch, stats: &mut Stats| {
                stats.capture_skipped += n as u64;
                SKIPPED.fetch_add(n as u64, Ordering::Relaxed);
                b.data.clear();
                b.recs.clear();
            };
            if QUEUED.load(Ordering::Relaxed) + n > QUEUE_RECORDS {
                return skip(b, stats);
            }
            // One clock read per poll: its frames were copied within
            // microseconds of each other, and a read per frame costs as
            // much as a tenth of the copy.
            let ts = now();
            for r in &mut b.recs {
                r.ts = ts;
            }
            let fresh = self
                .spare
                .lock()
                .ok()
                .and_then(|r| r.try_recv().ok())
                .unwrap_or_default();
            let batch = std::mem::replace(b, fresh);
            QUEUED.fetch_add(n, Ordering::Relaxed);
            match self.queue.try_send(Msg::Batch(batch)) {
                Ok(()) => stats.capture_records += n as u64,
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    QUEUED.fetch_sub(n, Ordering::Relaxed);
                    skip(b, stats)
                }
            }
        });
    }
}

/// Flags of a delivered frame: none. (Inbound is implied by the
/// interface's name; a record without flags takes the writer's short path.)
const FLAG_INBOUND_DELIVERED: u32 = 0;
/// EPB flags a switch's records use: inbound on the port they entered.
pub const FLAG_IN: u32 = FLAG_INBOUND;
/// EPB flags a switch's records use: outbound from the port they left.
pub const FLAG_OUT: u32 = 0b10;

/// The EPB comment of a dropped chain.
pub fn drop_comment(reason: &DropReason, peer_head: u16) -> String {
    let detail = match reason {
        DropReason::Malformed(e) => format!("malformed chain at head {peer_head}: {e}"),
        DropReason::Oversized { len, room } => format!(
            "frame of {len} bytes (head {peer_head}) larger than our RX buffer ({room} bytes)"
        ),
        DropReason::BadOffload(e) => format!("offload header at head {peer_head}: {e}"),
    };
    format!("drop reason={}: {detail}", reason.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offload_note_names_gso_and_partial_checksum() {
        let mut h = [0u8; 12];
        assert_eq!(offload_note(&h), None);
        h[0] = HDR_F_NEEDS_CSUM;
        h[1] = 1;
        h[4..6].copy_from_slice(&1448u16.to_le_bytes());
        h[6..8].copy_from_slice(&34u16.to_le_bytes());
        h[8..10].copy_from_slice(&16u16.to_le_bytes());
        assert_eq!(
            offload_note(&h).unwrap(),
            "offload needs_csum csum_start=34 csum_offset=16 gso=tcpv4 gso_size=1448"
        );
    }
}
