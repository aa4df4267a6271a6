//! A deliberately hostile sharenet peer, for tests.
//!
//! It completes a real handshake over a real transport (so the honest
//! launcher maps its real, sealed memfd), then misbehaves. On its TX ring,
//! which the honest side's copier pulls from:
//!
//! * `garbage`: random descriptors (bad indexes, buffers outside memory,
//!   writable flags, indirect flags, looping `next` links) published a
//!   queue's worth at a time, with a kick after each batch;
//! * `loop`: chains whose `next` links point back into themselves;
//! * `jump`: an avail index that jumps by more than the queue size;
//! * `bad-offload`: well-formed chains whose `virtio_net_hdr` asks for an
//!   offload no honest driver asks for (unknown GSO type, checksum outside
//!   the frame, GSO size 0, `hdr_len` beyond the frame, unknown flags, ECN
//!   without GSO; in turn), every other chain an honest 64-byte data frame
//!   (sequence 0, 1, ...), so a sink of ROUNDS × 32 frames can finish;
//! * `flood`: a 32768-entry queue whose every chain loops through the whole
//!   descriptor table, republished as soon as the honest side took it, with
//!   a kick every millisecond, for ROUNDS tenths of a second; meanwhile it
//!   consumes the honest side's TX ring like an honest device would, so the
//!   honest guest's own traffic can go on.
//!
//! On the transport's shared file descriptions (`eventfd:` only):
//!
//! * `fill-eventfd`: clears `O_NONBLOCK` on every eventfd it holds and fills
//!   its own counter (the one the honest side writes to kick it) to the
//!   maximum, so a `write(1)` would block; consumes the honest side's TX
//!   ring (kicking it) for ROUNDS tenths of a second or until it leaves;
//! * `steal-eventfd`: clears `O_NONBLOCK` on the honest side's eventfd,
//!   kicks it and reads the count back itself a few microseconds later,
//!   for ROUNDS tenths of a second or until `/proc` shows the honest side
//!   blocked in `read(2)` on its eventfd; then stops kicking, so a reader
//!   that lost the race for the counter stays blocked.
//!
//! At rendezvous:
//!
//! * `hugetlb`: offers a sealed hugetlbfs memfd (`MFD_HUGETLB`) as its
//!   memory: seals do not stop a hole punch there, and with no free huge
//!   page to refill it the honest side's next touch would be SIGBUS;
//!
//! * `misaligned`: every ring address aligned, but its one memory region
//!   starts at file offset 1, so every ring is misaligned where it is
//!   really accessed;
//!
//! and with `fifo:` only:
//!
//! * `mirror`: names the honest side's own memfd (`/proc/PID/fd/N`, with
//!   PID = ROUNDS, the honest launcher's pid) as its memory: two mappings
//!   of the same pages;
//!
//! * `fifo-tty`: names a pseudo-terminal, not its memfd, as its memory fd,
//!   then watches whether the honest side made it its controlling terminal
//!   (prints `hostile-peer: TOOK THE TTY` if so);
//! * `fifo-full`: plays the first side by hand and fills the FIFO the
//!   honest side must write its handshake into, then never reads it.
//!
//! It writes its memory with `pwrite` on the memfd (no mapping needed: the
//! page cache is what the peer has mapped), then lingers so the honest side
//! has time to look, and exits.
//!
//! Usage: `hostile-peer KIND:PATH MODE [ROUNDS]`
//!        `hostile-peer --connect-as UID SOCKET`: connect to a Unix socket
//!        as user UID (setuid first; needs root), say what came back.

use anyhow::{anyhow, bail, Context};
use lguest_launcher::cli::config::Spec;
use lguest_launcher::link::{dispatch, WithTransport};
use nix::fcntl::{fcntl, FcntlArg, OFlag, SealFlag};
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt, PtyMaster};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};
use transport::{
    ConnectOptions, Handshake, PeerInfo, RingInfo, Transport, F_EVENT_IDX, F_NOTIFY_FLAGS,
};

const MEM: u64 = 1 << 20;
const QUEUE: u32 = 64;
/// `flood`: the largest queue a handshake may declare, and room for it.
const FLOOD_QUEUE: u32 = 32768;
const FLOOD_MEM: u64 = 2 << 20;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn put(f: &File, off: u64, bytes: &[u8]) {
    f.write_all_at(bytes, off).expect("pwrite own memfd");
}

