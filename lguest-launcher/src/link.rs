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
    fn every_kind_dispatches_to_the_transport_of_that_name() {
        for k in Kind::ALL {
            assert_eq!(dispatch(k, Name), k.name());
        }
    }
}
