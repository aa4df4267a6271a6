//! A transport stand-in for the harness.

#[allow(unused_imports)]
use super::*;

/// A transport stand-in: counts notifications; the copier needs a
/// transport for its type and `as_fd` wants a real fd (`/dev/null`).
pub(super) struct CountingTransport {
    pub(super) notifies: AtomicU64,
    fd: std::fs::File,
}

impl CountingTransport {
    pub(super) fn new() -> std::io::Result<Self> {
        Ok(CountingTransport {
            notifies: AtomicU64::new(0),
            fd: std::fs::File::open("/dev/null")?,
        })
    }
}

impl Transport for CountingTransport {
    const KIND: &'static str = "counting";
    fn connect(
        _: &Path,
        _: &Handshake,
        _: BorrowedFd<'_>,
        _: &ConnectOptions,
    ) -> transport::Result<(Self, PeerInfo)> {
        Err(transport::Error::NotImplemented("counting"))
    }
    fn notify(&self) -> transport::Result<Notify> {
        self.notifies.fetch_add(1, Ordering::Relaxed);
        Ok(Notify::Sent)
    }
    fn wait(&self, _: Option<Duration>) -> transport::Result<Wakeup> {
        Ok(Wakeup::Timeout)
    }
    fn as_fd(&self) -> BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.fd)
    }
    fn peer_pid(&self) -> u32 {
        1
    }
}
