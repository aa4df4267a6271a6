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
//! When QEMU hangs up (VM shutdown) or changes the memory table under a
//! live link, the launcher leaves; the peer sees "peer disconnected"
//! (link down). Nothing is left mapped that could fault.

use crate::config::{Kind, Notify, Spec, Writes};
use crate::copier::{notify, Copier};
use crate::memory::{GuestMap, Region};
use crate::ring::NotifyMode;
use crate::stats::Stats;
use clap::Args;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{fence, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use transport::{ConnectOptions, Handshake, MemRegion, RingInfo, Transport};
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{VhostUserBackendMut, VhostUserDaemon, VringRwLock, VringT};
use virtio_queue::QueueT;
use vm_memory::{
    GuestAddressSpace, GuestMemoryAtomic, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
};
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
    pub notify: Notify,
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
}

const RX: usize = 0;
const TX: usize = 1;
/// Event id for the transport's fd (0 and 1 are the queues; 2 is the
/// backend library's own exit event).
const LINK_EVENT: u16 = 3;
const QUEUE_MAX: usize = 1024;
/// How often the link is checked outside the event loop.
const WATCH_EVERY: Duration = Duration::from_millis(200);
const VIRTIO_F_VERSION_1: u64 = 1 << 32;
const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;
const VHOST_USER_F_PROTOCOL_FEATURES: u64 = 1 << 30;

type Mem = GuestMemoryAtomic<GuestMemoryMmap>;

/// The link, once the peer launcher is met.
struct Link<T: Transport> {
    /// The VM's memfd, kept open for the link's life: the FIFO transport's
    /// peer opens it through /proc/OUR_PID/fd/N after the handshake.
    _vm_file: File,
    transport: Arc<T>,
    copier: Copier<T>,
    vm: Region,
    tx_used_idx: u64,
    tx_used_seen: u16,
    stats: Stats,
    started: Instant,
}

/// The vhost-user-net backend for one VM.
struct NetBackend<T: Transport> {
    args: VhostArgs,
    mem: Option<Mem>,
    event_idx: bool,
    vrings: Vec<VringRwLock>,
    link: Option<Link<T>>,
}

fn ready(v: &VringRwLock) -> bool {
    v.get_ref().get_queue().ready()
}

fn ring_info(v: &VringRwLock) -> RingInfo {
    let g = v.get_ref();
    let q = g.get_queue();
    RingInfo {
        desc: q.desc_table(),
        avail: q.avail_ring(),
        used: q.used_ring(),
        size: q.size() as u32,
    }
}

impl<T: Transport> NetBackend<T> {
    fn mode(&self) -> NotifyMode {
        if self.event_idx {
            NotifyMode::EventIdx
        } else {
            NotifyMode::Flags
        }
    }

    /// Move what can be moved, interrupt the VM as its rings ask, and
    /// re-arm notifications with the re-check that closes the sleep race.
    fn service(&mut self) -> std::io::Result<()> {
        let Some(link) = self.link.as_mut() else {
            return Ok(());
        };
        loop {
            let moved = match link.copier.poll(&mut link.stats) {
                Ok(n) => n,
                Err(e) => leave(
                    link,
                    &self.args,
                    &format!("peer {}: {e}", link.transport.peer_pid()),
                ),
            };
            if let Some((old, new)) = link.copier.take_rx_published() {
                if link.copier.rx_interrupt_needed(old, new).unwrap_or(true) {
                    self.vrings[RX].signal_used_queue()?;
                }
            }
            // The peer's copier consumed VM TX buffers: the VM's TX
            // completion interrupt is ours to raise.
            let used = link
                .vm
                .load_u16("vm tx used idx", link.tx_used_idx, Ordering::Acquire)
                .unwrap_or(link.tx_used_seen);
            if used != link.tx_used_seen {
                link.tx_used_seen = used;
                self.vrings[TX].signal_used_queue()?;
            }
            let _ = link.copier.set_notifications(true);
            let _ = link.copier.set_rx_notifications(true);
            // Full fence: the re-enables above are visible before we look
            // at the rings again (pairs with the producers' fences).
            fence(Ordering::SeqCst);
            if moved == 0 && !link.copier.has_work().unwrap_or(false) {
                return Ok(());
            }
        }
    }
}

