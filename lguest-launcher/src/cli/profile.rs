//! TOML guest profiles (`--profile FILE.toml`).
//!
//! A profile sets what the flags set; flags win. Reading one is two steps:
//! toml parses the text into tables whose every key and value carries its
//! byte span ([`toml::Spanned`]), then each key is checked against the
//! sections we know and each value against the same checks the flags use
//! ([`check_count`], [`check_queue_size`], ...). A refusal is a
//! [`ProfileError`] that names the file, line and column (from the span),
//! the section and key, and what is allowed, e.g.
//!
//! ```text
//! profiles/left.toml:4:1: unknown key `bogus_key` in [guest]; expected one of name, memory_mib, queue_size
//! profiles/left.toml:3:1: [guest] memory_mib: expected an integer (MiB), got the string "64"
//! profiles/left.toml:5:2: unknown section `nett`; expected one of guest, net, workload
//! ```

use crate::cli::config::{Settings, Spec, SpecError, Wait, Workload, Writes};
use crate::cli::{
    check_count, check_memory, check_queue_size, check_secs, check_size, RunArgs, ValueError,
};
use crate::virtq::NotifyMode;
use clap::ValueEnum;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use toml::{Spanned, Value};

/// The sections of a profile and their keys, in the order `--print-config`
/// writes them.
const SECTIONS: [(&str, &[&str]); 3] = [
    ("guest", &["name", "memory_mib", "queue_size"]),
    ("net", &["sharenet", "notify", "writes", "wait"]),
    ("workload", &["kind", "count", "size", "timeout"]),
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
    /// Seconds.
    pub timeout: Option<f64>,
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

/// Where in a profile: `FILE:LINE:COL`, 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The profile file as the user named it.
    pub file: Box<Path>,
    /// Line, from 1.
    pub line: u32,
    /// Column in characters, from 1.
    pub col: u32,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.col)
    }
}

/// Why a well-typed value is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValueProblem {
    /// Out of range, or not a power of two (the flags' own check).
    #[error(transparent)]
    Range(#[from] ValueError),
    /// `sharenet` is not `KIND:PATH`.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A string that is not one of the allowed spellings.
    #[error("unknown value {}; expected one of {allowed}", quoted(got))]
    UnknownChoice {
        /// What the profile says.
        got: String,
        /// The allowed spellings, comma-separated.
        allowed: Box<str>,
    },
}

/// A profile that cannot be used. Each message is one line and starts with
/// the file (and, once the text is read, the line and column).
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The file cannot be read.
    #[error("{}: cannot read profile: {source}", file.display())]
    Io {
        /// The profile file.
        file: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML; `message` is toml's own.
    #[error("{at}: {message}")]
    Syntax {
        /// Where toml stopped.
        at: Location,
        /// toml's description.
        message: String,
    },
    /// A `[section]` we do not know.
    #[error(
        "{at}: unknown section `{section}`; expected one of {}",
        section_names()
    )]
    UnknownSection {
        /// The section header's name.
        at: Location,
        /// The section as written.
        section: String,
    },
    /// A key we do not know here (`section` is `None` above every header).
    #[error("{at}: {}", unknown_key(section.as_deref(), key, *belongs_in))]
    UnknownKey {
        /// The key.
        at: Location,
        /// The section it was found in.
        section: Option<String>,
        /// The key as written.
        key: String,
        /// The section it belongs in, when it is one of ours.
        belongs_in: Option<&'static str>,
    },
    /// A section name used as a plain key (`guest = 1`, `[[guest]]`).
    #[error("{at}: `{key}` must be a section ([{key}]), got {got}")]
    NotASection {
        /// The key.
        at: Location,
        /// The section name.
        key: String,
        /// What it holds, in words.
        got: String,
    },
    /// A value of the wrong TOML type.
    #[error(
        "{at}: [{section}] {key}: expected {expected}, got {got}{}",
        if *quoted_number { "; drop the quotes" } else { "" }
    )]
    WrongType {
        /// The key.
        at: Location,
        /// Its section.
        section: &'static str,
        /// The key as written.
        key: String,
        /// What the key takes, in words.
        expected: String,
        /// What it holds, in words.
        got: String,
        /// A string that holds a number where a number belongs
        /// (`memory_mib = "64"`): the message suggests dropping the quotes.
        quoted_number: bool,
    },
    /// A value of the right type that is not allowed.
    #[error("{at}: [{section}] {key}: {problem}")]
    BadValue {
        /// The key.
        at: Location,
        /// Its section.
        section: &'static str,
        /// The key as written.
        key: String,
        /// Why.
        problem: ValueProblem,
    },
}

