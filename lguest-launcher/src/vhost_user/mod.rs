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
//! exactly as a synthetic guest's launcher does. What the handshake offers
//! the peer is `--share`:
//!
//! * `exchange` (the default): a dedicated, sealed exchange memfd laid out
//!   like a synthetic guest's memory, holding a TX ring and one buffer slot
//!   per descriptor and nothing else. We serve the VM's TX ring ourselves,
//!   copy each frame into a slot (one extra copy) and complete the VM's
//!   chain; the peer's copier pulls from the exchange ring as from any
//!   synthetic guest's (`exchange.rs` tells that story);
//! * `guest`: the VM's own memory: QEMU's memfd (re-shared with the peer:
//!   by SCM_RIGHTS for unix/eventfd, by /proc path for fifo), its
//!   guest-physical regions, and the VM's TX and RX rings by guest-physical
//!   address. The peer's copier pulls from the VM's TX ring directly (it
//!   maps all of the VM's RAM, read-write); a TX kick from the VM is
//!   relayed to the peer as a notification, and a notification from the
//!   peer that moved the VM's TX used index is relayed to the VM as its TX
//!   interrupt (call eventfd).
//!
//! Either way our copier pulls from the peer's TX ring into the VM's RX
//! ring and interrupts the VM when its `used_event`/flags ask for it.
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
//! table). With `--share guest` the peer still needs QEMU's memfd, which we
//! pass on. A `Region`
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
//! every chain it takes used, in order, within each batch; with `--share
//! exchange`, from our own pump, which completes each chain as it copies
//! it). The link pauses
//! while a ring is stopped, and resumes only on the same rings at the
//! position we reported. Whoever serves the VM's TX ring (the peer's copier,
//! or our pump) starts at its published used index
//! (`Copier::resume_peer_tx`), which is where QEMU restarts that ring too.
//!
//! # Restarts (`--reconnect`, on by default)
//! A link is one *generation* (`establish.rs`); the VM, its QEMU
//! connection and its ring positions outlive it:
//!
//! * **The peer launcher leaves** (killed, restarted, its VM shut down):
//!   `link down (generation N): ...; waiting for the next peer on PATH`.
//!   Before the copier goes, our RX position and the peer's consumption of
//!   the VM's TX ring are written back into the library's queues; the VM's
//!   TX chains pile up in its ring, untouched. The VM sees NO-CARRIER until
//!   the next link (`--carrier follow`, below). The next peer on the same
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
//! # What the VM sees while its peer is away (`--carrier`)
//! QEMU 7.2 gives a vhost-user net backend no way to set the link status or
//! raise a config interrupt: VIRTIO_NET_F_STATUS is QEMU's own (not a
//! backend feature bit), its virtio-net reads no config from a vhost-user
//! backend and drops VHOST_USER_PROTOCOL_F_CONFIG for net. What it does
//! have: its vhost-user netdev sets the NIC's link down when the chardev
//! connection to the backend closes (`CHR_EVENT_CLOSED`: link down, config
//! interrupt, NO-CARRIER in the VM) and up again when a connection is set
//! up (QEMU is the client, `reconnect=1`: it retries every second). So with
//! `--carrier follow` (the default, with `--reconnect`):
//!
//! 1. **The peer leaves** (or its ring is impossible): after `link down`
//!    we note the VM's rings (`Parked`: their addresses, and the RX
//!    position QEMU will restart at, its used index) and close QEMU's
//!    connection (`VM carrier down: ...`). QEMU stops the rings without us
//!    ("ring restore failed" twice in its log, expected) and restarts each
//!    at its used index later. While it is away the VM's memory stays
//!    mapped here (the backend's last `GuestMemoryMmap`, with QEMU's memfd
//!    inside) and `--socket` is gone, so QEMU's reconnects fail: a
//!    connection left waiting in the listen backlog would block QEMU's
//!    main loop in the vhost-user setup and freeze the VM.
//! 2. **The next peer** meets us on the parked memory and rings, exactly
//!    as if QEMU were there (`establish`): `link up (generation N+1)`. With
//!    `--share guest` its copier starts on the VM's TX ring at the used
//!    index, where QEMU restarts it too (with `exchange` it starts on the
//!    exchange ring, and the VM's rings wait for QEMU); our copier does
//!    not move a packet yet (no rings).
//! 3. **QEMU is taken back**: `--socket` is bound again, QEMU reconnects
//!    within a second and replays the setup (a fresh rust-vmm daemon per
//!    connection: its handler takes SET_OWNER once). `QEMU reconnected`;
//!    the same memfd and regions keep the link (another layout takes it
//!    down and up, as any new memory table does). The rings must be the
//!    parked ones at the parked positions (`running`, as after a pause);
//!    otherwise the link goes down and comes up on QEMU's rings, with the
//!    carrier up. QEMU sets the NIC's link up: the VM sees carrier again.
//! 4. **The VM shuts down while QEMU is away**: QEMU's pid (SO_PEERCRED
//!    when it connected) is watched; once it is gone the run ends as a
//!    shutdown does (`the VM shut down`, exit 0, stats written). A QEMU
//!    killed in that window cannot be told from one that shut down.
//!
//! What it costs: while its carrier is down, QEMU's own virtio-net owns
//! the VM's rings, and a TX kick that reaches it drops every chain then in
//! the TX ring (a NIC without carrier). The VM's driver stops its TX queue
//! on the config interrupt, so in practice that is what it sent in the
//! moment the link went down; what is still in the ring when QEMU comes
//! back goes to the next peer, none twice. (The same stopped queue is why,
//! with `--share guest`, the next peer's copier may start on the TX ring in
//! step 2 while QEMU still owns it: nothing is posted or kicked there
//! meanwhile.)
//!
//! Only links whose peer left take the carrier down: a VM reboot or NIC
//! reset (QEMU stops our rings) re-attaches with the carrier up, and the
//! VM's carrier is up from boot until the first link (the handshake
//! describes rings that only QEMU can tell us).
//! `--carrier always-up` keeps QEMU connected throughout: the VM's link
//! never drops and what it sends while the peer is away waits in its TX
//! ring for the next peer. Without `--reconnect` the launcher exits a few
//! seconds after the link goes down, which drops the carrier anyway.
//!
//! Nor does QEMU 7.2's virtio-net use VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD
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
//!   shut down", exit 0, stats written (also when the link was down then,
//!   and when QEMU exits while we keep it away for NO-CARRIER).
//!   The peer sees its link go down.
//! * The peer leaves: with `--reconnect` (default) we wait for the next one
//!   (above). With `--reconnect false`: one plain line "peer PID
//!   disconnected: ...; link down"; we keep answering our VM's QEMU for a
//!   few seconds (`backend::LINGER`) so a VM that is shutting down too gets
//!   its ring state back, then exit 1.
//! * QEMU hangs up with the rings running (the VM was killed), or the
//!   peer's ring is impossible: `error: ...`, exit 1.
//!
//! The files: `mod.rs` takes QEMU's connections (one rust-vmm daemon
//! each), `backend.rs` speaks vhost-user (rust-vmm's backend trait),
//! `establish.rs` meets the peer and sets each link generation up,
//! `exchange.rs` is the area the peer maps with `--share exchange`,
//! `link.rs` runs the data path through the one wait loop
//! ([`crate::wait`]) and ends a link, `qemu72_relay.rs` works around QEMU
//! 7.2's message order.

