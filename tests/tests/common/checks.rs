//! [`Checks`]: every expectation of a test, reported together.

use super::{Field, Number, Outcome};
use std::fmt;

/// Every expectation of a test, checked before failing once with all the
/// broken ones and the full story of each process involved.
pub struct Checks<'a> {
    what: String,
    ctx: Vec<&'a Outcome>,
    failures: Vec<String>,
}

impl<'a> Checks<'a> {
    /// Checks about `what`, reporting `ctx` on failure.
    pub fn new(what: impl Into<String>, ctx: &[&'a Outcome]) -> Self {
        Checks {
            what: what.into(),
            ctx: ctx.to_vec(),
            failures: Vec::new(),
        }
    }

    /// Expect `cond`; `msg` says what should have held.
    pub fn that(&mut self, cond: bool, msg: impl Into<String>) -> &mut Self {
        if !cond {
            self.failures.push(msg.into());
        }
        self
    }

    /// Expect exit code `code`.
    pub fn exit(&mut self, o: &Outcome, code: i32) -> &mut Self {
        let got = o.code;
        self.that(
            got == Some(code),
            format!("{} should exit {code}, got {}", o.role, show_code(o)),
        )
    }

    /// Expect every one of `outs` to exit `code` (each named on failure).
    pub fn all_exit<'o>(
        &mut self,
        outs: impl IntoIterator<Item = &'o Outcome>,
        code: i32,
    ) -> &mut Self {
        for o in outs {
            self.exit(o, code);
        }
        self
    }

    /// Expect `o` to have received exactly `n` packets, none corrupted.
    pub fn received(&mut self, o: &Outcome, n: u64) -> &mut Self {
        self.eq(o, field!(packets_received), n)
            .eq(o, field!(corrupted), 0)
    }

    /// Expect a counter read twice to have grown: `after` > `before`.
    pub fn grew(&mut self, what: &str, before: u64, after: u64) -> &mut Self {
        self.that(
            after > before,
            format!("{what} should have grown between the two looks: {before} -> {after}"),
        )
    }

    /// Expect stats field `f` == `want`.
    pub fn eq<T: PartialEq + fmt::Debug>(
        &mut self,
        o: &Outcome,
        f: Field<T>,
        want: T,
    ) -> &mut Self {
        let got = o.stat(f);
        let msg = format!(
            "{}: {} should be {want:?}, got {}",
            o.role,
            f.name,
            show(got.as_ref())
        );
        self.that(got == Some(want), msg)
    }

    /// Expect stats field `f` > `floor`.
    pub fn gt<T: Number + fmt::Debug>(
        &mut self,
        o: &Outcome,
        f: Field<T>,
        floor: f64,
    ) -> &mut Self {
        let got = o.stat(f);
        self.that(
            got.and_then(Number::number).is_some_and(|v| v > floor),
            format!(
                "{}: {} should be > {floor}, got {}",
                o.role,
                f.name,
                show(got.as_ref())
            ),
        )
    }

    /// Expect `o` refused as a usage error: exit 2, an `error: ` line,
    /// every one of `mentions` on stderr, and no panic.
    pub fn usage_error<S: AsRef<str>>(&mut self, o: &Outcome, mentions: &[S]) -> &mut Self {
        self.exit(o, 2).stderr_has(o, "error: ");
        for m in mentions {
            self.stderr_has(o, m.as_ref());
        }
        self.that(
            !o.stderr.contains("panicked"),
            format!("{} panicked on a usage error", o.role),
        )
    }

    /// Expect stderr to contain `needle`.
    pub fn stderr_has(&mut self, o: &Outcome, needle: &str) -> &mut Self {
        self.that(
            o.stderr.contains(needle),
            format!("{} stderr should contain {needle:?}", o.role),
        )
    }

    /// Fail with everything collected, if anything.
    #[track_caller]
    pub fn done(&mut self) {
        if self.failures.is_empty() {
            return;
        }
        let mut msg = format!("{}: {} check(s) failed:\n", self.what, self.failures.len());
        for f in &self.failures {
            msg += &format!("  * {f}\n");
        }
        for o in &self.ctx {
            msg += &o.to_string();
        }
        panic!("{msg}");
    }
}

fn show<T: fmt::Debug>(v: Option<&T>) -> String {
    v.map_or("<no stats>".into(), |v| format!("{v:?}"))
}

fn show_code(o: &Outcome) -> String {
    if o.killed_by_test {
        "nothing (still running, killed by the test)".into()
    } else {
        match o.code {
            Some(c) => c.to_string(),
            None => format!("{:?}", o.status),
        }
    }
}