impl ProfileError {
    /// Where in the file, when the text was read.
    pub fn location(&self) -> Option<&Location> {
        match self {
            ProfileError::Io { .. } => None,
            ProfileError::Syntax { at, .. }
            | ProfileError::UnknownSection { at, .. }
            | ProfileError::UnknownKey { at, .. }
            | ProfileError::NotASection { at, .. }
            | ProfileError::WrongType { at, .. }
            | ProfileError::BadValue { at, .. } => Some(at),
        }
    }
}

fn unknown_key(section: Option<&str>, key: &str, belongs_in: Option<&str>) -> String {
    match (section, belongs_in) {
        (Some(s), Some(home)) => {
            format!("unknown key `{key}` in [{s}]; `{key}` belongs in [{home}]")
        }
        (Some(s), None) => format!(
            "unknown key `{key}` in [{s}]; expected one of {}",
            keys_of(s)
        ),
        (None, Some(home)) => {
            format!("key `{key}` is outside any section; `{key}` belongs in [{home}]")
        }
        (None, None) => format!(
            "unknown key `{key}` outside any section; expected one of the sections {}",
            section_names()
        ),
    }
}

fn quoted(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// A TOML value in words, for "got ...".
fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("the string {}", quoted(s)),
        Value::Integer(i) => format!("the integer {i}"),
        Value::Float(f) => format!("the number {f}"),
        Value::Boolean(b) => format!("the boolean {b}"),
        Value::Datetime(d) => format!("the date-time {d}"),
        Value::Array(_) => "an array".into(),
        Value::Table(_) => "a table".into(),
    }
}

/// Why one value was refused, before it is placed in the file.
enum Problem {
    /// Wrong TOML type; what the key takes, in words.
    Type(String),
    /// Right type, refused value.
    Value(ValueProblem),
}

impl<E: Into<ValueProblem>> From<E> for Problem {
    fn from(e: E) -> Self {
        Problem::Value(e.into())
    }
}

impl Problem {
    /// The error for `[section] key = v` at `at`.
    fn placed(self, at: Location, section: &'static str, key: String, v: &Value) -> ProfileError {
        match self {
            Problem::Type(expected) => {
                // `memory_mib = "64"`: the number is right, the quotes are not.
                let quoted_number = expected.starts_with("an integer")
                    && v.as_str().is_some_and(|s| s.trim().parse::<i64>().is_ok());
                ProfileError::WrongType {
                    at,
                    section,
                    key,
                    expected,
                    got: describe(v),
                    quoted_number,
                }
            }
            Problem::Value(problem) => ProfileError::BadValue {
                at,
                section,
                key,
                problem,
            },
        }
    }
}

fn integer(v: &Value, unit: &str) -> Result<i128, Problem> {
    match v {
        Value::Integer(i) => Ok(*i as i128),
        _ => Err(Problem::Type(format!("an integer ({unit})"))),
    }
}

fn string<'v>(v: &'v Value, what: &str) -> Result<&'v str, Problem> {
    v.as_str()
        .ok_or_else(|| Problem::Type(format!("a string ({what})")))
}

fn seconds(v: &Value) -> Result<f64, Problem> {
    match v {
        Value::Float(f) => Ok(*f),
        Value::Integer(i) => Ok(*i as f64),
        _ => Err(Problem::Type("a number of seconds".into())),
    }
}

