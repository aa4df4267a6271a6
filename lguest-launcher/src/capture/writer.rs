//! The capture's writer thread: owns the file and only writes.
//!
//! Buffers arrive whole (`out.rs` encodes the blocks on the copier's
//! thread); each is appended to the file (`disk.rs`) and handed back for
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
//! The file side (the page cache, space reserved ahead) is `disk.rs`.

use super::disk::Disk;
use super::out::{Msg, Out, Spares};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The writer hands the file what it has at least this often.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// The writer's nap while buffers come (at full rate a buffer of 1500 B
/// frames cut to 128 bytes fills in about 2 ms; [`super::BUFFERS`] of them
/// last 100 ms).
pub const NAP_BUSY: Duration = Duration::from_millis(5);

/// The writer thread's state: see the module docs.
pub(super) struct Writer {
    pub(super) out: Arc<Mutex<Out>>,
    pub(super) spares: Spares,
    pub(super) disk: Disk,
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
                    self.disk.finish();
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
        self.disk.append(&buf[..n]);
        if let Ok(mut s) = self.spares.lock() {
            s.push(buf);
        }
    }
}
