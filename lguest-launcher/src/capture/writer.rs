//! The capture's writer thread: owns the file and only calls `write(2)`.
//!
//! Buffers arrive whole (`out.rs` encodes the blocks on the copier's
//! thread); each is written with one `write_all` and handed back for
//! reuse. The hot path never wakes the writer (a futex wake would put it
//! on the copier's CPU, and cost a system call): the writer naps, and
//! writes everything queued when it wakes. Its nap is short while buffers
//! come ([`NAP_BUSY`]) and doubles up to [`FLUSH_EVERY`] / 2 while none
//! come. When no buffer has come for [`FLUSH_EVERY`] / 2 it takes the
//! partly filled one itself (only once it has written every buffer handed
//! to it, so blocks stay in order), so a record waits in memory at most
//! about [`FLUSH_EVERY`] and a launcher killed with SIGKILL leaves a file
//! that readers open up to its last write, never a block cut in half
//! (unless the kill cuts that write short).
//!
//! The file grows into space reserved ahead ([`RESERVE`] at a time,
//! `fallocate` with `FALLOC_FL_KEEP_SIZE`, so the size readers see is
//! what was written): measured, it takes a fifth to a quarter off the
//! kernel's cost of a write on ext4. What is reserved past the end is
//! given back when the capture finishes.

use super::out::{Msg, Out, Spares};
use nix::fcntl::{fallocate, FallocateFlags};
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The writer hands the file what it has at least this often.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// The writer's nap while buffers come (at full rate a buffer of 1500 B
/// frames cut to 128 bytes fills in about 2 ms; [`super::BUFFERS`] of them
/// last 100 ms).
pub const NAP_BUSY: Duration = Duration::from_millis(5);
/// Bytes reserved ahead of the file's end.
pub const RESERVE: u64 = 8 << 20;

/// The writer thread's state: see the module docs.
pub(super) struct Writer {
    pub(super) out: Arc<Mutex<Out>>,
    pub(super) spares: Spares,
    pub(super) file: File,
    pub(super) path: String,
    /// A write failed: the rest is dropped.
    pub(super) failed: bool,
    /// The file's length (what was written).
    pub(super) len: u64,
    /// Reserved up to here; `None` once the file system refused.
    pub(super) reserved: Option<u64>,
}

impl Writer {
    pub(super) fn run(mut self, rx: Receiver<Msg>) {
        let mut received = 0u64;
        let mut last = Instant::now();
        let mut nap = NAP_BUSY;
        loop {
            match rx.try_recv() {
                Ok(Msg::Full(buf, n)) => {
                    received += 1;
                    self.write(buf, n);
                    last = Instant::now();
                    nap = NAP_BUSY;
                }
                Ok(Msg::Finish(ack)) => {
                    if self.reserved.is_some() {
                        let _ = self.file.set_len(self.len);
                    }
                    let _ = self.file.sync_data();
                    let _ = ack.send(());
                }
                Err(TryRecvError::Empty) => {
                    if last.elapsed() >= FLUSH_EVERY / 2 {
                        let stolen = match self.out.lock() {
                            Ok(mut o) if o.handed == received => o.take_current(),
                            _ => None,
                        };
                        if let Some((buf, n)) = stolen {
                            self.write(buf, n);
                        }
                        last = Instant::now();
                    }
                    // Parked, not asleep: the closing message unparks it.
                    std::thread::park_timeout(nap);
                    nap = (nap * 2).min(FLUSH_EVERY / 2);
                }
                Err(TryRecvError::Disconnected) => return,
            }
        }
    }

    /// Hand the file `buf[..n]` (whole blocks), then keep `buf` for reuse.
    fn write(&mut self, buf: Vec<u8>, n: usize) {
        if !self.failed {
            self.reserve(n as u64);
            match self.file.write_all(&buf[..n]) {
                Ok(()) => self.len += n as u64,
                Err(e) => {
                    eprintln!(
                        "warning: --capture {}: write failed ({e}); capture stopped here",
                        self.path
                    );
                    self.failed = true;
                }
            }
        }
        if let Ok(mut s) = self.spares.lock() {
            s.push(buf);
        }
    }

    /// Reserve [`RESERVE`] more bytes when the next `n` would pass the
    /// reserved end (once the file system refuses, no more is asked).
    fn reserve(&mut self, n: u64) {
        let Some(end) = self.reserved else { return };
        if self.len + n <= end {
            return;
        }
        let from = end.max(self.len);
        self.reserved = fallocate(
            self.file.as_raw_fd(),
            FallocateFlags::FALLOC_FL_KEEP_SIZE,
            from as i64,
            RESERVE.max(n) as i64,
        )
        .ok()
        .map(|()| from + RESERVE.max(n));
    }
}
