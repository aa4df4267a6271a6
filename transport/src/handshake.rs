//! The versioned handshake both launchers send once at rendezvous.
//!
//! It is a fixed-size little-endian record, written and read field by field
//! (no `repr(C)` casts), so two launchers built by different compilers or on
//! hosts of different endianness agree on every byte. Everything in it comes
//! from the peer, so [`Handshake::decode`] and [`Handshake::validate`] check
//! every field before the launcher maps or trusts anything.

use crate::{Error, Result};

/// "SHARENET" read as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SHARENET");
/// The handshake version this build speaks (2: memory as regions).
pub const VERSION: u32 = 2;
/// Most memory regions a handshake can describe.
pub const MAX_REGIONS: usize = 8;
/// Size of the encoded handshake in bytes.
pub const HANDSHAKE_LEN: usize = 104 + 8 + 24 * MAX_REGIONS;
/// Largest queue size the virtio 1.x split ring allows.
pub const MAX_QUEUE_SIZE: u32 = 32768;

/// Feature bit: the sender maintains `VRING_*_F_NO_*` suppression flags.
pub const F_NOTIFY_FLAGS: u64 = 1 << 0;
/// Feature bit: the sender maintains `used_event`/`avail_event` (VIRTIO_F_EVENT_IDX).
pub const F_EVENT_IDX: u64 = 1 << 1;
/// Feature bit: the sender is a switch port (`lguest-launcher switch`),
/// not a guest: a synthetic guest announces its MAC address once at link
/// up so the switch learns where it is, and sends to broadcast unless
/// told `--dst`. Older builds ignore the bit, so the wire format and
/// [`VERSION`] are unchanged.
pub const F_SWITCH: u64 = 1 << 2;
/// Feature bit: "push" RX. From a member (a synthetic guest whose whole
/// memory is shared, `--share guest`): my RX ring and its buffers are in
/// the memory I share, so a peer may serve my RX ring as its device and
/// write frames straight into it. From a switch ([`F_SWITCH`]): I will,
/// unless told `--push off`. A port is in push mode only when both set
/// it; otherwise each side's copier pulls as before. Two launchers never
/// push to each other (push needs [`F_SWITCH`] on the other side), and
/// older builds ignore the bit, so the wire format and [`VERSION`] are
/// unchanged.
pub const F_RX_PUSH: u64 = 1 << 3;
/// Feature bits this build understands; others are ignored.
pub const KNOWN_FEATURES: u64 = F_NOTIFY_FLAGS | F_EVENT_IDX | F_SWITCH | F_RX_PUSH;

/// Where one split virtqueue lives inside the sender's memory (offsets into
/// the memory fd, not pointers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingInfo {
    /// Offset of the descriptor table.
    pub desc: u64,
    /// Offset of the avail ring.
    pub avail: u64,
    /// Offset of the used ring.
    pub used: u64,
    /// Number of entries (a power of two, at most 32768).
    pub size: u32,
}

impl RingInfo {
    /// Bytes taken by the descriptor table.
    pub fn desc_bytes(&self) -> u64 {
        16 * self.size as u64
    }
    /// Bytes taken by the avail ring, `used_event` included.
    pub fn avail_bytes(&self) -> u64 {
        6 + 2 * self.size as u64
    }
    /// Bytes taken by the used ring, `avail_event` included.
    pub fn used_bytes(&self) -> u64 {
        6 + 8 * self.size as u64
    }
}

/// One piece of guest memory: guest-physical addresses `[gpa, gpa+size)`
/// live at `[offset, offset+size)` of the memory fd. A synthetic guest has
/// one region at gpa 0, offset 0; a QEMU guest has one per RAM slot (all in
/// the same memfd, as `memory-backend-memfd` gives them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemRegion {
    /// Guest-physical base address.
    pub gpa: u64,
    /// Length in bytes.
    pub size: u64,
    /// Offset of the region in the memory fd.
    pub offset: u64,
}

/// The record each launcher sends at rendezvous.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshake {
    /// Must be [`MAGIC`].
    pub magic: u64,
    /// Must be [`VERSION`].
    pub version: u32,
    /// The sender's process id.
    pub pid: u32,
    /// Feature bits (`F_*`): which notification-suppression fields the
    /// sender maintains.
    pub features: u64,
    /// Size of the sender's guest memory in bytes.
    pub mem_size: u64,
    /// The sender's fd number for its memory (reached via `/proc/PID/fd/N`
    /// by the FIFO transport); `-1` when the fd travels with SCM_RIGHTS.
    pub mem_fd: i32,
    /// The link generation the sender proposes: 1 + the number of links
    /// it had before this one (0 from a build that does not count). Both
    /// sides take the larger of the two, so a survivor's restarted peer
    /// learns which link it is part of. Carried in what used to be a
    /// reserved word, so the wire format and [`VERSION`] are unchanged.
    pub generation: u32,
    /// The sender's TX queue (the peer pulls from it).
    pub tx: RingInfo,
    /// The sender's RX queue (its own copier fills it).
    pub rx: RingInfo,
    /// How guest-physical addresses (ring addresses and descriptor
    /// buffers) map into the memory fd; `nregions` entries are used.
    pub regions: [MemRegion; MAX_REGIONS],
    /// Number of valid entries in `regions` (1..=8).
    pub nregions: u32,
    /// The sender's MTU (`--mtu`): the largest Ethernet payload its guest
    /// sends and accepts; 0 when the sender states none (older builds, or
    /// no `--mtu`). Two non-zero MTUs that differ are refused by the
    /// launcher at link-up, naming both. Carried in what used to be a
    /// reserved word, so the wire format and [`VERSION`] are unchanged.
    pub mtu: u32,
    /// The offloads the sender's guest accepts on receive, as virtio-net
    /// feature bits 0..31 (`VIRTIO_NET_F_GUEST_CSUM`, `GUEST_TSO4`, ...,
    /// `MRG_RXBUF`) at link-up; 0 when none (or an older build). Carried in
    /// the TX ring's reserved word.
    pub offloads: u32,
}

