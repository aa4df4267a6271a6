//! The MTU check at link-up, the same for every mode.
//!
//! Each side states its MTU in its handshake (`--mtu`; 0 when none was
//! given, or from an older build). Two stated MTUs that differ would make
//! one side send frames the other drops as oversized — or worse, a guest
//! that told its stack one MTU receiving frames of another — so the link is
//! refused at once, on both sides, with both values named. A side that
//! states none accepts anything (the behaviour before MTUs were stated).

/// Two stated MTUs that differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("peer's MTU {theirs} differs from ours {ours}: give both sides the same --mtu")]
pub struct MtuMismatch {
    /// Our `--mtu`.
    pub ours: u32,
    /// What the peer's handshake stated.
    pub theirs: u32,
}

/// Refuse two non-zero MTUs that differ; 0 on either side states none.
pub fn check_pair(ours: u32, theirs: u32) -> Result<(), MtuMismatch> {
    if ours != 0 && theirs != 0 && ours != theirs {
        return Err(MtuMismatch { ours, theirs });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differing_stated_mtus_are_refused_naming_both() {
        assert_eq!(check_pair(1500, 1500), Ok(()));
        assert_eq!(check_pair(0, 9000), Ok(()));
        assert_eq!(check_pair(9000, 0), Ok(()));
        let e = check_pair(1500, 9000).unwrap_err();
        assert_eq!(
            e.to_string(),
            "peer's MTU 9000 differs from ours 1500: give both sides the same --mtu"
        );
    }
}
