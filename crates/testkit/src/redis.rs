//! A Redis server of a test's own, for tests that flush, restart or cut it (the shared test
//! Redis serves every concurrent test and must never be flushed or restarted).

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// A `redis-server` (from `PATH`, or `ERP_TEST_REDIS_SERVER`) on a free loopback port, without
/// persistence: a restart comes back empty. Killed when dropped.
pub struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

fn spawn(port: u16) -> Child {
    let binary =
        std::env::var("ERP_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned());
    Command::new(binary)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start redis-server (installed by scripts/stores.sh)")
}

impl PrivateRedis {
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("a free port")
            .local_addr()
            .expect("its address")
            .port();
        let redis = Self {
            port,
            child: Some(spawn(port)),
        };
        redis.wait_up().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn wait_up(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(reply) = self.try_command("PING").await
                && reply == "+PONG"
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "private redis-server on port {} did not start",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn try_command(&self, command: &str) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await?;
        stream
            .write_all(format!("{command}\r\n").as_bytes())
            .await?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).await?;
        Ok(line.trim_end().to_owned())
    }

    /// Sends an inline command; returns the first line of the reply (e.g. `+OK`, `:3`).
    pub async fn command(&self, command: &str) -> String {
        self.try_command(command)
            .await
            .expect("private redis-server answers")
    }

    /// Drops every key.
    pub async fn flush_all(&self) {
        assert_eq!(self.command("FLUSHALL").await, "+OK");
    }

    /// Kills the server and starts an empty one on the same port.
    pub async fn restart_empty(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill redis-server");
        }
        // The port is free again once the old process is gone.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            self.child = Some(spawn(self.port));
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Some(child) = self.child.as_mut()
                && child.try_wait().ok().flatten().is_none()
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not restart"
            );
        }
        self.wait_up().await;
    }
}