mod backend;
mod establish;
mod exchange;
mod features;
mod link;
mod qemu;
mod qemu72_relay;
mod seen;
mod sockets;
mod stop;

use crate::cli::config::{Share, Spec, Writes};
use crate::link::process_alive;
use crate::link::{dispatch, WithTransport};
use crate::virtq::NotifyMode;
use backend::NetBackend;
use clap::Args;
use link::exit_with;
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
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
    /// `--capture FILE.pcapng [--snaplen BYTES]`: what the peer sends our
    /// VM (interface `vhost-PID-rx`); a frame whose virtio_net_hdr asks
    /// for GSO or a partial checksum says so in its comment.
    #[command(flatten)]
    pub capture: crate::capture::CaptureArgs,
    /// No connection lines on stderr.
    #[arg(long, short)]
    pub quiet: bool,
    /// When the peer launcher leaves, or the VM's driver resets the NIC,
    /// keep serving the VM and wait on the same --sharenet path for the next
    /// peer (no deadline after the first link). `--reconnect false`: exit 1
    /// a few seconds after the link goes down, as before.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub reconnect: bool,
    /// Also accept QEMU connecting to --socket as this user, a uid or a
    /// name (repeatable; by default only our own uid may connect, checked
    /// with SO_PEERCRED). With it the socket is mode 0666 (anyone may
    /// connect; SO_PEERCRED turns away whoever is not allowed).
    #[arg(long = "allow-uid", value_name = "UID|USER", value_parser = parse_user)]
    pub allow_uid: Vec<u32>,
    /// What the VM's link state follows (with --reconnect): `follow` shows
    /// the VM NO-CARRIER while its peer launcher is away (we close QEMU's
    /// vhost-user connection and take it back once the next peer has
    /// linked); `always-up` keeps the link up and the VM's frames wait in
    /// its TX ring for the next peer.
    #[arg(long, value_enum, default_value = "follow")]
    pub carrier: Carrier,
    /// What memory the peer launcher may map: `exchange` (a dedicated,
    /// sealed area holding only the frames this VM sends: one extra copy
    /// per frame) or `guest` (all of the VM's RAM, read-write).
    #[arg(long, value_enum, default_value = "exchange")]
    pub share: Share,
    /// Checksum and segmentation offloads offered to the VM: `on` offers
    /// CSUM, GUEST_CSUM, HOST/GUEST_TSO4/6, HOST/GUEST_ECN and MRG_RXBUF
    /// (the virtio-net header travels with each frame to the peer); `off`
    /// offers only VERSION_1 and EVENT_IDX, as before.
    #[arg(long, value_enum, default_value = "on")]
    pub offloads: Offloads,
    /// The MTU this VM's NIC has (QEMU's `-device virtio-net-pci,host_mtu=N`,
    /// which the guest reads): offered as VIRTIO_NET_F_MTU and stated to the
    /// peer launcher, which refuses a different one. Default: none stated.
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(68..=65535))]
    pub mtu: Option<u32>,
}

