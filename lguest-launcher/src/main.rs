//! `lguest-launcher`: one side of a sharenet pair, plus `demo`.
//!
//! Exit codes: 0 the workload finished; 1 a runtime failure (peer gone,
//! timeout, refused peer), one clear line on stderr; 2 a usage or config
//! error naming the flag or key.

mod bench;
mod cli;
mod config;
mod copier;
mod demo;
#[cfg(test)]
mod fuzz;
mod layout;
mod memory;
mod packet;
mod profile;
mod progress;
mod ring;
mod run;
mod stats;
mod vhost;
mod vhost_compat;
mod workload;

use clap::Parser;
use config::{Kind, RunConfig};
use run::SharedStats;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

fn main() -> ExitCode {
    // A dead peer must show up as EPIPE ("peer gone"), never kill us: the
    // Rust runtime sets SIGPIPE to SIG_IGN before `main`, and the socket
    // transports also send with MSG_NOSIGNAL.
    let cli = cli::Cli::parse();
    match cli.command {
        Some(cli::Command::Demo(args)) => demo::run(&args),
        Some(cli::Command::VhostUser(args)) => vhost::run(&args),
        Some(cli::Command::Bench(args)) => bench::run(&args),
        Some(cli::Command::BenchChild(args)) => bench::child::run(&args),
        None => match configure(&cli.run) {
            Ok(Some(cfg)) => run_one(&cfg),
            Ok(None) => ExitCode::SUCCESS,
            Err(msg) => {
                eprintln!("error: {msg}");
                ExitCode::from(2)
            }
        },
    }
}

/// Merge flags over the profile and resolve; `None` after `--print-config`.
fn configure(flags: &cli::RunArgs) -> Result<Option<RunConfig>, String> {
    let loaded = match &flags.profile {
        Some(path) => Some((
            path.as_path(),
            profile::Profile::load(path).map_err(|e| e.to_string())?,
        )),
        None => None,
    };
    let merged = profile::merge(flags, loaded.as_ref().map(|(p, prof)| (*p, prof)));
    let cfg = merged.args.resolve().map_err(|cli::UsageError(m)| m)?;
    if flags.print_config {
        print!("{}", merged.to_toml(&cfg));
        return Ok(None);
    }
    Ok(Some(cfg))
}

fn run_one(cfg: &RunConfig) -> ExitCode {
    let shared: SharedStats = Arc::new(Mutex::new(stats::Stats::default()));
    start_watchdog(cfg, shared.clone());
    let bar = progress::Progress::start(cfg, shared.clone());
    let result = match cfg.spec.kind {
        Kind::Fifo => run::run::<transport_fifo::Fifo>(cfg, &shared),
        Kind::Unix => run::run::<transport_unixsock::UnixSock>(cfg, &shared),
        Kind::Eventfd => run::run::<transport_eventfd::EventFd>(cfg, &shared),
    };
    drop(bar);
    let stats = match &result {
        Ok(s) => s.clone(),
        Err(e) => {
            let mut s = shared.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if s.result.is_empty() {
                // Failed before the loop (rendezvous, refused peer).
                s.result = e.to_string();
            }
            s
        }
    };
    write_stats(cfg, &stats);
    match result {
        Ok(s) => {
            if !cfg.quiet {
                eprintln!("{}", s.summary());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn write_stats(cfg: &RunConfig, stats: &stats::Stats) {
    if let Some(p) = &cfg.stats_json {
        if let Err(e) = stats.write_json(p) {
            eprintln!("warning: cannot write stats to {}: {e}", p.display());
        }
    }
}

/// The run loop honours `--timeout` itself; this thread is the backstop for
/// a call that blocks (a blocking notification write to a stopped peer).
fn start_watchdog(cfg: &RunConfig, shared: SharedStats) {
    let cfg = cfg.clone();
    std::thread::spawn(move || {
        std::thread::sleep(cfg.timeout + std::time::Duration::from_secs(2));
        let mut s = shared.lock().unwrap_or_else(|p| p.into_inner()).clone();
        s.result = format!(
            "timed out after {:.1} s (blocked)",
            cfg.timeout.as_secs_f64()
        );
        write_stats(&cfg, &s);
        eprintln!("error: {}", s.result);
        std::process::exit(1);
    });
}
