//! Notification suppression: the three modes and the EVENT_IDX rule.

/// How notifications are suppressed (`--notify`, `notify` in a profile's
/// `[net]`, spelled `always | flags | event-idx`). Ordered: a pair uses the
/// lower of the two sides' modes, since each side maintains only its own
/// mode's fields.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum NotifyMode {
    /// Notify after every batch, as the 2008 launcher did.
    Always,
    /// `VRING_AVAIL_F_NO_INTERRUPT` / `VRING_USED_F_NO_NOTIFY`.
    Flags,
    /// VIRTIO_F_EVENT_IDX: `used_event` / `avail_event`.
    EventIdx,
}

impl NotifyMode {
    /// The handshake feature bits of a side that maintains this mode's
    /// suppression fields.
    pub fn features(self) -> u64 {
        match self {
            NotifyMode::Always => 0,
            NotifyMode::Flags => transport::F_NOTIFY_FLAGS,
            NotifyMode::EventIdx => transport::F_NOTIFY_FLAGS | transport::F_EVENT_IDX,
        }
    }

    /// The mode a peer maintains, from its handshake feature bits.
    pub fn from_features(f: u64) -> Self {
        if f & transport::F_EVENT_IDX != 0 {
            NotifyMode::EventIdx
        } else if f & transport::F_NOTIFY_FLAGS != 0 {
            NotifyMode::Flags
        } else {
            NotifyMode::Always
        }
    }

    /// The spelling used on the command line and in stats.
    pub fn name(self) -> &'static str {
        match self {
            NotifyMode::Always => "always",
            NotifyMode::Flags => "flags",
            NotifyMode::EventIdx => "event-idx",
        }
    }
}

/// The `vring_need_event` rule: notify iff `event` lies in `[old, new)`,
/// in 16-bit wrapping arithmetic.
#[inline]
pub fn vring_need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}