fn get_u16(f: &File, off: u64) -> u16 {
    let mut b = [0u8; 2];
    match f.read_exact_at(&mut b, off) {
        Ok(()) => u16::from_le_bytes(b),
        Err(_) => 0,
    }
}

/// The used index the honest side's copier published on our TX ring.
fn used_idx(f: &File, ring: &RingInfo) -> u16 {
    get_u16(f, ring.used + 2)
}

fn desc(f: &File, ring: &RingInfo, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
    let mut d = [0u8; 16];
    d[0..8].copy_from_slice(&addr.to_le_bytes());
    d[8..12].copy_from_slice(&len.to_le_bytes());
    d[12..14].copy_from_slice(&flags.to_le_bytes());
    d[14..16].copy_from_slice(&next.to_le_bytes());
    put(f, ring.desc + 16 * i as u64, &d);
}

/// Rings for a queue of `q` entries: TX from 0, RX after it, page aligned.
fn layout(q: u32) -> (RingInfo, RingInfo) {
    let align = |x: u64| x.div_ceil(4096) * 4096;
    let ring = |base: u64, q: u32| {
        let desc = base;
        let avail = desc + 16 * q as u64;
        let used = align(avail + 6 + 2 * q as u64);
        let end = align(used + 6 + 8 * q as u64);
        (
            RingInfo {
                desc,
                avail,
                used,
                size: q,
            },
            end,
        )
    };
    let (tx, end) = ring(0, q);
    let (rx, _) = ring(end, QUEUE);
    (tx, rx)
}

/// One hostile run, with the transport `--sharenet` names.
struct Hostile<'a> {
    path: &'a Path,
    mode: &'a str,
    rounds: u32,
}

impl WithTransport for Hostile<'_> {
    type Output = anyhow::Result<()>;
    fn with<T: Transport + 'static>(self) -> anyhow::Result<()> {
        run::<T>(self.path, self.mode, self.rounds)
    }
}

