//! `lguest-launcher vhost-user`: a real Linux guest as one side of a pair.
//!
//! lguest's point was that real guests exchange packets through their
//! launchers. Today's lguest guest is a QEMU VM whose virtio-net device is
//! served by this process over vhost-user: QEMU hands us the guest's memory
//! (`SET_MEM_TABLE`, memfd regions), the ring addresses and the kick/call
//! eventfds. rust-vmm's `vhost-user-backend` speaks that protocol; we do not
//! parse it ourselves.
//!
//! Once the VM's rings are ready we meet the peer launcher on `--sharenet`
//! exactly as a synthetic guest's launcher does, except that the handshake
//! describes the VM's memory: QEMU's memfd (re-shared with the peer: by
//! SCM_RIGHTS for unix/eventfd, by /proc path for fifo), its guest-physical
//! regions, and the VM's TX and RX rings by guest-physical address. From
//! then on the data path is the original's:
//!
//! * the peer's copier pulls from the VM's TX ring (it maps the VM's
//!   memory); a TX kick from the VM is relayed to the peer as a notification,
//!   and a notification from the peer that moved the VM's TX used index is
//!   relayed to the VM as its TX interrupt (call eventfd);
//! * our copier pulls from the peer's TX ring into the VM's RX ring and
//!   interrupts the VM when its `used_event`/flags ask for it.
//!
//! Everything runs in the backend's event thread: VM kicks, and the
//! transport's fd registered as an extra event. The VM's own suppression
//! mode decides the pair's: with EVENT_IDX negotiated the VM reads
//! `avail_event`, so the peer must maintain it.
//!
//! # The VM's memory: one mapping, the backend's
//! rust-vmm's backend maps the memory table QEMU sends. Our copier writes
//! into the VM's RX buffers through that same mapping: the link borrows it
//! as a [`crate::memory::Region`] (`Region::from_raw_parts`, holding an
//! `Arc` of the backend's `GuestMemoryMmap` so it outlives any later memory
//! table). The peer still needs QEMU's memfd, which we pass on. A `Region`
//! is one contiguous range, so a VM whose RAM comes as several regions
//! (above 4 GiB) is mapped once more as one range, as before.
//!
//! # Ring state: what QEMU set, what QEMU asks back
//! QEMU tells the backend where a ring starts (`SET_VRING_BASE`: next
//! avail; the library takes next used from the used ring) and asks where it
//! stands when it stops the device (`GET_VRING_BASE`: on poweroff, SIGTERM,
//! a paused VM). Our RX [`crate::virtq::DeviceQueue`] starts at the
//! library's `next_avail`/`next_used`, and `stop_vring` writes our real
//! position back into the library's queue before it answers: RX from our
//! copier, TX from the used index the peer's copier published (it marks
//! every chain it takes used, in order, within each batch). The link pauses
//! while a ring is stopped, and resumes only on the same rings at the
//! position we reported. The peer's copier starts on the VM's TX ring at
//! its published used index (`Copier::resume_peer_tx`), which is where
//! QEMU restarts that ring too.
//!
//! # Restarts (`--reconnect`, on by default)
//! A link is one *generation* (`establish.rs`); the VM, its QEMU
//! connection and its ring positions outlive it:
//!
//! * **The peer launcher leaves** (killed, restarted, its VM shut down):
//!   `link down (generation N): ...; waiting for the next peer on PATH`.
//!   Before the copier goes, our RX position and the peer's consumption of
//!   the VM's TX ring are written back into the library's queues; the VM's
//!   TX chains pile up in its ring, untouched. The next peer on the same
//!   path gets a new handshake (generation N+1); our copier resumes on its
//!   TX ring at its used index, its copier on ours at ours: chains the dead
//!   peer had not completed are delivered, none twice. `link up
//!   (generation N+1) after X ms`.
//! * **The VM reboots or its driver resets the NIC**: QEMU stops the rings
//!   (`GET_VRING_BASE`, answered with our real positions), and later sets
//!   up new ones at base 0. Rings that are not where the link left them
//!   (other addresses, or another base) are a re-attach, not a failure: the
//!   link goes down (the peer sees us leave) and the next one describes
//!   the new rings.
//! * **A new memory table**: QEMU sends one on every device start; the
//!   same memfd and regions keep the link, another layout takes it down
//!   and up again (the peer maps the new one).
//! * **This launcher is restarted**: QEMU, as the client with
//!   `-chardev socket,...,reconnect=1`, connects to the new process and
//!   replays the whole setup; having lost its backend it restarts each ring
//!   at the used index ("ring restore"), so what the dead launcher had
//!   consumed but not completed is offered again.
//!
//! What QEMU 7.2 does not let a backend do for virtio-net: raise a config
//! interrupt or set the link status. VIRTIO_NET_F_STATUS is QEMU's own
//! (not a backend feature bit); its virtio-net reads no config from a
//! vhost-user backend and drops VHOST_USER_PROTOCOL_F_CONFIG for net, so
//! the VM sees NO-CARRIER only when QEMU's own connection to its backend
//! is down. Nor does its virtio-net use VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD
//! (only vhost-user-blk/-scsi call GET_INFLIGHT_FD). Without it: the VM's
//! TX ring is consumed by the *peer's* copier, which survives our crash,
//! so QEMU's restore point (its used index) is exact; on the VM's RX ring
//! a crash mid-batch re-offers the buffers taken but not yet marked used
//! (none lost), and the peer's TX chains of that batch, not yet marked
//! used, are delivered again by our successor (at most one batch twice,
//! never lost).
//!
//! # Why not `virtio_queue::Queue` for the VM's side
//! The library already holds a `virtio_queue::Queue` per vring. We keep
//! serving the VM's RX ring with our own `DeviceQueue` because the copier is
//! one piece of code for both sides of every pair (a synthetic guest's RX
//! ring and a VM's are the same to it), its per-packet path goes through the
//! one bounds-checked `Region` and `run::account`, and `Queue` would bring a
//! second memory model (`GuestMemory` over `vm-memory`) into the copier's
//! inner loop for one of its two rings. The library's `Queue` stays the
//! record QEMU reads back: we keep it in step at `GET_VRING_BASE`. If the
//! bench shows `Queue` faster, the copier can take it for both sides; the
//! state hand-over above stays the same.
//!
//! # How a run ends
//! * QEMU stops the rings and hangs up (guest poweroff, SIGTERM): "the VM
//!   shut down", exit 0, stats written (also when the link was down then).
//!   The peer sees its link go down.
//! * The peer leaves: with `--reconnect` (default) we wait for the next one
//!   (above). With `--reconnect false`: one plain line "peer PID
//!   disconnected: ...; link down"; we keep answering our VM's QEMU for a
//!   few seconds (`backend::LINGER`) so a VM that is shutting down too gets
//!   its ring state back, then exit 1.
//! * QEMU hangs up with the rings running (the VM was killed), or the
//!   peer's ring is impossible: `error: ...`, exit 1.
//!
//! The files: `backend.rs` speaks vhost-user (rust-vmm's backend trait),
//! `establish.rs` meets the peer and sets each link generation up,
//! `link.rs` runs the data path through the one wait loop
//! ([`crate::wait`]) and ends a link, `qemu72_relay.rs` works around QEMU
//! 7.2's message order.

