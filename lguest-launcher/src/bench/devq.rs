//! `devq`: the device side of a split queue, ours against rust-vmm's.
//!
//! The copier serves the peer's TX ring as a *device*: it sees what the
//! driver made available, walks each chain checking every descriptor, and
//! returns it on the used ring. DESIGN.md asks for the cost of doing that
//! with our own [`DeviceQueue`] (over a [`GuestMap`]) rather than rust-vmm's
//! `virtio_queue::Queue` (over `vm-memory`) to be measured, not guessed.
//! This is that measurement, in one process and one thread, so nothing but
//! the queue code is in the figure:
//!
//! 1. One ring of [`QUEUE_SIZE`] entries and its buffers live in a sealed
//!    memfd ([`GuestMemory`]), laid out as a launcher lays out its rings.
//!    Our driver side ([`DriverQueue`]) fills it with one-descriptor,
//!    device-readable chains (a TX ring) and publishes them.
//! 2. The device side under test takes every available chain, walks it
//!    with the checks a copier needs (index in range, direction, buffer
//!    inside memory), and adds it to the used ring with length 0 — no
//!    payload is copied: the memcpy baseline is the copy's cost.
//!     * ours: `pending`, then per chain `peek_head`, `read_chain`,
//!       `advance`, `add_used`, and one `publish_used` per batch;
//!     * rust-vmm: `pop_descriptor_chain` and `add_used` per chain, the
//!       crate's ordinary use (its `add_used` also publishes the used index
//!       each time), over a `GuestMemoryMmap` of the same memfd.
//! 3. The driver pops the used entries and refills the ring, and the loop
//!    goes on until `count` chains have been served.
//!
//! Only step 2 is timed, so both rows are device-side Mchains/s and their
//! ratio (`ratio` of the `baseline-devq-sharenet` row, against
//! `baseline-devq-virtio-queue`) compares the queue code alone.

use super::error::BenchError;
use super::summary::Measurement;
use crate::memory::{GuestMap, GuestMemory};
use crate::virtq::{DeviceQueue, DriverQueue, Seg};
use std::fs::File;
use std::time::{Duration, Instant};
use transport::RingInfo;
use virtio_queue::{Queue, QueueT};
use vm_memory::{FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// Entries in the ring (the launcher's default queue size).
pub const QUEUE_SIZE: u16 = 256;
/// Bytes per buffer (the frame size the device side would copy).
pub const BUF_LEN: u32 = 1500;
/// Where the buffers start in the memfd.
const BUFS_AT: u64 = 64 * 1024;

/// Which device side serves the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DevqImpl {
    /// Our [`DeviceQueue`].
    Sharenet,
    /// rust-vmm's `virtio_queue::Queue`.
    VirtioQueue,
}

impl DevqImpl {
    /// The `transport` column of its row.
    pub fn transport(self) -> &'static str {
        match self {
            DevqImpl::Sharenet => "baseline-devq-sharenet",
            DevqImpl::VirtioQueue => "baseline-devq-virtio-queue",
        }
    }
}

fn devq_err(step: &'static str, e: impl std::fmt::Display) -> BenchError {
    BenchError::Devq {
        step,
        detail: e.to_string(),
    }
}

/// The ring at the start of the memfd: descriptor table, avail ring, and
/// the used ring 4-aligned after it (what `virtio-queue` checks).
fn ring_info() -> RingInfo {
    let size = u32::from(QUEUE_SIZE);
    let probe = RingInfo {
        size,
        ..RingInfo::default()
    };
    let avail = probe.desc_bytes();
    let used = (avail + probe.avail_bytes()).div_ceil(4) * 4;
    RingInfo {
        desc: 0,
        avail,
        used,
        size,
    }
}

/// Our driver side of the ring, filling it with readable one-descriptor
/// chains.
struct Driver {
    q: DriverQueue,
    next_buf: u64,
}

impl Driver {
    fn new(mem: &GuestMemory, info: &RingInfo) -> Self {
        Driver {
            q: DriverQueue::new(mem.region().clone(), info),
            next_buf: 0,
        }
    }

    /// Take back what the device used and make the ring full again.
    fn refill(&mut self) -> Result<(), BenchError> {
        while self
            .q
            .pop_used()
            .map_err(|e| devq_err("driver pop_used", e))?
            .is_some()
        {}
        while self.q.num_free() > 0 {
            let slot = self.next_buf % u64::from(QUEUE_SIZE);
            self.next_buf += 1;
            let seg = Seg {
                addr: BUFS_AT + slot * u64::from(BUF_LEN),
                len: BUF_LEN,
            };
            if self
                .q
                .add_one(seg, false)
                .map_err(|e| devq_err("driver add", e))?
                .is_none()
            {
                break;
            }
        }
        self.q
            .publish()
            .map_err(|e| devq_err("driver publish", e))?;
        Ok(())
    }
}