fn run<T: Transport>(path: &Path, mode: &str, rounds: u32) -> anyhow::Result<()> {
    if mode == "fifo-full" {
        return fifo_full(path, rounds);
    }
    let huge = mode == "hugetlb";
    let (q, size) = match mode {
        "flood" => (FLOOD_QUEUE, FLOOD_MEM),
        "hugetlb" => (QUEUE, 2 << 20), // one huge page
        _ => (QUEUE, MEM),
    };
    let name = CString::new("hostile-peer").unwrap();
    let mut flags = MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING;
    if huge {
        flags |= MemFdCreateFlag::MFD_HUGETLB;
    }
    let fd = memfd_create(&name, flags).context("memfd_create")?;
    let mem = File::from(fd);
    mem.set_len(size).context("size the memfd")?;
    fcntl(
        mem.as_raw_fd(),
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL,
        ),
    )
    .context("seal")?;
    let (tx, rx) = layout(q);
    // `fifo-tty`: the fd number we name as "our memory" is a terminal's.
    let tty = if mode == "fifo-tty" {
        Some(open_pty()?)
    } else {
        None
    };
    let mut mem_fd = tty
        .as_ref()
        .map_or(mem.as_raw_fd(), |(_, slave)| slave.as_raw_fd());
    let (mut pid, mut size) = (std::process::id(), size);
    if mode == "mirror" {
        // `fifo:` names memory by pid and fd number: name the honest
        // side's own memfd (ROUNDS is its pid).
        (pid, mem_fd, size) = their_memfd(rounds)?;
    }
    let mut hs = Handshake::new(pid, F_NOTIFY_FLAGS | F_EVENT_IDX, size, mem_fd, tx, rx);
    if mode == "misaligned" {
        // Every ring address aligned, but the one region starts at file
        // offset 1: each ring lands one byte off in the fd the honest side
        // maps, on an atomic that must be aligned.
        hs = hs.with_regions(&[transport::MemRegion {
            gpa: 0,
            size: size - 4096,
            offset: 1,
        }]);
    }
    let opts = ConnectOptions {
        nonblocking_writes: true,
        timeout: Some(Duration::from_secs(20)),
    };
    eprintln!("hostile-peer: ready ({mode})");
    let (t, peer) = match T::connect(path, &hs, mem.as_fd(), &opts) {
        Ok(c) => c,
        Err(e) if tty.is_some() => {
            // The honest side refused us (as it should); say whether it
            // took our terminal on the way.
            eprintln!("hostile-peer: connect: {e}");
            if let Some((master, _)) = &tty {
                watch_tty(master, Duration::from_millis(300));
            }
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    eprintln!("hostile-peer: connected to {} ({mode})", peer.handshake.pid);
    if let Some((master, _)) = &tty {
        watch_tty(master, Duration::from_secs(2));
        return Ok(());
    }
    match mode {
        "garbage" | "loop" | "jump" | "bad-offload" => ring_attack(&t, &mem, &tx, mode, rounds),
        "flood" => flood(&t, &mem, &tx, &peer, rounds),
        "fill-eventfd" => fill_eventfd(&t, &peer, rounds),
        "steal-eventfd" => steal_eventfd(&t, peer.handshake.pid, rounds),
        "hugetlb" | "mirror" | "misaligned" => {
            // Mapped by the honest side: from here a hole punch plus no
            // free huge page left would SIGBUS it on its next touch.
            std::thread::sleep(Duration::from_secs(1));
            Ok(())
        }
        other => bail!(
            "unknown mode {other}; expected garbage, loop, jump, flood, fill-eventfd, \
             steal-eventfd, hugetlb, misaligned, mirror, fifo-tty or fifo-full"
        ),
    }
}

/// `mirror`: the honest launcher `pid`'s own guest memory, as `(pid, fd,
/// size)`: the largest of its sharenet memfds (it also keeps small ones,
/// such as the kick stamps of `wait::latency`).
fn their_memfd(pid: u32) -> anyhow::Result<(u32, i32, u64)> {
    let mut best: Option<(u32, i32, u64)> = None;
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))?.flatten() {
        let Ok(link) = std::fs::read_link(e.path()) else {
            continue;
        };
        if link.to_string_lossy().starts_with("/memfd:sharenet-") {
            let fd: i32 = e.file_name().to_string_lossy().parse()?;
            let size = std::fs::metadata(e.path())?.len();
            if best.is_none_or(|(_, _, s)| size > s) {
                best = Some((pid, fd, size));
            }
        }
    }
    if let Some(found) = best {
        return Ok(found);
    }
    bail!("no sharenet memfd in /proc/{pid}/fd")
}

