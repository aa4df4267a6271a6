//! The capture's output: pcapng blocks encoded on the copier's thread
//! straight into large buffers, whole buffers handed to the writer.
//!
//! A plain record (no flags, no comment: every frame delivered) is 28
//! bytes of block header, the kept bytes read once from guest memory into
//! their place in the buffer, padding and the 4-byte trailer: no
//! intermediate record, no allocation, no block object. Records with
//! options (drops, stalls, offload notes, a skip count) are encoded by
//! pcap-file into a scratch buffer and copied in; they are rare.
//!
//! A buffer ([`BUF_BYTES`]) holds whole blocks only. When the next block
//! does not fit, the buffer goes to the writer (one `try_send` per
//! buffer, about 1600 frames at `--snaplen 128`) and an empty one takes
//! its place: a recycled one, or a new one while fewer than [`BUFFERS`]
//! exist. When all of them are full or being written (the writer is
//! behind), the record is skipped and counted; the next record written
//! carries the number skipped before it (`epb_dropcount` and a comment).
//! The writer also takes a partly filled buffer that has waited
//! [`super::FLUSH_EVERY`] / 2 (see `writer.rs`), so nothing waits in
//! memory longer than [`super::FLUSH_EVERY`].

use super::now_ns;
use crate::guest::plan::NET_HDR_LEN;
use crate::memory::Region;
use crate::stats::Stats;
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_statistics::{
    InterfaceStatisticsBlock, InterfaceStatisticsOption,
};
use pcap_file::pcapng::PcapNgWriter;
use std::borrow::Cow;
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Bytes of one output buffer.
pub const BUF_BYTES: usize = 256 * 1024;
/// Buffers at most (the one being filled, the ones queued or being
/// written, the spares): 4 MiB, about 26000 records at `--snaplen 128`.
pub const BUFFERS: usize = 64;
/// pcapng block type of an enhanced packet block.
const EPB_TYPE: u32 = 6;
/// An EPB without options and data: 28 bytes of header, 4 of trailer.
const EPB_FIXED: usize = 32;

/// Bytes of a plain EPB keeping `n` bytes: the fixed words and the data
/// padded to 32 bits.
#[inline]
const fn epb_len(n: usize) -> usize {
    (EPB_FIXED + n + 3) & !3
}

/// Bytes kept of a frame of `len` bytes (its `virtio_net_hdr` included)
/// of which `avail` can be read: what follows the header, at most
/// `snaplen`.
#[inline]
fn kept(len: u32, avail: u32, snaplen: usize) -> usize {
    (len.min(avail) as usize).saturating_sub(HDR).min(snaplen)
}
/// Where the kept bytes start in an EPB.
const EPB_DATA: usize = 28;
/// `virtio_net_hdr` bytes before the frame.
const HDR: usize = NET_HDR_LEN as usize;

/// What the writer thread is sent.
pub(super) enum Msg {
    /// A buffer whose first `.1` bytes are whole blocks.
    Full(Vec<u8>, usize),
    /// Everything before this is queued: sync the file and say so.
    Finish(SyncSender<()>),
}

/// Emptied buffers, shared with the writer (which hands them back).
pub(super) type Spares = Arc<Mutex<Vec<Vec<u8>>>>;

/// The encoder: the buffer being filled and its accounts.
pub(super) struct Out {
    /// The buffer being filled; blocks in `buf[..pos]`. Its length is
    /// its capacity (zeroed once), so nothing is resized per record.
    buf: Vec<u8>,
    pos: usize,
    /// Records in `buf` (lost if the writer is gone).
    recs_in_buf: u64,
    /// Buffers made so far (at most [`BUFFERS`], but see [`Out::close`]).
    made: usize,
    spares: Spares,
    to_writer: SyncSender<Msg>,
    /// Buffers sent to the writer (it steals only when it has them all).
    pub(super) handed: u64,
    /// pcap-file's writer, for records with options: it knows the
    /// interfaces (it wrote their descriptions); its buffer is scratch.
    slow: PcapNgWriter<Vec<u8>>,
    /// This poll's timestamp in ns since the epoch, 0 until the poll's
    /// first record reads the clock (one read per poll).
    ts: u64,
    /// Records written per interface (the closing statistics).
    written: Vec<u64>,
    /// Records skipped since the last one written.
    skip_pending: u64,
    /// Records skipped in all.
    skipped: u64,
    /// Records written and skipped not yet added to a caller's stats.
    new_records: u64,
    new_skipped: u64,
    /// The closing statistics are written: nothing more is.
    closed: bool,
    /// `closed`, or records were skipped: the next takes the slow path.
    detour: bool,
    /// Scratch for a frame read by walking its chain.
    pub(super) scratch: Vec<u8>,
    /// Scratch segments for that walk.
    pub(super) segs: Vec<crate::virtq::Seg>,
}

