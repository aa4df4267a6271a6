//! One path, many peers: [`serve_many`] holds a listener open at a path
//! for a switch, and a [`rendezvous`] on that path in this process takes
//! the next connection from it instead of deciding who listens.

use super::*;

/// Listeners held open by [`serve_many`]: a [`rendezvous`] on one of these
/// paths accepts the next connection instead of deciding who listens.
#[allow(clippy::type_complexity)]
static SERVED: Mutex<Vec<(PathBuf, Arc<OwnedFd>)>> = Mutex::new(Vec::new());

pub(super) fn served(path: &Path) -> Option<Arc<OwnedFd>> {
    let list = SERVED.lock().unwrap_or_else(|p| p.into_inner());
    list.iter().find(|(p, _)| p == path).map(|(_, l)| l.clone())
}

/// A path held open by [`serve_many`]; dropping it stops listening and
/// removes the path (if it is still ours).
#[derive(Debug)]
pub struct Served {
    path: PathBuf,
    _placed: Placed,
}

impl Drop for Served {
    fn drop(&mut self) {
        let mut list = SERVED.lock().unwrap_or_else(|p| p.into_inner());
        list.retain(|(p, _)| p != &self.path);
    }
}

/// Listen on `path` for many peers, one after another (a switch: every
/// member meets it at the same path). Until the returned [`Served`] is
/// dropped, each [`rendezvous`] — and so each `connect` of the socket
/// transports — on `path` in this process accepts the next connection on
/// the one listener: `path` never goes away between members, so two
/// members arriving together both reach the switch, never each other.
///
/// A live listener already at `path` (a launcher waiting for its peer,
/// another switch) is refused; a stale socket is removed as in
/// [`rendezvous`].
pub fn serve_many(path: &Path) -> Result<Served> {
    let dir = parent_dir(path)?;
    let addr = UnixAddr::new(path).map_err(|e| Error::BadPath {
        path: path.to_path_buf(),
        reason: format!("cannot be a Unix socket address ({e}; at most 107 bytes)"),
    })?;
    for _ in 0..MAX_ROUNDS {
        match inspect(path)? {
            Found::Socket => {
                let probe = Deadline::after(Some(Duration::from_secs(1)));
                match try_connect(path, &addr, &probe, Some(Duration::from_secs(1)))? {
                    Connect::Connected(_) => {
                        return Err(Error::RefusedPath {
                            path: path.to_path_buf(),
                            reason: "a launcher already listens there (a guest waiting for its \
                                     peer, or another switch); stop it or pick another path"
                                .into(),
                        })
                    }
                    Connect::Refused(id) => unlink_if_same(path, id),
                    Connect::Vanished => {}
                }
            }
            Found::Missing => {
                if let Some((sock, placed)) = publish_listener(path, dir)? {
                    let mut list = SERVED.lock().unwrap_or_else(|p| p.into_inner());
                    list.push((path.to_path_buf(), Arc::new(sock)));
                    return Ok(Served {
                        path: path.to_path_buf(),
                        _placed: placed,
                    });
                }
            }
            Found::Fifo => {
                return Err(Error::RefusedPath {
                    path: path.to_path_buf(),
                    reason: "it is a FIFO; a switch on a socket transport needs the path free"
                        .into(),
                })
            }
        }
    }
    Err(Error::RefusedPath {
        path: path.to_path_buf(),
        reason: format!("could not listen there after {MAX_ROUNDS} attempts"),
    })
}

/// Accept the next connection on a [`serve_many`] listener.
pub(super) fn accept_served(
    path: &Path,
    listener: &OwnedFd,
    deadline: &Deadline,
    timeout: Option<Duration>,
) -> Result<OwnedFd> {
    loop {
        let slice = deadline
            .remaining()
            .map_or(LISTEN_SLICE, |left| left.min(LISTEN_SLICE));
        let [ready] = poll_fds([listener.as_fd()], Some(slice))?;
        if ready.readable {
            if let Some(conn) = accept_one(listener.as_fd())? {
                return Ok(conn);
            }
            continue;
        }
        if deadline.expired() {
            return Err(Error::connect_timeout(path, timeout));
        }
    }
}
