//! What a finished launcher left behind ([`Outcome`]) and its stats
//! fields ([`Field`], [`Number`]).

use super::Stats;
use std::fmt;
use std::process::ExitStatus;
use std::time::Duration;

/// What a finished launcher left behind.
pub struct Outcome {
    /// The test's name for it (`sink`, `stream`, ...).
    pub role: String,
    /// Its pid.
    pub pid: u32,
    /// Its arguments.
    pub argv: Vec<String>,
    /// Exit code; `None` if a signal ended it or the test had to kill it.
    pub code: Option<i32>,
    /// The raw exit status.
    pub status: ExitStatus,
    /// The test killed it because it outlived the wait limit.
    pub killed_by_test: bool,
    /// Spawn to exit.
    pub lifetime: Duration,
    /// From the call to [`Proc::finish`] to exit (e.g. kill-to-exit).
    pub waited: Duration,
    /// Everything it wrote on stderr.
    pub stderr: String,
    /// Everything it wrote on stdout.
    pub stdout: String,
    /// The stats JSON, if written and valid.
    pub stats: Option<Stats>,
    /// The stats file's text (or why there is none).
    pub stats_text: String,
}

/// One stats field: its name in the JSON contract (for messages) and how
/// to read it from the typed [`Stats`]. Made by [`field!`].
pub struct Field<T> {
    /// The JSON field name.
    pub name: &'static str,
    /// Read it.
    pub read: fn(&Stats) -> T,
}

// By hand: a derive would ask `T: Copy`, and a `String` field is a field too.
impl<T> Clone for Field<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Field<T> {}

/// A stats value a numeric check (`>`) can compare: counts, seconds and
/// the optional round-trip percentiles (`None` when the run had none).
pub trait Number: Copy {
    /// The value as a float, if present.
    fn number(self) -> Option<f64>;
}

impl Number for u64 {
    fn number(self) -> Option<f64> {
        Some(self as f64)
    }
}

impl Number for u32 {
    fn number(self) -> Option<f64> {
        Some(f64::from(self))
    }
}

impl Number for f64 {
    fn number(self) -> Option<f64> {
        Some(self)
    }
}

impl Number for Option<f64> {
    fn number(self) -> Option<f64> {
        self
    }
}

impl Outcome {
    /// A stats field, if the stats were written and valid.
    pub fn stat<T>(&self, f: Field<T>) -> Option<T> {
        self.stats.as_ref().map(f.read)
    }

    /// A numeric stats field, if present.
    pub fn num<T: Number>(&self, f: Field<T>) -> Option<f64> {
        self.stat(f).and_then(Number::number)
    }

    /// A counter; panics with the full dump if there are no stats.
    #[track_caller]
    pub fn u64(&self, f: Field<u64>) -> u64 {
        match self.stat(f) {
            Some(v) => v,
            None => panic!(
                "{}: stats field `{}` missing or not a count\n{self}",
                self.role, f.name
            ),
        }
    }

    /// A string field, or "" if there are no stats.
    pub fn text(&self, f: Field<String>) -> String {
        self.stat(f).unwrap_or_default()
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = if self.killed_by_test {
            "still running: killed by the test".to_string()
        } else {
            match self.code {
                Some(c) => format!("exit {c}"),
                None => format!("ended by {:?}", self.status),
            }
        };
        writeln!(
            f,
            "--- {} (pid {}): {how} after {:.3} s (waited {:.3} s)",
            self.role,
            self.pid,
            self.lifetime.as_secs_f64(),
            self.waited.as_secs_f64()
        )?;
        writeln!(f, "    args: {}", self.argv.join(" "))?;
        writeln!(f, "    stderr:")?;
        for l in self.stderr.lines() {
            writeln!(f, "      {l}")?;
        }
        if !self.stdout.is_empty() {
            writeln!(f, "    stdout: {} bytes", self.stdout.len())?;
        }
        if !self.stats_text.is_empty() {
            writeln!(f, "    stats:")?;
            for l in self.stats_text.lines() {
                writeln!(f, "      {l}")?;
            }
        }
        Ok(())
    }
}
