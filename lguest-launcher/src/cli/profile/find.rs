//! Profiles by name: `--profile NAME` finds `NAME.toml` in the user's and
//! then the system's profile directory.
//!
//! What `--profile` was given decides how it is read: anything with a `/`
//! in it or ending in `.toml` is a path (`--profile profiles/left.toml`,
//! `--profile left.toml`), as before; a bare word is a name, looked up as
//! `NAME.toml` in, in this order,
//!
//! 1. `$XDG_CONFIG_HOME/sharenet/profiles/` (`~/.config/sharenet/profiles/`
//!    when `XDG_CONFIG_HOME` is unset or not absolute, as the XDG base
//!    directory spec says), the user's own;
//! 2. `/etc/sharenet/profiles/`, where the Debian package installs its
//!    examples and where a systemd unit's profiles live.
//!
//! The first hit wins, so a user can shadow a system profile. A name found
//! nowhere is a usage error (exit 2) that lists every file it tried.

use std::path::{Path, PathBuf};

/// The system-wide profile directory.
pub const SYSTEM_DIR: &str = "/etc/sharenet/profiles";

/// A profile file, and how the user named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The file to read.
    pub path: PathBuf,
    /// `Some(NAME)` when it was found by name, `None` for a path.
    pub by_name: Option<String>,
}

/// `--profile NAME` matched no file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "--profile {name}: no profile named `{name}`; looked for {}; put {name}.toml in one of those directories, or give a path (e.g. --profile ./{name}.toml)",
    looked.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" and ")
)]
pub struct NotFound {
    /// The name as given.
    pub name: String,
    /// Every file tried, in order.
    pub looked: Vec<PathBuf>,
}

/// Is `arg` a path rather than a name?
pub fn is_path(arg: &Path) -> bool {
    let s = arg.as_os_str().as_encoded_bytes();
    s.contains(&b'/') || s.ends_with(b".toml")
}

/// The directories a name is looked up in, user's first.
pub fn search_dirs() -> Vec<PathBuf> {
    let config_home = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        });
    config_home
        .map(|c| c.join("sharenet").join("profiles"))
        .into_iter()
        .chain([PathBuf::from(SYSTEM_DIR)])
        .collect()
}

/// Resolve `--profile ARG` against `dirs` (see [`search_dirs`]).
pub fn find_in(arg: &Path, dirs: &[PathBuf]) -> Result<Found, NotFound> {
    if is_path(arg) {
        return Ok(Found {
            path: arg.to_path_buf(),
            by_name: None,
        });
    }
    let name = arg.to_string_lossy().into_owned();
    let looked: Vec<PathBuf> = dirs
        .iter()
        .map(|d| d.join(format!("{name}.toml")))
        .collect();
    match looked.iter().find(|p| p.is_file()) {
        Some(path) => Ok(Found {
            path: path.clone(),
            by_name: Some(name),
        }),
        None => Err(NotFound { name, looked }),
    }
}

/// Resolve `--profile ARG` against the user's and the system's directories.
pub fn find(arg: &Path) -> Result<Found, NotFound> {
    find_in(arg, &search_dirs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(label: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sharenet-find-{}-{label}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("user")).unwrap();
        std::fs::create_dir_all(d.join("system")).unwrap();
        d
    }

    #[test]
    fn a_slash_or_toml_suffix_means_a_path() {
        assert!(is_path(Path::new("profiles/left.toml")));
        assert!(is_path(Path::new("./left")));
        assert!(is_path(Path::new("left.toml")));
        assert!(!is_path(Path::new("left")));
        let found = find_in(Path::new("no/such.toml"), &[]).unwrap();
        assert_eq!(found.path, Path::new("no/such.toml"));
        assert_eq!(found.by_name, None);
    }

    #[test]
    fn user_profile_shadows_system_profile() {
        let d = scratch("shadow");
        let dirs = [d.join("user"), d.join("system")];
        std::fs::write(d.join("system/left.toml"), "").unwrap();
        let found = find_in(Path::new("left"), &dirs).unwrap();
        assert_eq!(found.path, d.join("system/left.toml"));
        assert_eq!(found.by_name.as_deref(), Some("left"));
        std::fs::write(d.join("user/left.toml"), "").unwrap();
        assert_eq!(
            find_in(Path::new("left"), &dirs).unwrap().path,
            d.join("user/left.toml")
        );
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn unknown_name_lists_every_file_tried() {
        let d = scratch("missing");
        let dirs = [d.join("user"), d.join("system")];
        let e = find_in(Path::new("nope"), &dirs).unwrap_err();
        assert_eq!(
            e.looked,
            [d.join("user/nope.toml"), d.join("system/nope.toml")]
        );
        let msg = e.to_string();
        assert!(
            msg.starts_with("--profile nope: no profile named `nope`"),
            "{msg}"
        );
        assert!(
            msg.contains(&d.join("system/nope.toml").display().to_string()),
            "{msg}"
        );
        // A directory of that name is not a profile.
        std::fs::create_dir_all(d.join("user/nope.toml")).unwrap();
        assert!(find_in(Path::new("nope"), &dirs).is_err());
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn xdg_config_home_must_be_absolute() {
        // Read-only look at the real environment: the system directory is
        // always last, and any user directory ends in sharenet/profiles.
        let dirs = search_dirs();
        assert_eq!(dirs.last().unwrap(), Path::new(SYSTEM_DIR));
        for d in &dirs[..dirs.len() - 1] {
            assert!(d.is_absolute() && d.ends_with("sharenet/profiles"), "{d:?}");
        }
    }
}
