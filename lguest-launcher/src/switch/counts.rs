//! The counters of one burst from one port ([`BurstState`]), added to
//! the port's stats once at its end (see `forward.rs`).

use super::serve::Switch;
use super::table::Burst;
use transport::Transport;

/// One burst from one port: the port's remembered table answers, and its
/// counters, added to its stats once at the end.
#[derive(Default)]
pub(super) struct BurstState {
    pub(super) table: Burst,
    pub(super) rx_packets: u64,
    pub(super) rx_bytes: u64,
    /// The fast path's destination so far this burst, and what it was
    /// given: added to its stats when the destination changes or the
    /// burst ends.
    to: Option<usize>,
    tx_packets: u64,
    tx_bytes: u64,
    unicast: u64,
}

impl BurstState {
    /// A unicast frame of `bytes` went onto port `j`'s ring.
    #[inline]
    pub(super) fn sent<T: Transport>(&mut self, sw: &mut Switch<'_, T>, j: usize, bytes: u64) {
        if self.to != Some(j) {
            self.add_sent(sw);
            self.to = Some(j);
        }
        self.tx_packets += 1;
        self.tx_bytes += bytes;
        self.unicast += 1;
    }

    /// A run of `n` frames, `payload` bytes without their headers, went
    /// from this burst's port to port `j` (`burst.rs`): counted as `n`
    /// unicast frames in and out.
    #[inline]
    pub(super) fn forwarded<T: Transport>(
        &mut self,
        sw: &mut Switch<'_, T>,
        j: usize,
        n: u64,
        payload: u64,
    ) {
        if self.to != Some(j) {
            self.add_sent(sw);
            self.to = Some(j);
        }
        self.rx_packets += n;
        self.rx_bytes += payload;
        self.tx_packets += n;
        self.tx_bytes += payload;
        self.unicast += n;
    }

    /// The fast path's counters to the stats.
    fn add_sent<T: Transport>(&mut self, sw: &mut Switch<'_, T>) {
        if let Some(j) = self.to.take() {
            let s = sw.stats.port(j);
            s.tx_packets += std::mem::take(&mut self.tx_packets);
            s.tx_bytes += std::mem::take(&mut self.tx_bytes);
        }
        let n = std::mem::take(&mut self.unicast);
        sw.stats.unicast += n;
        sw.stats.copies += n;
    }
}

impl BurstState {
    /// Start a burst of port `i` with what it remembers.
    pub(super) fn of<T: Transport>(sw: &mut Switch<'_, T>, i: usize) -> Self {
        BurstState {
            table: sw.caches.get_mut(i).map(std::mem::take).unwrap_or_default(),
            ..BurstState::default()
        }
    }

    /// End it: counters to the stats, answers back to the port.
    pub(super) fn end<T: Transport>(mut self, sw: &mut Switch<'_, T>, i: usize) {
        self.add_sent(sw);
        let s = sw.stats.port(i);
        s.rx_packets += self.rx_packets;
        s.rx_bytes += self.rx_bytes;
        if let Some(c) = sw.caches.get_mut(i) {
            *c = self.table;
        }
    }
}
