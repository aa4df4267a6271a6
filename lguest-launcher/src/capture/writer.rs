//! The capture's writer thread: owns the file, turns records into pcapng
//! blocks, hands the file only whole blocks.
//!
//! A plain record (no flags, no comment: every frame delivered) is encoded
//! here by hand, straight into the output buffer — 28 bytes of block
//! header and trailer around the data. Building a pcap-file `Block` for it
//! costs an options `Vec` and its drop per packet, the writer's largest
//! share of the capture's CPU. Records with options (drops, stalls,
//! offload notes, skip counts) still go through pcap-file.

use super::{Batch, Msg, Rec, QUEUED, SKIPPED};
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_statistics::{
    InterfaceStatisticsBlock, InterfaceStatisticsOption,
};
use pcap_file::pcapng::PcapNgWriter;
use std::borrow::Cow;
use std::fs::File;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::time::{Duration, Instant};

/// The writer hands the file what it has at least this often.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// ... or as soon as this much is buffered.
pub(super) const FLUSH_BYTES: usize = 256 * 1024;
/// How long the writer naps when the queue is empty.
pub const WRITER_NAP: Duration = Duration::from_millis(2);
/// pcapng block type of an enhanced packet block.
const EPB_TYPE: u32 = 6;

/// The writer thread's state: see the module docs.
pub(super) struct Writer {
    pub(super) spare: SyncSender<Batch>,
    pub(super) w: PcapNgWriter<Vec<u8>>,
    pub(super) file: File,
    pub(super) path: String,
    /// Interfaces, for the closing statistics (one block each).
    pub(super) ifaces: u32,
    /// Records written per interface.
    pub(super) written: Vec<u64>,
    pub(super) last_flush: Instant,
    pub(super) failed: bool,
}

impl Writer {
    pub(super) fn run(mut self, rx: Receiver<Msg>) {
        let mut skipped_total = 0u64;
        loop {
            match rx.try_recv() {
                Ok(Msg::Batch(mut b)) => {
                    for r in &b.recs {
                        let skipped = SKIPPED.swap(0, Ordering::Relaxed);
                        skipped_total += skipped;
                        self.packet(r, &b.data[r.off..r.off + r.len], skipped);
                    }
                    QUEUED.fetch_sub(b.recs.len(), Ordering::Relaxed);
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
                    self.stats_blocks(super::now(), skipped_total, comment);
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
        if let Some(n) = self.written.get_mut(r.iface as usize) {
            *n += 1;
        }
        let original_len = r.orig_len.max(data.len() as u32);
        if r.flags == 0 && r.comment.is_none() && skipped == 0 {
            return epb_plain(self.w.get_mut(), r.iface, r.ts, original_len, data);
        }
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
            interface_id: r.iface,
            timestamp: r.ts,
            original_len,
            data: Cow::Borrowed(data),
            options,
        };
        let _ = self.w.write_pcapng_block(epb);
    }

    /// The closing interface statistics blocks, one per interface; the
    /// first carries the skip count and `comment`.
    fn stats_blocks(&mut self, ts: Duration, skipped: u64, comment: String) {
        for iface in 0..self.ifaces {
            let mut options = vec![
                InterfaceStatisticsOption::IsbEndTime(ts.as_nanos() as u64),
                InterfaceStatisticsOption::IsbUsrDeliv(
                    self.written.get(iface as usize).copied().unwrap_or(0),
                ),
            ];
            if iface == 0 {
                // Skips are not per interface: the queue is shared.
                options.push(InterfaceStatisticsOption::IsbOsDrop(skipped));
                options.push(InterfaceStatisticsOption::Comment(Cow::Owned(
                    comment.clone(),
                )));
            }
            let isb = InterfaceStatisticsBlock {
                interface_id: iface,
                timestamp: ts.as_nanos() as u64,
                options,
            };
            let _ = self.w.write_pcapng_block(isb);
        }
        self.flush();
    }

    /// Hand the file every whole block built so far.
    pub(super) fn flush(&mut self) {
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

/// An enhanced packet block without options, in the byte order pcap-file
/// wrote the section header in (the CPU's: [`PcapNgWriter::new`]).
pub(super) fn epb_plain(out: &mut Vec<u8>, iface: u32, ts: Duration, orig: u32, data: &[u8]) {
    let pad = (4 - data.len() % 4) % 4;
    let total = (32 + data.len() + pad) as u32;
    let ns = ts.as_nanos() as u64;
    out.reserve(total as usize);
    for w in [
        EPB_TYPE,
        total,
        iface,
        (ns >> 32) as u32,
        ns as u32,
        data.len() as u32,
        orig,
    ] {
        out.extend_from_slice(&w.to_ne_bytes());
    }
    out.extend_from_slice(data);
    out.extend_from_slice(&[0u8; 3][..pad]);
    out.extend_from_slice(&total.to_ne_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_epb_matches_pcap_files_encoding() {
        for len in [0usize, 1, 3, 4, 5, 128] {
            let data: Vec<u8> = (0..len as u8).collect();
            let ts = Duration::from_nanos(1_700_000_000_123_456_789);
            let mut ours = Vec::new();
            epb_plain(&mut ours, 0, ts, 1514, &data);
            let mut theirs = PcapNgWriter::new(Vec::new()).unwrap();
            theirs
                .write_pcapng_block(
                    pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock {
                        linktype: pcap_file::DataLink::ETHERNET,
                        snaplen: 0,
                        options: vec![],
                    },
                )
                .unwrap();
            let start = theirs.get_ref().len();
            theirs
                .write_pcapng_block(EnhancedPacketBlock {
                    interface_id: 0,
                    timestamp: ts,
                    original_len: 1514,
                    data: Cow::Borrowed(&data),
                    options: vec![],
                })
                .unwrap();
            assert_eq!(ours, theirs.get_ref()[start..], "len {len}");
        }
    }
}
