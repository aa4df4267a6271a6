//! `--share exchange`: the peer maps an exchange area, not the VM.
//!
//! With `--share guest` the handshake names QEMU's memfd: the peer launcher
//! maps all of the VM's RAM read-write (it could read keys, patch the
//! kernel, punch holes) and keeps the fd after the link is down. With
//! `--share exchange` (the default) it gets a dedicated memfd instead,
//! sealed like a synthetic guest's memory, laid out like one
//! ([`Layout::plan`]: a TX ring, an RX ring nobody uses, and one TX buffer
//! slot per descriptor) and holding nothing but the frames this VM sends.
//!
//! The data path gains one copy on the way out:
//!
//! 1. the VM posts a TX chain; we serve its TX ring as the device
//!    ([`DeviceQueue`]: every descriptor checked, as the peer's copier
//!    would) and copy the frame into a free slot of the exchange ring,
//!    which we drive as a synthetic guest drives its TX ring
//!    ([`DriverQueue::add_slot`]);
//! 2. the VM's chain is marked used at once (its buffer is free again: the
//!    copy is done) and the VM is interrupted as its ring asks;
//! 3. the peer's copier pulls from the exchange ring exactly as from a
//!    synthetic guest's TX ring, marks it used and, when we asked, kicks us;
//!    we reap the used entries (those are the packets "sent").
//!
//! When the exchange ring is full we leave the VM's chains in its ring and
//! ask the peer for a kick when it has consumed something (`used_event`,
//! or clearing `VRING_AVAIL_F_NO_INTERRUPT`), then re-check.
//!
//! The exchange area outlives link generations like a synthetic guest's
//! memory: the next peer resumes its TX ring at the used index, so frames
//! copied but not yet taken by a peer that left are delivered, none twice.
//! A frame copied into it is lost only if this launcher dies (the area dies
//! with it), as a frame in a NIC that resets.

use crate::copier::gather_scatter;
use crate::guest::plan::{Layout, BUF_SIZE};
use crate::memory::{GuestMemory, MemoryError, Region};
use crate::stats::Stats;
use crate::virtq::{DeviceQueue, DriverQueue, NotifyMode, RingError, Seg};
use std::fs::File;
use transport::RingInfo;

/// Descriptors in the exchange ring (QEMU's default virtio-net queue size).
pub(super) const EXCHANGE_QUEUE: u32 = 256;

/// The area the peer maps in `--share exchange`, and our driver side of its
/// TX ring.
pub(super) struct Exchange {
    mem: GuestMemory,
    layout: Layout,
    size: u64,
    tx: DriverQueue,
    /// Frame bytes in each slot (by descriptor id), for the TX byte count.
    lens: Vec<u32>,
}

/// What one [`Exchange::pump`] did.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Pumped {
    /// VM TX chains finished (copied or dropped) and marked used.
    pub(super) finished: usize,
    /// The VM asked for a TX interrupt for them.
    pub(super) vm_wants_irq: bool,
    /// Frames were published on the exchange ring and the peer asked to be
    /// kicked.
    pub(super) peer_wants_kick: bool,
    /// Exchange slots the peer had consumed, reaped now.
    pub(super) reaped: usize,
}

impl Exchange {
    /// A new, sealed exchange area.
    pub(super) fn create() -> Result<Self, MemoryError> {
        let layout = Layout::plan(EXCHANGE_QUEUE);
        // TX ring, RX ring, TX slots: no RX slots (nobody receives here).
        let size = layout.rx_bufs.div_ceil(4096) * 4096;
        let mem = GuestMemory::create("exchange", size)?;
        let tx = DriverQueue::new(mem.region().clone(), &layout.tx);
        Ok(Exchange {
            mem,
            layout,
            size,
            tx,
            lens: vec![0; EXCHANGE_QUEUE as usize],
        })
    }

    /// Its memfd, duplicated (the handshake's fd; kept open for a link's
    /// life, as the FIFO transport's peer opens it by /proc path).
    pub(super) fn file(&self) -> std::io::Result<File> {
        Ok(File::from(self.mem.fd().try_clone_to_owned()?))
    }

    /// Its size in bytes.
    pub(super) fn size(&self) -> u64 {
        self.size
    }

    /// Its rings as the handshake describes them (offsets = addresses).
    pub(super) fn rings(&self) -> (RingInfo, RingInfo) {
        (self.layout.tx, self.layout.rx)
    }

