//! Serving one QEMU at a time: `--socket` bound while we want QEMU,
//! each connection accepted (SO_PEERCRED checked, `sockets.rs`) and served
//! by a fresh rust-vmm daemon behind the QEMU 7.2 relay, the link thread
//! started once, and how the run ends when QEMU goes.

use super::*;

/// How often QEMU's socket is looked at while we wait for it.
const ACCEPT_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// Listen on `--socket` (a stale socket there is replaced, anything else
/// refused; see `sockets.rs`), non-blocking.
fn listen(socket: &std::path::Path, others_allowed: bool) -> Result<UnixListener, String> {
    let l = sockets::bind_public(socket, others_allowed)?;
    l.set_nonblocking(true)
        .map_err(|e| format!("--socket {}: {e}", socket.display()))?;
    Ok(l)
}

/// Wait for QEMU on `--socket`; its connection and its pid.
///
/// The socket exists only while we want QEMU: at start, and — after we
/// closed its connection to show the VM NO-CARRIER (`--carrier follow`) —
/// once the next peer has linked. In between QEMU's reconnect attempts
/// find no socket and fail, so QEMU keeps the NIC's link down (a
/// connection left waiting in the listen backlog would instead block
/// QEMU's main loop in the vhost-user setup, freezing the VM). A QEMU that
/// exits meanwhile (the VM shut down while its carrier was down) ends the
/// run as `vm_gone` does.
fn next_qemu<T: Transport + 'static>(
    backend: &Arc<RwLock<NetBackend<T>>>,
    socket: &std::path::Path,
    public: &mut Option<UnixListener>,
    allowed: &[u32],
) -> Result<(UnixStream, Option<u32>), ExitCode> {
    loop {
        let want = {
            let mut b = backend.write().unwrap_or_else(|p| p.into_inner());
            if b.away.is_some() && b.qemu_pid.is_some_and(|pid| !process_alive(pid)) {
                return Err(b.vm_gone());
            }
            b.away.is_none() || b.link.is_some()
        };
        match (want, public.is_some()) {
            (true, false) => {
                *public = Some(listen(socket, !allowed.is_empty()).map_err(|line| {
                    eprintln!("error: {line}");
                    ExitCode::from(1)
                })?)
            }
            (false, true) => {
                *public = None;
                let _ = std::fs::remove_file(socket);
            }
            _ => {}
        }
        if let Some(l) = public.as_ref() {
            // Only our uid (or --allow-uid) gets through; others are
            // refused with a line and the next connector is looked at.
            match sockets::accept_qemu(l, allowed, socket) {
                Ok(s) => {
                    *public = None;
                    // One QEMU at a time: the socket goes until we want
                    // QEMU again.
                    let _ = std::fs::remove_file(socket);
                    let _ = s.set_nonblocking(false);
                    let pid = getsockopt(&s, PeerCredentials)
                        .ok()
                        .and_then(|c| u32::try_from(c.pid()).ok());
                    return Ok((s, pid));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    eprintln!("error: accept on --socket {}: {e}", socket.display());
                    return Err(ExitCode::from(1));
                }
            }
        }
        std::thread::sleep(ACCEPT_EVERY);
    }
}

