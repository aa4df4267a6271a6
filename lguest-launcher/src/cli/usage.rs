//! Usage errors (exit 2, one line naming the flag or profile key and the
//! fix) and the check that a rendezvous can be created where `--sharenet`
//! points, before any transport makes its own names there.

use crate::cli::config::Spec;
use std::path::{Path, PathBuf};

/// A usage error in the merged flags and profile: exit 2, one line naming
/// the flag (or profile key) and the value at fault.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// `--cpu N` (or `cpu` in a profile's `[guest]` or `[switch]`) names a
    /// CPU this process cannot run on.
    #[error(
        "--cpu {cpu} (or cpu in a profile's [{section}]): this machine has {online} CPUs (0..={last}){allowed}; pick one of them or leave --cpu out",
        last = online.saturating_sub(1),
        allowed = if *cpu < *online { " and this process may not run on that one" } else { "" }
    )]
    NoSuchCpu {
        /// The CPU asked for.
        cpu: usize,
        /// CPUs online.
        online: usize,
        /// The profile section with the `cpu` key: `guest` or `switch`.
        section: &'static str,
    },
    /// `--gso` on a workload other than `stream`.
    #[error(
        "--gso (or gso = true in a profile's [workload]) only means something for a stream; a {workload} receives GSO frames without it"
    )]
    GsoNotStream {
        /// The workload in force.
        workload: &'static str,
    },
    /// `--gso` with `--payload stamp`.
    #[error(
        "--gso with --payload stamp (or payload = \"stamp\" in a profile's [workload]): GSO frames carry the full pattern; use --payload verify (the default) on both sides"
    )]
    GsoStamp,
    /// `--gso` with a `--size` that does not fit one IP packet.
    #[error(
        "--size {size} with --gso: the TCP payload of one GSO frame is at most {max} bytes (65535 less the Ethernet, IPv4 and TCP headers); lower --size"
    )]
    GsoSizeTooLarge {
        /// `--size`.
        size: u32,
        /// The largest allowed.
        max: u32,
    },
    /// `--snaplen` without `--capture`.
    #[error(
        "--snaplen {0} needs --capture FILE.pcapng (or capture = \"FILE.pcapng\" in a profile's [net]); add one or leave --snaplen out"
    )]
    SnaplenWithoutCapture(u32),
    /// Neither `--sharenet` nor a profile's `sharenet`.
    #[error(
        "missing --sharenet KIND:PATH (e.g. --sharenet fifo:/tmp/sn0, or `sharenet = ...` in a profile's [net]); or run `lguest-launcher demo`"
    )]
    MissingSharenet,
    /// `--memory` given, but too small for the rings and buffers.
    #[error(
        "--memory {memory_mib} MiB is too small for --queue-size {queue_size} (or memory_mib/queue_size in a profile's [guest]): the rings and buffers need {need} MiB; raise --memory, lower --queue-size, or leave --memory out (its default follows --queue-size)"
    )]
    MemoryTooSmall {
        /// The memory asked for.
        memory_mib: u64,
        /// The queue size in force.
        queue_size: u32,
        /// What the layout needs.
        need: u64,
    },
    /// `--count 0` for a workload other than `sink`.
    #[error(
        "--count 0 (or count = 0 in a profile's [workload]) only means something for a sink (receive until the sender's end of stream); a {workload} needs at least 1"
    )]
    ZeroCount {
        /// The workload in force.
        workload: &'static str,
    },
    /// The rendezvous path's directory does not exist.
    #[error(
        "--sharenet {spec}: the directory {} does not exist; create it or choose a path in an existing directory",
        dir.display()
    )]
    NoSuchDirectory {
        /// The spec as the user gave it.
        spec: Spec,
        /// Its directory.
        dir: PathBuf,
    },
    /// The rendezvous path's "directory" is something else.
    #[error("--sharenet {spec}: {} is not a directory", dir.display())]
    NotADirectory {
        /// The spec as the user gave it.
        spec: Spec,
        /// Its would-be directory.
        dir: PathBuf,
    },
    /// The rendezvous cannot be created in its directory.
    #[error(
        "--sharenet {spec}: cannot create the rendezvous in {}: not a writable directory",
        dir.display()
    )]
    NotWritable {
        /// The spec as the user gave it.
        spec: Spec,
        /// Its directory.
        dir: PathBuf,
        /// What the probe met.
        #[source]
        source: std::io::Error,
    },
}

/// Can the transport create its rendezvous next to `spec.path`? Checked
/// before connecting so the message names the user's path, not one of the
/// transport's temporary names. `access(2)` alone is not enough: root
/// passes it even for `/proc`, so we also try to create a file there,
/// nameless (`O_TMPFILE`) where the file system allows it.
pub fn check_rendezvous(spec: &Spec) -> Result<(), UsageError> {
    let dir = match spec.path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let meta = match std::fs::metadata(&dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(UsageError::NoSuchDirectory {
                spec: spec.clone(),
                dir,
            })
        }
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOTDIR) => {
            return Err(UsageError::NotADirectory {
                spec: spec.clone(),
                dir,
            })
        }
        Err(source) => {
            return Err(UsageError::NotWritable {
                spec: spec.clone(),
                dir,
                source,
            })
        }
    };
    if !meta.is_dir() {
        return Err(UsageError::NotADirectory {
            spec: spec.clone(),
            dir,
        });
    }
    probe_writable(&dir).map_err(|source| UsageError::NotWritable {
        spec: spec.clone(),
        dir,
        source,
    })
}

fn probe_writable(dir: &Path) -> std::io::Result<()> {
    use nix::unistd::{access, AccessFlags};
    use std::os::unix::fs::OpenOptionsExt;
    access(dir, AccessFlags::W_OK | AccessFlags::X_OK)?;
    let nameless = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_TMPFILE)
        .mode(0o600)
        .open(dir);
    match nameless {
        Ok(_) => return Ok(()),
        Err(e)
            if !matches!(
                e.raw_os_error(),
                Some(nix::libc::EOPNOTSUPP | nix::libc::EISDIR | nix::libc::EINVAL)
            ) =>
        {
            return Err(e)
        }
        Err(_) => {} // no O_TMPFILE here: probe with a name
    }
    let probe = dir.join(format!(".sharenet-probe.{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}
