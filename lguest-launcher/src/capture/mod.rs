//! `--capture FILE.pcapng`: a tap on the link, drops included.
//!
//! Every packet our copier moves and every chain it drops passes
//! [`crate::run::account`], the one `match` on a poll's outcome. When a
//! capture is on, that match hands each event to the [`Tap`]: it takes at
//! most `--snaplen` bytes of the frame (after the 12-byte `virtio_net_hdr`,
//! so what is written is the Ethernet frame a VM sent) into this thread's
//! batch. At the end of the poll its records are stamped with the wall
//! clock in nanoseconds (one read per poll: the frames of a poll share
//! it) and the batch *tries* to join a bounded queue (at most
//! [`QUEUE_RECORDS`] records waiting). It never waits, and it never wakes
//! the writer (which looks every [`WRITER_NAP`]): a futex wake per packet
//! would cost more than the copy. When the writer is behind and the queue
//! is full, the batch is skipped and counted (`capture_skipped`), and
//! the next record that is written carries the number skipped before it
//! (`epb_dropcount`); the file ends with an interface statistics block
//! that says the same (`isb_osdrop`).
//!
//! The writer thread owns the file. It builds each block whole in memory
//! and hands the file only whole blocks, at most [`FLUSH_EVERY`] apart, so
//! a launcher killed with SIGKILL leaves a file that readers open up to its
//! last flush, never a block cut in half.
//!
//! What a record says:
//! * interface 0, `NAME-rx`: what the peer sent us, in the order our
//!   copier took it; one enhanced packet block (EPB) per frame delivered;
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

use crate::copier::{Copier, DropReason, Event};
use crate::guest::plan::NET_HDR_LEN;
use crate::stats::Stats;
use crate::virtq::Seg;
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::interface_statistics::{
    InterfaceStatisticsBlock, InterfaceStatisticsOption,
};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::DataLink;
use std::borrow::Cow;
use std::cell::RefCell;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use transport::Transport;

/// Records the queue holds before the tap skips (about 8 ms of 1500 B
/// frames at full rate on this machine).
pub const QUEUE_RECORDS: usize = 16 * 1024;
/// The writer hands the file what it has at least this often.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// ... or as soon as this much is buffered.
const FLUSH_BYTES: usize = 256 * 1024;
/// `--snaplen` when not given: whole frames.
pub const DEFAULT_SNAPLEN: u32 = 65535;
/// EPB flags: inbound.
const FLAG_INBOUND: u32 = 0b01;
/// EPB flags, link-layer error bits: "packet too long".
const FLAG_TOO_LONG: u32 = 1 << 25;

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

/// One record of a batch; its bytes are `data[off..off + len]` of the batch.
struct Rec {
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
/// How long the writer naps when the queue is empty.
pub const WRITER_NAP: Duration = Duration::from_millis(2);

static TAP: OnceLock<Tap> = OnceLock::new();

thread_local! {
    /// Scratch for re-walking a chain, per accounting thread.
    static SEGS: RefCell<Vec<Seg>> = const { RefCell::new(Vec::new()) };
    /// This thread's records of the current poll.
    static BATCH: RefCell<Batch> = RefCell::new(Batch::default());
}

/// The process's tap, if `--capture` started one.
#[inline]
pub fn tap() -> Option<&'static Tap> {
    TAP.get()
}