/// `--offloads`: the same values as a synthetic run's.
pub use crate::cli::config::Offloads;

/// `--carrier`: what the VM's link state (carrier) follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Carrier {
    /// NO-CARRIER in the VM while its peer launcher is away: the launcher
    /// closes QEMU's vhost-user connection when the link goes down and
    /// takes QEMU back once the next peer has linked.
    Follow,
    /// The VM's link stays up while the peer is away; frames it sends wait
    /// in its TX ring for the next peer.
    AlwaysUp,
}

/// Event id for the transport's fd (0 and 1 are the queues; 2 is the
/// backend library's own exit event).
const LINK_EVENT: u16 = 3;
/// Event id that ends a worker thread of a connection that has ended.
const RETIRE_EVENT: u16 = 4;

/// `--allow-uid`: a numeric uid, or a user name looked up now.
fn parse_user(s: &str) -> Result<u32, String> {
    if let Ok(uid) = s.parse::<u32>() {
        return Ok(uid);
    }
    match nix::unistd::User::from_name(s) {
        Ok(Some(u)) => Ok(u.uid.as_raw()),
        Ok(None) => Err(format!(
            "no user named `{s}` on this machine; give a uid or an existing user name"
        )),
        Err(e) => Err(format!("cannot look up user `{s}`: {e}")),
    }
}

/// Run `vhost-user`.
pub fn run(args: &VhostArgs) -> ExitCode {
    dispatch(args.sharenet.kind, qemu::Serve(args))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: VhostArgs,
    }

    fn parse(extra: &[&str]) -> Result<VhostArgs, clap::Error> {
        let base = ["x", "--socket", "/tmp/s", "--sharenet", "unix:/tmp/l"];
        Cli::try_parse_from(base.iter().chain(extra)).map(|c| c.args)
    }

    #[test]
    fn offloads_default_on_and_mtu_unstated() {
        let a = parse(&[]).unwrap();
        assert_eq!((a.offloads, a.mtu), (Offloads::On, None));
        let a = parse(&["--offloads", "off", "--mtu", "9000"]).unwrap();
        assert_eq!((a.offloads, a.mtu), (Offloads::Off, Some(9000)));
    }

    #[test]
    fn a_bad_mtu_is_a_usage_error_naming_the_flag_and_the_range() {
        for bad in ["10", "70000", "nine"] {
            let e = parse(&["--mtu", bad]).expect_err(bad);
            assert_eq!(e.exit_code(), 2, "{bad}");
            let text = e.to_string();
            assert!(text.contains("--mtu"), "{text}");
        }
        let text = parse(&["--mtu", "10"]).err().unwrap().to_string();
        assert!(text.contains("68..=65535"), "{text}");
        let e = parse(&["--offloads", "maybe"]).err().unwrap();
        assert!(e.to_string().contains("--offloads"), "{e}");
    }
}
