//! rust-vmm's backend trait for [`NetBackend`]: what QEMU asks of the
//! device (queues, features, the memory table, stopping a ring) and the
//! vring events it hands us.

use super::*;

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
        // insists on SET_VRING_ENABLE); see `qemu72_relay` for the quirk.
        let mut f = VIRTIO_F_VERSION_1 | VHOST_USER_F_PROTOCOL_FEATURES;
        if self.args.notify == NotifyMode::EventIdx {
            f |= VIRTIO_RING_F_EVENT_IDX;
        }
        f | features::net_offer(
            self.args.offloads == Offloads::On,
            self.args.mtu.unwrap_or(0),
        )
    }

    /// `SET_FEATURES`: what the VM's driver accepted. A live link's copier
    /// delivers by them at once (a renegotiation without new rings); a new
    /// link reads them in `establish`.
    fn acked_features(&mut self, features: u64) {
        self.acked = features;
        if let Some(link) = self.link.as_mut() {
            link.copier.set_guest_features(features);
        }
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::MQ
    }

    fn set_event_idx(&mut self, enabled: bool) {
        self.event_idx = enabled;
    }

    fn update_memory(&mut self, mem: Mem) -> std::io::Result<()> {
        // The link keeps the old mapping alive (it owns an Arc of it), so
        // nothing faults. QEMU sends the table on every device start; the
        // same layout keeps the link, another one needs a new handshake
        // (the peer maps the old table): the link goes down and, with
        // --reconnect, comes up again describing the new one.
        if let Some(link) = self.link.as_ref() {
            if super::super::establish::memory_layout(&mem).as_ref() != Some(&link.memory) {
                self.link_down(
                    "the VM's memory table changed under a live link".into(),
                    !self.args.reconnect,
                );
            }
        }
        self.mem = Some(mem);
        Ok(())
    }

    /// `GET_VRING_BASE`: the library marked the ring not ready and will
    /// answer QEMU with the queue's `next_avail`; make that our real
    /// position (RX: our copier's; TX: what the peer has consumed).
    fn stop_vring(&mut self, queue_index: u32) -> std::io::Result<()> {
        let i = queue_index as usize;
        // With --reconnect a stop ends the link generation: the peer's
        // copier must stop reading a TX ring the VM may be about to reuse
        // as ordinary memory (a reboot or driver reset rewrites it). The
        // link's `link_down` leaves both rings' positions in the library
        // first; the next link starts where QEMU restarts the rings.
        if self.args.reconnect && !self.stopped && self.link.is_some() {
            self.link_down(
                "QEMU stopped the VM's rings (a reboot, a driver reset or a pause)".into(),
                false,
            );
        }
        self.stopped = true;
        // Without a link the library's queue already holds the position
        // (`link_down` wrote it, or QEMU's `SET_VRING_BASE` did).
        if let (Some(link), Some(v)) = (self.link.as_ref(), self.vrings.get(i)) {
            let (avail, used) = link.queue_state(i);
            v.set_queue_next_avail(avail);
            v.set_queue_next_used(used);
        }
        Ok(())
    }

    fn handle_event(
        &mut self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> std::io::Result<()> {
        // A worker of a connection that ended: ignore the event, and end
        // the worker (an error ends its loop).
        if device_event == super::super::RETIRE_EVENT {
            return Err(std::io::Error::other("vhost-user connection closed"));
        }
        let ours = |v: &VringRwLock| std::ptr::eq(&*v.get_ref(), &*vrings[0].get_ref());
        if !vrings.is_empty() && self.retired.iter().any(ours) {
            return Err(std::io::Error::other(
                "event of a closed vhost-user connection",
            ));
        }
        if self.vrings.is_empty() {
            self.vrings = vrings.to_vec();
        }
        match device_event as usize {
            TX => {
                if let Some(link) = self.link.as_mut().filter(|l| !l.exchange) {
                    // The VM kicked (it honoured the peer's suppression
                    // state to decide so): relay the kick.
                    if let Err(e) = notify(link.copier.link(), &mut link.stats) {
                        self.link_failed(LinkError::Transport(e));
                    }
                }
            }
            _ if device_event == super::super::LINK_EVENT => {
                if let Some(link) = self.link.as_mut() {
                    match link.copier.link().wait(Some(Duration::ZERO)) {
                        Ok(transport::Wakeup::Notified) => {
                            link.stats.wakeups += 1;
                            super::super::seen::woke(&mut link.stats);
                        }
                        Ok(transport::Wakeup::Timeout) => {}
                        Err(e) => self.link_failed(LinkError::Transport(e)),
                    }
                }
            }
            _ => {} // RX: the VM posted buffers
        }
        self.service()
    }
}
