//! The `--json` document: everything one run produced, as one object.

use super::advice::Advice;
use super::machine::Machine;
use super::row::Row;
use super::targets::Target;
use serde::Serialize;
use std::path::Path;

/// Everything one run produced; written as the `--json` object.
#[derive(Clone, Debug, Serialize)]
pub struct Document {
    /// The machine.
    pub machine: Machine,
    /// `quick` or `full`.
    pub mode: String,
    /// Runs per cell asked for.
    pub runs: u32,
    /// Wall time of the whole benchmark.
    pub elapsed_s: f64,
    /// What the plan left out, and why.
    pub pruning: Vec<String>,
    /// Packets, pings and copies per run, by kind of measurement.
    pub counts: Vec<(String, u64)>,
    /// The performance targets, checked.
    pub targets: Vec<Target>,
    /// "What to use", derived from `results` (see [`super::advice`]).
    pub advice: Advice,
    /// One row per cell and baseline.
    pub results: Vec<Row>,
    /// Capture cost, drops by reason, wake-up latency ([`super::capture`]).
    pub capture: super::capture::CaptureCost,
}

/// Write the document as pretty JSON.
pub fn write_json(doc: &Document, path: &Path) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(doc).map_err(std::io::Error::other)?;
    std::fs::write(path, text + "\n")
}

/// Read a stats JSON file a launcher or switch of the bench wrote.
pub fn read_stats<T: serde::de::DeserializeOwned>(
    path: &Path,
) -> Result<T, super::error::BenchError> {
    use super::error::BenchError;
    let text = std::fs::read_to_string(path).map_err(|source| BenchError::ReadStats {
        path: path.into(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| BenchError::ParseStats {
        path: path.into(),
        source,
    })
}