impl Out {
    /// An encoder whose first buffer starts with `header` (the section
    /// header and interface descriptions `slow` wrote).
    pub(super) fn new(
        mut slow: PcapNgWriter<Vec<u8>>,
        ifaces: usize,
        spares: Spares,
        to_writer: SyncSender<Msg>,
    ) -> Self {
        let header = std::mem::take(slow.get_mut());
        let mut buf = vec![0u8; BUF_BYTES.max(header.len())];
        buf[..header.len()].copy_from_slice(&header);
        Out {
            pos: header.len(),
            buf,
            recs_in_buf: 0,
            made: 1,
            spares,
            to_writer,
            handed: 0,
            slow,
            ts: 0,
            written: vec![0; ifaces],
            skip_pending: 0,
            skipped: 0,
            new_records: 0,
            new_skipped: 0,
            closed: false,
            detour: false,
            scratch: Vec::new(),
            segs: Vec::new(),
        }
    }

    /// This poll's timestamp (the clock is read once per poll).
    #[inline]
    fn ts(&mut self) -> u64 {
        if self.ts == 0 {
            self.ts = now_ns();
        }
        self.ts
    }

    /// The poll (or switch turn) is over: the next record reads the clock.
    #[inline]
    pub(super) fn poll_over(&mut self) {
        self.ts = 0;
    }

    /// Add what was written and skipped since the last report to `stats`.
    #[inline]
    pub(super) fn report(&mut self, stats: &mut Stats) {
        stats.capture_records += std::mem::take(&mut self.new_records);
        stats.capture_skipped += std::mem::take(&mut self.new_skipped);
    }

    /// Room for `total` more bytes in the current buffer, handing it over
    /// if needed; false: the writer is behind (skip the record).
    #[inline]
    fn room(&mut self, total: usize) -> bool {
        if self.pos + total <= self.buf.len() {
            return true;
        }
        if !self.hand_over(false) {
            return false;
        }
        if total > self.buf.len() {
            self.buf.resize(total, 0);
        }
        true
    }

    /// Send the current buffer to the writer and take an empty one (a
    /// spare, or a new one while fewer than [`BUFFERS`] exist, or always
    /// when `force`); false when there is none.
    #[cold]
    fn hand_over(&mut self, force: bool) -> bool {
        if self.pos == 0 {
            return true;
        }
        let Some(fresh) = self.fresh(force) else {
            return false;
        };
        let full = std::mem::replace(&mut self.buf, fresh);
        let n = std::mem::take(&mut self.pos);
        let recs = std::mem::take(&mut self.recs_in_buf);
        if self.to_writer.try_send(Msg::Full(full, n)).is_ok() {
            self.handed += 1;
        } else {
            // The writer thread is gone: these records are lost.
            self.skipped += recs;
            self.new_skipped += recs;
            self.new_records -= recs.min(self.new_records);
        }
        true
    }

    /// An empty buffer: a spare, or a new one (see [`Out::hand_over`]).
    fn fresh(&mut self, force: bool) -> Option<Vec<u8>> {
        let spare = self.spares.lock().ok().and_then(|mut s| s.pop());
        spare.or_else(|| {
            (force || self.made < BUFFERS).then(|| {
                self.made += 1;
                vec![0u8; BUF_BYTES]
            })
        })
    }

    /// The writer takes the partly filled buffer (it has written every
    /// buffer handed to it, and this one has waited long enough); `None`
    /// when it is empty or no empty one can take its place.
    pub(super) fn take_current(&mut self) -> Option<(Vec<u8>, usize)> {
        if self.pos == 0 {
            return None;
        }
        let fresh = self.fresh(false)?;
        let full = std::mem::replace(&mut self.buf, fresh);
        self.recs_in_buf = 0;
        Some((full, std::mem::take(&mut self.pos)))
    }