    /// Is there something [`Exchange::pump`] could do now? (The re-check
    /// after re-arming notifications.)
    pub(super) fn has_work(&self, vm_tx: &DeviceQueue) -> Result<bool, RingError> {
        if self.tx.has_used()? {
            return Ok(true);
        }
        Ok(vm_tx.pending()? > 0 && self.tx.num_free() > 0)
    }

    /// Reap what the peer consumed, copy every VM TX chain there is room
    /// for into the exchange ring, complete those chains, and say who wants
    /// to be told. `vm` is the VM's memory (the region `vm_tx` reads).
    pub(super) fn pump(
        &mut self,
        vm: &Region,
        vm_tx: &mut DeviceQueue,
        mode: NotifyMode,
        segs: &mut Vec<Seg>,
        stats: &mut Stats,
        tx_bytes: &mut u64,
    ) -> Result<Pumped, PumpError> {
        let mut out = Pumped::default();
        // 1. Slots the peer's copier is done with (it wrote the used ring:
        // `pop_used` checks every entry).
        while let Some((id, _)) = self.tx.pop_used().map_err(PumpError::Exchange)? {
            out.reaped += 1;
            *tx_bytes += u64::from(std::mem::take(&mut self.lens[id as usize]));
        }
        stats.packets_sent += out.reaped as u64;
        stats.packets_consumed += out.reaped as u64;
        // 2. The VM's chains, as long as there are free slots.
        let pending = vm_tx.pending().map_err(PumpError::Vm)?;
        let mut copied = 0;
        for _ in 0..pending {
            if self.tx.num_free() == 0 {
                break;
            }
            let head = vm_tx.peek_head().map_err(PumpError::Vm)?;
            let len = match vm_tx.read_chain(head, false, segs) {
                Ok(len) if u64::from(len) <= BUF_SIZE => Some(len),
                _ => None,
            };
            let mut ok = false;
            if let Some(len) = len {
                let slot = self
                    .tx
                    .add_slot(self.layout.tx_bufs, BUF_SIZE, len, false)
                    .map_err(PumpError::Exchange)?;
                if let Some((id, addr)) = slot {
                    let dst = [Seg { addr, len }];
                    // A chain was checked against the VM's mapping when it
                    // was read; a failure here would be a bug, not the VM.
                    gather_scatter(self.mem.region(), &dst, vm, segs)
                        .map_err(|e| PumpError::Exchange(RingError::Memory(e)))?;
                    self.lens[id as usize] = len;
                    copied += 1;
                    ok = true;
                }
            }
            if !ok {
                stats.vm_tx_dropped += 1;
            }
            vm_tx.advance();
            vm_tx.add_used(head, 0).map_err(PumpError::Vm)?;
            out.finished += 1;
        }
        // 3. Publish the exchange ring, then the VM's used ring. Should we
        // die between the two stores, QEMU's ring restore re-offers these
        // VM chains to our successor while the peer may already have taken
        // the copies: at most one batch twice, never lost (as on RX).
        if copied > 0 {
            let (old, new) = self.tx.publish().map_err(PumpError::Exchange)?;
            out.peer_wants_kick = self
                .tx
                .kick_needed(mode, old, new)
                .map_err(PumpError::Exchange)?;
        }
        if out.finished > 0 {
            let (old, new) = vm_tx.publish_used().map_err(PumpError::Vm)?;
            out.vm_wants_irq = vm_tx
                .interrupt_needed(mode, old, new)
                .map_err(PumpError::Vm)?;
        }
        // 4. A full exchange ring with VM chains left: ask the peer to kick
        // us when it frees a slot (the caller's re-check closes the race
        // with a peer that consumed just before we asked).
        let waiting = self.tx.num_free() == 0 && vm_tx.pending().map_err(PumpError::Vm)? > 0;
        self.tx
            .set_interrupts(mode, waiting, self.tx.last_used())
            .map_err(PumpError::Exchange)?;
        Ok(out)
    }
}