/// Serve `count` chains with `which` device side; Mchains/s of the device
/// side alone in `mpps`.
pub fn run(which: DevqImpl, count: u64) -> Result<Measurement, BenchError> {
    let info = ring_info();
    let mem_len = BUFS_AT + u64::from(QUEUE_SIZE) * u64::from(BUF_LEN);
    let mem = GuestMemory::create("devq", mem_len).map_err(|e| devq_err("memfd", e))?;
    let mut driver = Driver::new(&mem, &info);
    let device_time = match which {
        DevqImpl::Sharenet => serve_sharenet(&mem, &info, &mut driver, count)?,
        DevqImpl::VirtioQueue => serve_virtio_queue(&mem, &info, &mut driver, count)?,
    };
    let secs = device_time.as_secs_f64().max(1e-9);
    Ok(Measurement {
        packets: count,
        mpps: Some(count as f64 / secs / 1e6),
        cpu_s_per_mpkt: Some(secs / (count as f64 / 1e6)),
        ..Default::default()
    })
}

fn serve_sharenet(
    mem: &GuestMemory,
    info: &RingInfo,
    driver: &mut Driver,
    count: u64,
) -> Result<Duration, BenchError> {
    let map = GuestMap::identity(mem.region().clone());
    let mut dev = DeviceQueue::new(&map, info).map_err(|e| devq_err("DeviceQueue", e))?;
    let mut segs = Vec::with_capacity(4);
    let (mut served, mut spent) = (0u64, Duration::ZERO);
    while served < count {
        driver.refill()?;
        let t0 = Instant::now();
        let n = dev.pending().map_err(|e| devq_err("pending", e))?;
        for _ in 0..u64::from(n).min(count - served) {
            let head = dev.peek_head().map_err(|e| devq_err("peek_head", e))?;
            dev.read_chain(head, false, &mut segs)
                .map_err(|e| devq_err("read_chain", e))?;
            dev.advance();
            dev.add_used(head, 0).map_err(|e| devq_err("add_used", e))?;
            served += 1;
        }
        dev.publish_used()
            .map_err(|e| devq_err("publish_used", e))?;
        spent += t0.elapsed();
        std::hint::black_box(&segs);
    }
    Ok(spent)
}

fn serve_virtio_queue(
    mem: &GuestMemory,
    info: &RingInfo,
    driver: &mut Driver,
    count: u64,
) -> Result<Duration, BenchError> {
    let file = mem
        .fd()
        .try_clone_to_owned()
        .map_err(|e| devq_err("dup memfd", e))?;
    let len = usize::try_from(mem.region().len()).map_err(|e| devq_err("memory size", e))?;
    let vm = GuestMemoryMmap::<()>::from_ranges_with_files([(
        GuestAddress(0),
        len,
        Some(FileOffset::new(File::from(file), 0)),
    )])
    .map_err(|e| devq_err("GuestMemoryMmap", e))?;
    let mut q = Queue::new(QUEUE_SIZE).map_err(|e| devq_err("Queue::new", e))?;
    q.try_set_size(QUEUE_SIZE)
        .map_err(|e| devq_err("queue size", e))?;
    q.try_set_desc_table_address(GuestAddress(info.desc))
        .map_err(|e| devq_err("descriptor table", e))?;
    q.try_set_avail_ring_address(GuestAddress(info.avail))
        .map_err(|e| devq_err("avail ring", e))?;
    q.try_set_used_ring_address(GuestAddress(info.used))
        .map_err(|e| devq_err("used ring", e))?;
    q.set_ready(true);
    if !q.is_valid(&vm) {
        return Err(devq_err("queue", "virtio-queue rejects the ring layout"));
    }
    let (mut served, mut spent) = (0u64, Duration::ZERO);
    while served < count {
        driver.refill()?;
        let t0 = Instant::now();
        while served < count {
            let Some(chain) = q.pop_descriptor_chain(&vm) else {
                break;
            };
            let head = chain.head_index();
            for d in chain {
                // The checks `read_chain` makes: direction, buffer in memory.
                if d.is_write_only()
                    || !GuestMemoryBackend::check_range(&vm, d.addr(), d.len() as usize)
                {
                    return Err(devq_err(
                        "descriptor",
                        format!("bad buffer in chain {head}"),
                    ));
                }
                std::hint::black_box((d.addr(), d.len()));
            }
            q.add_used(&vm, head, 0)
                .map_err(|e| devq_err("add_used", e))?;
            served += 1;
        }
        spent += t0.elapsed();
    }
    Ok(spent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_device_sides_serve_every_chain_of_a_refilled_ring() {
        // More than a ring's worth, and not a multiple of it.
        let n = 3 * u64::from(QUEUE_SIZE) + 17;
        for which in [DevqImpl::Sharenet, DevqImpl::VirtioQueue] {
            let m = run(which, n).unwrap();
            assert_eq!(m.packets, n);
            assert!(m.mpps.is_some_and(|r| r > 0.0), "{which:?}: {m:?}");
        }
    }
}

#[cfg(test)]
mod figures {
    use super::*;

    /// `cargo test --release -p lguest-launcher --lib devq_figures -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement, not a check"]
    fn devq_figures() {
        for _ in 0..3 {
            let ours = run(DevqImpl::Sharenet, 5_000_000).unwrap().mpps.unwrap();
            let theirs = run(DevqImpl::VirtioQueue, 5_000_000).unwrap().mpps.unwrap();
            println!(
                "devq: sharenet {ours:.1} Mchains/s, virtio-queue {theirs:.1} Mchains/s, ratio {:.2}",
                ours / theirs
            );
        }
    }
}