mod backend;
mod establish;
mod link;
mod qemu72_relay;
mod sockets;

use crate::cli::config::{Spec, Writes};
use crate::link::{dispatch, WithTransport};
use crate::virtq::NotifyMode;
use backend::NetBackend;
use clap::Args;
use link::exit_with;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, RwLock};
use transport::Transport;
use vhost_user_backend::VhostUserDaemon;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

/// `vhost-user` flags.
#[derive(Debug, Args, Clone)]
pub struct VhostArgs {
    /// The vhost-user socket to listen on (QEMU's `-chardev socket,path=...`).
    #[arg(long, value_name = "PATH")]
    pub socket: PathBuf,
    /// The peer launcher: fifo:PATH, unix:PATH or eventfd:PATH.
    #[arg(long, value_name = "KIND:PATH")]
    pub sharenet: Spec,
    /// Notification suppression offered to the VM (event-idx offers VIRTIO_RING_F_EVENT_IDX).
    #[arg(long, value_enum, default_value = "event-idx")]
    pub notify: NotifyMode,
    /// May a notification write block?
    #[arg(long, value_enum, default_value = "nonblocking")]
    pub writes: Writes,
    /// Give up waiting for the peer launcher after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300.0)]
    pub timeout: f64,
    /// Write stats JSON here when the VM or the peer leaves.
    #[arg(long, value_name = "PATH")]
    pub stats_json: Option<PathBuf>,
    /// No connection lines on stderr.
    #[arg(long, short)]
    pub quiet: bool,
    /// When the peer launcher leaves, or the VM's driver resets the NIC,
    /// keep serving the VM and wait on the same --sharenet path for the next
    /// peer (no deadline after the first link). `--reconnect false`: exit 1
    /// a few seconds after the link goes down, as before.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub reconnect: bool,
    /// Also accept QEMU connecting to --socket as this uid (repeatable; by
    /// default only our own uid may connect, checked with SO_PEERCRED).
    #[arg(long = "allow-uid", value_name = "UID")]
    pub allow_uid: Vec<u32>,
}

