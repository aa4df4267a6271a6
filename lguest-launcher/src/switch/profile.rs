//! `[switch]` in a TOML profile: `lguest-launcher switch --profile FILE`.
//!
//! The section sets what the switch's flags set (flags win); unknown
//! sections and keys are refused with the file, line and what is allowed,
//! as guest profiles are (`cli::profile`).
//!
//! ```toml
//! [switch]
//! sharenet = "eventfd:/run/sharenet/sw"
//! ports = 8
//! tap = "sn0"
//! stats_json = "/var/lib/sharenet/switch.json"
//! notify = "event-idx"
//! queue_size = 256
//! hold_ms = 250
//! mac_table = 4096
//! aging = 300
//! wait = "adaptive"
//! spin_us = 0
//! capture = "/var/lib/sharenet/switch.pcapng"
//! snaplen = 128
//! push = true
//! cpu = 0
//! ```

use crate::cli::config::{Spec, Wait};
use crate::virtq::NotifyMode;
use clap::ValueEnum;
use std::path::{Path, PathBuf};

/// The keys of `[switch]`.
pub const KEYS: [&str; 15] = [
    "sharenet",
    "ports",
    "tap",
    "stats_json",
    "notify",
    "queue_size",
    "hold_ms",
    "mac_table",
    "aging",
    "wait",
    "spin_us",
    "capture",
    "snaplen",
    "push",
    "cpu",
];

/// What a `[switch]` section sets.
#[derive(Debug, Default, Clone)]
pub struct SwitchProfile {
    /// `sharenet`.
    pub sharenet: Option<Spec>,
    /// `ports`.
    pub ports: Option<usize>,
    /// `tap`.
    pub tap: Option<String>,
    /// `stats_json`.
    pub stats_json: Option<PathBuf>,
    /// `notify`.
    pub notify: Option<NotifyMode>,
    /// `queue_size`.
    pub queue_size: Option<u32>,
    /// `hold_ms`.
    pub hold_ms: Option<u64>,
    /// `mac_table`.
    pub mac_table: Option<usize>,
    /// `aging`.
    pub aging: Option<u64>,
    /// `wait`.
    pub wait: Option<Wait>,
    /// `spin_us`.
    pub spin_us: Option<u64>,
    /// `capture`: a pcapng file, one interface per port.
    pub capture: Option<PathBuf>,
    /// `snaplen` (needs `capture`, here or as `--capture`).
    pub snaplen: Option<u32>,
    /// `push`: serve push members' RX rings (`--push on|off`).
    pub push: Option<bool>,
    /// `cpu`: pin the forwarding thread (`--cpu N`).
    pub cpu: Option<usize>,
}

/// `FILE:LINE:` of the first line that starts with `key`.
fn at(file: &Path, text: &str, key: &str) -> String {
    let line = text
        .lines()
        .position(|l| {
            let l = l.trim_start();
            l.starts_with(key) && l[key.len()..].trim_start().starts_with(['=', ']'])
        })
        .map_or(0, |n| n + 1);
    format!("{}:{line}", file.display())
}

/// Read the `[switch]` section of `file`.
pub fn read(file: &Path) -> Result<SwitchProfile, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("--profile {}: cannot read it: {e}", file.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| format!("{}: {}", file.display(), e.message()))?;
    let mut p = SwitchProfile::default();
    for (section, body) in &table {
        if section != "switch" {
            return Err(format!(
                "{}: unknown section `{section}` for a switch; expected switch",
                at(file, &text, &format!("[{section}"))
            ));
        }
        let Some(body) = body.as_table() else {
            return Err(format!("{}: `switch` must be a section", file.display()));
        };
        for (key, v) in body {
            let here = at(file, &text, key);
            let bad = |want: &str| format!("{here}: [switch] {key}: expected {want}, got {v}");
            let int = || {
                v.as_integer()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| bad("a non-negative integer"))
            };
            let string = || v.as_str().ok_or_else(|| bad("a string"));
            match key.as_str() {
                "sharenet" => {
                    p.sharenet = Some(
                        string()?
                            .parse()
                            .map_err(|e| format!("{here}: [switch] sharenet: {e}"))?,
                    )
                }
                "ports" => {
                    let n = int()? as usize;
                    if !(1..=super::MAX_PORTS).contains(&n) {
                        return Err(bad(&format!("1..={}", super::MAX_PORTS)));
                    }
                    p.ports = Some(n);
                }
                "tap" => p.tap = Some(string()?.to_string()),
                "stats_json" => p.stats_json = Some(PathBuf::from(string()?)),
                "notify" => {
                    p.notify = Some(
                        NotifyMode::from_str(string()?, true)
                            .map_err(|_| bad("always, flags or event-idx"))?,
                    )
                }
                "queue_size" => {
                    p.queue_size = Some(
                        crate::cli::parse_queue_size(&int()?.to_string())
                            .map_err(|e| format!("{here}: [switch] queue_size: {e}"))?,
                    )
                }
                "hold_ms" => p.hold_ms = Some(int()? as u64),
                "mac_table" => p.mac_table = Some(int()? as usize),
                "aging" => p.aging = Some(int()? as u64),
                "wait" => {
                    p.wait = Some(
                        Wait::from_str(string()?, true)
                            .map_err(|_| bad("sleep, spin or adaptive"))?,
                    )
                }
                "spin_us" => p.spin_us = Some(int()? as u64),
                "capture" => p.capture = Some(PathBuf::from(string()?)),
                "snaplen" => {
                    p.snaplen = Some(
                        crate::cli::parse_snaplen(&int()?.to_string())
                            .map_err(|e| format!("{here}: [switch] snaplen: {e}"))?,
                    )
                }
                "push" => p.push = Some(v.as_bool().ok_or_else(|| bad("true or false"))?),
                "cpu" => p.cpu = Some(int()? as usize),
                _ => {
                    return Err(format!(
                        "{here}: unknown key `{key}` in [switch]; expected one of {}",
                        KEYS.join(", ")
                    ))
                }
            }
        }
    }
    Ok(p)
}
