//! TOML guest profiles (`--profile FILE.toml`).
//!
//! A profile sets what the flags set; flags win. Reading one is two steps:
//! toml parses the text into tables whose every key and value carries its
//! byte span ([`toml::Spanned`]), then each key is checked against the
//! sections we know and each value against the same checks the flags use
//! (`check_count`, `check_queue_size`, ...). A refusal is a
//! [`ProfileError`] that names the file, line and column (from the span),
//! the section and key, and what is allowed, e.g.
//!
//! ```text
//! profiles/left.toml:4:1: unknown key `bogus_key` in [guest]; expected one of name, memory_mib, queue_size, cpu
//! profiles/left.toml:3:1: [guest] memory_mib: expected an integer (MiB), got the string "64"
//! profiles/left.toml:5:2: unknown section `nett`; expected one of guest, net, workload
//! ```

use crate::cli::config::{
    Offloads, Payload, Settings, Share, Spec, SpecError, Wait, Workload, Writes,
};
use crate::cli::{
    check_cpu, check_memory, check_mtu, check_queue_size, check_run_count, check_secs, check_size,
    check_snaplen, RunArgs, ValueError,
};
use crate::virtq::NotifyMode;
use clap::ValueEnum;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use toml::{Spanned, Value};

/// The sections of a profile and their keys, in the order `--print-config`
/// writes them.
const SECTIONS: [(&str, &[&str]); 3] = [
    ("guest", &["name", "memory_mib", "queue_size", "cpu"]),
    (
        "net",
        &[
            "sharenet",
            "notify",
            "writes",
            "wait",
            "reconnect",
            "share",
            "capture",
            "snaplen",
            "mtu",
            "offloads",
        ],
    ),
    (
        "workload",
        &["kind", "count", "size", "payload", "timeout", "gso"],
    ),
];

fn section_names() -> String {
    SECTIONS.map(|(s, _)| s).join(", ")
}

fn keys_of(section: &str) -> String {
    SECTIONS
        .iter()
        .find(|(s, _)| *s == section)
        .map_or(String::new(), |(_, keys)| keys.join(", "))
}

/// The section `key` belongs in, if it is one of ours.
fn home_of(key: &str) -> Option<&'static str> {
    SECTIONS
        .iter()
        .find(|(_, keys)| keys.contains(&key))
        .map(|(s, _)| *s)
}

/// `[guest]`
#[derive(Debug, Default, Clone)]
pub struct GuestSection {
    /// Guest name.
    pub name: Option<String>,
    /// Guest memory in MiB.
    pub memory_mib: Option<u64>,
    /// Entries per ring.
    pub queue_size: Option<u32>,
    /// CPU to pin the busy thread to.
    pub cpu: Option<usize>,
}

/// `[net]`
#[derive(Debug, Default, Clone)]
pub struct NetSection {
    /// `KIND:PATH`.
    pub sharenet: Option<Spec>,
    /// Notification suppression.
    pub notify: Option<NotifyMode>,
    /// Notification write behaviour.
    pub writes: Option<Writes>,
    /// Idle behaviour.
    pub wait: Option<Wait>,
    /// Survive the peer leaving (`--reconnect`).
    pub reconnect: Option<bool>,
    /// What memory the peer may map (`--share`).
    pub share: Option<Share>,
    /// `--capture FILE.pcapng`.
    pub capture: Option<PathBuf>,
    /// `--snaplen BYTES`.
    pub snaplen: Option<u32>,
    /// `--mtu BYTES`.
    pub mtu: Option<u32>,
    /// `--offloads on|off`.
    pub offloads: Option<Offloads>,
}

/// `[workload]`
#[derive(Debug, Default, Clone)]
pub struct WorkloadSection {
    /// What the guest does.
    pub kind: Option<Workload>,
    /// Packets.
    pub count: Option<u64>,
    /// Frame size in bytes.
    pub size: Option<u32>,
    /// What frames carry.
    pub payload: Option<Payload>,
    /// Seconds.
    pub timeout: Option<f64>,
    /// `--gso`.
    pub gso: Option<bool>,
}

/// A whole profile file, every value checked.
#[derive(Debug, Default, Clone)]
pub struct Profile {
    /// `[guest]`
    pub guest: GuestSection,
    /// `[net]`
    pub net: NetSection,
    /// `[workload]`
    pub workload: WorkloadSection,
}

mod error;
pub mod find;
mod merge;
#[cfg(test)]
mod tests;

use error::{boolean, choice, integer, seconds, string};
use error::{describe, Problem};
pub use error::{Location, ProfileError, ValueProblem};
pub use merge::{merge, Merged, Source};

/// Maps byte offsets of one text to locations.
struct Text<'a> {
    src: &'a str,
    file: &'a Path,
}

impl Text<'_> {
    fn at(&self, offset: usize) -> Location {
        let mut at = offset.min(self.src.len());
        while !self.src.is_char_boundary(at) {
            at -= 1;
        }
        let before = &self.src[..at];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let count = |n: usize| u32::try_from(n + 1).unwrap_or(u32::MAX);
        Location {
            file: self.file.into(),
            line: count(before.matches('\n').count()),
            col: count(before[line_start..].chars().count()),
        }
    }
}

