//! Redis connection setup: one multiplexed, self-reconnecting connection per process, created
//! lazily so a process starts (not ready) while Redis is down.

use std::time::Duration;

use futures::future::BoxFuture;
use redis::IntoConnectionInfo;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::io::tcp::{TcpSettings, socket2::TcpKeepalive};

use crate::admin::ReadinessCheck;
use crate::config::RedisConfig;

/// A cheap-to-clone handle on Redis, with the key prefix of this deployment.
#[derive(Clone)]
pub struct RedisStore {
    client: redis::Client,
    manager: ConnectionManager,
    key_prefix: String,
}

impl RedisStore {
    pub fn connect(config: &RedisConfig) -> redis::RedisResult<Self> {
        let info = config
            .url
            .as_str()
            .into_connection_info()?
            .set_tcp_settings(tcp_settings());
        let client = redis::Client::open(info)?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), manager_config)?;
        Ok(Self {
            client,
            manager,
            key_prefix: config.key_prefix.clone(),
        })
    }

    /// The shared connection; clone it per use (clones share one socket).
    pub fn connection(&self) -> ConnectionManager {
        self.manager.clone()
    }

    /// The client, for dedicated connections such as pub/sub subscribers.
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// `name` under this deployment's prefix.
    pub fn key(&self, name: &str) -> String {
        format!("{}{}", self.key_prefix, name)
    }
}

/// TCP settings of every Redis connection (the shared one and pub/sub subscribers): keepalive
/// probes after 10 s idle, every 5 s, 3 unanswered close the socket (a half-open connection,
/// e.g. Redis's host gone, is noticed within about 25 s, and a subscriber then reconnects and
/// drops its caches); `TCP_USER_TIMEOUT` bounds unacknowledged writes the same way; no Nagle
/// delay on small commands.
fn tcp_settings() -> TcpSettings {
    let keepalive = TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(5));
    #[cfg(any(target_os = "linux", target_os = "macos", target_os = "freebsd"))]
    let keepalive = keepalive.with_retries(3);
    let settings = TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(keepalive);
    #[cfg(target_os = "linux")]
    let settings = settings.set_user_timeout(Duration::from_secs(25));
    settings
}

/// `/readyz` check: Redis answers `PING`.
pub struct RedisCheck {
    store: RedisStore,
}

impl RedisCheck {
    pub fn new(store: RedisStore) -> Self {
        Self { store }
    }
}

impl ReadinessCheck for RedisCheck {
    fn name(&self) -> &str {
        "redis"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let mut connection = self.store.connection();
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        })
    }
}

/// Listens on a pub/sub `channel` until `shutdown`, calling `on_message` with each payload.
/// Reconnects (after a short pause) whenever the connection drops; `on_connect` runs after every
/// (re)subscription, so a listener can drop state it may have missed messages about.
pub async fn subscribe_until_shutdown(
    client: redis::Client,
    channel: String,
    shutdown: crate::Shutdown,
    on_message: impl Fn(String) + Send + Sync,
    on_connect: impl Fn() + Send + Sync,
) {
    use futures::StreamExt;
    let mut pause = Duration::from_millis(100);
    while !shutdown.is_triggered() {
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            redis::RedisResult::Ok(pubsub)
        }
        .await;
        match subscribed {
            Ok(mut pubsub) => {
                pause = Duration::from_millis(100);
                on_connect();
                let mut messages = pubsub.on_message();
                loop {
                    tokio::select! {
                        () = shutdown.triggered() => return,
                        message = messages.next() => match message {
                            Some(message) => match message.get_payload::<String>() {
                                Ok(payload) => on_message(payload),
                                Err(error) => tracing::warn!(%error, channel, "unreadable message"),
                            },
                            None => break,
                        },
                    }
                }
                tracing::warn!(channel, "subscription lost; reconnecting");
            }
            Err(error) => tracing::warn!(%error, channel, "cannot subscribe; retrying"),
        }
        tokio::select! {
            () = shutdown.triggered() => return,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tls_urls_make_a_store_without_connecting() {
        for url in ["rediss://cache.example.com:6380", "redis://127.0.0.1:1"] {
            let store = RedisStore::connect(&RedisConfig {
                url: url.to_owned(),
                key_prefix: "t:".to_owned(),
            })
            .unwrap();
            assert!(
                store
                    .client()
                    .get_connection_info()
                    .tcp_settings()
                    .keepalive()
                    .is_some()
            );
        }
    }
}
