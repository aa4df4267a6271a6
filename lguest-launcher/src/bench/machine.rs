//! The machine the numbers come from, as /proc tells it.

use serde::Serialize;
use std::time::SystemTime;

/// The machine the numbers come from.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// CPUs this process may use.
    pub cpus: usize,
    /// `model name` from /proc/cpuinfo.
    pub model: String,
    /// Kernel release.
    pub kernel: String,
    /// Total memory in GiB.
    pub memory_gib: f64,
    /// When the run finished, UTC, ISO 8601 (`YYYY-MM-DDTHH:MM:SSZ`).
    pub date: String,
}

impl Machine {
    /// Read what /proc tells about this machine.
    pub fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let memory_gib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
            .map(|kb| (kb / 1024.0 / 1024.0 * 10.0).round() / 10.0)
            .unwrap_or(0.0);
        Machine {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            model,
            kernel,
            memory_gib,
            date: utc_now(),
        }
    }
}

/// Now as `YYYY-MM-DDTHH:MM:SSZ` (RFC 3339, UTC, whole seconds).
fn utc_now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_is_rfc3339_utc_in_whole_seconds() {
        let d = utc_now();
        assert_eq!(d.len(), "2024-01-02T03:04:05Z".len(), "{d}");
        assert!(d.ends_with('Z') && d.as_bytes()[10] == b'T', "{d}");
        assert_eq!(
            humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH).to_string(),
            "1970-01-01T00:00:00Z"
        );
    }
}
