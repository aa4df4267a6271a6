//! Shell completions and man pages, generated from the clap definitions
//! in `args.rs`, so they cannot drift from the flags: `completions SHELL`
//! prints a script (clap_complete), `man --out-dir DIR` writes
//! `lguest-launcher.1` and one `lguest-launcher-SUBCOMMAND.1` per visible
//! subcommand (clap_mangen). The Debian package (`scripts/build-deb`) runs
//! both from the binary it ships.

use clap::{Args, CommandFactory};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// `completions` flags.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to write a completion script for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `man` flags.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write every page into this directory (created if missing); without
    /// it, print the top-level page (lguest-launcher.1) to stdout.
    #[arg(long, value_name = "DIR", value_hint = clap::ValueHint::DirPath)]
    pub out_dir: Option<PathBuf>,
}

const BIN: &str = "lguest-launcher";

/// `lguest-launcher completions SHELL`.
pub fn completions(args: &CompletionsArgs) -> ExitCode {
    let mut cmd = super::Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, BIN, &mut out);
    if args.shell == clap_complete::Shell::Bash {
        out = fix_bash_hyphen(&out);
    }
    write_stdout(&out)
}

/// clap_complete's bash script (4.6) spells a subcommand's state two ways
/// when the binary's name has a hyphen: the dispatch loop arrives at
/// `lguest__launcher__subcmd__demo`, the `case` arms test for
/// `lguest__subcmd__launcher__subcmd__demo`, so no subcommand's flags
/// ever complete (clap-rs/clap#6421). Spell the arms like the loop.
fn fix_bash_hyphen(script: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(script)
        .replace("lguest__subcmd__launcher", "lguest__launcher")
        .into_bytes()
}

/// `lguest-launcher man [--out-dir DIR]`.
pub fn man(args: &ManArgs) -> ExitCode {
    let cmd = super::Cli::command();
    let Some(dir) = &args.out_dir else {
        let mut out = Vec::new();
        return match clap_mangen::Man::new(cmd).render(&mut out) {
            Ok(()) => write_stdout(&out),
            Err(e) => fail(format_args!("cannot render the man page: {e}")),
        };
    };
    if let Err(e) = std::fs::create_dir_all(dir) {
        return usage(dir, e);
    }
    match clap_mangen::generate_to(cmd, dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => usage(dir, e),
    }
}

fn usage(dir: &std::path::Path, e: std::io::Error) -> ExitCode {
    eprintln!(
        "error: --out-dir {}: cannot write the man pages there: {e}; pick a writable directory",
        dir.display()
    );
    ExitCode::from(2)
}

fn fail(what: std::fmt::Arguments) -> ExitCode {
    eprintln!("error: {what}");
    ExitCode::from(1)
}

fn write_stdout(bytes: &[u8]) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => fail(format_args!("cannot write to stdout: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every long flag of every visible subcommand, as `(command, --flag)`.
    fn visible_flags() -> Vec<(String, String)> {
        fn walk(cmd: &clap::Command, path: &str, out: &mut Vec<(String, String)>) {
            for a in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
                if let Some(l) = a.get_long() {
                    out.push((path.to_owned(), format!("--{l}")));
                }
            }
            for s in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
                walk(s, &format!("{path} {}", s.get_name()), out);
            }
        }
        let mut out = Vec::new();
        walk(&super::super::Cli::command(), BIN, &mut out);
        out
    }

    #[test]
    fn completions_offer_every_visible_flag() {
        let flags = visible_flags();
        assert!(flags.iter().any(|(_, f)| f == "--sharenet"));
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut super::super::Cli::command(), BIN, &mut out);
            let script = String::from_utf8(out).unwrap();
            for (cmd, flag) in &flags {
                // fish writes `-l sharenet`, the others `--sharenet`.
                let bare = &flag[2..];
                assert!(
                    script.contains(flag.as_str()) || script.contains(&format!("-l {bare}")),
                    "{shell} completion lacks {cmd} {flag}"
                );
            }
        }
    }

    #[test]
    fn bash_case_arms_match_the_dispatch_loop() {
        let mut out = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut super::super::Cli::command(),
            BIN,
            &mut out,
        );
        let fixed = String::from_utf8(fix_bash_hyphen(&out)).unwrap();
        // Every state the loop can set has an arm of the same spelling.
        for line in fixed.lines().map(str::trim) {
            if let Some(state) = line
                .strip_prefix("cmd=\"")
                .and_then(|l| l.strip_suffix('"'))
                .filter(|s| !s.is_empty())
            {
                assert!(
                    fixed.contains(&format!("        {state})")),
                    "no case arm for {state}"
                );
            }
        }
    }

    #[test]
    fn man_pages_cover_every_visible_subcommand_and_flag() {
        let dir = std::env::temp_dir().join(format!("sharenet-man-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            man(&ManArgs {
                out_dir: Some(dir.clone())
            }),
            ExitCode::SUCCESS
        );
        for (cmd, flag) in visible_flags() {
            let page = dir.join(format!("{}.1", cmd.replace(' ', "-")));
            let text = std::fs::read_to_string(&page)
                .unwrap_or_else(|e| panic!("{}: {e}", page.display()));
            // roff escapes the dashes: --sharenet is \-\-sharenet.
            let roff = flag.replace('-', "\\-");
            assert!(text.contains(&roff), "{} lacks {flag}", page.display());
        }
        assert!(!dir.join("lguest-launcher-bench-child.1").exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