/// Leave: write stats, print one line, exit 1 (the peer sees link down).
fn leave<T: Transport>(link: &mut Link<T>, args: &VhostArgs, why: &str) -> ! {
    link.stats.finish(link.started.elapsed().as_secs_f64());
    link.stats.result = why.to_string();
    if let Some(p) = &args.stats_json {
        let _ = link.stats.write_json(p);
    }
    eprintln!("error: {why}; link down");
    std::process::exit(1);
}

impl<T: Transport + 'static> VhostUserBackendMut for NetBackend<T> {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        2
    }

    fn max_queue_size(&self) -> usize {
        QUEUE_MAX
    }

    fn features(&self) -> u64 {
        // QEMU's vhost-user-net needs VHOST_USER_F_PROTOCOL_FEATURES (it
        // insists on SET_VRING_ENABLE); see `vhost_compat` for the quirk.
        let mut f = VIRTIO_F_VERSION_1 | VHOST_USER_F_PROTOCOL_FEATURES;
        if self.args.notify == Notify::EventIdx {
            f |= VIRTIO_RING_F_EVENT_IDX;
        }
        f
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::MQ
    }

    fn set_event_idx(&mut self, enabled: bool) {
        self.event_idx = enabled;
    }

    fn update_memory(&mut self, mem: Mem) -> std::io::Result<()> {
        if let Some(link) = self.link.as_mut() {
            leave(
                link,
                &self.args,
                "the VM's memory table changed under a live link",
            );
        }
        self.mem = Some(mem);
        Ok(())
    }

    fn handle_event(
        &mut self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> std::io::Result<()> {
        if self.vrings.is_empty() {
            self.vrings = vrings.to_vec();
        }
        match device_event as usize {
            TX => {
                if let Some(link) = self.link.as_mut() {
                    // The VM kicked (it honoured the peer's suppression
                    // state to decide so): relay the kick.
                    if let Err(e) = notify(&*link.transport, &mut link.stats) {
                        leave(link, &self.args, &e.to_string());
                    }
                }
            }
            _ if device_event == LINK_EVENT => {
                if let Some(link) = self.link.as_mut() {
                    match link.transport.wait(Some(Duration::ZERO)) {
                        Ok(transport::Wakeup::Notified) => link.stats.wakeups += 1,
                        Ok(transport::Wakeup::Timeout) => {}
                        Err(e) => leave(link, &self.args, &e.to_string()),
                    }
                }
            }
            _ => {} // RX: the VM posted buffers
        }
        self.service()
    }
}

/// The VM's memory as one memfd plus its regions: QEMU's
/// `memory-backend-memfd` gives every RAM region as the same file at
/// different offsets.
fn vm_memory(mem: &Mem) -> Result<(File, u64, Vec<MemRegion>), String> {
    let guard = mem.memory();
    let mut file: Option<File> = None;
    let mut ino = None;
    let mut regions = Vec::new();
    for r in guard.iter() {
        let fo = r.file_offset().ok_or(
            "a VM memory region has no file: start QEMU with -object memory-backend-memfd,share=on",
        )?;
        let meta = fo.file().metadata().map_err(|e| e.to_string())?;
        let id = (meta.dev(), meta.ino());
        match ino {
            None => {
                ino = Some(id);
                file = Some(fo.file().try_clone().map_err(|e| e.to_string())?);
            }
            Some(i) if i != id => {
                return Err(
                    "VM memory spans several files; use one memory-backend-memfd for all RAM"
                        .into(),
                )
            }
            _ => {}
        }
        regions.push(MemRegion {
            gpa: r.start_addr().0,
            size: r.len(),
            offset: fo.start(),
        });
    }
    let file = file.ok_or("QEMU sent no memory regions")?;
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    Ok((file, size, regions))
}

