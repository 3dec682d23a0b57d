//! Configuration from environment variables, validated once at start.
//!
//! Every service reads its settings through [`Env`], so a bad value fails start with a message that
//! names the variable, the value and what was expected.

use std::collections::HashMap;
use std::fmt::{self, Display};
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use crate::telemetry::LogFormat;

/// A configuration value that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {variable}={value:?}: {reason}")]
pub struct ConfigError {
    pub variable: String,
    pub value: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(variable: &str, value: &str, reason: impl Into<String>) -> Self {
        Self {
            variable: variable.to_owned(),
            value: value.to_owned(),
            reason: reason.into(),
        }
    }
}

/// A snapshot of environment variables. Tests build one from pairs instead of touching the process
/// environment. Its `Debug` lists the variable names only: values hold passwords and keys.
#[derive(Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.vars.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("Env").field("names", &names).finish()
    }
}

impl Env {
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars().collect(),
        }
    }

    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The value of `name`; an empty value counts as unset.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .map(str::trim)
            .filter(|v| !v.is_empty())
    }

    pub fn string(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or(default).to_owned()
    }

    /// Parses `name` with [`FromStr`], or returns `default` when unset.
    pub fn parse<T>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.get(name) {
            None => Ok(default),
            Some(raw) => raw
                .parse()
                .map_err(|e: T::Err| ConfigError::new(name, raw, e.to_string())),
        }
    }

    /// Parses `name` into an integer within `range`.
    pub fn int_in<T>(
        &self,
        name: &str,
        default: T,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + Display + Copy,
        T::Err: Display,
    {
        let value = self.parse(name, default)?;
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(ConfigError::new(
                name,
                &value.to_string(),
                format!("must be between {} and {}", range.start(), range.end()),
            ))
        }
    }

    pub fn socket_addr(&self, name: &str, default: &str) -> Result<SocketAddr, ConfigError> {
        let raw = self.get(name).unwrap_or(default);
        raw.parse().map_err(|_| {
            ConfigError::new(
                name,
                raw,
                "expected a socket address such as 0.0.0.0:8080 or 127.0.0.1:9464",
            )
        })
    }

    /// A duration given in whole seconds, at least `min`.
    pub fn duration_secs(
        &self,
        name: &str,
        default: Duration,
        min: Duration,
    ) -> Result<Duration, ConfigError> {
        self.duration_with(name, default, min, Duration::from_secs, "seconds")
    }

    /// A duration given in milliseconds, at least `min`.
    pub fn duration_millis(
        &self,
        name: &str,
        default: Duration,
        min: Duration,
    ) -> Result<Duration, ConfigError> {
        self.duration_with(name, default, min, Duration::from_millis, "milliseconds")
    }

    fn duration_with(
        &self,
        name: &str,
        default: Duration,
        min: Duration,
        from: fn(u64) -> Duration,
        unit: &str,
    ) -> Result<Duration, ConfigError> {
        let Some(raw) = self.get(name) else {
            return Ok(default);
        };
        let value = raw.parse::<u64>().map(from).map_err(|_| {
            ConfigError::new(name, raw, format!("expected a whole number of {unit}"))
        })?;
        if value < min {
            return Err(ConfigError::new(
                name,
                raw,
                format!("must be at least {min:?}"),
            ));
        }
        Ok(value)
    }

    pub fn bool(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(default),
            Some("1" | "true" | "yes" | "on") => Ok(true),
            Some("0" | "false" | "no" | "off") => Ok(false),
            Some(_) => Err(ConfigError::new(
                name,
                self.get(name).unwrap_or_default(),
                "expected true or false",
            )),
        }
    }

    /// A URL whose scheme is one of `schemes`.
    pub fn url(&self, name: &str, default: &str, schemes: &[&str]) -> Result<String, ConfigError> {
        let raw = self.get(name).unwrap_or(default);
        let scheme_ok = raw
            .split_once("://")
            .is_some_and(|(scheme, rest)| schemes.contains(&scheme) && !rest.is_empty());
        if scheme_ok {
            Ok(raw.to_owned())
        } else {
            let expected = schemes
                .iter()
                .map(|s| format!("{s}://…"))
                .collect::<Vec<_>>()
                .join(" or ");
            Err(ConfigError::new(
                name,
                raw,
                format!("expected a URL {expected}"),
            ))
        }
    }
}

/// Settings every service has.
#[derive(Debug, Clone)]
pub struct CommonConfig {
    pub service_name: String,
    pub log_format: LogFormat,
    pub admin_addr: SocketAddr,
    /// How long in-flight requests may take to finish after SIGTERM before they are cut.
    pub shutdown_timeout: Duration,
    /// OTLP/gRPC collector endpoint; traces are exported only when set.
    pub otlp_endpoint: Option<String>,
    /// Async runtime worker threads; `None`: one per CPU the process may use (in a container,
    /// its CPU limit).
    pub worker_threads: Option<usize>,
}

