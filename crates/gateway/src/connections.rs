//! Spreads the accepted HTTP connections over the gateway's shards (one single-threaded runtime
//! per thread, see [`crate::App`]): the first shard accepts every connection and hands every
//! other one, in turn, to the next shard, which serves it for its whole life.
//!
//! The accepting side also holds the connection cap (`ERP_HTTP_MAX_CONNECTIONS`, over all
//! shards): every connection takes a permit for its whole life; one arriving when none is left
//! is closed at once rather than left waiting in the listen queue.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::Listener;
use prometheus::IntCounter;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// A connection on its way to another shard's runtime.
type Handed = (std::net::TcpStream, SocketAddr, OwnedSemaphorePermit);

/// An accepted connection, holding its place under the connection cap until dropped.
pub(crate) struct Accepted {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub permit: OwnedSemaphorePermit,
}

/// Where a shard's connections come from.
pub(crate) trait Incoming: Send {
    fn accept(&mut self) -> impl std::future::Future<Output = Accepted> + Send;
}

/// The accepting side: the real socket and a queue to every further shard.
pub(crate) struct Dispatcher {
    listener: TcpListener,
    shards: Vec<mpsc::UnboundedSender<Handed>>,
    next: usize,
    capacity: Arc<Semaphore>,
    refused: IntCounter,
}

/// The connections one further shard is handed.
pub(crate) struct Handoff {
    connections: mpsc::UnboundedReceiver<Handed>,
    /// The dispatcher's address, which tests check.
    #[cfg(test)]
    local_addr: SocketAddr,
}

/// The dispatcher and one [`Handoff`] for each of the `threads - 1` further shards; at most
/// `max_connections` are open at once, the ones refused over it are counted in `refused`.
pub(crate) fn spread(
    listener: TcpListener,
    threads: usize,
    max_connections: usize,
    refused: IntCounter,
) -> std::io::Result<(Dispatcher, Vec<Handoff>)> {
    #[cfg(test)]
    let local_addr = listener.local_addr()?;
    let (shards, handoffs) = (1..threads)
        .map(|_| {
            let (sender, connections) = mpsc::unbounded_channel();
            (
                sender,
                Handoff {
                    connections,
                    #[cfg(test)]
                    local_addr,
                },
            )
        })
        .unzip();
    Ok((
        Dispatcher {
            listener,
            shards,
            next: 0,
            capacity: Arc::new(Semaphore::new(max_connections.min(Semaphore::MAX_PERMITS))),
            refused,
        },
        handoffs,
    ))
}

impl Dispatcher {
    pub(crate) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

impl Incoming for Dispatcher {
    async fn accept(&mut self) -> Accepted {
        loop {
            let (stream, peer) = Listener::accept(&mut self.listener).await;
            let Ok(permit) = Arc::clone(&self.capacity).try_acquire_owned() else {
                // Closed at once: the client learns now rather than after a timeout.
                self.refused.inc();
                tracing::debug!(%peer, "connection refused: ERP_HTTP_MAX_CONNECTIONS reached");
                drop(stream);
                continue;
            };
            let turn = self.next;
            self.next = (self.next + 1) % (self.shards.len() + 1);
            let Some(shard) = turn.checked_sub(1).and_then(|i| self.shards.get(i)) else {
                return Accepted {
                    stream,
                    peer,
                    permit,
                };
            };
            // A shard that stopped (shutdown) no longer takes connections: serve it here.
            let (stream, permit) = match stream.into_std() {
                Ok(stream) => match shard.send((stream, peer, permit)) {
                    Ok(()) => continue,
                    Err(mpsc::error::SendError((stream, _, permit))) => (Ok(stream), permit),
                },
                Err(error) => (Err(error), permit),
            };
            if let Some(accepted) = resume(stream, peer, permit) {
                return accepted;
            }
        }
    }
}

#[cfg(test)]
impl Handoff {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local_addr)
    }
}

