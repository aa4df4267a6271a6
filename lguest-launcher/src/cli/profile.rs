//! TOML guest profiles (`--profile FILE.toml`).
//!
//! A profile sets what the flags set; flags win. Unknown keys and bad
//! values are refused with the file, line and column, the key, and what is
//! allowed, e.g.
//! `profiles/left.toml:4:1: unknown key `bogus_key` in [guest]; expected one of name, memory_mib, queue_size`.

use crate::cli::config::{Notify, Spec, Wait, Workload, Writes};
use crate::cli::{parse_queue_size, RunArgs};
use crate::guest::frame::MIN_FRAME;
use crate::guest::plan::MAX_FRAME;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// `[guest]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestSection {
    /// Guest name.
    pub name: Option<String>,
    /// Guest memory in MiB.
    pub memory_mib: Option<i64>,
    /// Entries per ring.
    pub queue_size: Option<i64>,
}

/// `[net]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetSection {
    /// `KIND:PATH`.
    pub sharenet: Option<String>,
    /// Notification suppression.
    pub notify: Option<Notify>,
    /// Notification write behaviour.
    pub writes: Option<Writes>,
    /// Idle behaviour.
    pub wait: Option<Wait>,
}

/// `[workload]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSection {
    /// What the guest does.
    pub kind: Option<Workload>,
    /// Packets.
    pub count: Option<i64>,
    /// Frame size in bytes.
    pub size: Option<i64>,
    /// Seconds.
    pub timeout: Option<f64>,
}

/// A whole profile file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// `[guest]`
    #[serde(default)]
    pub guest: GuestSection,
    /// `[net]`
    #[serde(default)]
    pub net: NetSection,
    /// `[workload]`
    #[serde(default)]
    pub workload: WorkloadSection,
}

/// A profile that cannot be used; the message is complete and one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileError(pub String);

impl std::error::Error for ProfileError {}

impl std::fmt::Display for ProfileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// 1-based line and column of byte offset `at` in `src`.
fn line_col(src: &str, at: usize) -> (usize, usize) {
    let at = at.min(src.len());
    let before = &src[..at];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

/// The `[section]` in force at byte offset `at`.
fn section_at(src: &str, at: usize) -> Option<String> {
    src[..at.min(src.len())]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string())
}

/// Byte offset of `key = ...` inside `[section]`, for value errors.
fn key_offset(src: &str, section: &str, key: &str) -> Option<usize> {
    let mut current = String::new();
    let mut off = 0;
    for line in src.split_inclusive('\n') {
        let t = line.trim();
        if t.starts_with('[') && t.ends_with(']') {
            current = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
        } else if current == section {
            if let Some((k, _)) = t.split_once('=') {
                if k.trim() == key {
                    return Some(off + (line.len() - line.trim_start().len()));
                }
            }
        }
        off += line.len();
    }
    None
}

/// Turn serde's "unknown field `x`, expected one of `a`, `b`" into ours.
fn rewrite_message(msg: &str, section: Option<&str>) -> String {
    let msg = msg.trim();
    if let Some(rest) = msg.strip_prefix("unknown field ") {
        let (key, expected) = rest.split_once(", expected").unwrap_or((rest, ""));
        let expected = expected
            .trim_start_matches(" one of")
            .trim_start_matches(' ')
            .replace('`', "");
        let place = match section {
            Some(s) => format!(" in [{s}]"),
            None => " at top level".into(),
        };
        let key = key.replace('`', "");
        return format!("unknown key `{key}`{place}; expected one of {expected}");
    }
    if let Some(rest) = msg.strip_prefix("unknown variant ") {
        let (v, expected) = rest.split_once(", expected").unwrap_or((rest, ""));
        let expected = expected
            .trim_start_matches(" one of")
            .trim_start_matches(' ')
            .replace('`', "");
        return format!("unknown value {v}; expected one of {expected}");
    }
    msg.to_string()
}

