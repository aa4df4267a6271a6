//! `--capture` and `--snaplen` for the subcommands that take them as
//! they are (`vhost-user`, `switch`); the launcher's own pair also comes
//! from a profile and lives in `cli::args`.

use super::{CaptureConfig, DEFAULT_SNAPLEN};
use std::path::PathBuf;

/// `--capture FILE.pcapng [--snaplen BYTES]`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CaptureArgs {
    /// Write a pcapng capture here: frames with nanosecond timestamps,
    /// every drop as a packet whose comment names the reason. Off the hot
    /// path: a full queue skips records and says so.
    #[arg(long, value_name = "FILE.pcapng", value_hint = clap::ValueHint::FilePath)]
    pub capture: Option<PathBuf>,
    /// Bytes kept per captured frame, 64..=65535 (needs --capture) [default: 65535].
    #[arg(long, value_name = "BYTES", value_parser = crate::cli::parse_snaplen, requires = "capture")]
    pub snaplen: Option<u32>,
}

impl CaptureArgs {
    /// The capture asked for, if any.
    pub fn config(&self) -> Option<CaptureConfig> {
        self.capture.as_ref().map(|path| CaptureConfig {
            path: path.clone(),
            snaplen: self.snaplen.unwrap_or(DEFAULT_SNAPLEN),
        })
    }
}
