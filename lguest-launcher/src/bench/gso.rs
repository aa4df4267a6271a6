//! The offload cells: a `--gso` stream of 64 KiB TCP GSO frames (1500-byte
//! MTU, so 45 segments each) into a sink that takes them whole
//! (`--offloads on`, `stream-gso-on`) or has its launcher segment them and
//! complete every checksum in software (`--offloads off`,
//! `stream-gso-off`), same transport and modes, same run. The report gives
//! both rates and what segmenting costs: the ratio of the two, and the
//! extra CPU per payload byte (both processes).

use super::json::Document;
use super::row::Row;
use std::fmt::Write as _;

/// `--size` of the GSO cells: the TCP payload of one GSO frame.
pub const SIZE: u32 = 65000;
/// GSO frames per run (quick, full).
pub const FRAMES: (u64, u64) = (10_000, 20_000);
/// The row name of the whole-frame cell.
pub const ON: &str = "stream-gso-on";
/// The row name of the segmented cell.
pub const OFF: &str = "stream-gso-off";

/// CPU seconds (both processes) per payload byte of `r`, in ns.
fn cpu_ns_per_byte(r: &Row) -> Option<f64> {
    r.metrics
        .cpu_s_per_mpkt
        .map(|s| s / 1e6 / f64::from(r.key.size) * 1e9)
}

/// The Markdown section (nothing when the run had no GSO cells).
pub fn section(s: &mut String, doc: &Document) {
    let find = |name: &str| {
        doc.results
            .iter()
            .find(|r| r.is_cell() && r.key.workload == name)
    };
    let (Some(on), Some(off)) = (find(ON), find(OFF)) else {
        return;
    };
    let _ = writeln!(s, "\n## Offloads: 64 KiB GSO frames, whole or segmented\n");
    let _ = writeln!(
        s,
        "`--gso` stream of {SIZE}-byte TCP payloads (MTU 1500: 45 segments each) on {}, \
         spin, median of the runs. `on`: the sink's guest takes TSO, frames cross whole; \
         `off`: its launcher cuts each into segments and completes every checksum before \
         delivery. CPU is both processes'.\n",
        on.key.transport
    );
    let _ = writeln!(s, "| cell | Gbit/s | GSO frames/s | CPU ns/byte | runs |");
    let _ = writeln!(s, "|---|--:|--:|--:|--:|");
    for r in [on, off] {
        let two = |v: Option<f64>| v.map_or("–".into(), |x| format!("{x:.2}"));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            r.key.workload,
            two(r.metrics.gbps),
            r.metrics
                .mpps
                .map_or("–".into(), |m| format!("{:.0}", m * 1e6)),
            two(cpu_ns_per_byte(r)),
            r.runs
        );
    }
    if let (Some(a), Some(b)) = (on.metrics.gbps, off.metrics.gbps) {
        let extra = match (cpu_ns_per_byte(on), cpu_ns_per_byte(off)) {
            (Some(x), Some(y)) => format!(
                "; software segmentation adds {:.2} ns of CPU per byte",
                y - x
            ),
            _ => String::new(),
        };
        let _ = writeln!(s, "\nSegmented / whole throughput: {:.2}×{extra}.", b / a);
    }
}
