//! What a returning peer must match: the terms the first link set our
//! guest up with ([`LinkTerms`]), and how a peer can differ ([`Mismatch`]).

use crate::virtq::NotifyMode;
use transport::Handshake;

/// What the first link set our guest up with; a returning peer must offer
/// the same (see [`run`](super::run), step 4).
#[derive(Clone, Copy, Debug)]
pub(in crate::run) struct LinkTerms {
    pub(in crate::run) tx_size: u32,
    pub(in crate::run) rx_size: u32,
    pub(in crate::run) mem_size: u64,
    pub(in crate::run) mode: NotifyMode,
}

impl LinkTerms {
    pub(in crate::run) fn of(hs: &Handshake, mode: NotifyMode) -> Self {
        LinkTerms {
            tx_size: hs.tx.size,
            rx_size: hs.rx.size,
            mem_size: hs.mem_size,
            mode,
        }
    }

    /// Why the returning peer's handshake `hs` does not fit, naming its
    /// value and the one the link was set up with.
    pub(in crate::run) fn check(&self, hs: &Handshake) -> Result<(), Mismatch> {
        for (ring, got, want) in [
            ("TX", hs.tx.size, self.tx_size),
            ("RX", hs.rx.size, self.rx_size),
        ] {
            if got != want {
                return Err(Mismatch::QueueSize { ring, got, want });
            }
        }
        if hs.mem_size != self.mem_size {
            return Err(Mismatch::MemorySize {
                got: hs.mem_size,
                want: self.mem_size,
            });
        }
        let offered = NotifyMode::from_features(hs.features);
        if offered < self.mode {
            return Err(Mismatch::Notify {
                features: hs.features,
                offered,
                want: self.mode,
            });
        }
        Ok(())
    }
}

/// How a returning peer differs from the link's first peer.
#[derive(Debug, thiserror::Error)]
pub(in crate::run) enum Mismatch {
    /// Another ring size.
    #[error("its {ring} queue size is {got}, but this link was set up with queue size {want}")]
    QueueSize {
        /// `TX` or `RX`.
        ring: &'static str,
        /// What it offers.
        got: u32,
        /// What the link has.
        want: u32,
    },
    /// Another memory size.
    #[error("its memory size is {got} bytes ({} MiB), but this link was set up with {want} bytes ({} MiB)", .got >> 20, .want >> 20)]
    MemorySize {
        /// What it offers.
        got: u64,
        /// What the link has.
        want: u64,
    },
    /// Less notification suppression than our guest runs.
    #[error("its features {features:#x} offer notify {}, but this link's guest runs notify {} (features {:#x})", .offered.name(), .want.name(), .want.features())]
    Notify {
        /// Its feature bits.
        features: u64,
        /// The mode they amount to.
        offered: NotifyMode,
        /// The mode our guest runs.
        want: NotifyMode,
    },
}