/// Why the pump stopped the link.
#[derive(Debug, thiserror::Error)]
pub(super) enum PumpError {
    /// The VM's TX ring is in an impossible state (an avail index jump).
    #[error("VM TX ring: {0}")]
    Vm(RingError),
    /// The exchange ring: the peer's copier wrote an impossible used entry.
    #[error("exchange ring (written by the peer): {0}")]
    Exchange(RingError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::GuestMap;

    /// A stand-in VM: a memfd with a TX ring we drive (as the VM's driver
    /// would) and the device side the backend serves.
    struct Vm {
        mem: GuestMemory,
        layout: Layout,
        driver: DriverQueue,
        device: DeviceQueue,
    }

    impl Vm {
        fn new(queue: u32) -> Vm {
            let layout = Layout::plan(queue);
            let mem = GuestMemory::create("vm", layout.needed).unwrap();
            let driver = DriverQueue::new(mem.region().clone(), &layout.tx);
            let device =
                DeviceQueue::new(&GuestMap::identity(mem.region().clone()), &layout.tx).unwrap();
            Vm {
                mem,
                layout,
                driver,
                device,
            }
        }

        /// Post `n` frames of `len` bytes, frame i filled with byte
        /// `first + i` (wrapping).
        fn send(&mut self, first: u8, n: u8, len: u32) {
            for i in 0..n {
                let k = first.wrapping_add(i);
                let (_, addr) = self
                    .driver
                    .add_slot(self.layout.tx_bufs, BUF_SIZE, len, false)
                    .unwrap()
                    .unwrap();
                self.mem
                    .region()
                    .write("frame", addr, &vec![k; len as usize])
                    .unwrap();
            }
            self.driver.publish().unwrap();
        }

        fn pump(&mut self, x: &mut Exchange, stats: &mut Stats, bytes: &mut u64) -> Pumped {
            let mut segs = Vec::new();
            let region = self.mem.region().clone();
            x.pump(
                &region,
                &mut self.device,
                NotifyMode::EventIdx,
                &mut segs,
                stats,
                bytes,
            )
            .unwrap()
        }
    }

    /// The peer's copier, as far as the exchange ring is concerned: take
    /// `n` chains, return their first bytes, mark them used.
    fn peer_takes(x: &Exchange, peer: &mut DeviceQueue, n: u16) -> Vec<u8> {
        let mut segs = Vec::new();
        let mut firsts = Vec::new();
        for _ in 0..n {
            let head = peer.peek_head().unwrap();
            let len = peer.read_chain(head, false, &mut segs).unwrap();
            let mut b = [0u8; 1];
            x.mem.region().read("t", segs[0].addr, &mut b).unwrap();
            assert_eq!(len, segs[0].len);
            firsts.push(b[0]);
            peer.advance();
            peer.add_used(head, 0).unwrap();
        }
        peer.publish_used().unwrap();
        firsts
    }

    #[test]
    fn pump_copies_vm_frames_completes_their_chains_and_counts_what_the_peer_took() {
        let mut x = Exchange::create().unwrap();
        let mut vm = Vm::new(16);
        let mut peer =
            DeviceQueue::new(&GuestMap::identity(x.mem.region().clone()), &x.layout.tx).unwrap();
        let (mut stats, mut bytes) = (Stats::default(), 0);
        vm.send(1, 3, 100);
        let p = vm.pump(&mut x, &mut stats, &mut bytes);
        assert_eq!((p.finished, p.reaped), (3, 0));
        assert!(p.peer_wants_kick, "a fresh ring asks for every kick");
        // The VM's buffers are free again at once: the copy is done.
        let mut done = 0;
        while vm.driver.pop_used().unwrap().is_some() {
            done += 1;
        }
        assert_eq!(done, 3);
        // The peer sees exactly the frames, in order, with their lengths.
        assert_eq!(peer.pending().unwrap(), 3);
        assert_eq!(peer_takes(&x, &mut peer, 3), vec![1, 2, 3]);
        assert_eq!(stats.packets_sent, 0, "sent is what the peer took");
        let p = vm.pump(&mut x, &mut stats, &mut bytes);
        assert_eq!((p.finished, p.reaped), (0, 3));
        assert_eq!((stats.packets_sent, bytes), (3, 300));
        assert_eq!(stats.vm_tx_dropped, 0);
    }

    #[test]
    fn a_64k_gso_frame_with_its_header_crosses_the_exchange_whole() {
        // With --offloads on a VM sends TCP segments of up to 64 KiB after
        // its 12-byte virtio-net header; a slot holds 12 + 65535 bytes.
        let mut x = Exchange::create().unwrap();
        let mut vm = Vm::new(16);
        let mut peer =
            DeviceQueue::new(&GuestMap::identity(x.mem.region().clone()), &x.layout.tx).unwrap();
        let (mut stats, mut bytes) = (Stats::default(), 0);
        let len = 12 + 65535;
        vm.send(9, 1, len);
        assert_eq!(vm.pump(&mut x, &mut stats, &mut bytes).finished, 1);
        assert_eq!(stats.vm_tx_dropped, 0);
        let head = peer.peek_head().unwrap();
        let mut segs = Vec::new();
        assert_eq!(peer.read_chain(head, false, &mut segs).unwrap(), len);
        let mut got = vec![0u8; len as usize];
        x.mem.region().read("t", segs[0].addr, &mut got).unwrap();
        assert!(got.iter().all(|&b| b == 9), "every byte, header included");
    }

    #[test]
    fn full_exchange_leaves_vm_chains_in_their_ring_until_the_peer_frees_slots() {
        let mut x = Exchange::create().unwrap();
        let mut vm = Vm::new(64);
        let mut peer =
            DeviceQueue::new(&GuestMap::identity(x.mem.region().clone()), &x.layout.tx).unwrap();
        let (mut stats, mut bytes) = (Stats::default(), 0);
        // Fill all 256 exchange slots, 64 VM frames at a time.
        for round in 0..4u8 {
            vm.send(round * 64, 64, 60);
            assert_eq!(vm.pump(&mut x, &mut stats, &mut bytes).finished, 64);
            while vm.driver.pop_used().unwrap().is_some() {}
        }
        vm.send(0, 10, 60);
        let p = vm.pump(&mut x, &mut stats, &mut bytes);
        assert_eq!(p.finished, 0, "no free slot: the VM's chains stay put");
        assert_eq!(vm.device.pending().unwrap(), 10);
        // We asked the peer to kick us once it frees a slot.
        let used_event = x
            .mem
            .region()
            .load_u16(
                "t",
                x.layout.tx.avail + 4 + 2 * 256,
                std::sync::atomic::Ordering::Relaxed,
            )
            .unwrap();
        assert_eq!(used_event, x.tx.last_used());
        assert!(!x.has_work(&vm.device).unwrap());
        // The peer takes 4: 4 slots are reaped and 4 VM chains move in.
        peer_takes(&x, &mut peer, 4);
        assert!(x.has_work(&vm.device).unwrap());
        let p = vm.pump(&mut x, &mut stats, &mut bytes);
        assert_eq!((p.reaped, p.finished), (4, 4));
        assert_eq!(vm.device.pending().unwrap(), 6);
        assert_eq!(stats.packets_sent, 4);
    }

    #[test]
    fn malformed_vm_chain_is_completed_and_counted_not_copied() {
        let mut x = Exchange::create().unwrap();
        let mut vm = Vm::new(16);
        let (mut stats, mut bytes) = (Stats::default(), 0);
        // A device-writable buffer in a TX chain: the wrong direction.
        vm.driver
            .add_one(
                Seg {
                    addr: vm.layout.tx_bufs,
                    len: 64,
                },
                true,
            )
            .unwrap();
        vm.driver.publish().unwrap();
        vm.send(7, 1, 64);
        let p = vm.pump(&mut x, &mut stats, &mut bytes);
        assert_eq!(p.finished, 2);
        assert_eq!(stats.vm_tx_dropped, 1);
        let mut peer =
            DeviceQueue::new(&GuestMap::identity(x.mem.region().clone()), &x.layout.tx).unwrap();
        assert_eq!(peer.pending().unwrap(), 1);
        assert_eq!(peer_takes(&x, &mut peer, 1), vec![7]);
    }

    #[test]
    fn exchange_area_is_sealed_and_passes_handshake_checks() {
        let x = Exchange::create().unwrap();
        let (tx, rx) = x.rings();
        let h = transport::Handshake::new(1, 0, x.size(), 3, tx, rx);
        h.validate().unwrap();
        let f = x.file().unwrap();
        let seals = nix::fcntl::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            nix::fcntl::FcntlArg::F_GET_SEALS,
        )
        .unwrap();
        let seals = nix::fcntl::SealFlag::from_bits_truncate(seals);
        assert!(
            seals.contains(nix::fcntl::SealFlag::F_SEAL_SHRINK | nix::fcntl::SealFlag::F_SEAL_GROW)
        );
        // Room for every slot, and nothing the size of a VM.
        assert!(x.size() >= x.layout.tx_bufs + BUF_SIZE * EXCHANGE_QUEUE as u64);
        assert!(x.size() < 32 << 20);
    }
}
