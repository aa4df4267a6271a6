//! A pass-through in front of the vhost-user backend, for QEMU 7.2.
//!
//! QEMU 7.2's virtio-net sends `VHOST_USER_SET_VRING_ENABLE` as soon as the
//! guest driver negotiates features — before `VHOST_USER_SET_FEATURES`
//! reaches the backend. rust-vmm's `vhost` crate (correctly, by the spec's
//! letter) refuses that message until `VHOST_USER_F_PROTOCOL_FEATURES` has
//! been acked, and drops the connection; QEMU then falls back to
//! userspace virtio and the NIC is dead.
//!
//! So QEMU connects to our `--socket`, and this relay forwards every
//! message, byte for byte and fd for fd, to the rust-vmm daemon listening on
//! a private socket — except that an early `SET_VRING_ENABLE` is held back
//! and delivered right after `SET_FEATURES`, the order the spec expects.
//! It reads only the fixed 12-byte vhost-user header (request, flags, size)
//! to find message boundaries; everything else is the `vhost` crate's job.

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags, UnixAddr};
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

const HDR: usize = 12;
const SET_FEATURES: u32 = 2;
const SET_VRING_ENABLE: u32 = 18;
/// Largest payload we accept (the spec's messages are far smaller; the
/// memory table with 8 regions is 8 + 8 * 32 bytes).
const MAX_PAYLOAD: usize = 4096;

/// Read one message (header, payload and any fds) from QEMU.
fn read_message(sock: &UnixStream) -> std::io::Result<Option<(Vec<u8>, Vec<RawFd>)>> {
    let mut hdr = [0u8; HDR];
    let mut fds = Vec::new();
    let mut got = 0;
    let mut cmsg = nix::cmsg_space!([RawFd; 32]);
    while got < HDR {
        let mut iov = [IoSliceMut::new(&mut hdr[got..])];
        let msg = recvmsg::<UnixAddr>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(std::io::Error::from)?;
        let n = msg.bytes;
        for c in msg.cmsgs().map_err(std::io::Error::from)? {
            if let ControlMessageOwned::ScmRights(r) = c {
                fds.extend(r);
            }
        }
        if n == 0 {
            close_all(&fds);
            return Ok(None);
        }
        got += n;
    }
    let size = u32::from_le_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]) as usize;
    if size > MAX_PAYLOAD {
        close_all(&fds);
        return Err(std::io::Error::other(format!(
            "vhost-user message of {size} bytes is too large"
        )));
    }
    let mut msg = hdr.to_vec();
    msg.resize(HDR + size, 0);
    (&*sock).read_exact(&mut msg[HDR..])?;
    Ok(Some((msg, fds)))
}

fn close_all(fds: &[RawFd]) {
    for fd in fds {
        let _ = nix::unistd::close(*fd);
    }
}

fn send(backend: &UnixStream, msg: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    let iov = [IoSlice::new(msg)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    let sent = sendmsg::<UnixAddr>(
        backend.as_raw_fd(),
        &iov,
        cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    );
    close_all(fds);
    let n = sent.map_err(std::io::Error::from)?;
    if n < msg.len() {
        (&*backend).write_all(&msg[n..])?;
    }
    Ok(())
}

/// QEMU → backend: forward everything, holding an early
/// `SET_VRING_ENABLE` until `SET_FEATURES` has gone through.
fn forward_requests(qemu: UnixStream, backend: UnixStream) -> std::io::Result<()> {
    let mut features_set = false;
    let mut held: Vec<Vec<u8>> = Vec::new();
    while let Some((msg, fds)) = read_message(&qemu)? {
        let request = u32::from_le_bytes([msg[0], msg[1], msg[2], msg[3]]);
        if request == SET_VRING_ENABLE && !features_set {
            close_all(&fds);
            held.push(msg);
            continue;
        }
        send(&backend, &msg, &fds)?;
        if request == SET_FEATURES && !features_set {
            features_set = true;
            for m in held.drain(..) {
                send(&backend, &m, &[])?;
            }
        }
    }
    Ok(())
}

/// Relay one QEMU connection to the daemon at `private`, both ways, until
/// either side hangs up.
pub fn relay(qemu: UnixStream, private: &std::path::Path) -> std::io::Result<()> {
    let backend = UnixStream::connect(private)?;
    let (q2, b2) = (qemu.try_clone()?, backend.try_clone()?);
    // Backend → QEMU: replies carry no fds; copy bytes.
    let back = std::thread::spawn(move || {
        let _ = std::io::copy(&mut &b2, &mut &q2);
        let _ = q2.shutdown(std::net::Shutdown::Both);
    });
    let r = forward_requests(qemu, backend.try_clone()?);
    let _ = backend.shutdown(std::net::Shutdown::Both);
    let _ = back.join();
    r
}