impl Handshake {
    /// A handshake with magic and version filled in, whose memory is one
    /// region at guest-physical 0 (ring addresses are memfd offsets).
    pub fn new(
        pid: u32,
        features: u64,
        mem_size: u64,
        mem_fd: i32,
        tx: RingInfo,
        rx: RingInfo,
    ) -> Self {
        let mut regions = [MemRegion::default(); MAX_REGIONS];
        regions[0] = MemRegion {
            gpa: 0,
            size: mem_size,
            offset: 0,
        };
        Handshake {
            magic: MAGIC,
            version: VERSION,
            pid,
            features,
            mem_size,
            mem_fd,
            generation: 0,
            tx,
            rx,
            regions,
            nregions: 1,
            mtu: 0,
            offloads: 0,
        }
    }

    /// The same handshake stating MTU `mtu` (0: none stated).
    pub fn with_mtu(mut self, mtu: u32) -> Self {
        self.mtu = mtu;
        self
    }

    /// The same handshake stating the receive offloads `offloads`
    /// (virtio-net feature bits 0..31).
    pub fn with_offloads(mut self, offloads: u32) -> Self {
        self.offloads = offloads;
        self
    }

    /// The same handshake proposing link generation `generation`.
    pub fn with_generation(mut self, generation: u32) -> Self {
        self.generation = generation;
        self
    }

    /// Replace the memory map (at most [`MAX_REGIONS`] regions; more are
    /// cut, and none is refused by [`Handshake::validate`]).
    pub fn with_regions(mut self, regions: &[MemRegion]) -> Self {
        self.regions = [MemRegion::default(); MAX_REGIONS];
        let n = regions.len().min(MAX_REGIONS);
        self.regions[..n].copy_from_slice(&regions[..n]);
        self.nregions = n as u32;
        self
    }

    /// The valid regions.
    pub fn regions(&self) -> &[MemRegion] {
        &self.regions[..(self.nregions as usize).min(MAX_REGIONS)]
    }

    /// Translate a guest-physical range to an offset in the memory fd, if
    /// it lies wholly inside one region.
    pub fn translate(&self, gpa: u64, len: u64) -> Option<u64> {
        translate(self.regions(), gpa, len)
    }

    /// Serialise into the fixed little-endian wire format.
    pub fn encode(&self) -> [u8; HANDSHAKE_LEN] {
        let mut b = [0u8; HANDSHAKE_LEN];
        let mut w = Writer {
            buf: &mut b,
            pos: 0,
        };
        w.u64(self.magic);
        w.u32(self.version);
        w.u32(self.pid);
        w.u64(self.features);
        w.u64(self.mem_size);
        w.u32(self.mem_fd as u32);
        w.u32(self.generation);
        for (r, extra) in [(&self.tx, self.offloads), (&self.rx, 0)] {
            w.u64(r.desc);
            w.u64(r.avail);
            w.u64(r.used);
            w.u32(r.size);
            w.u32(extra); // tx: offloads; rx: reserved
        }
        w.u32(self.nregions);
        w.u32(self.mtu);
        for m in &self.regions {
            w.u64(m.gpa);
            w.u64(m.size);
            w.u64(m.offset);
        }
        debug_assert_eq!(w.pos, HANDSHAKE_LEN);
        b
    }

