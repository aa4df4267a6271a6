//! `lguest-launcher`: parse the command line, dispatch, exit.
//!
//! Exit codes: 0 the workload finished; 1 a runtime failure (peer gone,
//! timeout, refused peer), one clear line on stderr; 2 a usage or config
//! error naming the flag or key.

use clap::Parser;
use lguest_launcher::{bench, cli, demo, run, status, switch, vhost_user};
use std::process::ExitCode;

fn main() -> ExitCode {
    // A dead peer must show up as EPIPE ("peer gone"), never kill us: the
    // Rust runtime sets SIGPIPE to SIG_IGN before `main`, and the socket
    // transports also send with MSG_NOSIGNAL.
    let cli = cli::Cli::parse();
    match cli.command {
        Some(cli::Command::Demo(args)) => demo::run(&args),
        Some(cli::Command::Status(args)) => status::run(&args),
        Some(cli::Command::VhostUser(args)) => vhost_user::run(&args),
        Some(cli::Command::Switch(args)) => switch::run(&args),
        Some(cli::Command::Bench(args)) => bench::run(&args),
        Some(cli::Command::BenchChild(args)) => bench::child::run(&args),
        Some(cli::Command::Completions(args)) => cli::docs::completions(&args),
        Some(cli::Command::Man(args)) => cli::docs::man(&args),
        None => match cli::configure(&cli.run) {
            Ok(Some(cfg)) => run::main(&cfg),
            Ok(None) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
    }
}
