//! The daemon's own sections: `[storage]`, `[http]`, `[log]`, `[admin]` and `[shutdown]`
//! (where data lives, the HTTP listener and its limits, logging, the admin socket, the
//! drain on shutdown): their validated shapes and how their keys are read.
//!
//! Owns every message about those keys. Must never open, bind or create anything it names
//! (it only checks the text), and never read another section's keys.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::raw::Reader;

/// The local admin channel.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// The Unix socket the CLI talks to; default `{storage.path}/admin.sock`.
    pub socket: PathBuf,
}

#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub path: PathBuf,
    pub dedup_retention: Duration,
    /// The token encryption key; `None` means `{path}/secret.key`, generated on first start.
    pub encryption_key_file: Option<PathBuf>,
    /// How long an uninstalled workspace's data is kept so a reinstall restores it.
    pub uninstalled_retention: Duration,
    /// The engine: embedded sled in `path` (the default), or a shared PostgreSQL database.
    pub backend: crate::store::Backend,
    /// How long a replica's lease on a repository, a channel or the leader role lasts
    /// without renewal (PostgreSQL only): a replica that dies loses them after this.
    pub lease_ttl: Duration,
    /// The PostgreSQL database when `storage.postgres.url` is set, whichever engine is
    /// chosen (`migrate` copies between the two).
    pub postgres: Option<crate::store::PgSettings>,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    pub public_url: Url,
    /// Connections served at once; further ones are closed at once.
    pub max_connections: usize,
    /// How long a connection may wait, with no request in progress, before its next one.
    pub idle_timeout: Duration,
    /// How long a request head may take from its first byte to its last.
    pub header_read_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone)]
pub struct ShutdownConfig {
    pub drain_timeout: Duration,
}

/// Reads the `storage.*` keys.
pub(super) fn read_storage(reader: &mut Reader) -> StorageConfig {
    let encryption_key_file = reader.optional_path("storage.encryption_key_file");
    let (backend, postgres) = read_backend(reader, encryption_key_file.is_some());
    let lease_ttl = Duration::from_secs(reader.integer("storage.postgres.lease_ttl_secs", 3, 600));
    StorageConfig {
        path: reader.path("storage.path"),
        dedup_retention: Duration::from_secs(reader.integer(
            "storage.dedup_retention_secs",
            3600,
            7 * 24 * 3600,
        )),
        encryption_key_file,
        uninstalled_retention: Duration::from_secs(
            reader.integer("storage.uninstalled_retention_days", 1, 3650) * 24 * 3600,
        ),
        backend,
        lease_ttl,
        postgres,
    }
}

/// Reads `storage.backend` and, for `"postgres"`, the `storage.postgres.*` keys (read
/// either way, so a typo in them is reported even while sled is chosen).
fn read_backend(
    reader: &mut Reader,
    has_key_file: bool,
) -> (crate::store::Backend, Option<crate::store::PgSettings>) {
    let pool_size = reader.integer("storage.postgres.pool_size", 1, 100) as usize;
    let connect_timeout =
        Duration::from_secs(reader.integer("storage.postgres.connect_timeout_secs", 1, 300));
    let statement_timeout =
        Duration::from_secs(reader.integer("storage.postgres.statement_timeout_secs", 1, 3600));
    let settings = reader
        .optional_secret("storage.postgres.url", None)
        .map(|url| crate::store::PgSettings {
            url,
            pool_size,
            connect_timeout,
            statement_timeout,
        });
    let Some(raw) = reader.take_defaulted("storage.backend") else {
        return (crate::store::Backend::Sled, settings);
    };
    let backend = match raw.text.trim() {
        "sled" => crate::store::Backend::Sled,
        "postgres" => {
            let Some(settings) = settings.clone() else {
                reader.problem(
                    "storage.postgres.url",
                    "is required when storage.backend = \"postgres\" (or set \
                     storage.postgres.url_file to a file holding it)",
                );
                return (crate::store::Backend::Sled, None);
            };
            if !has_key_file {
                reader.problem(
                    "storage.encryption_key_file",
                    "is required when storage.backend = \"postgres\": every replica must seal \
                     tokens with the same key",
                );
            }
            crate::store::Backend::Postgres(settings)
        }
        other => {
            reader.problem(
                "storage.backend",
                format!(
                    "`{other}` must be \"sled\" or \"postgres\" (from {})",
                    raw.origin
                ),
            );
            crate::store::Backend::Sled
        }
    };
    (backend, settings)
}