/// One of a clap value enum's spellings: the profile accepts exactly what
/// the flag accepts.
fn choice<E: ValueEnum>(v: &Value) -> Result<E, Problem> {
    let allowed = E::value_variants()
        .iter()
        .filter_map(|e| e.to_possible_value())
        .map(|p| p.get_name().to_owned())
        .collect::<Vec<_>>()
        .join(", ");
    let s = v
        .as_str()
        .ok_or_else(|| Problem::Type(format!("one of {allowed}")))?;
    E::from_str(s, false).map_err(|_| {
        Problem::Value(ValueProblem::UnknownChoice {
            got: s.to_owned(),
            allowed: allowed.into(),
        })
    })
}

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
            ("net", "sharenet") => n.sharenet = Some(string(v, "KIND:PATH")?.parse()?),
            ("net", "notify") => n.notify = Some(choice(v)?),
            ("net", "writes") => n.writes = Some(choice(v)?),
            ("net", "wait") => n.wait = Some(choice(v)?),
            ("workload", "kind") => w.kind = Some(choice(v)?),
            ("workload", "count") => w.count = Some(check_count(integer(v, "packets")?)?),
            ("workload", "size") => w.size = Some(check_size(integer(v, "bytes")?)?),
            ("workload", "timeout") => w.timeout = Some(check_secs(seconds(v)?)?),
            _ => return Ok(false),
        }
        Ok(true)
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
    take!("guest", "memory_mib", memory, p.guest.memory_mib);
    take!("guest", "queue_size", queue_size, p.guest.queue_size);
    take!("net", "sharenet", sharenet, p.net.sharenet.clone());
    take!("net", "notify", notify, p.net.notify);
    take!("net", "writes", writes, p.net.writes);
    take!("net", "wait", wait, p.net.wait);
    take!("workload", "kind", workload, p.workload.kind);
    take!("workload", "count", count, p.workload.count);
    take!("workload", "size", size, p.workload.size);
    take!("workload", "timeout", timeout, p.workload.timeout);
    Merged {
        args: a,
        sources,
        profile: profile.map(|(p, _)| p.to_path_buf()),
    }
}

