//! The command line: flags and subcommands ([`args`]), TOML profiles
//! ([`profile`]) and the resolved configuration every run sees ([`config`]).

mod args;
pub mod config;
pub mod profile;

pub use args::*;

use config::RunConfig;

/// A usage or configuration error: exit code 2, one line naming the flag,
/// key or file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The profile could not be read or is invalid.
    #[error("{0}")]
    Profile(#[from] profile::ProfileError),
    /// A flag (or merged value) is out of range or missing.
    #[error("{0}")]
    Usage(String),
}

impl From<UsageError> for ConfigError {
    fn from(UsageError(m): UsageError) -> Self {
        ConfigError::Usage(m)
    }
}

/// Merge flags over the profile and resolve; `None` after `--print-config`
/// (the merged configuration was printed).
pub fn configure(flags: &RunArgs) -> Result<Option<RunConfig>, ConfigError> {
    let loaded = match &flags.profile {
        Some(path) => Some((path.as_path(), profile::Profile::load(path)?)),
        None => None,
    };
    let merged = profile::merge(flags, loaded.as_ref().map(|(p, prof)| (*p, prof)));
    let cfg = merged.args.resolve()?;
    if flags.print_config {
        print!("{}", merged.to_toml(&cfg));
        return Ok(None);
    }
    Ok(Some(cfg))
}
