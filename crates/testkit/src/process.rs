//! Service binaries run as child processes, on port 0, with their bound addresses read from their
//! `listening` log line.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The path of a workspace binary built next to the running test (`target/<profile>/<name>`).
/// Integration tests of the crate that owns the binary should prefer `env!("CARGO_BIN_EXE_<name>")`.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable is inside target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run the workspace tests (cargo nextest run --workspace) or cargo build --bins",
        path.display()
    );
    path
}

/// A running service binary. Killed when dropped (and waited for, briefly, so that it cannot write
/// to the stores after a later cleanup, see [`crate::TestStores`]); [`ServiceProcess::terminate`]
/// stops it the way Kubernetes does (SIGTERM) and returns its exit status.
pub struct ServiceProcess {
    child: Child,
    name: String,
    addrs: HashMap<String, SocketAddr>,
    output: Arc<Mutex<Vec<String>>>,
}

impl ServiceProcess {
    /// Starts `binary` with `env` (added to the inherited environment, JSON logs forced) and waits
    /// for its `listening` line. Pass `*_ADDR=127.0.0.1:0` variables to get free ports.
    pub async fn start(binary: &Path, env: &[(&str, String)]) -> Self {
        let name = binary
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut command = Command::new(binary);
        command
            .env("ERP_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let output = Arc::new(Mutex::new(Vec::new()));

        let stderr = child.stderr.take().expect("piped stderr");
        let stderr_lines = Arc::clone(&output);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                stderr_lines.lock().unwrap().push(line);
            }
        });

        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let found = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                output.lock().unwrap().push(line.clone());
                if let Some(addrs) = listening_addrs(&line) {
                    return Some(addrs);
                }
            }
            None
        })
        .await;
        let addrs = match found {
            Ok(Some(addrs)) => addrs,
            _ => {
                let status = child.try_wait().ok().flatten();
                panic!(
                    "{name} did not report listening (exit status {status:?}); output:\n{}",
                    output.lock().unwrap().join("\n")
                )
            }
        };
        // Keep reading so the child never blocks on a full pipe.
        let rest = Arc::clone(&output);
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                rest.lock().unwrap().push(line);
            }
        });
        Self {
            child,
            name,
            addrs,
            output,
        }
    }

    /// The address logged as `<kind>_addr`, e.g. `addr("admin")`, `addr("grpc")`, `addr("http")`.
    pub fn addr(&self, kind: &str) -> SocketAddr {
        *self
            .addrs
            .get(&format!("{kind}_addr"))
            .unwrap_or_else(|| panic!("{} logged no {kind}_addr", self.name))
    }

    /// Waits until `/readyz` on the admin port answers 200.
    pub async fn wait_ready(&self, timeout: Duration) {
        let url = format!("http://{}/readyz", self.addr("admin"));
        crate::wait_for_200(&url, timeout).await;
    }

    /// Everything the process printed so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }

    /// Kills the process at once (SIGKILL, a crash or an OOM kill) and waits for it to be gone.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("SIGKILL the child");
    }

    /// Sends SIGTERM and waits (at most `timeout`) for the process to exit.
    pub async fn terminate(mut self, timeout: Duration) -> ExitStatus {
        let pid = self.child.id().expect("child still running") as i32;
        kill(Pid::from_raw(pid), Signal::SIGTERM).expect("send SIGTERM");
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status.expect("wait for child"),
            Err(_) => panic!(
                "{} did not exit within {timeout:?} of SIGTERM; output:\n{}",
                self.name,
                self.output()
            ),
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        // Already gone (killed, terminated or crashed): nothing to wait for.
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let _ = self.child.start_kill();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                _ => return,
            }
        }
    }
}

/// Starts `binary` with `env`, waits (30 s at most) until it is ready, sends SIGTERM and asserts
/// that it exits with status zero within 30 s.
pub async fn assert_serves_and_stops_on_sigterm(binary: &Path, env: &[(&str, String)]) {
    let process = ServiceProcess::start(binary, env).await;
    process.wait_ready(Duration::from_secs(30)).await;
    let status = process.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "exit status {status:?}");
}

/// The `*_addr` fields of a JSON `listening` log line.
fn listening_addrs(line: &str) -> Option<HashMap<String, SocketAddr>> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let object = value.as_object()?;
    if object.get("message")?.as_str()? != "listening" {
        return None;
    }
    Some(
        object
            .iter()
            .filter(|(key, _)| key.ends_with("_addr"))
            .filter_map(|(key, value)| Some((key.clone(), value.as_str()?.parse().ok()?)))
            .collect(),
    )
}

/// Environment for a gRPC service binary on free loopback ports, using the test stores with a
/// database and Redis key prefix of its own. `addr_var` is the service's listen variable, e.g.
/// `ERP_AUTH_ADDR`.
/// Sets `key` in an environment list, replacing an earlier value (a test's override of a
/// default setting).
pub fn set_env(env: &mut Vec<(String, String)>, key: &str, value: &str) {
    env.retain(|(k, _)| k != key);
    env.push((key.to_owned(), value.to_owned()));
}

pub fn grpc_service_env(addr_var: &'static str, database: &str) -> Vec<(&'static str, String)> {
    vec![
        (addr_var, "127.0.0.1:0".to_owned()),
        ("ERP_ADMIN_ADDR", "127.0.0.1:0".to_owned()),
        ("ERP_MONGODB_URI", crate::mongodb_uri()),
        ("ERP_MONGODB_DATABASE", database.to_owned()),
        ("ERP_REDIS_URL", crate::redis_url()),
        ("ERP_REDIS_KEY_PREFIX", format!("{database}:")),
        (
            "ERP_SERVICE_IDENTITY_KEY_FILE",
            crate::identity_key_file().display().to_string(),
        ),
    ]
}

/// Runs `binary` with `variable=value` and asserts it refuses to start, naming the variable.
pub fn assert_refuses_bad_config(binary: &Path, variable: &str, value: &str) {
    let output = std::process::Command::new(binary)
        .env("ERP_SERVICE_IDENTITY_KEY_FILE", crate::identity_key_file())
        .env(variable, value)
        .env("ERP_ADMIN_ADDR", "127.0.0.1:0")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(78),
        "exit status; stderr: {stderr}"
    );
    assert!(
        stderr.contains(variable) && stderr.contains(value),
        "the message names {variable} and its value: {stderr}"
    );
}