impl Profile {
    /// Read and parse `path`. Every failure names the file (and the line).
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let src = std::fs::read_to_string(path)
            .map_err(|e| ProfileError(format!("{}: cannot read profile: {e}", path.display())))?;
        Self::parse(&src, path)
    }

    /// Parse profile text; `path` is used in messages.
    pub fn parse(src: &str, path: &Path) -> Result<Profile, ProfileError> {
        let p: Profile = toml::from_str(src).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start);
            let (line, col) = line_col(src, at);
            let section = section_at(src, at);
            let msg = rewrite_message(e.message(), section.as_deref());
            ProfileError(format!("{}:{line}:{col}: {msg}", path.display()))
        })?;
        p.validate(src, path)?;
        Ok(p)
    }

    fn validate(&self, src: &str, path: &Path) -> Result<(), ProfileError> {
        let err = |section: &str, key: &str, msg: String| {
            let at = key_offset(src, section, key).unwrap_or(0);
            let (line, col) = line_col(src, at);
            Err(ProfileError(format!(
                "{}:{line}:{col}: [{section}] {key}: {msg}",
                path.display()
            )))
        };
        if let Some(m) = self.guest.memory_mib {
            if !(1..=65536).contains(&m) {
                return err(
                    "guest",
                    "memory_mib",
                    format!("{m} is out of range; expected 1..=65536 MiB"),
                );
            }
        }
        if let Some(q) = self.guest.queue_size {
            if let Err(e) = u32::try_from(q)
                .map_err(|_| format!("{q} is not a power of two from 1 to 32768"))
                .and_then(|q| parse_queue_size(&q.to_string()))
            {
                return err("guest", "queue_size", e);
            }
        }
        if let Some(s) = &self.net.sharenet {
            if let Err(e) = s.parse::<Spec>() {
                return err("net", "sharenet", e);
            }
        }
        if let Some(c) = self.workload.count {
            if c < 1 {
                return err(
                    "workload",
                    "count",
                    format!("{c} is out of range; expected at least 1"),
                );
            }
        }
        if let Some(s) = self.workload.size {
            if !(MIN_FRAME as i64..=MAX_FRAME as i64).contains(&s) {
                return err(
                    "workload",
                    "size",
                    format!("{s} is out of range; expected {MIN_FRAME}..={MAX_FRAME} bytes"),
                );
            }
        }
        if let Some(t) = self.workload.timeout {
            if !(t > 0.0 && t <= 86400.0) {
                return err(
                    "workload",
                    "timeout",
                    format!("{t} is out of range; expected seconds in (0, 86400]"),
                );
            }
        }
        Ok(())
    }
}

/// Where a merged value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag.
    Flag,
    /// The profile.
    Profile,
    /// The built-in default.
    Default,
}

impl Source {
    fn label(self, profile: Option<&Path>) -> String {
        match self {
            Source::Flag => "flag".into(),
            Source::Profile => format!(
                "profile {}",
                profile.map_or(String::new(), |p| p.display().to_string())
            ),
            Source::Default => "default".into(),
        }
    }
}

/// Flags merged over a profile, with where each value came from.
pub struct Merged {
    /// The merged flags (resolve them for a config).
    pub args: RunArgs,
    /// Per key: `(section, key, source)`.
    pub sources: Vec<(&'static str, &'static str, Source)>,
    /// The profile file, if any.
    pub profile: Option<PathBuf>,
}

/// Fill every flag the user did not give from the profile.
pub fn merge(flags: &RunArgs, profile: Option<(&Path, &Profile)>) -> Merged {
    let mut a = flags.clone();
    let mut sources = Vec::new();
    let empty = Profile::default();
    let p = profile.map_or(&empty, |(_, p)| p);
    macro_rules! take {
        ($section:literal, $key:literal, $field:ident, $value:expr) => {{
            let src = if a.$field.is_some() {
                Source::Flag
            } else if let Some(v) = $value {
                a.$field = Some(v);
                Source::Profile
            } else {
                Source::Default
            };
            sources.push(($section, $key, src));
        }};
    }
    take!("guest", "name", name, p.guest.name.clone());
    take!(
        "guest",
        "memory_mib",
        memory,
        p.guest.memory_mib.map(|v| v as u64)
    );
    take!(
        "guest",
        "queue_size",
        queue_size,
        p.guest.queue_size.map(|v| v as u32)
    );
    take!(
        "net",
        "sharenet",
        sharenet,
        p.net.sharenet.as_ref().and_then(|s| s.parse().ok())
    );
    take!("net", "notify", notify, p.net.notify);
    take!("net", "writes", writes, p.net.writes);
    take!("net", "wait", wait, p.net.wait);
    take!("workload", "kind", workload, p.workload.kind);
    take!(
        "workload",
        "count",
        count,
        p.workload.count.map(|v| v as u64)
    );
    take!("workload", "size", size, p.workload.size.map(|v| v as u32));
    take!("workload", "timeout", timeout, p.workload.timeout);
    Merged {
        args: a,
        sources,
        profile: profile.map(|(p, _)| p.to_path_buf()),
    }
}

