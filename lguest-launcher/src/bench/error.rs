//! [`BenchError`]: why one run of a cell or baseline produced no figures.
//!
//! A failed run does not stop the benchmark: [`super::measure::measure`]
//! counts it, and the first failure of a row goes into its `error` field
//! (the error's text) and the report's "Failures" list.

use std::path::PathBuf;
use std::process::ExitStatus;

/// What went wrong in one run of a cell or baseline.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A process of the pair could not be started.
    #[error("cannot start {program}: {source}")]
    Start {
        /// The program we tried to run.
        program: String,
        /// What `spawn` said.
        source: std::io::Error,
    },
    /// A process of the pair outlived the pair's deadline and was killed.
    #[error("{who} killed at the deadline")]
    Killed {
        /// Which side (`sink`, `ping`, `lead`, ...).
        who: String,
    },
    /// A process of the pair exited unsuccessfully.
    #[error("{who} failed ({status}){}", last_line.as_ref().map(|l| format!(": {l}")).unwrap_or_default())]
    Exited {
        /// Which side.
        who: String,
        /// Its exit status.
        status: ExitStatus,
        /// The last non-empty line it wrote on stderr, if any.
        last_line: Option<String>,
    },
    /// A launcher's `--stats-json` file could not be read.
    #[error("{}: {source}", path.display())]
    ReadStats {
        /// The stats file.
        path: PathBuf,
        /// What reading it said.
        source: std::io::Error,
    },
    /// A launcher's `--stats-json` file is not a stats object.
    #[error("{}: {source}", path.display())]
    ParseStats {
        /// The stats file.
        path: PathBuf,
        /// What the parser said.
        source: serde_json::Error,
    },
    /// A side of a sharenet pair lost or corrupted packets.
    #[error("side {side} lost or corrupted {count} packets ({result})")]
    Lost {
        /// `a` (the measuring side) or `b` (its peer).
        side: &'static str,
        /// Lost plus corrupted.
        count: u64,
        /// The side's own `result` line.
        result: String,
    },
    /// The measuring side received fewer packets than the cell sends.
    #[error("received {received} of {expected} packets")]
    Short {
        /// Packets received.
        received: u64,
        /// Packets the cell sends.
        expected: u64,
    },
    /// The stats gave no elapsed time to divide by.
    #[error("no elapsed time in the stats")]
    NoElapsed,
    /// The ping side's stats have no round-trip percentiles.
    #[error("the ping side reported no round-trip times")]
    NoRoundTrips,
    /// A `bench-child` printed no JSON report line.
    #[error("{who} printed no report")]
    NoReport {
        /// `lead` or `peer`.
        who: &'static str,
    },
    /// A `bench-child`'s report line did not parse.
    #[error("{who} report: {source}")]
    BadReport {
        /// `lead` or `peer`.
        who: &'static str,
        /// What the parser said.
        source: serde_json::Error,
    },
    /// A baseline's lead measured no packets or no time.
    #[error("the lead measured nothing")]
    NothingMeasured,
    /// A step of the `devq` measurement failed (set-up, or a queue
    /// operation that an honest ring should never fail).
    #[error("devq {step}: {detail}")]
    Devq {
        /// The step: `memfd`, `read_chain`, `add_used`, ...
        step: &'static str,
        /// What the step's error said.
        detail: String,
    },
}
