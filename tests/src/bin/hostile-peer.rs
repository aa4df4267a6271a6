//! A deliberately hostile sharenet peer, for tests.
//!
//! It completes a real handshake over a real transport (so the honest
//! launcher maps its real, sealed memfd), then misbehaves on its TX ring,
//! which the honest side's copier pulls from:
//!
//! * `garbage`: random descriptors (bad indexes, buffers outside memory,
//!   writable flags, indirect flags, looping `next` links) published a
//!   queue's worth at a time, with a kick after each batch;
//! * `loop`: chains whose `next` links point back into themselves;
//! * `jump`: an avail index that jumps by more than the queue size.
//!
//! It writes its memory with `pwrite` on the memfd (no mapping needed: the
//! page cache is what the peer has mapped), then lingers so the honest side
//! has time to look, and exits.
//!
//! Usage: `hostile-peer KIND:PATH MODE [ROUNDS]`

use anyhow::{anyhow, bail, Context};
use lguest_launcher::cli::config::Spec;
use lguest_launcher::link::{dispatch, WithTransport};
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsFd;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;
use transport::{ConnectOptions, Handshake, RingInfo, Transport, F_EVENT_IDX, F_NOTIFY_FLAGS};

const MEM: u64 = 1 << 20;
const QUEUE: u32 = 64;

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

/// The used index the honest side's copier published on our TX ring.
fn used_idx(f: &File, ring: &RingInfo) -> u16 {
    let mut b = [0u8; 2];
    match f.read_exact_at(&mut b, ring.used + 2) {
        Ok(()) => u16::from_le_bytes(b),
        Err(_) => 0,
    }
}

fn desc(f: &File, ring: &RingInfo, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
    let mut d = [0u8; 16];
    d[0..8].copy_from_slice(&addr.to_le_bytes());
    d[8..12].copy_from_slice(&len.to_le_bytes());
    d[12..14].copy_from_slice(&flags.to_le_bytes());
    d[14..16].copy_from_slice(&next.to_le_bytes());
    put(f, ring.desc + 16 * i as u64, &d);
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
    let name = CString::new("hostile-peer").unwrap();
    let fd = memfd_create(
        &name,
        MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
    )
    .context("memfd_create")?;
    let mem = File::from(fd);
    mem.set_len(MEM).context("size the memfd")?;
    fcntl(
        mem.as_raw_fd(),
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL,
        ),
    )
    .context("seal")?;
    let tx = RingInfo {
        desc: 0,
        avail: 16 * QUEUE as u64,
        used: 4096,
        size: QUEUE,
    };
    let rx = RingInfo {
        desc: 8192,
        avail: 8192 + 16 * QUEUE as u64,
        used: 12288,
        size: QUEUE,
    };
    let hs = Handshake::new(
        std::process::id(),
        F_NOTIFY_FLAGS | F_EVENT_IDX,
        MEM,
        mem.as_raw_fd(),
        tx,
        rx,
    );
    let opts = ConnectOptions {
        nonblocking_writes: true,
        timeout: Some(Duration::from_secs(20)),
    };
    let (t, peer) = T::connect(path, &hs, mem.as_fd(), &opts)?;
    eprintln!("hostile-peer: connected to {} ({mode})", peer.handshake.pid);
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
                    desc(&mem, &tx, i, addr, len, flags, next);
                    let head = ((rng.next() as u16) % (2 * q)).to_le_bytes();
                    put(
                        &mem,
                        tx.avail + 4 + 2 * ((avail.wrapping_add(i)) % q) as u64,
                        &head,
                    );
                }
                avail = avail.wrapping_add(q);
            }
            "loop" => {
                for i in 0..q {
                    // i -> i+1 -> ... -> i (a cycle through the table).
                    desc(&mem, &tx, i, 65536, 100, 1, (i + 1) % q);
                    put(
                        &mem,
                        tx.avail + 4 + 2 * ((avail.wrapping_add(i)) % q) as u64,
                        &i.to_le_bytes(),
                    );
                }
                avail = avail.wrapping_add(q);
            }
            "jump" => avail = avail.wrapping_add(q * 3 + 7),
            other => bail!("unknown mode {other}; expected garbage, loop or jump"),
        }
        put(&mem, tx.avail + 2, &avail.to_le_bytes());
        if let Err(e) = t.notify() {
            eprintln!("hostile-peer: notify: {e}");
            return Ok(());
        }
        // Let the honest side take this round before the next one (up to a
        // second): a round published on top of one it has not read yet
        // would be an avail jump, which is the `jump` mode's attack, not
        // this one's. On a loaded machine the honest side may be slow.
        if mode != "jump" {
            let until = std::time::Instant::now() + Duration::from_secs(1);
            while used_idx(&mem, &tx) != avail && std::time::Instant::now() < until {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: hostile-peer KIND:PATH garbage|loop|jump [ROUNDS]");
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
