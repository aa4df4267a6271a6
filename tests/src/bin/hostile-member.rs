//! A deliberately hostile switch member in push mode, for tests.
//!
//! It joins a switch with a real handshake over a real transport, offering
//! [`transport::F_RX_PUSH`] (so the switch serves its RX ring and writes
//! frames straight into the buffers it posts), announces its MAC address
//! with one hello (so frames are forwarded to it), then misbehaves on its
//! RX ring for ROUNDS tenths of a second, kicking the switch each round:
//!
//! * `rx-garbage`: posts RX descriptors that point outside its memory,
//!   straddle its end, are too small for a frame, read-only, indirect or
//!   of length 0, beside some that end exactly at its memory's end (valid:
//!   the switch may write there, and nowhere past it);
//! * `rx-jump`: an RX avail index that jumps by more than the queue size;
//! * `rx-none`: posts no RX buffer at all (a member that never reads).
//!
//! Usage: `hostile-member KIND:PATH MODE MAC [ROUNDS]`.

use anyhow::{anyhow, bail};
use lguest_launcher::cli::config::Spec;
use lguest_launcher::guest::frame::{eth_header, Mac, BROADCAST, ETH_P_HELLO};
use lguest_launcher::guest::plan::{Layout, NET_HDR_LEN};
use lguest_launcher::link::{dispatch, WithTransport};
use lguest_launcher::memory::{GuestMemory, Region};
use lguest_launcher::virtq::DriverQueue;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;
use transport::{ConnectOptions, Handshake, Transport, F_EVENT_IDX, F_NOTIFY_FLAGS, F_RX_PUSH};

const QUEUE: u32 = 256;
const VRING_DESC_F_NEXT: u16 = 1;
const VRING_DESC_F_WRITE: u16 = 2;
const VRING_DESC_F_INDIRECT: u16 = 4;

struct Hostile<'a> {
    path: &'a Path,
    mode: &'a str,
    mac: Mac,
    rounds: u32,
}

impl WithTransport for Hostile<'_> {
    type Output = anyhow::Result<()>;
    fn with<T: Transport + 'static>(self) -> anyhow::Result<()> {
        run::<T>(&self)
    }
}

/// Write RX descriptor `i`.
fn desc(mem: &Region, layout: &Layout, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
    let at = layout.rx.desc + 16 * u64::from(i);
    let mut b = [0u8; 16];
    b[0..8].copy_from_slice(&addr.to_le_bytes());
    b[8..12].copy_from_slice(&len.to_le_bytes());
    b[12..14].copy_from_slice(&flags.to_le_bytes());
    b[14..16].copy_from_slice(&next.to_le_bytes());
    let _ = mem.write("rx desc", at, &b);
}

/// Put descriptor `id` in RX avail slot `slot`.
fn avail(mem: &Region, layout: &Layout, slot: u16, id: u16) {
    let at = layout.rx.avail + 4 + 2 * u64::from(slot % QUEUE as u16);
    let _ = mem.write("rx avail", at, &id.to_le_bytes());
}

fn publish(mem: &Region, layout: &Layout, idx: u16) {
    let _ = mem.store_u16("rx avail idx", layout.rx.avail + 2, idx, Ordering::Release);
}

fn used_idx(mem: &Region, layout: &Layout) -> u16 {
    mem.load_u16("rx used idx", layout.rx.used + 2, Ordering::Acquire)
        .unwrap_or(0)
}

