//! Spreads the accepted HTTP connections over the gateway's shards (one single-threaded runtime
//! per thread, see [`crate::App`]): the first shard accepts every connection and hands every
//! other one, in turn, to the next shard, which serves it for its whole life.

use std::net::SocketAddr;

use axum::serve::Listener;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// A connection on its way to another shard's runtime.
type Handed = (std::net::TcpStream, SocketAddr);

/// The accepting side: the real socket and a queue to every further shard.
pub struct Dispatcher {
    listener: TcpListener,
    shards: Vec<mpsc::UnboundedSender<Handed>>,
    next: usize,
}

/// The connections one further shard is handed.
pub struct Handoff {
    connections: mpsc::UnboundedReceiver<Handed>,
    local_addr: SocketAddr,
}

/// The dispatcher and one [`Handoff`] for each of the `threads - 1` further shards.
pub fn spread(
    listener: TcpListener,
    threads: usize,
) -> std::io::Result<(Dispatcher, Vec<Handoff>)> {
    let local_addr = listener.local_addr()?;
    let (shards, handoffs) = (1..threads)
        .map(|_| {
            let (sender, connections) = mpsc::unbounded_channel();
            (
                sender,
                Handoff {
                    connections,
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
        },
        handoffs,
    ))
}

impl Listener for Dispatcher {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            let (stream, peer) = Listener::accept(&mut self.listener).await;
            let turn = self.next;
            self.next = (self.next + 1) % (self.shards.len() + 1);
            let Some(shard) = turn.checked_sub(1).and_then(|i| self.shards.get(i)) else {
                return (stream, peer);
            };
            // A shard that stopped (shutdown) no longer takes connections: serve it here.
            let stream = match stream.into_std() {
                Ok(stream) => match shard.send((stream, peer)) {
                    Ok(()) => continue,
                    Err(mpsc::error::SendError((stream, _))) => TcpStream::from_std(stream),
                },
                Err(error) => Err(error),
            };
            match stream {
                Ok(stream) => return (stream, peer),
                Err(error) => tracing::warn!(%error, "dropped a connection handed between shards"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

impl Listener for Handoff {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            let Some((stream, peer)) = self.connections.recv().await else {
                // The dispatcher is gone (shutting down): nothing more will come.
                return std::future::pending().await;
            };
            match TcpStream::from_std(stream) {
                Ok(stream) => return (stream, peer),
                Err(error) => tracing::warn!(%error, "dropped a connection handed between shards"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local_addr)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    async fn connect(addr: SocketAddr) -> (TcpStream, SocketAddr) {
        let client = TcpStream::connect(addr).await.unwrap();
        let local = client.local_addr().unwrap();
        (client, local)
    }

    #[tokio::test]
    async fn deals_connections_out_in_turn() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mut dispatcher, mut handoffs) = spread(listener, 3).unwrap();
        assert_eq!(handoffs.len(), 2);
        assert_eq!(handoffs[1].local_addr().unwrap(), addr);

        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(connect(addr).await);
        }
        // The first and the fourth stay with the accepting shard; the second and third are
        // handed to the further shards, in order.
        let (_, first) = dispatcher.accept().await;
        assert_eq!(first, clients[0].1);
        let (_, fourth) = dispatcher.accept().await;
        assert_eq!(fourth, clients[3].1);
        let (stream, second) = handoffs[0].accept().await;
        assert_eq!(second, clients[1].1);
        assert_eq!(stream.peer_addr().unwrap(), clients[1].1);
        let (_, third) = handoffs[1].accept().await;
        assert_eq!(third, clients[2].1);
    }

    #[tokio::test]
    async fn serves_connections_of_a_stopped_shard_itself() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mut dispatcher, handoffs) = spread(listener, 2).unwrap();
        drop(handoffs);
        let first = connect(addr).await;
        let second = connect(addr).await;
        assert_eq!(dispatcher.accept().await.1, first.1);
        assert_eq!(dispatcher.accept().await.1, second.1);
    }

    #[tokio::test]
    async fn one_thread_keeps_every_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mut dispatcher, handoffs) = spread(listener, 1).unwrap();
        assert!(handoffs.is_empty());
        let client = connect(addr).await;
        assert_eq!(dispatcher.accept().await.1, client.1);
    }
}