/// Start capturing into `cfg.path` (interface `NAME-rx` with `mac`): the
/// file is created and its header written here, so a bad path fails before
/// the rendezvous. One capture per process; a second call keeps the first.
pub fn start(cfg: &CaptureConfig, name: &str, mac: [u8; 6]) -> Result<(), CaptureError> {
    let shown = cfg.path.display().to_string();
    let file = File::create(&cfg.path).map_err(|source| CaptureError::Create {
        path: shown.clone(),
        source,
    })?;
    let mut w = PcapNgWriter::new(Vec::with_capacity(FLUSH_BYTES * 2)).map_err(|source| {
        CaptureError::Header {
            path: shown.clone(),
            source,
        }
    })?;
    let idb = InterfaceDescriptionBlock {
        linktype: DataLink::ETHERNET,
        snaplen: cfg.snaplen,
        options: vec![
            InterfaceDescriptionOption::IfName(Cow::Owned(format!("{name}-rx"))),
            InterfaceDescriptionOption::IfDescription(Cow::Owned(format!(
                "sharenet launcher {name} (pid {}): frames the peer sent us, and drops",
                std::process::id()
            ))),
            InterfaceDescriptionOption::IfMacAddr(Cow::Owned(mac.to_vec())),
            // Nanosecond timestamps (pcap-file writes EPB times in ns).
            InterfaceDescriptionOption::IfTsResol(9),
        ],
    };
    w.write_pcapng_block(idb)
        .map_err(|source| CaptureError::Header {
            path: shown.clone(),
            source,
        })?;
    // Batches; the bound that matters is QUEUED's, in records.
    let (tx, rx) = sync_channel(QUEUE_RECORDS);
    let (spare_tx, spare_rx) = sync_channel(64);
    let mut writer = Writer {
        spare: spare_tx,
        w,
        file,
        path: shown,
        written: 0,
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
    let Some(tap) = tap() else { return };
    tap.send_batch(stats);
    let comment = format!(
        "capture end: {} records written, {} skipped (writer behind); drops by reason: {}",
        stats.capture_records,
        stats.capture_skipped,
        reasons_line(stats)
    );
    let (ack, done) = sync_channel(1);
    if tap.queue.send(Msg::Finish(comment, ack)).is_ok() {
        let _ = done.recv_timeout(Duration::from_secs(5));
    }
}

fn reasons_line(stats: &Stats) -> String {
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

impl Tap {
    /// One event of a copier poll (called from [`crate::run::account`]).
    #[inline]
    pub fn event<T: Transport>(&self, copier: &mut Copier<T>, ev: &Event) {
        let (comment, flags) = match ev {
            Event::Delivered { .. } => (None, 0),
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
                copier.frame_bytes(
                    ev,
                    NET_HDR_LEN as usize,
                    self.snaplen,
                    &mut s.borrow_mut(),
                    &mut b.data,
                )
            });
            b.recs.push(Rec {
                ts: Duration::ZERO, // stamped at the end of the poll
                orig_len: chain_len.saturating_sub(NET_HDR_LEN as u32),
                off,
                len: b.data.len() - off,
                comment,
                flags,
            });
        });
    }

    /// The end of a poll: note a stall's start (`rx_full`), then hand the
    /// poll's records to the writer, or count them skipped.
    #[inline]
    pub fn poll_done(&self, rx_full: bool, stats: &mut Stats) {
        let was = self.stalled.swap(rx_full, Ordering::Relaxed);
        if rx_full && !was {
            BATCH.with(|b| {
                let b = &mut *b.borrow_mut();
                b.recs.push(Rec {
                    ts: Duration::ZERO,
                    orig_len: 0,
                    off: b.data.len(),
                    len: 0,
                    comment: Some(
                        "stall reason=rx_ring_full: the peer has a frame but our guest \
                         has no RX buffer posted; the frame waits in the peer's ring \
                         (not lost)"
                            .into(),
                    ),
                    flags: FLAG_INBOUND,
                })
            });
        }
        self.send_batch(stats);
    }

    fn send_batch(&self, stats: &mut Stats) {
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

/// The writer thread: owns the file, see the module docs.
struct Writer {
    spare: SyncSender<Batch>,
    w: PcapNgWriter<Vec<u8>>,
    file: File,
    path: String,
    written: u64,
    last_flush: Instant,
    failed: bool,
}

impl Writer {
    fn run(mut self, rx: Receiver<Msg>) {
        let mut skipped_total = 0u64;
        loop {
            match rx.try_recv() {
                Ok(Msg::Batch(b)) => {
                    for r in &b.recs {
                        let skipped = SKIPPED.swap(0, Ordering::Relaxed);
                        skipped_total += skipped;
                        self.packet(r, &b.data[r.off..r.off + r.len], skipped);
                    }
                    QUEUED.fetch_sub(b.recs.len(), Ordering::Relaxed);
                    let mut b = b;
                    b.data.clear();
                    b.recs.clear();
                    let _ = self.spare.try_send(b);
                    if self.w.get_ref().len() >= FLUSH_BYTES
                        || self.last_flush.elapsed() >= FLUSH_EVERY
                    {
                        self.flush();
                    }
                }
                Ok(Msg::Finish(comment, ack)) => {
                    skipped_total += SKIPPED.swap(0, Ordering::Relaxed);
                    self.stats_block(now(), skipped_total, Some(comment));
                    let _ = self.file.sync_data();
                    let _ = ack.send(());
                }
                Err(TryRecvError::Empty) => {
                    if self.last_flush.elapsed() >= FLUSH_EVERY {
                        self.flush();
                    }
                    std::thread::sleep(WRITER_NAP);
                }
                Err(TryRecvError::Disconnected) => {
                    self.flush();
                    return;
                }
            }
        }
    }

    /// One enhanced packet block.
    fn packet(&mut self, r: &Rec, data: &[u8], skipped: u64) {
        let mut options = Vec::new();
        if r.flags != 0 {
            options.push(EnhancedPacketOption::Flags(r.flags));
        }
        if let Some(c) = &r.comment {
            options.push(EnhancedPacketOption::Comment(Cow::Borrowed(c)));
        }
        if skipped > 0 {
            options.push(EnhancedPacketOption::DropCount(skipped));
            options.push(EnhancedPacketOption::Comment(Cow::Owned(format!(
                "capture skipped {skipped} records before this one (writer behind)"
            ))));
        }
        let epb = EnhancedPacketBlock {
            interface_id: 0,
            timestamp: r.ts,
            original_len: r.orig_len.max(data.len() as u32),
            data: Cow::Borrowed(data),
            options,
        };
        let _ = self.w.write_pcapng_block(epb);
        self.written += 1;
    }

    /// The closing interface statistics block.
    fn stats_block(&mut self, ts: Duration, skipped: u64, comment: Option<String>) {
        let mut options = vec![
            InterfaceStatisticsOption::IsbEndTime(ts.as_nanos() as u64),
            InterfaceStatisticsOption::IsbOsDrop(skipped),
            InterfaceStatisticsOption::IsbUsrDeliv(self.written),
        ];
        if let Some(c) = comment {
            options.push(InterfaceStatisticsOption::Comment(Cow::Owned(c)));
        }
        let isb = InterfaceStatisticsBlock {
            interface_id: 0,
            timestamp: ts.as_nanos() as u64,
            options,
        };
        let _ = self.w.write_pcapng_block(isb);
        self.flush();
    }

    /// Hand the file every whole block built so far.
    fn flush(&mut self) {
        self.last_flush = Instant::now();
        let buf = self.w.get_mut();
        if buf.is_empty() || self.failed {
            buf.clear();
            return;
        }
        if let Err(e) = self.file.write_all(buf) {
            eprintln!(
                "warning: --capture {}: write failed ({e}); capture stopped here",
                self.path
            );
            self.failed = true;
        }
        buf.clear();
    }
}