/// `garbage`, `loop`, `jump`: one batch of bad chains per round.
fn ring_attack<T: Transport>(
    t: &T,
    mem: &File,
    tx: &RingInfo,
    mode: &str,
    rounds: u32,
) -> anyhow::Result<()> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ std::process::id() as u64);
    let mut avail: u16 = 0;
    let q = QUEUE as u16;
    for _ in 0..rounds {
        match mode {
            "garbage" => {
                for i in 0..q {
                    let r = rng.next();
                    let addr = match r % 4 {
                        0 => 65536 + (r >> 8) % 4096,
                        1 => MEM - (r >> 8) % 64,
                        2 => u64::MAX - (r >> 8) % 64,
                        _ => r,
                    };
                    let len = match (r >> 3) % 3 {
                        0 => 100,
                        1 => u32::MAX,
                        _ => (r >> 16) as u32,
                    };
                    let flags = (r >> 32) as u16 & 0x7;
                    let next = ((r >> 48) as u16) % (2 * q);
                    desc(mem, tx, i, addr, len, flags, next);
                    let head = ((rng.next() as u16) % (2 * q)).to_le_bytes();
                    put(
                        mem,
                        tx.avail + 4 + 2 * ((avail.wrapping_add(i)) % q) as u64,
                        &head,
                    );
                }
                avail = avail.wrapping_add(q);
            }
            "loop" => {
                for i in 0..q {
                    // i -> i+1 -> ... -> i (a cycle through the table).
                    desc(mem, tx, i, 65536, 100, 1, (i + 1) % q);
                    put(
                        mem,
                        tx.avail + 4 + 2 * ((avail.wrapping_add(i)) % q) as u64,
                        &i.to_le_bytes(),
                    );
                }
                avail = avail.wrapping_add(q);
            }
            "bad-offload" => {
                for i in 0..q {
                    let seq = (avail.wrapping_add(i) / 2) as u64;
                    let chain = offload_chain(i, seq);
                    let at = OFFLOAD_BUFS + i as u64 * 128;
                    put(mem, at, &chain);
                    desc(mem, tx, i, at, chain.len() as u32, 0, 0);
                    put(
                        mem,
                        tx.avail + 4 + 2 * ((avail.wrapping_add(i)) % q) as u64,
                        &i.to_le_bytes(),
                    );
                }
                avail = avail.wrapping_add(q);
            }
            _ => avail = avail.wrapping_add(q * 3 + 7), // jump
        }
        put(mem, tx.avail + 2, &avail.to_le_bytes());
        if let Err(e) = t.notify() {
            eprintln!("hostile-peer: notify: {e}");
            return Ok(());
        }
        // Let the honest side take this round before the next one (up to a
        // second): a round published on top of one it has not read yet
        // would be an avail jump, which is the `jump` mode's attack, not
        // this one's. On a loaded machine the honest side may be slow.
        if mode != "jump" {
            let until = Instant::now() + Duration::from_secs(1);
            while used_idx(mem, tx) != avail && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    Ok(())
}

/// `bad-offload`: where the chains' buffers are (after the rings).
const OFFLOAD_BUFS: u64 = 256 << 10;

/// `bad-offload`: chain `i` of a round: odd ones an honest 64-byte data
/// frame `seq`, even ones a frame whose header is bad in one of six ways.
fn offload_chain(i: u16, seq: u64) -> Vec<u8> {
    use lguest_launcher::guest::frame::{eth_header, Pattern, BROADCAST, ETH_P_SHARENET};
    use lguest_launcher::offload::NetHdr;
    let mut hdr = NetHdr::default();
    if i.is_multiple_of(2) {
        hdr = match (i / 2) % 6 {
            0 => NetHdr {
                gso_type: 2,
                gso_size: 1000,
                ..hdr
            },
            1 => NetHdr {
                flags: 1,
                csum_start: 70,
                csum_offset: 16,
                ..hdr
            },
            2 => NetHdr {
                gso_type: 1,
                gso_size: 0,
                ..hdr
            },
            3 => NetHdr {
                gso_type: 1,
                gso_size: 1000,
                hdr_len: 5000,
                ..hdr
            },
            4 => NetHdr { flags: 0x40, ..hdr },
            _ => NetHdr {
                gso_type: 0x80,
                ..hdr
            },
        };
    }
    let mut c = hdr.encode().to_vec();
    c.extend_from_slice(&eth_header(
        BROADCAST,
        [2, 0x66, 0, 0, 0, 1],
        ETH_P_SHARENET,
    ));
    let pattern = Pattern::new(64);
    let (h, payload) = pattern.frame(seq);
    c.extend_from_slice(&h);
    c.extend_from_slice(payload);
    c
}

/// The honest side's TX ring, served the way an honest peer's copier
/// would: every chain it makes available is marked used (nothing copied).
struct Consumer {
    mem: File,
    ring: RingInfo,
    regions: Vec<transport::MemRegion>,
    used: u16,
    consumed: u64,
}

impl Consumer {
    fn new(peer: &PeerInfo) -> anyhow::Result<Self> {
        let mem = File::from(peer.memory.try_clone().context("dup peer memory")?);
        Ok(Consumer {
            mem,
            ring: peer.handshake.tx,
            regions: peer.handshake.regions().to_vec(),
            used: 0,
            consumed: 0,
        })
    }

    fn at(&self, gpa: u64, len: u64) -> Option<u64> {
        transport::translate(&self.regions, gpa, len)
    }

    /// Mark everything available used; true if anything was.
    fn step(&mut self) -> bool {
        let q = self.ring.size as u16;
        let (Some(avail), Some(used)) = (
            self.at(self.ring.avail, 4 + 2 * q as u64),
            self.at(self.ring.used, 4 + 8 * q as u64),
        ) else {
            return false;
        };
        let idx = get_u16(&self.mem, avail + 2);
        let n = idx.wrapping_sub(self.used);
        if n == 0 || n > q {
            return false;
        }
        for _ in 0..n {
            let slot = (self.used % q) as u64;
            let head = get_u16(&self.mem, avail + 4 + 2 * slot);
            let mut e = [0u8; 8];
            e[0..4].copy_from_slice(&(head as u32).to_le_bytes());
            put(&self.mem, used + 4 + 8 * slot, &e);
            self.used = self.used.wrapping_add(1);
        }
        put(&self.mem, used + 2, &self.used.to_le_bytes());
        self.consumed += n as u64;
        true
    }
}

/// `flood`: every chain of a 32768-entry queue loops through the whole
/// table; republish as soon as the honest side took a batch, kick every
/// millisecond, and serve its TX ring meanwhile.
fn flood<T: Transport>(
    t: &T,
    mem: &File,
    tx: &RingInfo,
    peer: &PeerInfo,
    rounds: u32,
) -> anyhow::Result<()> {
    let q = tx.size as u16;
    // One cycle 0 -> 1 -> ... -> q-1 -> 0 through the whole table: every
    // chain is as long as a chain can be before it is called a loop.
    let mut table = vec![0u8; 16 * q as usize];
    for i in 0..q {
        let d = &mut table[16 * i as usize..16 * (i as usize + 1)];
        d[0..8].copy_from_slice(&65536u64.to_le_bytes());
        d[8..12].copy_from_slice(&64u32.to_le_bytes());
        d[12..14].copy_from_slice(&1u16.to_le_bytes()); // NEXT
        d[14..16].copy_from_slice(&((i + 1) % q).to_le_bytes());
    }
    put(mem, tx.desc, &table);
    let mut heads = vec![0u8; 2 * q as usize];
    for i in 0..q {
        heads[2 * i as usize..2 * i as usize + 2].copy_from_slice(&i.to_le_bytes());
    }
    put(mem, tx.avail + 4, &heads);
    let mut consumer = Consumer::new(peer)?;
    let until = Instant::now() + Duration::from_millis(100 * rounds as u64);
    let mut avail: u16 = 0;
    let mut batches = 0u64;
    while Instant::now() < until {
        // A new batch once the last one was taken (never more than the
        // queue ahead: that would be an avail jump, another attack).
        if used_idx(mem, tx) == avail {
            avail = avail.wrapping_add(q);
            put(mem, tx.avail + 2, &avail.to_le_bytes());
            batches += 1;
        }
        consumer.step();
        if let Err(e) = t.notify() {
            eprintln!("hostile-peer: notify: {e}");
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    eprintln!(
        "hostile-peer: flood over: {batches} batches of {q} looping chains published, {} of the honest side's TX chains consumed",
        consumer.consumed
    );
    std::thread::sleep(Duration::from_millis(300));
    Ok(())
}

/// Every eventfd in our fd table, lowest fd first: the one we created
/// (the honest side kicks it), then the one we received (we kick it).
fn eventfds() -> Vec<RawFd> {
    let mut fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let fd: RawFd = e.file_name().to_str()?.parse().ok()?;
                    let link = std::fs::read_link(e.path()).ok()?;
                    (link.to_str()? == "anon_inode:[eventfd]").then_some(fd)
                })
                .collect()
        })
        .unwrap_or_default();
    fds.sort_unstable();
    fds
}

