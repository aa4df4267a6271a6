//! Meeting members: the acceptor threads of a switch.
//!
//! Rendezvous blocks, so it runs beside the forwarding thread: for
//! `unix:`/`eventfd:` one thread accepts member after member on the
//! switch's one listener ([`transport::serve_many`]); for `fifo:` one
//! thread per port meets members on `PATH.N`. Each offers a fresh sealed
//! port memory, and hands the linked member over a channel, waking the
//! forwarding thread through a datagram socket it polls when idle.

use crate::guest::plan::Layout;
use crate::memory::GuestMemory;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;
use transport::{ConnectOptions, Handshake, PeerInfo, Transport};

/// A member that met the switch, as an acceptor thread hands it over.
pub(super) struct Joined<T> {
    /// The port it must have (fifo: its path names it).
    pub(super) slot: Option<usize>,
    pub(super) link: T,
    pub(super) peer: PeerInfo,
    pub(super) mem: GuestMemory,
}

/// What acceptor threads tell the forwarding thread.
pub(super) enum Event<T> {
    Joined(Box<Joined<T>>),
    Refused(String),
}

/// An acceptor thread: meets members and hands them over.
pub(super) struct Acceptor<T> {
    pub(super) features: u64,
    pub(super) layout: Layout,
    pub(super) mem_size: u64,
    pub(super) busy: Arc<Vec<AtomicBool>>,
    pub(super) events: mpsc::Sender<Event<T>>,
    pub(super) wake: Arc<std::os::unix::net::UnixDatagram>,
    pub(super) stop: Arc<AtomicBool>,
}

impl<T> Clone for Acceptor<T> {
    fn clone(&self) -> Self {
        Acceptor {
            features: self.features,
            layout: self.layout,
            mem_size: self.mem_size,
            busy: self.busy.clone(),
            events: self.events.clone(),
            wake: self.wake.clone(),
            stop: self.stop.clone(),
        }
    }
}

impl<T: Transport + 'static> Acceptor<T> {
    /// Meet members on `path`, one after another, while a port is free
    /// (`slot`: only while that port is).
    pub(super) fn accept(self, path: PathBuf, slot: Option<usize>) {
        let mut mem = None;
        while !self.stop.load(Ordering::Relaxed) {
            let free = match slot {
                Some(k) => !self.busy[k].load(Ordering::Relaxed),
                None => self.busy.iter().any(|b| !b.load(Ordering::Relaxed)),
            };
            if !free {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            let m = match mem.take() {
                Some(m) => m,
                None => match GuestMemory::create("switch-port", self.mem_size) {
                    Ok(m) => m,
                    Err(e) => {
                        self.tell(Event::Refused(format!("cannot create port memory: {e}")));
                        std::thread::sleep(Duration::from_secs(1));
                        continue;
                    }
                },
            };
            let local = Handshake::new(
                std::process::id(),
                self.features,
                self.mem_size,
                m.raw_fd(),
                self.layout.tx,
                self.layout.rx,
            )
            .with_generation(1);
            let opts = ConnectOptions {
                nonblocking_writes: true,
                timeout: Some(Duration::from_millis(500)),
            };
            match T::connect(&path, &local, m.fd(), &opts) {
                Ok((link, peer)) => {
                    if let Some(k) = slot {
                        // Taken now, so this thread waits until it is free.
                        self.busy[k].store(true, Ordering::Relaxed);
                    }
                    self.tell(Event::Joined(Box::new(Joined {
                        slot,
                        link,
                        peer,
                        mem: m,
                    })));
                    if slot.is_none() {
                        // Let the forwarding thread take the port before we
                        // count free ports again.
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
                Err(transport::Error::ConnectTimeout { .. }) => mem = Some(m),
                Err(transport::Error::Interrupted { .. }) => return,
                Err(e) => {
                    self.tell(Event::Refused(e.to_string()));
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }

    fn tell(&self, ev: Event<T>) {
        let _ = self.events.send(ev);
        let _ = self.wake.send(&[1]);
    }
}
