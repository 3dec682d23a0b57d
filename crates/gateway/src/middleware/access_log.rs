//! The access log: one line per request, written in the request's span when it is answered (so
//! it carries the request's `trace_id`, `span_id` and `request_id`). Which requests get one is
//! `ERP_ACCESS_LOG`:
//!
//! - `all` (default): every request, so that every trace has a log line to link to;
//! - `errors`: answers 4xx and 5xx, and requests slower than `ERP_ACCESS_LOG_SLOW_MS`
//!   (default 500);
//! - `off`: none.
//!
//! The lines have the target `erp_gateway::access` (INFO; WARN for 5xx), so `RUST_LOG` can also
//! turn them off (`info,erp_gateway::access=off`).

use std::time::Duration;

use axum::http::StatusCode;
use erp_platform::{ConfigError, Env};

const MODE_VAR: &str = "ERP_ACCESS_LOG";
const SLOW_VAR: &str = "ERP_ACCESS_LOG_SLOW_MS";

/// Which requests the access log writes a line for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    All,
    Errors,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AccessLog {
    mode: Mode,
    /// With `errors`: a request at least this slow is written whatever its status.
    slow: Duration,
}

impl Default for AccessLog {
    fn default() -> Self {
        Self {
            mode: Mode::All,
            slow: Duration::from_millis(500),
        }
    }
}

impl AccessLog {
    pub(crate) fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let mode = match env.get(MODE_VAR).map(str::to_ascii_lowercase).as_deref() {
            None | Some("") => defaults.mode,
            Some("all") => Mode::All,
            Some("errors") => Mode::Errors,
            Some("off") => Mode::Off,
            Some(other) => {
                return Err(ConfigError::new(
                    MODE_VAR,
                    other,
                    "expected all, errors or off",
                ));
            }
        };
        let slow = env.duration_millis(SLOW_VAR, defaults.slow, Duration::from_millis(1))?;
        Ok(Self { mode, slow })
    }

    /// Whether a request answered `status` after `elapsed` gets a line.
    fn wants(&self, status: StatusCode, elapsed: Duration) -> bool {
        match self.mode {
            Mode::All => true,
            Mode::Errors => {
                status.is_client_error() || status.is_server_error() || elapsed >= self.slow
            }
            Mode::Off => false,
        }
    }

    /// Writes the line of a request, in the current span (the request's), if it is wanted. The
    /// method, route and request id are fields of that span already.
    pub(crate) fn write(&self, status: StatusCode, elapsed: Duration) {
        if !self.wants(status, elapsed) {
            return;
        }
        let status_code = status.as_u16();
        let duration_ms = elapsed.as_secs_f64() * 1000.0;
        if status.is_server_error() {
            tracing::warn!(
                target: "erp_gateway::access",
                duration_ms,
                http.response.status_code = status_code,
                "request answered"
            );
        } else {
            tracing::info!(
                target: "erp_gateway::access",
                duration_ms,
                http.response.status_code = status_code,
                "request answered"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn modes_choose_the_lines() {
        let fast = Duration::from_millis(3);
        let slow = Duration::from_millis(800);
        let all = AccessLog::from_env(&env(&[])).unwrap();
        assert!(all.wants(StatusCode::OK, fast));
        let errors = AccessLog::from_env(&env(&[(MODE_VAR, "errors")])).unwrap();
        assert!(!errors.wants(StatusCode::OK, fast));
        assert!(errors.wants(StatusCode::OK, slow));
        assert!(errors.wants(StatusCode::NOT_FOUND, fast));
        assert!(errors.wants(StatusCode::SERVICE_UNAVAILABLE, fast));
        let off = AccessLog::from_env(&env(&[(MODE_VAR, "OFF")])).unwrap();
        assert!(!off.wants(StatusCode::INTERNAL_SERVER_ERROR, slow));
        let threshold =
            AccessLog::from_env(&env(&[(MODE_VAR, "errors"), (SLOW_VAR, "1000")])).unwrap();
        assert!(!threshold.wants(StatusCode::OK, slow));
    }

    #[test]
    fn a_bad_mode_names_the_variable() {
        let error = AccessLog::from_env(&env(&[(MODE_VAR, "some")])).unwrap_err();
        assert!(error.to_string().contains(MODE_VAR), "{error}");
    }
}
