//! What an installed launcher offers besides running a pair: profiles
//! found by name, shell completions and man pages generated from the
//! flags. (The Debian package, the systemd units and libvirt are checked
//! by `scripts/package-test` and `scripts/libvirt-test`, which need root.)

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Output};

/// Run the launcher with `XDG_CONFIG_HOME` pointing into `dir` (and no
/// `HOME`, so the user's real profiles never interfere).
fn run_with_config(dir: &Path, args: &[&str]) -> Output {
    Command::new(launcher())
        .args(args)
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env_remove("HOME")
        .current_dir(dir)
        .output()
        .expect("run lguest-launcher")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn profile_by_name_is_found_in_xdg_config_home_and_named_by_print_config() {
    let dir = TestDir::new("profile_by_name");
    let profiles = dir.path().join("config/sharenet/profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::write(
        profiles.join("left.toml"),
        "[workload]\nkind = \"sink\"\ncount = 7\n",
    )
    .unwrap();
    let out = run_with_config(dir.path(), &["--profile", "left", "--print-config"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let first = stdout.lines().next().unwrap_or_default();
    assert_eq!(
        first,
        format!(
            "# profile: {} (found by name `left`)",
            profiles.join("left.toml").display()
        )
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("count = 7") && l.contains("# profile")),
        "{stdout}"
    );
    // A path still works, and says it was a path.
    let out = run_with_config(
        dir.path(),
        &[
            "--profile",
            "config/sharenet/profiles/left.toml",
            "--print-config",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).lines().next(),
        Some("# profile: config/sharenet/profiles/left.toml")
    );
}

#[test]
fn unknown_profile_name_exits_2_listing_where_it_looked() {
    let dir = TestDir::new("profile_unknown_name");
    let out = run_with_config(dir.path(), &["--profile", "nope", "--count", "5"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let user = dir.path().join("config/sharenet/profiles/nope.toml");
    assert!(
        stderr.contains(&format!(
            "--profile nope: no profile named `nope`; looked for {} and /etc/sharenet/profiles/nope.toml",
            user.display()
        )),
        "{stderr}"
    );
}

#[test]
fn completions_are_printed_for_bash_zsh_and_fish() {
    let dir = TestDir::new("completions");
    for (shell, marker) in [
        ("bash", "complete -F _lguest__launcher"),
        ("zsh", "#compdef lguest-launcher"),
        ("fish", "complete -c lguest-launcher"),
    ] {
        let out = run_with_config(dir.path(), &["completions", shell]);
        let script = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", text(&out.stderr));
        assert!(script.contains(marker), "{shell}: no `{marker}`");
        assert!(script.contains("sharenet"), "{shell}: no --sharenet");
        assert!(script.contains("vhost-user"), "{shell}: no vhost-user");
    }
    let out = run_with_config(dir.path(), &["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("invalid value 'tcsh'"));
}

#[test]
fn man_writes_one_page_per_subcommand_and_refuses_an_unwritable_dir() {
    let dir = TestDir::new("man");
    let pages = dir.path().join("man1");
    let out = run_with_config(dir.path(), &["man", "--out-dir", pages.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for page in [
        "lguest-launcher.1",
        "lguest-launcher-demo.1",
        "lguest-launcher-bench.1",
        "lguest-launcher-vhost-user.1",
        "lguest-launcher-completions.1",
        "lguest-launcher-man.1",
    ] {
        let body = std::fs::read_to_string(pages.join(page)).unwrap_or_default();
        assert!(body.starts_with(".ie \\n(.g"), "{page}: not a man page");
    }
    // `man` alone prints the top-level page.
    let out = run_with_config(dir.path(), &["man"]);
    assert!(text(&out.stdout).contains(".TH lguest-launcher 1"));
    // Under a regular file, no directory can be made.
    std::fs::write(dir.path().join("file"), "").unwrap();
    let out = run_with_config(dir.path(), &["man", "--out-dir", "file/man1"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--out-dir file/man1"), "{stderr}");
}
