//! The vhost-user-net device for one VM, as rust-vmm's backend trait sees
//! it: features, memory table, vring events.

use super::link::{leave, Link, LinkError, VmDevice};
use super::VhostArgs;
use crate::cli::config::Wait;
use crate::run::notify;
use crate::virtq::NotifyMode;
use crate::wait::WaitLoop;
use std::time::Duration;
use transport::{RingInfo, Transport};
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{VhostUserBackendMut, VringRwLock, VringT};
use virtio_queue::QueueT;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

pub(super) const RX: usize = 0;
pub(super) const TX: usize = 1;
const QUEUE_MAX: usize = 1024;
const VIRTIO_F_VERSION_1: u64 = 1 << 32;
const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;
const VHOST_USER_F_PROTOCOL_FEATURES: u64 = 1 << 30;

pub(super) type Mem = GuestMemoryAtomic<GuestMemoryMmap>;

/// The vhost-user-net backend for one VM.
pub(super) struct NetBackend<T: Transport> {
    pub(super) args: VhostArgs,
    pub(super) mem: Option<Mem>,
    pub(super) event_idx: bool,
    pub(super) vrings: Vec<VringRwLock>,
    pub(super) link: Option<Link<T>>,
}

pub(super) fn ready(v: &VringRwLock) -> bool {
    v.get_ref().get_queue().ready()
}

pub(super) fn ring_info(v: &VringRwLock) -> RingInfo {
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
    pub(super) fn mode(&self) -> NotifyMode {
        if self.event_idx {
            NotifyMode::EventIdx
        } else {
            NotifyMode::Flags
        }
    }

    /// Move what can be moved, interrupt the VM as its rings ask, and
    /// re-arm notifications with the re-check that closes the sleep race —
    /// the one wait loop, sleeping in the backend's event loop.
    pub(super) fn service(&mut self) -> std::io::Result<()> {
        let Some(link) = self.link.as_mut() else {
            return Ok(());
        };
        let mut vm = VmDevice {
            link,
            vrings: &self.vrings,
        };
        match WaitLoop::new(Wait::Sleep).run(&mut vm) {
            Ok(_) => Ok(()),
            Err(LinkError::Signal(e)) => Err(e),
            Err(LinkError::Copy(e)) => {
                let why = format!("peer {}: {e}", link.copier.link().peer_pid());
                leave(link, &self.args, &why)
            }
            Err(LinkError::Transport(e)) => leave(link, &self.args, &e.to_string()),
        }
    }
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
        if self.args.notify == NotifyMode::EventIdx {
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
                    if let Err(e) = notify(link.copier.link(), &mut link.stats) {
                        leave(link, &self.args, &e.to_string());
                    }
                }
            }
            _ if device_event == super::LINK_EVENT => {
                if let Some(link) = self.link.as_mut() {
                    match link.copier.link().wait(Some(Duration::ZERO)) {
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