impl Merged {
    /// The merged settings as TOML, each value commented with its source.
    /// What has no fixed default and was not given (the name, derived from
    /// the pid at run time; the rendezvous) is written as a comment, so the
    /// output is itself a valid profile that freezes nothing by accident.
    pub fn to_toml(&self, s: &Settings) -> String {
        let q = |s: &str| Some(Value::String(s.to_string()).to_string());
        let rows: [(&str, &str, Option<String>); 11] = [
            ("guest", "name", s.name.as_deref().and_then(q)),
            ("guest", "memory_mib", Some(s.memory_mib.to_string())),
            ("guest", "queue_size", Some(s.queue_size.to_string())),
            (
                "net",
                "sharenet",
                s.spec.as_ref().and_then(|spec| q(&spec.to_string())),
            ),
            ("net", "notify", q(s.notify.name())),
            ("net", "writes", q(s.writes.name())),
            ("net", "wait", q(s.wait.name())),
            ("workload", "kind", q(s.workload.name())),
            ("workload", "count", Some(s.count.to_string())),
            ("workload", "size", Some(s.size.to_string())),
            (
                "workload",
                "timeout",
                Some(format!("{:?}", s.timeout.as_secs_f64())),
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
            let Some(value) = value else {
                let unset = match key {
                    "name" => "(default: derived from the pid)",
                    _ => "(unset: give --sharenet KIND:PATH, or set it here)",
                };
                text += &format!("# {key} = {unset}\n");
                continue;
            };
            let source = self
                .sources
                .iter()
                .find(|(s, k, _)| *s == section && *k == key)
                .map_or(Source::Default, |(_, _, s)| *s);
            let mut label = source.label(self.profile.as_deref());
            if key == "memory_mib" && source == Source::Default {
                label += &format!(" (fits queue_size {})", s.queue_size);
            }
            text += &format!("{:<32} # {label}\n", format!("{key} = {value}"));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<Profile, String> {
        Profile::parse(src, Path::new("profiles/left.toml")).map_err(|e| e.to_string())
    }

    fn error(src: &str) -> ProfileError {
        Profile::parse(src, Path::new("profiles/left.toml")).unwrap_err()
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
        assert_eq!(
            e,
            "profiles/left.toml:1:2: unknown section `gust`; expected one of guest, net, workload"
        );
    }

    #[test]
    fn key_in_the_wrong_section_names_its_section() {
        let e = parse("[guest]\nname = \"x\"\nsize = 64\n").unwrap_err();
        assert_eq!(
            e,
            "profiles/left.toml:3:1: unknown key `size` in [guest]; `size` belongs in [workload]"
        );
        let e = parse("name = \"x\"\n[guest]\n").unwrap_err();
        assert_eq!(
            e,
            "profiles/left.toml:1:1: key `name` is outside any section; `name` belongs in [guest]"
        );
        assert!(matches!(
            error("[[net]]\n"),
            ProfileError::NotASection { ref key, .. } if key == "net"
        ));
    }

    #[test]
    fn wrong_type_names_key_and_expected_type_in_words() {
        let e = error("[guest]\nname = \"x\"\nmemory_mib = \"64\"\n");
        let ProfileError::WrongType {
            ref at,
            section,
            ref key,
            ..
        } = e
        else {
            panic!("{e:?}")
        };
        assert_eq!(
            (at.line, at.col, section, key.as_str()),
            (3, 1, "guest", "memory_mib")
        );
        assert_eq!(
            e.to_string(),
            "profiles/left.toml:3:1: [guest] memory_mib: expected an integer (MiB), got the string \"64\"; drop the quotes"
        );
        assert_eq!(
            parse("[net]\nwait = true\n").unwrap_err(),
            "profiles/left.toml:2:1: [net] wait: expected one of sleep, spin, adaptive, got the boolean true"
        );
        assert_eq!(
            parse("[workload]\ntimeout = \"soon\"\n").unwrap_err(),
            "profiles/left.toml:2:1: [workload] timeout: expected a number of seconds, got the string \"soon\""
        );
    }

    #[test]
    fn first_error_in_the_file_is_reported() {
        let e = parse("[net]\nwait = \"nap\"\n[guest]\nqueue_size = 3\n").unwrap_err();
        assert!(e.starts_with("profiles/left.toml:2:1: [net] wait"), "{e}");
    }

    #[test]
    fn integer_timeout_is_seconds() {
        assert_eq!(
            parse("[workload]\ntimeout = 5\n").unwrap().workload.timeout,
            Some(5.0)
        );
    }

    #[test]
    fn notify_spellings_are_the_flags() {
        for m in [NotifyMode::Always, NotifyMode::Flags, NotifyMode::EventIdx] {
            let src = format!("[net]\nnotify = \"{}\"\n", m.name());
            assert_eq!(parse(&src).unwrap().net.notify, Some(m));
            assert_eq!(m.to_possible_value().unwrap().get_name(), m.name());
        }
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
        assert!(
            e.contains("[workload] count: expected an integer (packets), got the string \"many\""),
            "{e}"
        );
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
            notify: Some(NotifyMode::Always),
            ..RunArgs::default()
        };
        let m = merge(&flags, Some((Path::new("p.toml"), &p)));
        let cfg = m.args.resolve().unwrap();
        assert_eq!(cfg.notify, NotifyMode::Always);
        assert_eq!(cfg.queue_size, 64);
        assert_eq!(cfg.spec.to_string(), "unix:/tmp/a");
        let text = m.to_toml(&m.args.settings().unwrap());
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

    #[test]
    fn printed_config_freezes_neither_name_nor_missing_sharenet() {
        let m = merge(&RunArgs::default(), None);
        let text = m.to_toml(&m.args.settings().unwrap());
        assert!(
            text.contains("# name = (default: derived from the pid)"),
            "{text}"
        );
        assert!(text.contains("# sharenet = (unset"), "{text}");
        assert!(!text.contains("guest-"), "{text}");
        let p = parse(&text).unwrap();
        assert!(p.guest.name.is_none() && p.net.sharenet.is_none());
    }
}