impl CommonConfig {
    /// `service` is the default `OTEL_SERVICE_NAME`; `default_admin_addr` differs per service so the
    /// three can run side by side on one machine.
    pub fn from_env(
        env: &Env,
        service: &str,
        default_admin_addr: &str,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            service_name: env.string("OTEL_SERVICE_NAME", service),
            log_format: env.parse("ERP_LOG_FORMAT", LogFormat::Json)?,
            admin_addr: env.socket_addr("ERP_ADMIN_ADDR", default_admin_addr)?,
            shutdown_timeout: env.duration_secs(
                "ERP_SHUTDOWN_TIMEOUT_SECS",
                Duration::from_secs(20),
                Duration::from_secs(1),
            )?,
            otlp_endpoint: match env.get("OTEL_EXPORTER_OTLP_ENDPOINT") {
                None => None,
                Some(_) => Some(env.url("OTEL_EXPORTER_OTLP_ENDPOINT", "", &["http", "https"])?),
            },
            worker_threads: match env.get("ERP_WORKER_THREADS") {
                None => None,
                Some(_) => Some(env.int_in("ERP_WORKER_THREADS", 1, 1..=256)?),
            },
        })
    }
}

/// Where a service finds MongoDB. Its `Debug` hides the password of the URI.
#[derive(Clone)]
pub struct MongoConfig {
    pub uri: String,
    pub database: String,
}

impl MongoConfig {
    pub fn from_env(env: &Env, default_database: &str) -> Result<Self, ConfigError> {
        let database = env.string("ERP_MONGODB_DATABASE", default_database);
        let valid_name = !database.is_empty()
            && database.len() <= 63
            && !database.contains(['/', '\\', '.', ' ', '"', '$', '*', '<', '>', ':', '|', '?']);
        if !valid_name {
            return Err(ConfigError::new(
                "ERP_MONGODB_DATABASE",
                &database,
                "not a valid MongoDB database name",
            ));
        }
        Ok(Self {
            uri: env.url(
                "ERP_MONGODB_URI",
                "mongodb://127.0.0.1:27017",
                &["mongodb", "mongodb+srv"],
            )?,
            database,
        })
    }
}

/// Where a service finds Redis, and the prefix of every key it writes (so several deployments or
/// test runs can share one Redis without seeing each other's keys). Its `Debug` hides the password
/// of the URL.
#[derive(Clone)]
pub struct RedisConfig {
    pub url: String,
    pub key_prefix: String,
}

impl RedisConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            // `rediss://`: TLS (what managed Redis offers), verified against the system's roots.
            url: env.url(
                "ERP_REDIS_URL",
                "redis://127.0.0.1:6379",
                &["redis", "rediss"],
            )?,
            key_prefix: env.string("ERP_REDIS_KEY_PREFIX", "erp:"),
        })
    }
}

impl fmt::Debug for MongoConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoConfig")
            .field("uri", &redact_password(&self.uri))
            .field("database", &self.database)
            .finish()
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_password(&self.url))
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

