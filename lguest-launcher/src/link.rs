//! A transport chosen by its kind — written once.
//!
//! The data path is generic over [`Transport`] so notifications and waits
//! are statically dispatched. The one place that turns a runtime
//! [`Kind`] (the `KIND` of `--sharenet KIND:PATH`) into a type is
//! [`dispatch`]: callers describe what to do with *some* transport as a
//! [`WithTransport`] and get it run with the right one. Adding a transport
//! means one crate implementing [`Transport`], one [`Kind`] variant and one
//! arm here.

use crate::cli::config::Kind;
use transport::Transport;

/// Work to do with a transport type chosen at run time.
pub trait WithTransport {
    /// What the work returns.
    type Output;
    /// Do the work with transport `T`.
    fn with<T: Transport + 'static>(self) -> Self::Output;
}

/// Run `work` with the transport of `kind`.
pub fn dispatch<W: WithTransport>(kind: Kind, work: W) -> W::Output {
    match kind {
        Kind::Fifo => work.with::<transport_fifo::Fifo>(),
        Kind::Unix => work.with::<transport_unixsock::UnixSock>(),
        Kind::Eventfd => work.with::<transport_eventfd::EventFd>(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Name;
    impl WithTransport for Name {
        type Output = &'static str;
        fn with<T: Transport + 'static>(self) -> &'static str {
            T::KIND
        }
    }

    #[test]
    fn generation_is_one_past_ours_or_the_peers_if_higher() {
        assert_eq!(next_generation(0, 0), 1, "an old peer proposes 0");
        assert_eq!(next_generation(0, 1), 1);
        assert_eq!(next_generation(4, 1), 5, "a restarted peer joins our count");
        assert_eq!(
            next_generation(0, 7),
            7,
            "we restarted: the survivor's count wins"
        );
    }

    #[test]
    fn a_reaped_child_is_not_alive_and_we_are() {
        assert!(process_alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!process_alive(pid));
    }

    #[test]
    fn every_kind_dispatches_to_the_transport_of_that_name() {
        for k in Kind::ALL {
            assert_eq!(dispatch(k, Name), k.name());
        }
    }
}

/// `PATH` with `suffix` appended: the notes a launcher leaves beside its
/// rendezvous path.
fn beside(path: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    s.into()
}

/// Is process `pid` running (not gone, not a zombie waiting to be reaped)?
pub fn process_alive(pid: u32) -> bool {
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").and_then(|(_, r)| r.chars().next()));
    !matches!(state, None | Some('Z' | 'X'))
}

/// The link generation both sides settle on: one past the last link we
/// had, or the peer's proposal if that is higher (a survivor that has seen
/// more links). Each side proposes `last + 1` in its handshake.
pub fn next_generation(last: u32, offered: u32) -> u32 {
    (last + 1).max(offered)
}

/// While a pair is linked, `PATH.pair` names its two pids, so a third
/// launcher on the same path can be told why nobody comes ("in use by the
/// pair 123/456") instead of only timing out. Both sides write the same
/// content; whichever leaves first removes it (a stale file from a pair
/// that was killed names dead pids and is ignored).
#[derive(Debug)]
pub struct PairMark {
    file: std::path::PathBuf,
    content: String,
}

impl PairMark {
    fn file_for(path: &std::path::Path) -> std::path::PathBuf {
        beside(path, ".pair")
    }

    /// Mark `path` as used by the pair `a`/`b` (best effort: a launcher
    /// that cannot write beside its rendezvous path still runs).
    pub fn claim(path: &std::path::Path, a: u32, b: u32) -> PairMark {
        use std::os::unix::fs::OpenOptionsExt;
        let file = Self::file_for(path);
        let content = format!("{} {}\n", a.min(b), a.max(b));
        let tmp = file.with_extension(format!("pair.{}.tmp", std::process::id()));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| std::io::Write::write_all(&mut f, content.as_bytes()))
            .and_then(|_| std::fs::rename(&tmp, &file));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        PairMark { file, content }
    }

    /// The live pair using `path`, if any.
    pub fn busy(path: &std::path::Path) -> Option<(u32, u32)> {
        let text = std::fs::read_to_string(Self::file_for(path)).ok()?;
        let mut pids = text.split_whitespace().map(|p| p.parse::<u32>());
        let (a, b) = (pids.next()?.ok()?, pids.next()?.ok()?);
        (process_alive(a) && process_alive(b)).then_some((a, b))
    }
}

impl Drop for PairMark {
    fn drop(&mut self) {
        if std::fs::read_to_string(&self.file).is_ok_and(|c| c == self.content) {
            let _ = std::fs::remove_file(&self.file);
        }
    }
}

/// A launcher of the wrong kind that finds someone else's rendezvous at a
/// path (a `unix:` launcher finding a FIFO) is refused at once; it leaves
/// `PATH.refused` naming itself, so the launcher waiting there can say why
/// its peer never came instead of only timing out.
pub struct RefusalNote;

impl RefusalNote {
    fn file_for(path: &std::path::Path) -> std::path::PathBuf {
        beside(path, ".refused")
    }

    /// Leave the note (best effort).
    pub fn leave(path: &std::path::Path, kind: Kind) {
        let _ = std::fs::write(
            Self::file_for(path),
            format!("{} {}\n", kind.name(), std::process::id()),
        );
    }

    /// Take the note, if one was left: `(kind, pid)` of the refused
    /// launcher.
    pub fn take(path: &std::path::Path) -> Option<(String, u32)> {
        let file = Self::file_for(path);
        let text = std::fs::read_to_string(&file).ok()?;
        let _ = std::fs::remove_file(&file);
        let mut it = text.split_whitespace();
        let kind = it.next()?.to_string();
        let pid = it.next()?.parse().ok()?;
        Some((kind, pid))
    }

    /// While `connecting` is true, print a line as soon as a refused
    /// launcher leaves a note at `path`.
    pub fn watch(
        path: &std::path::Path,
        name: &str,
        connecting: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) {
        let (path, name) = (path.to_path_buf(), name.to_string());
        std::thread::spawn(move || {
            while connecting.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some((kind, pid)) = Self::take(&path) {
                    eprintln!(
                        "[{name}] a `{kind}:` launcher (pid {pid}) tried {} and was refused: start both sides with the same KIND",
                        path.display()
                    );
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        });
    }
}