impl Incoming for Handoff {
    async fn accept(&mut self) -> Accepted {
        loop {
            let Some((stream, peer, permit)) = self.connections.recv().await else {
                // The dispatcher is gone (shutting down): nothing more will come.
                return std::future::pending().await;
            };
            if let Some(accepted) = resume(Ok(stream), peer, permit) {
                return accepted;
            }
        }
    }
}

/// A connection handed between shards, back on this shard's runtime; `None` (logged) if it
/// could not be moved.
fn resume(
    stream: std::io::Result<std::net::TcpStream>,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
) -> Option<Accepted> {
    match stream.and_then(TcpStream::from_std) {
        Ok(stream) => Some(Accepted {
            stream,
            peer,
            permit,
        }),
        Err(error) => {
            tracing::warn!(%error, "dropped a connection handed between shards");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn refused() -> IntCounter {
        IntCounter::new("refused", "refused").unwrap()
    }

    async fn connect(addr: SocketAddr) -> (TcpStream, SocketAddr) {
        let client = TcpStream::connect(addr).await.unwrap();
        let local = client.local_addr().unwrap();
        (client, local)
    }

    #[tokio::test]
    async fn deals_connections_out_in_turn() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mut dispatcher, mut handoffs) = spread(listener, 3, 100, refused()).unwrap();
        assert_eq!(handoffs.len(), 2);
        assert_eq!(handoffs[1].local_addr().unwrap(), addr);

        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(connect(addr).await);
        }
        // The first and the fourth stay with the accepting shard; the second and third are
        // handed to the further shards, in order.
        let first = dispatcher.accept().await;
        assert_eq!(first.peer, clients[0].1);
        let fourth = dispatcher.accept().await;
        assert_eq!(fourth.peer, clients[3].1);
        let second = handoffs[0].accept().await;
        assert_eq!(second.peer, clients[1].1);
        assert_eq!(second.stream.peer_addr().unwrap(), clients[1].1);
        let third = handoffs[1].accept().await;
        assert_eq!(third.peer, clients[2].1);
    }

    #[tokio::test]
    async fn serves_connections_of_a_stopped_shard_itself() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mut dispatcher, handoffs) = spread(listener, 2, 100, refused()).unwrap();
        drop(handoffs);
        let first = connect(addr).await;
        let second = connect(addr).await;
        assert_eq!(dispatcher.accept().await.peer, first.1);
        assert_eq!(dispatcher.accept().await.peer, second.1);
    }

    #[tokio::test]
    async fn one_thread_keeps_every_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mut dispatcher, handoffs) = spread(listener, 1, 100, refused()).unwrap();
        assert!(handoffs.is_empty());
        let client = connect(addr).await;
        assert_eq!(dispatcher.accept().await.peer, client.1);
    }

    #[tokio::test]
    async fn over_the_cap_connections_are_closed_until_one_ends() {
        use tokio::io::AsyncReadExt;

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counter = refused();
        let (mut dispatcher, _) = spread(listener, 1, 2, counter.clone()).unwrap();
        let first = connect(addr).await;
        let second = connect(addr).await;
        let held_first = dispatcher.accept().await;
        assert_eq!(held_first.peer, first.1);
        let held_second = dispatcher.accept().await;
        assert_eq!(held_second.peer, second.1);
        // A third is accepted and closed while the first two hold the permits.
        let (mut third, _) = connect(addr).await;
        let accepting = tokio::spawn(async move {
            let accepted = dispatcher.accept().await;
            (accepted.peer, dispatcher)
        });
        let mut buffer = [0u8; 1];
        let read = tokio::time::timeout(std::time::Duration::from_secs(5), third.read(&mut buffer))
            .await
            .expect("the refused connection is closed promptly");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert_eq!(counter.get(), 1);
        // Once one ends, the next gets its place.
        drop(held_first);
        let fourth = connect(addr).await;
        let (peer, _dispatcher) = accepting.await.unwrap();
        assert_eq!(peer, fourth.1);
        assert_eq!(counter.get(), 1);
        drop(held_second);
    }
}