impl Merged {
    /// The merged configuration as TOML, each value commented with its source.
    pub fn to_toml(&self, cfg: &crate::cli::config::RunConfig) -> String {
        let q = |s: &str| toml::Value::String(s.to_string()).to_string();
        let rows: [(&str, &str, String); 11] = [
            ("guest", "name", q(&cfg.name)),
            ("guest", "memory_mib", cfg.memory_mib.to_string()),
            ("guest", "queue_size", cfg.queue_size.to_string()),
            ("net", "sharenet", q(&cfg.spec.to_string())),
            ("net", "notify", q(cfg.notify.name())),
            ("net", "writes", q(cfg.writes.name())),
            ("net", "wait", q(cfg.wait.name())),
            ("workload", "kind", q(cfg.workload.name())),
            ("workload", "count", cfg.count.to_string()),
            ("workload", "size", cfg.size.to_string()),
            (
                "workload",
                "timeout",
                format!("{:?}", cfg.timeout.as_secs_f64()),
            ),
        ];
        let mut text = String::new();
        let mut current = "";
        for (section, key, value) in rows {
            if section != current {
                if !current.is_empty() {
                    text.push('\n');
                }
                text += &format!("[{section}]\n");
                current = section;
            }
            let source = self
                .sources
                .iter()
                .find(|(s, k, _)| *s == section && *k == key)
                .map_or(Source::Default, |(_, _, s)| *s)
                .label(self.profile.as_deref());
            text += &format!("{:<32} # {source}\n", format!("{key} = {value}"));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<Profile, String> {
        Profile::parse(src, Path::new("profiles/left.toml")).map_err(|e| e.0)
    }

    #[test]
    fn shipped_profiles_all_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let p = Profile::load(&path).unwrap_or_else(|e| panic!("{e}"));
                assert!(
                    p.net.sharenet.is_some(),
                    "{} names no sharenet",
                    path.display()
                );
                n += 1;
            }
        }
        assert!(n >= 8, "expected the example profiles, found {n}");
    }

    #[test]
    fn unknown_key_names_file_line_section_and_allowed_keys() {
        let e = parse("[guest]\nname = \"x\"\nmemory_mib = 64\nbogus_key = 1\n").unwrap_err();
        assert_eq!(
            e,
            "profiles/left.toml:4:1: unknown key `bogus_key` in [guest]; expected one of name, memory_mib, queue_size"
        );
    }

    #[test]
    fn unknown_section_is_refused() {
        let e = parse("[gust]\nname = \"x\"\n").unwrap_err();
        assert!(e.starts_with("profiles/left.toml:1:"), "{e}");
        assert!(
            e.contains("unknown key `gust`") && e.contains("guest, net, workload"),
            "{e}"
        );
    }

    #[test]
    fn bad_enum_value_lists_allowed_values() {
        let e = parse("[net]\nnotify = \"sometimes\"\n").unwrap_err();
        assert!(e.starts_with("profiles/left.toml:2:"), "{e}");
        assert!(
            e.contains("sometimes") && e.contains("always, flags, event-idx"),
            "{e}"
        );
    }

    #[test]
    fn bad_toml_names_line() {
        let e = parse("[guest]\nname = \n").unwrap_err();
        assert!(e.starts_with("profiles/left.toml:2:"), "{e}");
    }

    #[test]
    fn wrong_type_names_line() {
        let e = parse("[workload]\n\ncount = \"many\"\n").unwrap_err();
        assert!(e.starts_with("profiles/left.toml:3:"), "{e}");
    }

    #[test]
    fn out_of_range_values_name_key_and_range() {
        let cases = [
            (
                "[guest]\nqueue_size = 300\n",
                "2:1: [guest] queue_size: 300 is not a power of two",
            ),
            ("[guest]\nqueue_size = 65536\n", "[guest] queue_size"),
            (
                "[guest]\nmemory_mib = 0\n",
                "[guest] memory_mib: 0 is out of range",
            ),
            (
                "[workload]\nsize = 100000\n",
                "2:1: [workload] size: 100000 is out of range; expected 16..=65535",
            ),
            ("[workload]\ncount = 0\n", "[workload] count"),
            ("[workload]\ntimeout = -1.0\n", "[workload] timeout"),
            (
                "[net]\nsharenet = \"bogus:/x\"\n",
                "[net] sharenet: unknown transport `bogus`",
            ),
        ];
        for (src, want) in cases {
            let e = parse(src).unwrap_err();
            assert!(e.contains(want), "{src:?}: got {e}");
            assert!(e.starts_with("profiles/left.toml:"), "{e}");
        }
    }

    #[test]
    fn flags_override_profile_and_sources_are_reported() {
        let p = parse(
            "[guest]\nqueue_size = 64\n[net]\nsharenet = \"unix:/tmp/a\"\nnotify = \"flags\"\n",
        )
        .unwrap();
        let flags = RunArgs {
            notify: Some(Notify::Always),
            ..RunArgs::default()
        };
        let m = merge(&flags, Some((Path::new("p.toml"), &p)));
        let cfg = m.args.resolve().unwrap();
        assert_eq!(cfg.notify, Notify::Always);
        assert_eq!(cfg.queue_size, 64);
        assert_eq!(cfg.spec.to_string(), "unix:/tmp/a");
        let text = m.to_toml(&cfg);
        assert!(text.contains("notify = \"always\""), "{text}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("notify") && l.ends_with("# flag")),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("queue_size") && l.ends_with("# profile p.toml")),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("size") && l.ends_with("# default")),
            "{text}"
        );
        // The printed config is itself a valid profile.
        parse(&text).unwrap();
    }
}