    /// One record skipped: the writer is behind.
    #[cold]
    fn skip(&mut self) {
        self.detour = true;
        self.skip_pending += 1;
        self.skipped += 1;
        self.new_skipped += 1;
    }

    /// One record written on `iface`.
    #[inline]
    fn count(&mut self, iface: u32) {
        if let Some(n) = self.written.get_mut(iface as usize) {
            *n += 1;
        }
        self.recs_in_buf += 1;
        self.new_records += 1;
    }

    /// A delivered frame of `len` bytes (its `virtio_net_hdr` included)
    /// whose first `avail` bytes lie at `addr` in `mem`: at most
    /// `snaplen` bytes after the header are kept. The header and the
    /// kept bytes are read in one bounds-checked copy into the block's
    /// place in the buffer (the header lands on the timestamp words,
    /// written after it is looked at). A frame whose header asks for an
    /// offload takes [`Out::frame_noted`]; a read outside `mem` keeps an
    /// empty record.
    #[inline]
    pub(super) fn frame(
        &mut self,
        iface: u32,
        mem: &Region,
        addr: u64,
        avail: u32,
        len: u32,
        snaplen: usize,
    ) {
        if self.detour {
            return self.frame_noted(iface, mem, addr, avail, len, snaplen, None, 0);
        }
        let n = kept(len, avail, snaplen);
        let total = epb_len(n);
        if self.pos + total > self.buf.len() && !self.room(total) {
            return self.skip();
        }
        let at = self.pos;
        let Some(b) = self.buf.get_mut(at..at + total) else {
            return;
        };
        // The padding: zero the word before the trailer, then the kept
        // bytes overwrite whatever of it is not padding.
        b[total - 8..total - 4].copy_from_slice(&[0; 4]);
        let n = match mem.read("capture", addr, &mut b[EPB_DATA - HDR..EPB_DATA + n]) {
            Ok(()) if b[EPB_DATA - HDR] | b[EPB_DATA - HDR + 1] != 0 => {
                return self.frame_noted(iface, mem, addr, avail, len, snaplen, None, 0);
            }
            Ok(()) => n,
            Err(_) => 0,
        };
        let orig = ((len as usize).saturating_sub(HDR).max(n)) as u32;
        let ts = self.ts();
        self.put_plain(iface, ts, orig, n);
    }

    /// The block header and trailer of a plain EPB whose `n` kept bytes
    /// and padding already lie at `pos + EPB_DATA`.
    #[inline]
    fn put_plain(&mut self, iface: u32, ts: u64, orig: u32, n: usize) {
        let total = epb_len(n);
        let at = self.pos;
        let Some(b) = self.buf.get_mut(at..at + total) else {
            return;
        };
        let words = [
            EPB_TYPE,
            total as u32,
            iface,
            (ts >> 32) as u32,
            ts as u32,
            n as u32,
            orig,
        ];
        for (d, w) in b[..EPB_DATA].chunks_exact_mut(4).zip(words) {
            d.copy_from_slice(&w.to_ne_bytes());
        }
        b[total - 4..].copy_from_slice(&(total as u32).to_ne_bytes());
        self.pos += total;
        self.count(iface);
    }

