//! What can be wrong with a profile, located: [`ProfileError`].

use super::*;

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

pub(crate) fn unknown_key(section: Option<&str>, key: &str, belongs_in: Option<&str>) -> String {
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

pub(crate) fn quoted(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// A TOML value in words, for "got ...".
pub(crate) fn describe(v: &Value) -> String {
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
pub(crate) enum Problem {
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
    pub(crate) fn placed(
        self,
        at: Location,
        section: &'static str,
        key: String,
        v: &Value,
    ) -> ProfileError {
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

pub(crate) fn integer(v: &Value, unit: &str) -> Result<i128, Problem> {
    match v {
        Value::Integer(i) => Ok(*i as i128),
        _ => Err(Problem::Type(format!("an integer ({unit})"))),
    }
}

pub(crate) fn string<'v>(v: &'v Value, what: &str) -> Result<&'v str, Problem> {
    v.as_str()
        .ok_or_else(|| Problem::Type(format!("a string ({what})")))
}

pub(crate) fn boolean(v: &Value) -> Result<bool, Problem> {
    v.as_bool()
        .ok_or_else(|| Problem::Type("true or false".into()))
}

pub(crate) fn seconds(v: &Value) -> Result<f64, Problem> {
    match v {
        Value::Float(f) => Ok(*f),
        Value::Integer(i) => Ok(*i as f64),
        _ => Err(Problem::Type("a number of seconds".into())),
    }
}

/// One of a clap value enum's spellings: the profile accepts exactly what
/// the flag accepts.
pub(crate) fn choice<E: ValueEnum>(v: &Value) -> Result<E, Problem> {
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
