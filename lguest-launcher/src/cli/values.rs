//! Checked values: each flag's (and profile key's) range, its parser, and
//! [`ValueError`] naming what was expected.

use crate::guest::frame::MIN_FRAME;
use crate::guest::plan::MAX_FRAME;

/// A flag or profile value that is not allowed. clap prints it after
/// `invalid value 'X' for '--flag'`; a profile after `FILE:LINE:COL: [section] key: `.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ValueError {
    /// Not a number at all.
    #[error("`{got}` is not a number; expected {expected}")]
    NotANumber {
        /// What was written.
        got: String,
        /// What is allowed, in words.
        expected: &'static str,
    },
    /// A number outside the allowed range.
    #[error("{got} is out of range; expected {expected}")]
    OutOfRange {
        /// The number as written.
        got: String,
        /// What is allowed, in words.
        expected: &'static str,
    },
    /// A queue size that is not a power of two from 1 to 32768.
    #[error("{0} is not a power of two from 1 to 32768 (try 256)")]
    NotPowerOfTwo(i128),
}

pub(super) const COUNT_RANGE: &str = "at least 1";
pub(super) const RUN_COUNT_RANGE: &str =
    "at least 1 (0 for a sink: until the sender's end of stream)";
pub(super) const CPU_RANGE: &str = "a CPU number from 0";
pub(super) const SECS_RANGE: &str = "seconds in (0, 86400]";
pub(super) const MEMORY_RANGE: &str = "1..=65536 MiB";
/// `MIN_FRAME..=MAX_FRAME` in words (a unit test keeps them in step).
pub(super) const SIZE_RANGE: &str = "16..=65535 bytes";

pub(super) fn int(s: &str, expected: &'static str) -> Result<i128, ValueError> {
    s.trim().parse().map_err(|_| ValueError::NotANumber {
        got: s.into(),
        expected,
    })
}

pub(super) fn out_of_range(got: impl ToString, expected: &'static str) -> ValueError {
    ValueError::OutOfRange {
        got: got.to_string(),
        expected,
    }
}

/// Packets (`--count`, `count`): at least 1.
pub fn check_count(n: i128) -> Result<u64, ValueError> {
    u64::try_from(n)
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| out_of_range(n, COUNT_RANGE))
}

/// Packets of one side of a pair (`--count`, `[workload] count`): 0 is
/// allowed here and refused later for every workload but `sink` (see
/// [`UsageError::ZeroCount`](super::UsageError::ZeroCount)).
pub fn check_run_count(n: i128) -> Result<u64, ValueError> {
    u64::try_from(n).map_err(|_| out_of_range(n, RUN_COUNT_RANGE))
}

/// Frame size (`--size`, `size`): 16..=65535 bytes.
pub fn check_size(n: i128) -> Result<u32, ValueError> {
    if (MIN_FRAME as i128..=MAX_FRAME as i128).contains(&n) {
        Ok(n as u32)
    } else {
        Err(out_of_range(n, SIZE_RANGE))
    }
}

/// Guest memory (`--memory`, `memory_mib`): 1..=65536 MiB.
pub fn check_memory(n: i128) -> Result<u64, ValueError> {
    if (1..=65536).contains(&n) {
        Ok(n as u64)
    } else {
        Err(out_of_range(n, MEMORY_RANGE))
    }
}

/// Ring entries (`--queue-size`, `queue_size`): a power of two, 1..=32768.
pub fn check_queue_size(n: i128) -> Result<u32, ValueError> {
    match u32::try_from(n) {
        Ok(q) if q.is_power_of_two() && q <= 32768 => Ok(q),
        _ => Err(ValueError::NotPowerOfTwo(n)),
    }
}

/// Seconds (`--timeout`, `timeout`): in (0, 86400].
pub fn check_secs(v: f64) -> Result<f64, ValueError> {
    if v > 0.0 && v <= 86400.0 {
        Ok(v)
    } else {
        Err(out_of_range(v, SECS_RANGE))
    }
}

/// CPU number (`--cpu`, `cpu`): a whole number from 0; whether this
/// machine has that CPU is checked with the other settings
/// ([`UsageError::NoSuchCpu`](super::UsageError::NoSuchCpu)).
pub fn check_cpu(n: i128) -> Result<usize, ValueError> {
    usize::try_from(n).map_err(|_| out_of_range(n, CPU_RANGE))
}

/// `--cpu`.
pub fn parse_cpu(s: &str) -> Result<usize, ValueError> {
    check_cpu(int(s, CPU_RANGE)?)
}

/// CPUs this machine has online.
pub fn online_cpus() -> usize {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN) {
        Ok(Some(n)) if n > 0 => n as usize,
        _ => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

/// Is `cpu` one this process may run on (online, and in its affinity mask)?
pub fn cpu_allowed(cpu: usize) -> bool {
    use nix::sched::{sched_getaffinity, CpuSet};
    if cpu >= CpuSet::count() {
        return false;
    }
    match sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => set.is_set(cpu).unwrap_or(false),
        Err(_) => cpu < online_cpus(),
    }
}

/// `--count`, `--pings`.
pub fn parse_count(s: &str) -> Result<u64, ValueError> {
    check_count(int(s, "a whole number, at least 1")?)
}

/// `--count` of one side of a pair: 0 passes here (see [`check_run_count`]).
pub fn parse_run_count(s: &str) -> Result<u64, ValueError> {
    check_run_count(int(s, "a whole number")?)
}

/// `--size`.
pub fn parse_size(s: &str) -> Result<u32, ValueError> {
    check_size(int(s, SIZE_RANGE)?)
}

/// `--memory`.
pub fn parse_memory(s: &str) -> Result<u64, ValueError> {
    check_memory(int(s, MEMORY_RANGE)?)
}

/// `--queue-size`: a power of two, 1..=32768.
pub fn parse_queue_size(s: &str) -> Result<u32, ValueError> {
    check_queue_size(int(s, "a power of two from 1 to 32768")?)
}

/// `--timeout`.
pub fn parse_secs(s: &str) -> Result<f64, ValueError> {
    let v: f64 = s.trim().parse().map_err(|_| ValueError::NotANumber {
        got: s.into(),
        expected: SECS_RANGE,
    })?;
    check_secs(v)
}

/// `--snaplen` in words.
pub(super) const SNAPLEN_RANGE: &str = "64..=65535 bytes";

/// `--snaplen` (`[net] snaplen`): bytes kept per captured frame, 64..=65535.
pub fn check_snaplen(n: i128) -> Result<u32, ValueError> {
    if (64..=65535).contains(&n) {
        Ok(n as u32)
    } else {
        Err(out_of_range(n, SNAPLEN_RANGE))
    }
}

/// `--snaplen`.
pub fn parse_snaplen(s: &str) -> Result<u32, ValueError> {
    check_snaplen(int(s, SNAPLEN_RANGE)?)
}

/// `--mtu` in words.
pub(super) const MTU_RANGE: &str = "68..=65535 bytes (IPv4's minimum to the largest IP packet)";

/// `--mtu` (`[net] mtu`): the link's MTU, 68..=65535 bytes.
pub fn check_mtu(n: i128) -> Result<u32, ValueError> {
    if (68..=65535).contains(&n) {
        Ok(n as u32)
    } else {
        Err(out_of_range(n, MTU_RANGE))
    }
}

/// `--mtu`.
pub fn parse_mtu(s: &str) -> Result<u32, ValueError> {
    check_mtu(int(s, MTU_RANGE)?)
}