/// `url` with the password of its user info replaced, so a configuration printed with `{:?}`
/// (a start-up log, a panic message) does not carry store credentials.
pub(crate) fn redact_password(url: &str) -> String {
    const REDACTED: &str = "[REDACTED]";
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let authority_start = scheme_end + 3;
    let rest = &url[authority_start..];
    // The user info ends at the last `@` before the query: a password may hold `/` or `@`.
    let head = &rest[..rest.find(['?', '#']).unwrap_or(rest.len())];
    let Some(at) = head.rfind('@') else {
        return url.to_owned();
    };
    let Some(colon) = head[..at].find(':') else {
        return url.to_owned();
    };
    format!(
        "{}{}:{REDACTED}{}",
        &url[..authority_start],
        &head[..colon],
        &rest[at..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_admin_addr_names_the_variable() {
        let env = Env::from_pairs([("ERP_ADMIN_ADDR", "localhost-9464")]);
        let err = CommonConfig::from_env(&env, "erp-test", "0.0.0.0:9464").unwrap_err();
        assert_eq!(err.variable, "ERP_ADMIN_ADDR");
        assert!(
            err.to_string()
                .contains("ERP_ADMIN_ADDR=\"localhost-9464\"")
        );
    }

    #[test]
    fn bad_log_format_names_the_variable() {
        let env = Env::from_pairs([("ERP_LOG_FORMAT", "xml")]);
        let err = CommonConfig::from_env(&env, "erp-test", "0.0.0.0:9464").unwrap_err();
        assert_eq!(err.variable, "ERP_LOG_FORMAT");
    }

    #[test]
    fn worker_threads_are_a_positive_count() {
        let unset =
            CommonConfig::from_env(&Env::from_pairs([("X", "1")]), "s", "0.0.0.0:1").unwrap();
        assert_eq!(unset.worker_threads, None);
        let env = Env::from_pairs([("ERP_WORKER_THREADS", "2")]);
        let two = CommonConfig::from_env(&env, "s", "0.0.0.0:1").unwrap();
        assert_eq!(two.worker_threads, Some(2));
        for bad in ["0", "many", "-1"] {
            let env = Env::from_pairs([("ERP_WORKER_THREADS", bad)]);
            let err = CommonConfig::from_env(&env, "s", "0.0.0.0:1").unwrap_err();
            assert_eq!(err.variable, "ERP_WORKER_THREADS", "{bad}");
        }
    }

    #[test]
    fn defaults_apply_when_unset_or_empty() {
        let env = Env::from_pairs([("ERP_LOG_FORMAT", "  ")]);
        let config = CommonConfig::from_env(&env, "erp-test", "0.0.0.0:9464").unwrap();
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.admin_addr.port(), 9464);
        assert_eq!(config.shutdown_timeout, Duration::from_secs(20));
        assert!(config.otlp_endpoint.is_none());
    }

    #[test]
    fn urls_must_have_an_expected_scheme() {
        let env = Env::from_pairs([("ERP_MONGODB_URI", "postgres://db")]);
        let err = MongoConfig::from_env(&env, "erp_auth").unwrap_err();
        assert_eq!(err.variable, "ERP_MONGODB_URI");
        let env = Env::from_pairs([("ERP_REDIS_URL", "127.0.0.1:6379")]);
        assert_eq!(
            RedisConfig::from_env(&env).unwrap_err().variable,
            "ERP_REDIS_URL"
        );
        let env = Env::from_pairs([("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")]);
        assert_eq!(
            CommonConfig::from_env(&env, "s", "0.0.0.0:1")
                .unwrap_err()
                .variable,
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        );
    }

    #[test]
    fn tls_redis_urls_are_accepted() {
        for url in [
            "rediss://cache.example.com:6380",
            "rediss://default:secret@cache.example.com:6380/0",
            "redis://127.0.0.1:6379",
        ] {
            let env = Env::from_pairs([("ERP_REDIS_URL", url)]);
            assert_eq!(RedisConfig::from_env(&env).unwrap().url, url);
        }
        let env = Env::from_pairs([("ERP_REDIS_URL", "rediss://")]);
        assert!(RedisConfig::from_env(&env).is_err());
    }

    #[test]
    fn durations_and_ranges_are_checked() {
        let env = Env::from_pairs([("ERP_SHUTDOWN_TIMEOUT_SECS", "0"), ("N", "500")]);
        assert_eq!(
            CommonConfig::from_env(&env, "s", "0.0.0.0:1")
                .unwrap_err()
                .variable,
            "ERP_SHUTDOWN_TIMEOUT_SECS"
        );
        assert!(env.int_in("N", 1u32, 1..=100).is_err());
        assert_eq!(env.int_in("M", 7u32, 1..=100), Ok(7));
        let env = Env::from_pairs([("B", "maybe")]);
        assert!(env.bool("B", false).is_err());
    }

    #[test]
    fn bad_database_name_is_refused() {
        let env = Env::from_pairs([("ERP_MONGODB_DATABASE", "a/b")]);
        assert_eq!(
            MongoConfig::from_env(&env, "erp_auth")
                .unwrap_err()
                .variable,
            "ERP_MONGODB_DATABASE"
        );
    }

    #[test]
    fn store_passwords_stay_out_of_debug_output() {
        let env = Env::from_pairs([
            (
                "ERP_MONGODB_URI",
                "mongodb://app:s3cret@db-0,db-1/?replicaSet=rs0",
            ),
            (
                "ERP_REDIS_URL",
                "rediss://default:s3cret@cache.example.com:6380/0",
            ),
        ]);
        let mongo = format!("{:?}", MongoConfig::from_env(&env, "erp_auth").unwrap());
        let redis = format!("{:?}", RedisConfig::from_env(&env).unwrap());
        for printed in [&mongo, &redis] {
            assert!(!printed.contains("s3cret"), "{printed}");
            assert!(printed.contains("[REDACTED]"), "{printed}");
        }
        assert!(mongo.contains("mongodb://app:[REDACTED]@db-0,db-1/?replicaSet=rs0"));
        assert!(redis.contains("cache.example.com:6380"), "{redis}");
        let env = format!("{env:?}");
        assert!(
            !env.contains("s3cret") && env.contains("ERP_REDIS_URL"),
            "{env}"
        );
    }

    #[test]
    fn urls_without_a_password_print_as_they_are() {
        for url in [
            "redis://127.0.0.1:6379",
            "mongodb://user@db/?authSource=admin",
            "not a url",
        ] {
            assert_eq!(redact_password(url), url);
        }
        assert_eq!(
            redact_password("redis://:p@ss/w@host:1/?q=a@b"),
            "redis://:[REDACTED]@host:1/?q=a@b"
        );
    }
}
