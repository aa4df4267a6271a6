//! Scribbles random bytes over a live launcher's guest memory, for tests.
//!
//! It finds the launcher's memfd in `/proc/PID/fd` (the link reads
//! `/memfd:sharenet-...`), opens it through /proc as any same-uid process
//! could, and `pwrite`s random bytes at random offsets until the deadline
//! or until the launcher exits.
//!
//! Usage: `scribbler PID MILLISECONDS`

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

fn find_memfd(pid: u32) -> Option<File> {
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        let target = std::fs::read_link(entry.path()).ok()?;
        if target.to_string_lossy().starts_with("/memfd:sharenet-") {
            return OpenOptions::new()
                .read(true)
                .write(true)
                .open(entry.path())
                .ok();
        }
    }
    None
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let pid: u32 = args.get(1).and_then(|p| p.parse().ok()).unwrap_or_else(|| {
        eprintln!("usage: scribbler PID MILLISECONDS");
        std::process::exit(2)
    });
    let ms: u64 = args.get(2).and_then(|p| p.parse().ok()).unwrap_or(1000);
    let deadline = Instant::now() + Duration::from_millis(ms);
    let file = loop {
        if let Some(f) = find_memfd(pid) {
            break f;
        }
        if Instant::now() > deadline {
            eprintln!("scribbler: no sharenet memfd in /proc/{pid}/fd");
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let size = file.metadata().map(|m| m.len()).unwrap_or(0).max(1);
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut writes = 0u64;
    while Instant::now() < deadline {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Mostly the ring area at the start of memory, sometimes anywhere.
        let off = if x & 3 == 0 {
            (x >> 8) % size
        } else {
            (x >> 8) % (64 * 1024).min(size)
        };
        let bytes = x.to_le_bytes();
        if file
            .write_at(&bytes[..((x >> 60) as usize % 8) + 1], off)
            .is_err()
        {
            break;
        }
        writes += 1;
        if writes.is_multiple_of(64) {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    eprintln!("scribbler: {writes} writes");
}
