//! `--capture FILE.pcapng`: a tap on the link, drops included.
//!
//! Every packet our copier moves and every chain it drops passes
//! [`crate::run::account`], the one `match` on a poll's outcome. When a
//! capture is on, that match takes the process's encoder once per poll
//! ([`Tap::poll`]) and hands it each event: it encodes the frame's
//! enhanced packet block (EPB) straight into a large output buffer —
//! 28 bytes of block header, then at most `--snaplen` bytes of the frame
//! (after the 12-byte `virtio_net_hdr`, so what is written is the
//! Ethernet frame a VM sent) read once from guest memory into their place,
//! then the trailer (`out.rs`). A delivered frame is read straight from
//! the first piece of our RX chain, which the copier names in the event
//! ([`Event::Delivered`]'s `rx_first`): no chain is walked twice. The
//! frames of a poll share one timestamp (the wall clock in nanoseconds,
//! read once per poll: they were copied within microseconds of each
//! other). The hot path never waits, never allocates once its buffers
//! exist, and wakes the writer once per full buffer (256 KiB, about 1600
//! frames at `--snaplen 128`), not per packet.
//!
//! When the writer is behind and every buffer is full or being written,
//! records are skipped and counted (`capture_skipped`), and the next
//! record that is written carries the number skipped before it
//! (`epb_dropcount`); the file ends with interface statistics blocks that
//! say the same (`isb_osdrop`). With no capture the hot path pays one
//! branch per poll.
//!
//! The writer thread (`writer.rs`) owns the file and only writes whole
//! buffers, which hold whole blocks; it takes a partly filled buffer
//! itself when none has come for half of [`FLUSH_EVERY`], so a launcher
//! killed with SIGKILL leaves a file that readers open up to its last
//! write, never a block cut in half.
//!
//! What a record says (`notes.rs`):
//! * a launcher has one interface, 0, `NAME-rx`: what the peer sent us, in
//!   the order our copier took it; one EPB per frame delivered. A switch
//!   has one interface per port (`switch/capture.rs`);
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
//!
//! [`Event::Delivered`]: crate::copier::Event::Delivered
//! [`DropReason::name`]: crate::copier::DropReason::name

mod args;
mod disk;
mod notes;
mod out;
mod tap;
#[cfg(test)]
mod tests;
mod writer;

pub use args::CaptureArgs;
pub use notes::{drop_comment, offload_note, reasons_line, FLAG_IN, FLAG_OUT};
pub use out::{BUFFERS, BUF_BYTES};
pub use tap::{Poll, Tap};
pub use writer::FLUSH_EVERY;

use crate::stats::Stats;
use disk::Disk;
use out::{Msg, Out, Spares};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::DataLink;
use std::borrow::Cow;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use writer::Writer;

/// `--snaplen` when not given: whole frames.
pub const DEFAULT_SNAPLEN: u32 = 65535;

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

static TAP: OnceLock<Tap> = OnceLock::new();

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
    let create = |source| CaptureError::Create {
        path: shown.clone(),
        source,
    };
    let mut file = File::create(&cfg.path).map_err(create)?;
    let mut w = PcapNgWriter::new(Vec::new()).map_err(header)?;
    for i in ifaces {
        let mut options = vec![
            InterfaceDescriptionOption::IfName(Cow::Owned(i.name.clone())),
            InterfaceDescriptionOption::IfDescription(Cow::Owned(i.description.clone())),
            // Nanosecond timestamps.
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
    // The header is on disk before the run starts: a launcher killed at
    // once still leaves a file readers open.
    std::io::Write::write_all(&mut file, w.get_ref()).map_err(create)?;
    let header = std::mem::take(w.get_mut());
    // Every buffer can be queued at once, and the closing message after.
    let (tx, rx) = sync_channel(BUFFERS + 2);
    let spares = Spares::default();
    let out = Arc::new(Mutex::new(Out::new(w, ifaces.len(), spares.clone(), tx)));
    let writer = Writer {
        out: out.clone(),
        spares,
        disk: Disk::new(file, &cfg.path, &header),
    };
    let thread = std::thread::Builder::new()
        .name("capture".into())
        .spawn(move || writer.run(rx))
        .map_err(create)?;
    let _ = TAP.set(Tap {
        out,
        writer: thread.thread().clone(),
        snaplen: cfg.snaplen as usize,
        stalled: AtomicBool::new(false),
    });
    Ok(())
}

/// Write what is buffered, the closing statistics, and flush: called once
/// when the run ends (a killed launcher keeps what was written before).
pub fn finish(stats: &mut Stats) {
    if let Some(tap) = tap() {
        tap.lock().report(stats);
    }
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
    let (ack, done) = sync_channel(1);
    let sent = {
        let mut o = tap.lock();
        o.report(stats);
        o.close(comment, Msg::Finish(ack))
    };
    if sent {
        tap.writer.unpark();
        let _ = done.recv_timeout(Duration::from_secs(5));
    }
}

/// Now, in nanoseconds since the Unix epoch (never 0).
fn now_ns() -> u64 {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (t.as_nanos() as u64).max(1)
}

/// A locally administered MAC for a synthetic guest (which has none of its
/// own): `02:53:4e` ("SN") and the low 24 bits of the pid.
pub fn synthetic_mac(pid: u32) -> [u8; 6] {
    let p = pid.to_be_bytes();
    [0x02, 0x53, 0x4e, p[1], p[2], p[3]]
}
