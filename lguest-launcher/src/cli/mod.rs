//! The command line: flags and subcommands (`args.rs`), TOML profiles
//! ([`profile`]; by name: [`profile::find`]), the resolved configuration
//! every run sees ([`config`]), and the shell completions and man pages
//! generated from the flags ([`docs`]).
//!
//! The order is fixed: read the profile, fill every flag the user did not
//! give from it ([`profile::merge`]), apply defaults ([`RunArgs::settings`]),
//! then check what a run needs on top ([`RunArgs::resolve`]: a rendezvous
//! path whose directory exists and is writable). `--print-config` stops
//! after the defaults, so it works without `--sharenet`.

mod args;
pub mod config;
pub mod docs;
pub mod profile;
mod usage;
mod values;

pub use args::*;
pub use usage::*;
pub use values::*;

use config::RunConfig;

/// A usage or configuration error: exit code 2, one line naming the flag,
/// key or file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The profile could not be read or is invalid (boxed: it carries the
    /// file, line, key and value).
    #[error(transparent)]
    Profile(Box<profile::ProfileError>),
    /// A flag (or merged value) is out of range, missing, or names a
    /// rendezvous that cannot be created.
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// `--profile NAME` names no profile in the search directories.
    #[error(transparent)]
    ProfileNotFound(#[from] profile::find::NotFound),
}

impl From<profile::ProfileError> for ConfigError {
    fn from(e: profile::ProfileError) -> Self {
        ConfigError::Profile(Box::new(e))
    }
}

/// Merge flags over the profile and resolve; `None` after `--print-config`
/// (the merged configuration was printed).
pub fn configure(flags: &RunArgs) -> Result<Option<RunConfig>, ConfigError> {
    let found = flags
        .profile
        .as_deref()
        .map(profile::find::find)
        .transpose()?;
    let loaded = match &found {
        Some(f) => Some((f.path.as_path(), profile::Profile::load(&f.path)?)),
        None => None,
    };
    let merged = profile::merge(flags, loaded.as_ref().map(|(p, prof)| (*p, prof)));
    if flags.print_config {
        let settings = merged.args.settings()?;
        let used = match &found {
            None => "# profile: none (flags and defaults only)".to_owned(),
            Some(f) => match &f.by_name {
                Some(name) => format!("# profile: {} (found by name `{name}`)", f.path.display()),
                None => format!("# profile: {}", f.path.display()),
            },
        };
        print!("{used}\n{}", merged.to_toml(&settings));
        return Ok(None);
    }
    Ok(Some(merged.args.resolve()?))
}