    /// [`Out::frame`] with options: the header's offload note (unless
    /// `comment`, a drop's, replaces it), `flags`, a skip count.
    #[cold]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn frame_noted(
        &mut self,
        iface: u32,
        mem: &Region,
        addr: u64,
        avail: u32,
        len: u32,
        snaplen: usize,
        comment: Option<String>,
        flags: u32,
    ) {
        if self.closed {
            return;
        }
        let n = kept(len, avail, snaplen);
        let mut hdr = [0u8; HDR];
        let comment = match comment {
            Some(c) => Some(c),
            None => match mem.read("capture", addr, &mut hdr) {
                Ok(()) => super::notes::offload_note(&hdr),
                Err(_) => None,
            },
        };
        let mut data = std::mem::take(&mut self.scratch);
        data.clear();
        data.resize(n, 0);
        if mem.read("capture", addr + HDR as u64, &mut data).is_err() {
            data.clear();
        }
        let orig = (len as usize).saturating_sub(HDR) as u32;
        self.block(iface, &data, orig, comment, flags);
        self.scratch = data;
    }

    /// A frame in a buffer of ours, `virtio_net_hdr` first (a switch's
    /// TAP port): as [`Out::frame`].
    pub(super) fn bytes(
        &mut self,
        iface: u32,
        frame: &[u8],
        snaplen: usize,
        comment: Option<String>,
        flags: u32,
    ) {
        let n = frame.len().saturating_sub(HDR).min(snaplen);
        let data = if n > 0 { &frame[HDR..HDR + n] } else { &[][..] };
        let orig = frame.len().saturating_sub(HDR) as u32;
        self.block(iface, data, orig, comment, flags)
    }

    /// One EPB of `data` (at most `snaplen` bytes of a frame of `orig`):
    /// plain when it has no option, else through pcap-file; skipped when
    /// the writer is behind.
    pub(super) fn block(
        &mut self,
        iface: u32,
        data: &[u8],
        orig: u32,
        comment: Option<String>,
        flags: u32,
    ) {
        if self.closed {
            return;
        }
        let orig = orig.max(data.len() as u32);
        if comment.is_none() && flags == 0 && self.skip_pending == 0 {
            let n = data.len();
            if !self.room(epb_len(n)) {
                return self.skip();
            }
            let ts = self.ts();
            let (at, total) = (self.pos, epb_len(n));
            self.buf[at + total - 8..at + total - 4].copy_from_slice(&[0; 4]);
            self.buf[at + EPB_DATA..at + EPB_DATA + n].copy_from_slice(data);
            return self.put_plain(iface, ts, orig, n);
        }
        let skipped = self.skip_pending;
        let mut options = Vec::new();
        if flags != 0 {
            options.push(EnhancedPacketOption::Flags(flags));
        }
        if let Some(c) = &comment {
            options.push(EnhancedPacketOption::Comment(Cow::Borrowed(c)));
        }
        if skipped > 0 {
            options.push(EnhancedPacketOption::DropCount(skipped));
            options.push(EnhancedPacketOption::Comment(Cow::Owned(format!(
                "capture skipped {skipped} records before this one (writer behind)"
            ))));
        }
        let epb = EnhancedPacketBlock {
            interface_id: iface,
            timestamp: Duration::from_nanos(self.ts()),
            original_len: orig,
            data: Cow::Borrowed(data),
            options,
        };
        self.slow.get_mut().clear();
        if self.slow.write_pcapng_block(epb).is_err() {
            return; // an interface the file does not describe
        }
        if self.put_scratch() {
            self.skip_pending = 0;
            self.detour = self.closed;
            self.count(iface);
        } else {
            self.skip();
        }
    }

    /// Copy the block pcap-file wrote into the buffer; false: no room.
    fn put_scratch(&mut self) -> bool {
        let len = self.slow.get_ref().len();
        if !self.room(len) {
            return false;
        }
        let at = self.pos;
        self.buf[at..at + len].copy_from_slice(self.slow.get_ref());
        self.pos += len;
        true
    }

    /// The closing interface statistics blocks, one per interface (the
    /// first carries the skip count and `comment`), then the buffer goes
    /// to the writer with `then` after it; nothing is written afterwards.
    pub(super) fn close(&mut self, comment: String, then: Msg) -> bool {
        if self.closed {
            return false;
        }
        self.closed = true;
        self.detour = true;
        let ts = now_ns();
        for iface in 0..self.written.len() {
            let mut options = vec![
                InterfaceStatisticsOption::IsbEndTime(ts),
                InterfaceStatisticsOption::IsbUsrDeliv(self.written[iface]),
            ];
            if iface == 0 {
                // Skips are not per interface: the buffers are shared.
                options.push(InterfaceStatisticsOption::IsbOsDrop(self.skipped));
                options.push(InterfaceStatisticsOption::Comment(Cow::Owned(
                    comment.clone(),
                )));
            }
            let isb = InterfaceStatisticsBlock {
                interface_id: iface as u32,
                timestamp: ts,
                options,
            };
            self.slow.get_mut().clear();
            if self.slow.write_pcapng_block(isb).is_ok() && !self.put_scratch() {
                // Every buffer is queued: one more, past the bound.
                self.hand_over(true);
                self.put_scratch();
            }
        }
        self.hand_over(true);
        self.to_writer.try_send(then).is_ok()
    }
}
