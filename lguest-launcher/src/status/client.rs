//! `lguest-launcher status`: find the control sockets beside a rendezvous
//! path, ask each, print a table (or JSON), again every `--watch` seconds.

use super::table::table;
use super::Reply;
use crate::cli::config::Spec;
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// `status` flags.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The rendezvous of the launchers to ask: fifo:PATH, unix:PATH or eventfd:PATH.
    #[arg(long, value_name = "KIND:PATH")]
    pub sharenet: Spec,
    /// Print JSON: an array with one object per answering launcher, its
    /// ports carrying the stats JSON's keys plus the live ones (one line
    /// per refresh with --watch).
    #[arg(long)]
    pub json: bool,
    /// Ask again every SECS seconds, redrawing the screen, until
    /// interrupted (like watch or top).
    #[arg(long, value_name = "SECS", value_parser = crate::cli::parse_secs)]
    pub watch: Option<f64>,
}

/// Why asking failed.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// No control socket beside the rendezvous path.
    #[error("no launcher answers on {spec}: no control socket {pattern} (is a launcher running with --sharenet {spec}?)")]
    NoSocket {
        /// The rendezvous.
        spec: String,
        /// The sockets looked for.
        pattern: String,
    },
    /// The socket is there but nobody answers.
    #[error("control socket {socket}: {err} (the launcher, pid {pid}, is gone; its socket was left behind)")]
    Gone {
        /// The socket.
        socket: String,
        /// Its launcher's pid, from the name.
        pid: u32,
        /// What connect said.
        err: std::io::Error,
    },
    /// The launcher refused us, or answered something unreadable.
    #[error("control socket {socket}: {msg}")]
    Refused {
        /// The socket.
        socket: String,
        /// What it said.
        msg: String,
    },
}

/// The control sockets beside `spec`'s path, by pid.
fn sockets(spec: &Spec) -> Vec<(u32, PathBuf)> {
    let path = &spec.path;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Some(base) = path.file_name().and_then(|b| b.to_str()) else {
        return Vec::new();
    };
    let prefix = format!("{base}.status.");
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let pid = name.strip_prefix(&prefix)?.parse().ok()?;
            Some((pid, e.path()))
        })
        .collect();
    found.sort();
    found
}

/// Ask one control socket.
pub fn ask(socket: &std::path::Path, pid: u32) -> Result<Reply, StatusError> {
    let shown = socket.display().to_string();
    let conn = UnixStream::connect(socket).map_err(|err| match err.kind() {
        std::io::ErrorKind::PermissionDenied => StatusError::Refused {
            socket: shown.clone(),
            msg: format!(
                "{err}: the control socket is mode 0600, for the launcher's own user; \
                 run status as the user that started launcher {pid}"
            ),
        },
        _ => StatusError::Gone {
            socket: shown.clone(),
            pid,
            err,
        },
    })?;
    let _ = conn.set_read_timeout(Some(Duration::from_secs(3)));
    let mut line = String::new();
    let refused = |msg: String| StatusError::Refused {
        socket: shown.clone(),
        msg,
    };
    BufReader::new(conn)
        .read_line(&mut line)
        .map_err(|e| refused(format!("no answer: {e}")))?;
    let v: serde_json::Value =
        serde_json::from_str(&line).map_err(|e| refused(format!("unreadable answer: {e}")))?;
    if let Some(err) = v.get("error").and_then(|e| e.as_str()) {
        return Err(refused(err.to_string()));
    }
    let mut reply: Reply =
        serde_json::from_value(v).map_err(|e| refused(format!("unreadable answer: {e}")))?;
    reply.socket = shown;
    Ok(reply)
}

/// Ask every launcher on the rendezvous once: the replies, and the errors of
/// those that did not answer.
pub fn ask_all(spec: &Spec) -> Result<(Vec<Reply>, Vec<StatusError>), StatusError> {
    let found = sockets(spec);
    if found.is_empty() {
        return Err(StatusError::NoSocket {
            spec: spec.to_string(),
            pattern: format!("{}.status.PID", spec.path.display()),
        });
    }
    let mut replies = Vec::new();
    let mut errors = Vec::new();
    for (pid, path) in found {
        match ask(&path, pid) {
            Ok(r) => replies.push(r),
            Err(e) => errors.push(e),
        }
    }
    Ok((replies, errors))
}

/// `lguest-launcher status`: exit 0 when at least one launcher answered,
/// 1 when none did.
pub fn run(args: &StatusArgs) -> ExitCode {
    loop {
        let (replies, errors) = match ask_all(&args.sharenet) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        };
        if args.watch.is_some() && !args.json {
            print!("\x1b[H\x1b[2J"); // home, clear: redraw like watch(1)
        }
        if args.json {
            let text = if args.watch.is_some() {
                serde_json::to_string(&replies)
            } else {
                serde_json::to_string_pretty(&replies)
            };
            println!("{}", text.unwrap_or_default());
        } else {
            print!("{}", table(&args.sharenet, &replies));
        }
        for e in &errors {
            eprintln!("error: {e}");
        }
        if replies.is_empty() {
            return ExitCode::from(1);
        }
        let Some(secs) = args.watch else {
            return ExitCode::SUCCESS;
        };
        std::thread::sleep(Duration::from_secs_f64(secs));
    }
}
