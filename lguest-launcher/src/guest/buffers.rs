//! How many buffers a synthetic guest keeps out: RX buffers posted, TX
//! chains in flight. Fewer than a whole ring keeps the buffers the
//! receiving copier touches in its cache (BENCHMARKS.md, "After round 2,
//! session 5").

use super::*;

/// RX buffers a synthetic guest keeps posted, of its ring's entries: what
/// one [`Copier::poll`] takes at most. Our own copier fills them in our
/// thread, and the guest posts each again in the same turn, so more would
/// never be used at once; they would only spread the copies over more
/// memory. 256 posted 1500 B buffers are 384 KiB, which with the peer's
/// TX buffers the copy reads no longer fits a 512 KiB L2; 64 are 96 KiB
/// (BENCHMARKS.md, "After round 2, session 5"). A copier that finds too
/// few posted (`rx_full`: a slow sink, or a segmented frame needing more
/// buffers than this) has the guest post all ([`Guest::post_all_rx`]).
///
/// [`Copier::poll`]: crate::copier::Copier::poll
pub const RX_POSTED: u16 = crate::copier::POLL_BURST;

/// TX buffer bytes a spinning stream keeps in flight at most
/// ([`Guest::spinning`]), and never fewer chains than two bursts of the
/// peer's copier (one waits on the ring while it copies the other; a cap
/// of one burst made the two sides take turns at 64 B): 128 frames of
/// 1500 B (192 KiB, where 256 are 384 KiB), a whole ring of 64 B frames.
/// The peer's copier reads those buffers, and with its own 64 RX buffers
/// ([`RX_POSTED`]) they then fit its 512 KiB L2.
pub const TX_IN_FLIGHT_SPIN_BYTES: u64 = 192 << 10;

impl Guest {
    /// A stream keeps at most `n` TX chains in flight (at least 4), and
    /// refills in batches of a quarter of that at most. With the buffers
    /// taken last-in first-out from the free list, the same `n` buffers
    /// cycle through the peer's copy (a smaller footprint in its cache),
    /// at the price of a TX interrupt per `n / 2` packets when the stream
    /// sleeps: the launcher sets it for `--wait spin` alone.
    pub fn with_tx_in_flight(mut self, n: u16) -> Self {
        self.tx_cap = n.max(4);
        self.tx_batch = self.tx_batch.min(self.tx_cap / 4);
        self
    }

    /// `--wait spin` (`on`): keep at most [`TX_IN_FLIGHT_SPIN_BYTES`] of TX
    /// buffers in flight. A sleeping stream keeps its whole ring: a smaller
    /// cap would cost it a wake-up per half of it.
    pub fn spinning(self, on: bool) -> Self {
        if !on {
            return self;
        }
        let bursts = 2 * u64::from(crate::copier::POLL_BURST);
        let n = (TX_IN_FLIGHT_SPIN_BYTES / self.tx_stride).clamp(bursts, u64::from(u16::MAX));
        self.with_tx_in_flight(n as u16)
    }

    /// Post every RX buffer not posted yet, and publish them: the copier
    /// found too few posted for what waits on the peer's ring (see
    /// [`RX_POSTED`]). True when any was posted.
    pub fn post_all_rx(&mut self) -> Result<bool, RingError> {
        if self.rx.num_free() == 0 {
            return Ok(false);
        }
        while self.rx.num_free() > 0 {
            self.post_rx()?;
        }
        self.rx.publish()?;
        Ok(true)
    }

    /// RX buffers posted that the device has not filled yet. Under RX push
    /// (`switch/push.rs`) the switch fills them, so our copier's index of
    /// our RX ring stands still: live status reads the fill from here.
    pub fn rx_posted(&self) -> Result<u16, RingError> {
        self.rx.device_unused()
    }

    /// TX chains a stream may add now: free descriptors, within
    /// [`Guest::with_tx_in_flight`] chains in flight.
    pub(super) fn tx_free(&self) -> usize {
        self.tx
            .num_free()
            .min(usize::from(self.tx_cap.saturating_sub(self.tx.in_flight())))
    }
}