fn run<T: Transport>(h: &Hostile<'_>) -> anyhow::Result<()> {
    let layout = Layout::plan(QUEUE);
    let size = layout.needed_mib() << 20;
    let m = GuestMemory::create("hostile-member", size)?;
    let mem = m.region().clone();
    let hs = Handshake::new(
        std::process::id(),
        F_NOTIFY_FLAGS | F_EVENT_IDX | F_RX_PUSH,
        size,
        m.raw_fd(),
        layout.tx,
        layout.rx,
    );
    let opts = ConnectOptions {
        nonblocking_writes: true,
        timeout: Some(Duration::from_secs(20)),
    };
    let (t, peer) = T::connect(h.path, &hs, m.fd(), &opts)?;
    eprintln!(
        "hostile-member: connected to {} ({})",
        peer.handshake.pid, h.mode
    );
    // One hello, so the switch learns where we are.
    let mut tx = DriverQueue::new(mem.clone(), &layout.tx);
    let mut frame = vec![0u8; NET_HDR_LEN as usize];
    frame.extend_from_slice(&eth_header(BROADCAST, h.mac, ETH_P_HELLO));
    frame.resize(NET_HDR_LEN as usize + 60, 0);
    mem.write("hello", layout.tx_bufs, &frame)?;
    tx.add_slot(
        layout.tx_bufs,
        frame.len() as u64,
        frame.len() as u32,
        false,
    )?;
    tx.publish()?;
    let _ = t.notify();
    let q = QUEUE as u16;
    let mut posted: u16 = 0;
    for round in 0..h.rounds {
        match h.mode {
            "rx-garbage" => {
                // Refill what the switch gave back, with garbage.
                let used = used_idx(&mem, &layout);
                while posted.wrapping_sub(used) < q {
                    let id = posted % q;
                    let (addr, len, flags, next) = match (posted as u32 + round) % 8 {
                        0 => (size + 4096, 2048, VRING_DESC_F_WRITE, 0),
                        1 => (size - 100, 2048, VRING_DESC_F_WRITE, 0),
                        2 => (u64::MAX - 10, 2048, VRING_DESC_F_WRITE, 0),
                        3 => (layout.rx_bufs, 16, VRING_DESC_F_WRITE, 0),
                        4 => (layout.rx_bufs, 2048, 0, 0),
                        5 => (
                            layout.rx_bufs,
                            2048,
                            VRING_DESC_F_WRITE | VRING_DESC_F_INDIRECT,
                            0,
                        ),
                        6 => (
                            layout.rx_bufs,
                            64,
                            VRING_DESC_F_WRITE | VRING_DESC_F_NEXT,
                            id,
                        ),
                        // Valid: the last 2048 bytes of our memory.
                        _ => (size - 2048, 2048, VRING_DESC_F_WRITE, 0),
                    };
                    desc(&mem, &layout, id, addr, len, flags, next);
                    avail(&mem, &layout, posted, id);
                    posted = posted.wrapping_add(1);
                }
                publish(&mem, &layout, posted);
            }
            "rx-jump" => publish(&mem, &layout, used_idx(&mem, &layout).wrapping_add(q + 7)),
            "rx-none" => {}
            other => bail!("unknown mode {other}; expected rx-garbage, rx-jump or rx-none"),
        }
        let _ = t.notify();
        std::thread::sleep(Duration::from_millis(100));
        if t.wait(Some(Duration::ZERO)).is_err() {
            eprintln!("hostile-member: the switch let us go");
            break;
        }
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: hostile-member KIND:PATH MODE MAC [ROUNDS]");
        std::process::exit(2);
    }
    let rounds = args.get(4).and_then(|r| r.parse().ok()).unwrap_or(30);
    let r = args[1]
        .parse::<Spec>()
        .map_err(|e| anyhow!("{e}"))
        .and_then(|spec| {
            let mac = parse_mac(&args[3])?;
            dispatch(
                spec.kind,
                Hostile {
                    path: &spec.path,
                    mode: &args[2],
                    mac,
                    rounds,
                },
            )
        });
    if let Err(e) = r {
        eprintln!("hostile-member: {e:#}");
        std::process::exit(1);
    }
}

fn parse_mac(s: &str) -> anyhow::Result<Mac> {
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        bail!("MAC {s}: expected six hex bytes");
    }
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16).map_err(|e| anyhow!("MAC {s}: {e}"))?;
    }
    Ok(mac)
}