fn set_nonblocking(fd: RawFd, on: bool) {
    // SAFETY: `fd` is an open eventfd in our own table (from /proc/self/fd)
    // that stays open for the life of the transport.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    if let Ok(f) = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL) {
        let mut f = OFlag::from_bits_truncate(f);
        f.set(OFlag::O_NONBLOCK, on);
        let _ = fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(f));
    }
}

/// `fill-eventfd`: make a `write(1)` to our eventfd block (counter at its
/// maximum, `O_NONBLOCK` cleared on the description the honest side
/// writes), then serve the honest side's TX ring so it keeps kicking us.
fn fill_eventfd<T: Transport>(t: &T, peer: &PeerInfo, rounds: u32) -> anyhow::Result<()> {
    let fds = eventfds();
    let Some(&own) = fds.first() else {
        bail!("fill-eventfd needs an eventfd: use eventfd:PATH");
    };
    set_nonblocking(own, true);
    let mut b = [0u8; 8];
    let _ = nix::unistd::read(own, &mut b);
    // SAFETY: as in `set_nonblocking`.
    let own_fd = unsafe { BorrowedFd::borrow_raw(own) };
    nix::unistd::write(own_fd, &(u64::MAX - 1).to_ne_bytes()).context("fill our eventfd")?;
    for &fd in &fds {
        set_nonblocking(fd, false);
    }
    eprintln!("hostile-peer: eventfd {own} full, O_NONBLOCK cleared on {fds:?}");
    let mut consumer = Consumer::new(peer)?;
    let until = Instant::now() + Duration::from_millis(100 * rounds as u64);
    // Never `t.wait()` here: a transport that reads its counter would
    // undo the fill. Poll the ring instead, until the honest side exits.
    let honest = nix::unistd::Pid::from_raw(peer.handshake.pid as i32);
    while Instant::now() < until && nix::sys::signal::kill(honest, None).is_ok() {
        if consumer.step() {
            let _ = t.notify();
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    eprintln!(
        "hostile-peer: consumed {} of the honest side's TX chains",
        consumer.consumed
    );
    Ok(())
}

/// `steal-eventfd`: kick the honest side, then read its counter back
/// ourselves a few microseconds later, with `O_NONBLOCK` cleared on the
/// description we share. A launcher that reads its counter after epoll
/// said readable sometimes comes second and blocks in `read(2)`; we watch
/// for that in `/proc` and stop kicking the moment it happens, so nothing
/// ever releases it.
fn steal_eventfd<T: Transport>(t: &T, peer_pid: u32, rounds: u32) -> anyhow::Result<()> {
    let fds = eventfds();
    let Some(&theirs) = fds.get(1) else {
        bail!("steal-eventfd needs two eventfds: use eventfd:PATH");
    };
    // SAFETY: as in `set_nonblocking`.
    let fd = unsafe { BorrowedFd::borrow_raw(theirs) };
    let until = Instant::now() + Duration::from_millis(100 * rounds as u64);
    let mut rng = Rng(0x2545_F491_4F6C_DD1D ^ std::process::id() as u64);
    let (mut kicks, mut stolen) = (0u64, 0u64);
    let mut blocked = false;
    set_nonblocking(theirs, false);
    while Instant::now() < until && !blocked {
        let _ = nix::unistd::write(fd, &1u64.to_ne_bytes());
        kicks += 1;
        // Let the honest side's epoll see it, then take the count before
        // its read does (nonblocking for the instant we read, so we never
        // block ourselves).
        let spin = Instant::now() + Duration::from_nanos(rng.next() % 30_000);
        while Instant::now() < spin {
            std::hint::spin_loop();
        }
        set_nonblocking(theirs, true);
        let mut b = [0u8; 8];
        if nix::unistd::read(theirs, &mut b).is_ok() {
            stolen += 1;
        }
        set_nonblocking(theirs, false);
        std::thread::sleep(Duration::from_micros(200));
        blocked = blocked_in_eventfd_read(peer_pid);
    }
    if blocked {
        eprintln!("hostile-peer: the honest side is blocked reading its eventfd; no more kicks");
    }
    eprintln!("hostile-peer: {kicks} kicks, {stolen} read back by us; no more");
    // Linger without a kick until the honest side leaves.
    let until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < until {
        if let Err(e) = t.wait(Some(Duration::from_millis(50))) {
            if e.is_peer_gone() {
                break;
            }
        }
    }
    Ok(())
}

/// Is a thread of `pid` in `read(2)` on one of its eventfds? (From
/// `/proc/PID/task/*/syscall`: x86-64 `read` is syscall 0, its first
/// argument the fd.)
fn blocked_in_eventfd_read(pid: u32) -> bool {
    let eventfds: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|l| l.to_str() == Some("anon_inode:[eventfd]"))
                })
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.filter_map(|t| t.ok()).any(|t| {
        let Ok(line) = std::fs::read_to_string(t.path().join("syscall")) else {
            return false;
        };
        let mut it = line.split_whitespace();
        let nr = it.next();
        let arg0 = it
            .next()
            .and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok());
        nr == Some("0") && arg0.is_some_and(|fd| eventfds.contains(&fd))
    })
}