/// Reads the `http.*` keys.
pub(super) fn read_http(reader: &mut Reader) -> HttpConfig {
    HttpConfig {
        listen: reader.socket_addr("http.listen"),
        public_url: reader.url("http.public_url"),
        max_connections: reader.integer("http.max_connections", 1, 10_000) as usize,
        idle_timeout: Duration::from_secs(reader.integer("http.idle_timeout_secs", 1, 3600)),
        header_read_timeout: Duration::from_secs(reader.integer(
            "http.header_read_timeout_secs",
            1,
            300,
        )),
    }
}

/// Reads the `log.*` keys.
pub(super) fn read_log(reader: &mut Reader) -> LogConfig {
    LogConfig {
        level: log_filter(reader, "log.level"),
        format: log_format(reader, "log.format"),
    }
}

/// Reads `admin.socket`; unset, the socket sits in the storage directory.
pub(super) fn read_admin(reader: &mut Reader, storage: &StorageConfig) -> AdminConfig {
    AdminConfig {
        socket: reader
            .optional_path("admin.socket")
            .unwrap_or_else(|| storage.path.join("admin.sock")),
    }
}

/// Reads the `shutdown.*` keys.
pub(super) fn read_shutdown(reader: &mut Reader) -> ShutdownConfig {
    ShutdownConfig {
        drain_timeout: Duration::from_secs(reader.integer("shutdown.drain_timeout_secs", 1, 300)),
    }
}

fn log_filter(reader: &mut Reader, key: &str) -> String {
    let Some(raw) = reader.take_defaulted(key) else {
        return "info".into();
    };
    match tracing_subscriber::EnvFilter::builder().parse(raw.text.trim()) {
        Ok(_) => raw.text.trim().to_string(),
        Err(error) => {
            reader.problem(
                key,
                format!(
                    "`{}` is not a log filter such as `info` or `info,bitbucket_slack=debug`: {error} (from {})",
                    raw.text, raw.origin
                ),
            );
            "info".into()
        }
    }
}

fn log_format(reader: &mut Reader, key: &str) -> LogFormat {
    let Some(raw) = reader.take_defaulted(key) else {
        return LogFormat::Text;
    };
    match raw.text.trim() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            reader.problem(
                key,
                format!(
                    "`{other}` must be \"text\" or \"json\" (from {})",
                    raw.origin
                ),
            );
            LogFormat::Text
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use crate::config::Config;
    use crate::config::test_support::{APP, env, problems};

    #[test]
    fn http_limits_have_defaults_and_ranges_named_by_key() {
        let config = Config::load(None, &env(&[APP])).expect("valid");
        assert_eq!(config.http.max_connections, 256);
        assert_eq!(config.http.idle_timeout, Duration::from_secs(30));
        assert_eq!(config.http.header_read_timeout, Duration::from_secs(10));
        let lines = problems(Config::load(
            None,
            &env(&[
                APP,
                ("BITBUCKET_SLACK__HTTP__MAX_CONNECTIONS", "0"),
                ("BITBUCKET_SLACK__HTTP__IDLE_TIMEOUT_SECS", "soon"),
                ("BITBUCKET_SLACK__HTTP__HEADER_READ_TIMEOUT_SECS", "301"),
            ]),
        ));
        assert_eq!(
            lines,
            vec![
                "http.max_connections: 0 is out of range: allowed 1 to 10000 (from environment variable BITBUCKET_SLACK__HTTP__MAX_CONNECTIONS)",
                "http.idle_timeout_secs: `soon` is not a whole number: allowed 1 to 3600 (from environment variable BITBUCKET_SLACK__HTTP__IDLE_TIMEOUT_SECS)",
                "http.header_read_timeout_secs: 301 is out of range: allowed 1 to 300 (from environment variable BITBUCKET_SLACK__HTTP__HEADER_READ_TIMEOUT_SECS)",
            ]
        );
    }

    #[test]
    fn numeric_looking_values_keep_their_digits() {
        // Regression: config's try_parsing turned 4242424242.5151515151515 into an f64.
        let config = Config::load(
            None,
            &env(&[
                APP,
                ("BITBUCKET_SLACK__STORAGE__PATH", "0123.4567890123456789"),
            ]),
        )
        .expect("valid");
        assert_eq!(config.storage.path, PathBuf::from("0123.4567890123456789"));
    }
}