    /// Parse the wire format. Checks length, magic and version only; call
    /// [`Handshake::validate`] before using the contents.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != HANDSHAKE_LEN {
            return Err(Error::ShortHandshake {
                got: bytes.len(),
                expected: HANDSHAKE_LEN,
            });
        }
        let mut r = Reader { buf: bytes, pos: 0 };
        let magic = r.u64();
        if magic != MAGIC {
            return Err(Error::BadMagic {
                got: magic,
                expected: MAGIC,
            });
        }
        let version = r.u32();
        if version != VERSION {
            return Err(Error::VersionMismatch {
                got: version,
                expected: VERSION,
            });
        }
        let pid = r.u32();
        let features = r.u64();
        let mem_size = r.u64();
        let mem_fd = r.u32() as i32;
        let generation = r.u32();
        let mut ring = || {
            let desc = r.u64();
            let avail = r.u64();
            let used = r.u64();
            let size = r.u32();
            let extra = r.u32();
            (
                RingInfo {
                    desc,
                    avail,
                    used,
                    size,
                },
                extra,
            )
        };
        let (tx, offloads) = ring();
        let (rx, _) = ring();
        let nregions = r.u32();
        let mtu = r.u32();
        let mut regions = [MemRegion::default(); MAX_REGIONS];
        for m in &mut regions {
            *m = MemRegion {
                gpa: r.u64(),
                size: r.u64(),
                offset: r.u64(),
            };
        }
        Ok(Handshake {
            magic,
            version,
            pid,
            features,
            mem_size,
            mem_fd,
            generation,
            tx,
            rx,
            regions,
            nregions,
            mtu,
            offloads,
        })
    }

    /// Check that the handshake describes something we can map and use:
    /// a non-zero pid, a memory size that fits a mapping, queue sizes that
    /// are powers of two, and every ring inside the memory, aligned, with
    /// all arithmetic checked for wrap-around.
    pub fn validate(&self) -> Result<()> {
        if self.pid == 0 {
            return bad("pid", 0, "a process id cannot be 0");
        }
        if self.mem_size == 0 || self.mem_size > (1 << 40) {
            return bad(
                "mem_size",
                self.mem_size,
                "must be between 1 byte and 1 TiB",
            );
        }
        if self.nregions == 0 || self.nregions as usize > MAX_REGIONS {
            return bad("nregions", self.nregions as u64, "must be between 1 and 8");
        }
        for m in self.regions() {
            let in_fd = m
                .offset
                .checked_add(m.size)
                .is_some_and(|end| end <= self.mem_size);
            if m.size == 0 || !in_fd || m.gpa.checked_add(m.size).is_none() {
                return bad(
                    "regions",
                    m.gpa,
                    &format!(
                        "region gpa {:#x} size {:#x} at offset {:#x} does not fit {} bytes of memory",
                        m.gpa, m.size, m.offset, self.mem_size
                    ),
                );
            }
        }
        for (name, r) in [("tx", &self.tx), ("rx", &self.rx)] {
            if r.size == 0 || !r.size.is_power_of_two() || r.size > MAX_QUEUE_SIZE {
                return bad(
                    field(name, "size"),
                    r.size as u64,
                    "queue size must be a power of two between 1 and 32768",
                );
            }
            for (part, off, len, align) in [
                ("desc", r.desc, r.desc_bytes(), 16),
                ("avail", r.avail, r.avail_bytes(), 2),
                ("used", r.used, r.used_bytes(), 4),
            ] {
                if !off.is_multiple_of(align) {
                    return bad(
                        field(name, part),
                        off,
                        &format!("must be {align}-byte aligned"),
                    );
                }
                let Some(at) = self.translate(off, len) else {
                    return bad(
                        field(name, part),
                        off,
                        &format!("{len} bytes at this address are not inside one memory region"),
                    );
                };
                // What we access is the offset in the memory fd, not the
                // guest address: a region at an odd file offset would put
                // an aligned address on a misaligned atomic.
                if !at.is_multiple_of(align) {
                    return bad(
                        field(name, part),
                        off,
                        &format!(
                            "lands at offset {at:#x} of the memory fd (through its region), \
                             which is not {align}-byte aligned"
                        ),
                    );
                }
            }
        }
        Ok(())
    }
}

/// Translate `[gpa, gpa+len)` through `regions` to a memory-fd offset, if it
/// lies wholly inside one region (all arithmetic checked).
pub fn translate(regions: &[MemRegion], gpa: u64, len: u64) -> Option<u64> {
    let end = gpa.checked_add(len)?;
    regions
        .iter()
        .find(|m| gpa >= m.gpa && m.gpa.checked_add(m.size).is_some_and(|e| end <= e))
        .and_then(|m| m.offset.checked_add(gpa - m.gpa))
}

fn field(ring: &str, part: &str) -> &'static str {
    match (ring, part) {
        ("tx", "size") => "tx.size",
        ("tx", "desc") => "tx.desc",
        ("tx", "avail") => "tx.avail",
        ("tx", "used") => "tx.used",
        ("rx", "size") => "rx.size",
        ("rx", "desc") => "rx.desc",
        ("rx", "avail") => "rx.avail",
        _ => "rx.used",
    }
}

fn bad(field: &'static str, value: u64, reason: &str) -> Result<()> {
    Err(Error::BadHandshake {
        field,
        value,
        reason: reason.to_string(),
    })
}

struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn put(&mut self, b: &[u8]) {
        self.buf[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
    }
    fn u32(&mut self, v: u32) {
        self.put(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.put(&v.to_le_bytes());
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(&self.buf[self.pos..self.pos + N]);
        self.pos += N;
        a
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
}

#[cfg(test)]
mod tests;