/// Wait for the VM's rings, meet the peer, and install the link.
fn establish<T: Transport + 'static>(
    backend: &Arc<RwLock<NetBackend<T>>>,
    register: &dyn Fn(i32),
    args: &VhostArgs,
) -> Result<(), String> {
    // 1. The VM's driver is up: memory known, both rings ready.
    let (file, size, regions, tx, rx, mode) = loop {
        {
            let b = backend.read().map_err(|_| "backend lock poisoned")?;
            if let Some(mem) = &b.mem {
                if b.vrings.len() == 2 && b.vrings.iter().all(ready) {
                    let (file, size, regions) = vm_memory(mem)?;
                    break (
                        file,
                        size,
                        regions,
                        ring_info(&b.vrings[TX]),
                        ring_info(&b.vrings[RX]),
                        b.mode(),
                    );
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let features = mode.features();
    let local = Handshake::new(std::process::id(), features, size, file.as_raw_fd(), tx, rx)
        .with_regions(&regions);
    local
        .validate()
        .map_err(|e| format!("the VM's rings do not fit its memory: {e}"))?;
    if !args.quiet {
        eprintln!(
            "VM rings ready ({} regions, {} MiB); waiting for peer on {} ...",
            regions.len(),
            size >> 20,
            args.sharenet
        );
    }
    // 2. Meet the peer (no lock held: the VM keeps running meanwhile).
    let opts = ConnectOptions {
        nonblocking_writes: args.writes == Writes::Nonblocking,
        timeout: Some(Duration::from_secs_f64(args.timeout)),
    };
    let (t, peer) =
        T::connect(&args.sharenet.path, &local, file.as_fd(), &opts).map_err(|e| e.to_string())?;
    let peer_pid = peer.handshake.pid;
    let peer_mode = NotifyMode::from_features(peer.handshake.features);
    // The VM reads the suppression fields of its negotiated mode: a peer
    // that maintains less would miss kicks.
    if peer_mode < mode {
        return Err(format!(
            "peer {peer_pid} maintains notify mode {} but this VM negotiated {}; start both launchers with the same --notify", peer_mode.name(), mode.name()
        ));
    }
    let peer_map = GuestMap::new(
        crate::memory::map_peer(peer.memory, peer.handshake.mem_size).map_err(|e| e.to_string())?,
        peer.handshake.regions(),
    );
    let vm_region = Region::map(&file, size).map_err(|e| e.to_string())?;
    let vm_map = GuestMap::new(vm_region.clone(), &regions);
    let t = Arc::new(t);
    let copier = Copier::new(t.clone(), &peer_map, &peer.handshake.tx, &vm_map, &rx, mode)
        .map_err(|e| format!("peer {peer_pid}: {e}"))?;
    let tx_used_idx = vm_map
        .translate(tx.used + 2, 2)
        .ok_or("the VM's TX used ring is outside its memory")?;
    if !args.quiet {
        eprintln!(
            "connected to peer pid {peer_pid} over {}: peer memory {} MiB; notify {}",
            args.sharenet.kind.name(),
            peer.handshake.mem_size >> 20,
            mode.name()
        );
    }
    let fd = t.as_raw_fd();
    {
        let mut b = backend.write().map_err(|_| "backend lock poisoned")?;
        let tx_used_seen = vm_region
            .load_u16("vm tx used idx", tx_used_idx, Ordering::Acquire)
            .unwrap_or(0);
        b.link = Some(Link {
            _vm_file: file,
            transport: t,
            copier,
            vm: vm_region,
            tx_used_idx,
            tx_used_seen,
            stats: Stats {
                transport: args.sharenet.kind.name().into(),
                workload: "vhost-user".into(),
                notify: args.notify.name().into(),
                writes: args.writes.name().into(),
                wait: "sleep".into(),
                peer_pid,
                ..Stats::default()
            },
            started: Instant::now(),
        });
        register(fd);
        // Packets may already be waiting on either side.
        b.service().map_err(|e| e.to_string())?;
        if let Some(link) = b.link.as_ref() {
            let _ = link.transport.notify();
        }
    }
    Ok(())
}

/// Look at the link every [`WATCH_EVERY`]: some transports only show a dead
/// peer on an fd the event loop does not watch (eventfd's socket), and a
/// periodic service is a backstop against any lost wake-up.
fn watch<T: Transport + 'static>(backend: &Arc<RwLock<NetBackend<T>>>) {
    loop {
        std::thread::sleep(WATCH_EVERY);
        let mut b = backend.write().unwrap_or_else(|p| p.into_inner());
        let args = b.args.clone();
        let Some(link) = b.link.as_mut() else {
            return;
        };
        if let Err(e) = link.transport.wait(Some(Duration::ZERO)) {
            leave(link, &args, &e.to_string());
        }
        if let Err(e) = b.service() {
            eprintln!("error: cannot signal the VM: {e}");
            std::process::exit(1);
        }
    }
}

fn serve<T: Transport + 'static>(args: &VhostArgs) -> ExitCode {
    let backend = Arc::new(RwLock::new(NetBackend::<T> {
        args: args.clone(),
        mem: None,
        event_idx: false,
        vrings: Vec::new(),
        link: None,
    }));
    let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let mut daemon = match VhostUserDaemon::new("sharenet-net".into(), backend.clone(), mem) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: cannot start the vhost-user backend: {e}");
            return ExitCode::from(1);
        }
    };
    if let Ok(meta) = std::fs::symlink_metadata(&args.socket) {
        if meta.file_type().is_symlink()
            || !std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type())
        {
            eprintln!(
                "error: --socket {}: something that is not a socket is already there; remove it or pick another path",
                args.socket.display()
            );
            return ExitCode::from(2);
        }
    }
    if !args.quiet {
        eprintln!(
            "waiting for QEMU on vhost-user socket {} ...",
            args.socket.display()
        );
    }
    // QEMU connects to --socket; the rust-vmm daemon listens on a private
    // socket behind the `vhost_compat` relay.
    let _ = std::fs::remove_file(&args.socket);
    let public = match std::os::unix::net::UnixListener::bind(&args.socket) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "error: cannot listen on --socket {}: {e}",
                args.socket.display()
            );
            return ExitCode::from(1);
        }
    };
    let private = std::env::temp_dir().join(format!("sharenet-vhost-{}.sock", std::process::id()));
    let mut listener = match vhost::vhost_user::Listener::new(&private, true) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", private.display());
            return ExitCode::from(1);
        }
    };
    let relay_private = private.clone();
    let relay_socket = args.socket.clone();
    std::thread::spawn(move || {
        let qemu = match public.accept() {
            Ok((s, _)) => s,
            Err(e) => {
                eprintln!("error: accept on {}: {e}", relay_socket.display());
                std::process::exit(1);
            }
        };
        let _ = std::fs::remove_file(&relay_socket);
        if let Err(e) = crate::vhost_compat::relay(qemu, &relay_private) {
            eprintln!("warning: vhost-user relay: {e}");
        }
    });
    if let Err(e) = daemon.start(&mut listener) {
        eprintln!("error: vhost-user connection failed: {e}");
        return ExitCode::from(1);
    }
    let _ = std::fs::remove_file(&private);
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
        if let Err(e) = establish::<T>(&link_backend, &register, &link_args) {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
        watch(&link_backend);
    });
    let result = daemon.wait();
    let mut b = backend.write().unwrap_or_else(|p| p.into_inner());
    if let Some(link) = b.link.as_mut() {
        leave(
            link,
            args,
            "the VM disconnected (QEMU closed the vhost-user socket)",
        );
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: vhost-user: {e}");
            ExitCode::from(1)
        }
    }
}

/// Run `vhost-user`.
pub fn run(args: &VhostArgs) -> ExitCode {
    match args.sharenet.kind {
        Kind::Fifo => serve::<transport_fifo::Fifo>(args),
        Kind::Unix => serve::<transport_unixsock::UnixSock>(args),
        Kind::Eventfd => serve::<transport_eventfd::EventFd>(args),
    }
}