/// Event id for the transport's fd (0 and 1 are the queues; 2 is the
/// backend library's own exit event).
const LINK_EVENT: u16 = 3;

fn serve<T: Transport + 'static>(args: &VhostArgs) -> ExitCode {
    // QEMU connects to --socket; the rust-vmm daemon listens on a private
    // socket behind the `qemu72_relay` (see `sockets.rs` for who may
    // connect to either). Both before the daemon exists: once its threads
    // run, returning from here no longer ends the process.
    let public = match sockets::bind_public(&args.socket, !args.allow_uid.is_empty()) {
        Ok(l) => l,
        Err(line) => {
            eprintln!("error: {line}");
            return ExitCode::from(2);
        }
    };
    let backend = Arc::new(RwLock::new(NetBackend::<T>::new(args.clone())));
    let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let mut daemon = match VhostUserDaemon::new("sharenet-net".into(), backend.clone(), mem) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: cannot start the vhost-user backend: {e}");
            let _ = std::fs::remove_file(&args.socket);
            return ExitCode::from(1);
        }
    };
    if !args.quiet {
        eprintln!(
            "waiting for QEMU on vhost-user socket {} ...",
            args.socket.display()
        );
    }
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
    let relay_socket = args.socket.clone();
    let allowed = args.allow_uid.clone();
    std::thread::spawn(move || {
        let qemu = match sockets::accept_qemu(&public, &allowed, &relay_socket) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: accept on {}: {e}", relay_socket.display());
                std::process::exit(1);
            }
        };
        let _ = std::fs::remove_file(&relay_socket);
        if let Err(e) = qemu72_relay::relay(qemu, &relay_private) {
            eprintln!("warning: vhost-user relay: {e}");
        }
    });
    if let Err(e) = daemon.start(&mut listener) {
        eprintln!("error: vhost-user connection failed: {e}");
        return ExitCode::from(1);
    }
    drop(private_dir);
    if !args.quiet {
        eprintln!("QEMU connected");
    }
    let handlers = daemon.get_epoll_handlers();
    let link_args = args.clone();
    let link_backend = backend.clone();
    std::thread::spawn(move || {
        let register = |fd: i32| {
            if let Some(h) = handlers.first() {
                if let Err(e) = h.register_listener(fd, EventSet::IN, LINK_EVENT as u64) {
                    eprintln!("error: cannot watch the transport: {e}");
                    std::process::exit(1);
                }
            }
        };
        // One link generation per turn: set it up, watch it until it goes
        // down, and (with --reconnect) set the next one up on the same path.
        loop {
            if let Err(e) = establish::establish::<T>(&link_backend, &register, &link_args) {
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
    let result = daemon.wait();
    let mut b = backend.write().unwrap_or_else(|p| p.into_inner());
    // QEMU hanging up is how every run ends ("disconnected" to the vhost
    // crate, or a partial message when it goes mid-write): `vm_gone` tells
    // a shutdown from a kill. Anything else is a protocol failure.
    let hung_up = |e: &vhost_user_backend::Error| {
        matches!(
            e,
            vhost_user_backend::Error::HandleRequest(
                vhost::vhost_user::Error::Disconnected | vhost::vhost_user::Error::PartialMessage
            )
        )
    };
    match result {
        Err(e) if !hung_up(&e) => {
            let stats = b.stats_so_far(format!("vhost-user: {e}"));
            exit_with(args, &stats, &format!("error: {}", stats.result), 1);
        }
        _ => b.vm_gone(),
    }
}

/// `serve` with the transport of the configured kind.
struct Serve<'a>(&'a VhostArgs);

impl WithTransport for Serve<'_> {
    type Output = ExitCode;
    fn with<T: Transport + 'static>(self) -> ExitCode {
        serve::<T>(self.0)
    }
}

/// Run `vhost-user`.
pub fn run(args: &VhostArgs) -> ExitCode {
    dispatch(args.sharenet.kind, Serve(args))
}