pub(super) fn serve<T: Transport + 'static>(args: &VhostArgs) -> ExitCode {
    // QEMU connects to --socket (see `sockets.rs` for who may); bound
    // before any daemon thread exists, so a refusal here ends the process.
    let mut public = match listen(&args.socket, !args.allow_uid.is_empty()) {
        Ok(l) => Some(l),
        Err(line) => {
            eprintln!("error: {line}");
            return ExitCode::from(2);
        }
    };
    // Capture, control socket (`status`) and kick stamp: `seen.rs`.
    if let Err(line) = seen::start(args) {
        eprintln!("error: {line}");
        let _ = std::fs::remove_file(&args.socket);
        return ExitCode::from(2);
    }
    let mut net = NetBackend::<T>::new(args.clone());
    if args.share == Share::Exchange {
        match exchange::Exchange::create() {
            Ok(x) => net.exchange = Some(x),
            Err(e) => {
                eprintln!("error: cannot create the exchange area (--share exchange): {e}");
                let _ = std::fs::remove_file(&args.socket);
                return ExitCode::from(1);
            }
        }
    }
    let backend = Arc::new(RwLock::new(net));
    stop::on_stop_signals(&backend, args);
    if !args.quiet {
        eprintln!(
            "waiting for QEMU on vhost-user socket {} ...",
            args.socket.display()
        );
    }
    // One QEMU connection per turn: the first, and with `--carrier follow`
    // each one after we closed the last to take the VM's carrier down.
    let mut link_thread = false;
    loop {
        let (qemu, qemu_pid) = match next_qemu(&backend, &args.socket, &mut public, &args.allow_uid)
        {
            Ok(q) => q,
            Err(code) => return code,
        };
        // A fresh daemon per connection: rust-vmm's handler takes
        // SET_OWNER once.
        let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
        let mut daemon = match VhostUserDaemon::new("sharenet-net".into(), backend.clone(), mem) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("error: cannot start the vhost-user backend: {e}");
                return ExitCode::from(1);
            }
        };
        // QEMU is connected to --socket; the rust-vmm daemon listens on a
        // private socket (in a fresh 0700 directory) behind the
        // `qemu72_relay`.
        let private_dir = match sockets::PrivateDir::create() {
            Ok(d) => d,
            Err(e) => {
                eprintln!(
                    "error: cannot create a private directory in {}: {e}",
                    std::env::temp_dir().display()
                );
                return ExitCode::from(1);
            }
        };
        let private = private_dir.socket();
        let mut listener = match vhost::vhost_user::Listener::new(&private, false) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {}: {e}", private.display());
                return ExitCode::from(1);
            }
        };
        let relay_private = private.clone();
        std::thread::spawn(move || {
            if let Err(e) = qemu72_relay::relay(qemu, &relay_private) {
                eprintln!("warning: vhost-user relay: {e}");
            }
        });
        if let Err(e) = daemon.start(&mut listener) {
            eprintln!("error: vhost-user connection failed: {e}");
            return ExitCode::from(1);
        }
        drop(private_dir);
        let handlers = daemon.get_epoll_handlers();
        // Ends the connection's worker thread once QEMU is gone: dropping
        // the daemon joins it.
        let retire = match vmm_sys_util::eventfd::EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK)
            .and_then(|r| match handlers.first() {
                Some(h) => h
                    .register_listener(r.as_raw_fd(), EventSet::IN, RETIRE_EVENT as u64)
                    .map(|_| r),
                None => Err(std::io::Error::other("no vring worker")),
            }) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: cannot set up the vhost-user event loop: {e}");
                return ExitCode::from(1);
            }
        };
        let watch = move |fd: i32| match handlers.first() {
            Some(h) => h.register_listener(fd, EventSet::IN, LINK_EVENT as u64),
            None => Ok(()),
        };
        {
            let mut b = backend.write().unwrap_or_else(|p| p.into_inner());
            if !args.quiet {
                eprintln!("QEMU {}connected", if b.away.is_some() { "re" } else { "" });
            }
            b.connected(daemon.shutdown_handle(), Box::new(watch), qemu_pid);
        }
        if !link_thread {
            link_thread = true;
            let link_args = args.clone();
            let link_backend = backend.clone();
            std::thread::spawn(move || {
                // One link generation per turn: set it up, watch it until
                // it goes down, and (with --reconnect) set the next one up
                // on the same path.
                loop {
                    if let Err(e) = establish::establish::<T>(&link_backend, &link_args) {
                        let mut b = link_backend.write().unwrap_or_else(|p| p.into_inner());
                        let stats = b.stats_so_far(e.to_string());
                        exit_with(&link_args, &stats, &format!("error: {e}"), 1);
                    }
                    link::watch(&link_backend);
                    if !link_args.reconnect {
                        return; // the linger timer ends the process
                    }
                }
            });
        }
        let result = daemon.wait();
        let mut b = backend.write().unwrap_or_else(|p| p.into_inner());
        // We closed the connection ourselves (the peer left, `--carrier
        // follow`): QEMU is away, the VM lives on; take QEMU back once the
        // next peer has linked.
        if b.disconnected() {
            drop(b);
            let _ = retire.write(1);
            drop(daemon);
            continue;
        }
        // QEMU hanging up is how every run ends ("disconnected" to the vhost
        // crate, or a partial message when it goes mid-write): `vm_gone` tells
        // a shutdown from a kill. Anything else is a protocol failure.
        let hung_up = |e: &vhost_user_backend::Error| {
            matches!(
                e,
                vhost_user_backend::Error::HandleRequest(
                    vhost::vhost_user::Error::Disconnected
                        | vhost::vhost_user::Error::PartialMessage
                )
            )
        };
        return match result {
            Err(e) if !hung_up(&e) => {
                let stats = b.stats_so_far(format!("vhost-user: {e}"));
                exit_with(args, &stats, &format!("error: {}", stats.result), 1);
            }
            _ => b.vm_gone(),
        };
    }
}

/// `serve` with the transport of the configured kind.
pub(super) struct Serve<'a>(pub(super) &'a VhostArgs);

impl WithTransport for Serve<'_> {
    type Output = ExitCode;
    fn with<T: Transport + 'static>(self) -> ExitCode {
        serve::<T>(self.0)
    }
}
