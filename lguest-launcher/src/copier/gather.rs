//! [`gather_scatter`]: a frame's pieces into a buffer's pieces.

use crate::memory::{OutOfBounds, Region};
use crate::virtq::Seg;

/// Copy the bytes of `src` pieces (in `src_mem`) into `dst` pieces (in
/// `dst_mem`), in order. The caller checked that `dst` holds at least as
/// much as `src`; every piece was bounds-checked when its chain was read,
/// and [`Region::copy_from`] checks again.
pub fn gather_scatter(
    dst_mem: &Region,
    dst: &[Seg],
    src_mem: &Region,
    src: &[Seg],
) -> Result<u64, OutOfBounds> {
    if let ([s], [d, ..]) = (src, dst) {
        // The common case, a frame in one piece into a buffer whose first
        // piece holds it: one copy.
        if s.len <= d.len {
            dst_mem.copy_from(d.addr, src_mem, s.addr, s.len as u64)?;
            return Ok(s.len as u64);
        }
    }
    let (mut di, mut doff) = (0usize, 0u64);
    let mut copied = 0u64;
    for s in src {
        let mut soff = 0u64;
        while soff < s.len as u64 {
            let Some(d) = dst.get(di) else {
                return Ok(copied); // caller guaranteed room; never past dst
            };
            let n = (s.len as u64 - soff).min(d.len as u64 - doff);
            if n > 0 {
                dst_mem.copy_from(d.addr + doff, src_mem, s.addr + soff, n)?;
            }
            soff += n;
            doff += n;
            copied += n;
            if doff == d.len as u64 {
                di += 1;
                doff = 0;
            }
        }
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::GuestMemory;

    #[test]
    fn gather_scatter_crosses_piece_boundaries_and_stops_at_dst_end() {
        let a = GuestMemory::create("a", 1 << 16).unwrap();
        let b = GuestMemory::create("b", 1 << 16).unwrap();
        let data: Vec<u8> = (0..100u8).collect();
        a.region().write("t", 1000, &data[..30]).unwrap();
        a.region().write("t", 5000, &data[30..]).unwrap();
        let src = [
            Seg {
                addr: 1000,
                len: 30,
            },
            Seg {
                addr: 5000,
                len: 70,
            },
        ];
        let dst = [
            Seg { addr: 0, len: 12 },
            Seg { addr: 800, len: 50 },
            Seg {
                addr: 3000,
                len: 100,
            },
        ];
        let n = gather_scatter(b.region(), &dst, a.region(), &src).unwrap();
        assert_eq!(n, 100);
        let mut out = vec![0u8; 100];
        b.region().read("t", 0, &mut out[..12]).unwrap();
        b.region().read("t", 800, &mut out[12..62]).unwrap();
        b.region().read("t", 3000, &mut out[62..]).unwrap();
        assert_eq!(out, data);
        // Too little room: copies exactly what fits, never beyond.
        let small = [Seg { addr: 0, len: 40 }];
        assert_eq!(
            gather_scatter(b.region(), &small, a.region(), &src).unwrap(),
            40
        );
    }
}
