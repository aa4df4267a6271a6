//! Meeting the peer: the transport's rendezvous with our handshake, what a
//! failed meeting means (a signal, a busy path, `--timeout`, a peer gone
//! in the middle of the handshake), and waiting for a refused peer to go.

use super::*;
use crate::cli::config::{RunConfig, Writes};
use crate::link::{PairMark, RefusalNote};
use crate::memory::GuestMemory;
use std::sync::Arc;
use std::time::{Duration, Instant};
use transport::{ConnectOptions, Handshake, Transport};

/// How long a refused peer has to leave before we wait for the next one (a
/// refused receiver may still drain our TX ring while it notices).
pub(super) const REFUSED_GRACE: Duration = Duration::from_secs(2);

/// Wait until process `pid` is gone (or a zombie), at most `limit`.
pub(super) fn wait_gone(pid: u32, limit: Duration) {
    let until = Instant::now() + limit;
    while Instant::now() < until && crate::link::process_alive(pid) {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Rendezvous on the configured path, offering `local`.
pub(super) fn connect<T: Transport>(
    cfg: &RunConfig,
    mem: &GuestMemory,
    local: &Handshake,
    deadline: Option<Instant>,
    first: bool,
) -> Result<(T, transport::PeerInfo), RunError> {
    let opts = ConnectOptions {
        nonblocking_writes: cfg.writes == Writes::Nonblocking,
        timeout: deadline.map(|d| d.saturating_duration_since(Instant::now())),
    };
    let connecting = Arc::new(std::sync::atomic::AtomicBool::new(true));
    if !cfg.quiet {
        spawn_helpers(|| RefusalNote::watch(&cfg.spec.path, &cfg.name, connecting.clone()));
    }
    let connected = T::connect(&cfg.spec.path, local, mem.fd(), &opts);
    connecting.store(false, std::sync::atomic::Ordering::Relaxed);
    if let Err(transport::Error::RefusedPath { reason, .. }) = &connected {
        if !(reason.contains("FIFO") || reason.contains("socket")) {
            // A symlink or a foreign owner: nobody of ours waits there.
        } else {
            // Someone else's rendezvous of another kind: tell its owner why.
            RefusalNote::leave(&cfg.spec.path, cfg.spec.kind);
        }
    }
    connected.map_err(|e| {
        // A signal during rendezvous ends the wait (the transport removed
        // the files it created on the way out).
        match transport::interrupted() {
            Some(sig) => RunError::Interrupted(sig),
            None => match (&e, PairMark::busy(&cfg.spec.path)) {
                (transport::Error::ConnectTimeout { .. }, Some((a, b))) => RunError::Busy {
                    err: e,
                    path: cfg.spec.path.display().to_string(),
                    a,
                    b,
                },
                // Waiting for the next peer ran into `--timeout`.
                (transport::Error::ConnectTimeout { .. }, None) if !first => {
                    RunError::Timeout(cfg.timeout.as_secs_f64())
                }
                _ => RunError::Transport(e),
            },
        }
    })
}

/// How long `--reconnect` waits before it meets the path again after a
/// peer left during the handshake (its rendezvous may still be there).
pub(super) const HANDSHAKE_RETRY: Duration = Duration::from_millis(50);

/// The peer closed or reset the connection before the handshake was
/// through: nothing of ours is wrong, the peer is just gone.
pub(super) fn gone_mid_handshake(e: &transport::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    match e {
        transport::Error::PeerGone { .. } | transport::Error::ShortHandshake { .. } => true,
        transport::Error::Io { source, .. } => matches!(
            source.kind(),
            ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
        ),
        _ => false,
    }
}