/// A pseudo-terminal: (master, slave), both ours.
fn open_pty() -> anyhow::Result<(PtyMaster, File)> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY).context("posix_openpt")?;
    grantpt(&master).context("grantpt")?;
    unlockpt(&master).context("unlockpt")?;
    let name = ptsname_r(&master).context("ptsname")?;
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(OFlag::O_NOCTTY.bits())
        .open(&name)
        .with_context(|| format!("open {name}"))?;
    Ok((master, slave))
}

/// Watch for `for_how_long` whether some session made our terminal its
/// controlling terminal (the honest side opening it without `O_NOCTTY`).
fn watch_tty(master: &PtyMaster, for_how_long: Duration) {
    let until = Instant::now() + for_how_long;
    while Instant::now() < until {
        if let Ok(sid) = nix::sys::termios::tcgetsid(master.as_fd()) {
            if sid.as_raw() > 0 {
                eprintln!("hostile-peer: TOOK THE TTY: session {sid} has our terminal");
                return;
            }
        }
        std::thread::yield_now();
    }
    eprintln!("hostile-peer: nobody took our terminal");
}

/// `fifo-full`: be the first side by hand (both FIFOs, a reader on
/// `PATH`), fill `PATH` so the honest side's handshake cannot be written,
/// and never read it.
fn fifo_full(path: &Path, rounds: u32) -> anyhow::Result<()> {
    use nix::sys::stat::Mode;
    let side = format!("{}_", path.display());
    for p in [path, Path::new(&side)] {
        let _ = std::fs::remove_file(p);
        nix::unistd::mkfifo(p, Mode::S_IRUSR | Mode::S_IWUSR)
            .with_context(|| format!("mkfifo {}", p.display()))?;
    }
    let mut fifo = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(OFlag::O_NONBLOCK.bits())
        .open(path)
        .context("open our FIFO")?;
    let junk = [0xa5u8; 4096];
    let mut filled = 0;
    while let Ok(n) = fifo.write(&junk) {
        filled += n;
    }
    eprintln!("hostile-peer: ready (fifo-full): {filled} bytes in our FIFO, never read");
    std::thread::sleep(Duration::from_millis(100 * rounds as u64));
    let mut b = [0u8; 1];
    let _ = fifo.read(&mut b);
    Ok(())
}