type Entries = BTreeMap<Spanned<String>, Spanned<Value>>;

/// Entries in the order they are written, so the first error reported is
/// the first in the file.
fn in_file_order(entries: Entries) -> Vec<(Spanned<String>, Spanned<Value>)> {
    let mut v: Vec<_> = entries.into_iter().collect();
    v.sort_by_key(|(k, _)| k.span().start);
    v
}

impl Profile {
    /// Read and parse `path`. Every failure names the file (and the line).
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let src = std::fs::read_to_string(path).map_err(|source| ProfileError::Io {
            file: path.to_path_buf(),
            source,
        })?;
        Self::parse(&src, path)
    }

    /// Parse profile text; `path` is used in messages.
    pub fn parse(src: &str, path: &Path) -> Result<Profile, ProfileError> {
        let text = Text { src, file: path };
        let syntax = |e: toml::de::Error| ProfileError::Syntax {
            at: text.at(e.span().map_or(0, |s| s.start)),
            message: e.message().trim().replace('\n', "; "),
        };
        // Step 1: the top level -- only our sections, each a table.
        let top: Entries = toml::from_str(src).map_err(syntax)?;
        for (name, value) in in_file_order(top) {
            let at = text.at(name.span().start);
            let name = name.into_inner();
            let known = SECTIONS.iter().any(|(s, _)| *s == name);
            match (known, value.get_ref()) {
                (true, Value::Table(_)) => {}
                (true, other) => {
                    return Err(ProfileError::NotASection {
                        at,
                        got: describe(other),
                        key: name,
                    })
                }
                (false, Value::Table(_)) => {
                    return Err(ProfileError::UnknownSection { at, section: name })
                }
                (false, _) => {
                    return Err(ProfileError::UnknownKey {
                        at,
                        section: None,
                        belongs_in: home_of(&name),
                        key: name,
                    })
                }
            }
        }
        // Step 2: each section's keys, with their spans.
        let sections: BTreeMap<String, Entries> = toml::from_str(src).map_err(syntax)?;
        let mut keys: Vec<_> = SECTIONS
            .iter()
            .filter_map(|(section, _)| Some((*section, sections.get(*section)?)))
            .flat_map(|(section, entries)| entries.iter().map(move |(k, v)| (section, k, v)))
            .collect();
        keys.sort_by_key(|(_, k, _)| k.span().start);
        let mut p = Profile::default();
        for (section, key, value) in keys {
            let at = text.at(key.span().start);
            let key = key.get_ref().clone();
            match p.set(section, &key, value.get_ref()) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(ProfileError::UnknownKey {
                        at,
                        section: Some(section.to_owned()),
                        belongs_in: home_of(&key),
                        key,
                    })
                }
                Err(problem) => return Err(problem.placed(at, section, key, value.get_ref())),
            }
        }
        Ok(p)
    }

    /// Set `[section] key` from `v`; `Ok(false)` when the key is not one of
    /// the section's.
    fn set(&mut self, section: &str, key: &str, v: &Value) -> Result<bool, Problem> {
        let (g, n, w) = (&mut self.guest, &mut self.net, &mut self.workload);
        match (section, key) {
            ("guest", "name") => g.name = Some(string(v, "a name")?.to_owned()),
            ("guest", "memory_mib") => g.memory_mib = Some(check_memory(integer(v, "MiB")?)?),
            ("guest", "queue_size") => {
                g.queue_size = Some(check_queue_size(integer(v, "ring entries")?)?)
            }
            ("guest", "cpu") => g.cpu = Some(check_cpu(integer(v, "a CPU number")?)?),
            ("net", "sharenet") => n.sharenet = Some(string(v, "KIND:PATH")?.parse()?),
            ("net", "notify") => n.notify = Some(choice(v)?),
            ("net", "writes") => n.writes = Some(choice(v)?),
            ("net", "wait") => n.wait = Some(choice(v)?),
            ("net", "reconnect") => n.reconnect = Some(boolean(v)?),
            ("net", "share") => n.share = Some(choice(v)?),
            ("net", "capture") => n.capture = Some(PathBuf::from(string(v, "a FILE.pcapng path")?)),
            ("net", "snaplen") => n.snaplen = Some(check_snaplen(integer(v, "bytes")?)?),
            ("net", "mtu") => n.mtu = Some(check_mtu(integer(v, "bytes")?)?),
            ("net", "offloads") => n.offloads = Some(choice(v)?),
            ("workload", "kind") => w.kind = Some(choice(v)?),
            ("workload", "count") => w.count = Some(check_run_count(integer(v, "packets")?)?),
            ("workload", "size") => w.size = Some(check_size(integer(v, "bytes")?)?),
            ("workload", "payload") => w.payload = Some(choice(v)?),
            ("workload", "timeout") => w.timeout = Some(check_secs(seconds(v)?)?),
            ("workload", "gso") => w.gso = Some(boolean(v)?),
            _ => return Ok(false),
        }
        Ok(true)
    }
}