/// `--connect-as UID SOCKET`: become UID, connect, send a vhost-user
/// `GET_FEATURES` and report what came back.
fn connect_as(uid: u32, socket: &str) -> anyhow::Result<()> {
    nix::unistd::setgid(nix::unistd::Gid::from_raw(uid)).context("setgid")?;
    nix::unistd::setuid(nix::unistd::Uid::from_raw(uid)).context("setuid")?;
    let mut s = std::os::unix::net::UnixStream::connect(socket)
        .with_context(|| format!("connect {socket} as uid {uid}"))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    // VHOST_USER_GET_FEATURES (1), version flag 1, no payload.
    let mut msg = [0u8; 12];
    msg[0..4].copy_from_slice(&1u32.to_le_bytes());
    msg[4..8].copy_from_slice(&1u32.to_le_bytes());
    let _ = s.write_all(&msg);
    let mut reply = [0u8; 20];
    match s.read(&mut reply) {
        Ok(0) => eprintln!("hostile-peer: connected as uid {uid}; closed without a reply"),
        Ok(n) => eprintln!("hostile-peer: connected as uid {uid}; SERVED ({n} bytes back)"),
        Err(e) => eprintln!("hostile-peer: connected as uid {uid}; no reply: {e}"),
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--connect-as") && args.len() == 4 {
        let r = args[2]
            .parse()
            .map_err(|e| anyhow!("uid {}: {e}", args[2]))
            .and_then(|uid| connect_as(uid, &args[3]));
        if let Err(e) = r {
            eprintln!("hostile-peer: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    if args.len() < 3 {
        eprintln!(
            "usage: hostile-peer KIND:PATH MODE [ROUNDS] | hostile-peer --connect-as UID SOCKET"
        );
        std::process::exit(2);
    }
    let rounds = args.get(3).and_then(|r| r.parse().ok()).unwrap_or(20);
    let r = args[1]
        .parse::<Spec>()
        .map_err(|e| anyhow!("{e}"))
        .and_then(|spec| {
            dispatch(
                spec.kind,
                Hostile {
                    path: &spec.path,
                    mode: &args[2],
                    rounds,
                },
            )
        });
    if let Err(e) = r {
        eprintln!("hostile-peer: {e:#}");
        std::process::exit(1);
    }
}
