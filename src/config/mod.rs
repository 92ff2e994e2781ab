//! Configuration: the embedded defaults, the `--config` file and the environment, layered
//! by the `config` crate, then validated into [`Config`].
//!
//! Owns the public [`Config`] and its loading: the defaults compiled in from
//! `config/default.toml`, the file (checked for TOML syntax first), the `BITBUCKET_SLACK__*`
//! variables, and the order in which the sections are validated. The raw layer is a flat
//! map of dotted keys to strings (`try_parsing` stays off, so a Slack client id keeps all
//! its digits); validation reads each key once, collects *every* problem, and reports keys
//! nobody read as unknown. Each section's shape and messages live in its own file
//! (`slack.rs`, `bitbucket.rs`, `upgrade.rs`, and `daemon.rs` for storage, http, log,
//! admin and shutdown); `raw.rs` holds the raw map and the key reader. The rest of the
//! program only ever sees a validated [`Config`] (through the re-exports here, such as
//! `crate::config::SlackConfig`), split into one part per component.
//!
//! Must never print a secret: secrets are wrapped in [`Secret`], whose `Debug` and
//! `Display` are redacted, and problems name the key, never the secret's value.

mod bitbucket;
mod daemon;
mod raw;
mod reminders;
mod slack;
mod upgrade;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

pub use bitbucket::{
    BitbucketConfig, BitbucketCredential, OAuthConsumerConfig, PrivateRepositories,
};
pub use daemon::{AdminConfig, HttpConfig, LogConfig, LogFormat, ShutdownConfig, StorageConfig};
pub use reminders::RemindersConfig;
pub use slack::{SlackConfig, SlackOAuthConfig};
pub use upgrade::UpgradeConfig;

use raw::{RawConfig, Reader, flatten};

/// The defaults, compiled in so the binary needs no file to run.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Environment variable prefix; `BITBUCKET_SLACK__SLACK__APP_TOKEN` sets `slack.app_token`.
pub const ENV_PREFIX: &str = "BITBUCKET_SLACK";

pub use crate::secret::Secret;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub slack: SlackConfig,
    pub bitbucket: BitbucketConfig,
    pub storage: StorageConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
    pub shutdown: ShutdownConfig,
    pub admin: AdminConfig,
    pub upgrade: UpgradeConfig,
    pub reminders: RemindersConfig,
}

/// One thing wrong with the configuration, about one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl ConfigProblem {
    fn new(key: &str, message: impl Into<String>) -> Self {
        ConfigProblem {
            key: key.to_string(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A source could not be read or parsed at all (a missing file, broken TOML).
    #[error("cannot read configuration: {0}")]
    Source(String),
    /// The sources were read; these keys are wrong. One problem per line.
    #[error("{}", format_problems(.0))]
    Invalid(Vec<ConfigProblem>),
}

impl ConfigError {
    /// One line per problem, as `check` prints them.
    pub fn lines(&self) -> Vec<String> {
        match self {
            ConfigError::Source(message) => vec![format!("cannot read configuration: {message}")],
            ConfigError::Invalid(problems) => problems.iter().map(ToString::to_string).collect(),
        }
    }
}

fn format_problems(problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl Config {
    /// Loads the defaults, then `file` (if any), then the `BITBUCKET_SLACK__*` variables of
    /// `env`, and validates the result. `env` is passed in so tests need not touch the
    /// process environment.
    pub fn load(file: Option<&Path>, env: &HashMap<String, String>) -> Result<Config, ConfigError> {
        validate(read_sources(file, env)?)
    }
}

/// Parses the file once before the config library does, so that a syntax error is
/// reported by file, line and key only: the library's message quotes the offending line,
/// which may hold a secret.
fn check_toml_syntax(path: &Path) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        ConfigError::Source(format!(
            "cannot read config file {}: {error}",
            path.display()
        ))
    })?;
    let Err(error) = text.parse::<toml::Table>() else {
        return Ok(());
    };
    let offset = error
        .span()
        .map(|span| span.start)
        .unwrap_or(0)
        .min(text.len());
    let line_index = text[..offset].matches('\n').count();
    let key = key_at_line(&text, line_index);
    Err(ConfigError::Source(format!(
        "config file {} is not valid TOML: syntax error at line {}{} (the line is not shown, since it may hold a secret)",
        path.display(),
        line_index + 1,
        key.map(|key| format!(", key {key}")).unwrap_or_default()
    )))
}

/// The dotted key written on line `index` (0-based), from its `[table]` header and the
/// text before `=`, when both look like plain TOML keys. Never returns the value.
fn key_at_line(text: &str, index: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let line = lines.get(index)?;
    let (name, _) = line.split_once('=')?;
    let name = name.trim();
    let plain = |part: &str| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    if !plain(name) {
        return None;
    }
    let table = lines[..index]
        .iter()
        .rev()
        .map(|line| line.trim())
        .find(|line| line.starts_with('[') && line.ends_with(']'))
        .map(|header| {
            header
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string()
        })
        .filter(|table| plain(table));
    Some(match table {
        Some(table) => format!("{table}.{name}"),
        None => name.to_string(),
    })
}

/// Merges the defaults, `file` and the prefixed variables of `env` into the raw map.
fn read_sources(
    file: Option<&Path>,
    env: &HashMap<String, String>,
) -> Result<RawConfig, ConfigError> {
    let mut builder = config::Config::builder().add_source(config::File::from_str(
        DEFAULT_TOML,
        config::FileFormat::Toml,
    ));
    if let Some(path) = file {
        if !path.is_file() {
            return Err(ConfigError::Source(format!(
                "config file {} does not exist or is not a file",
                path.display()
            )));
        }
        check_toml_syntax(path)?;
        builder = builder.add_source(
            config::File::from(path)
                .format(config::FileFormat::Toml)
                .required(true),
        );
    }
    let prefixed: HashMap<String, String> = env
        .iter()
        .filter(|(name, _)| name.starts_with(&format!("{ENV_PREFIX}__")))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    builder = builder.add_source(
        config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .try_parsing(false)
            .ignore_empty(true)
            .source(Some(prefixed.into_iter().collect())),
    );
    let merged = builder
        .build()
        .map_err(|error| ConfigError::Source(error.to_string()))?;
    let table: config::Map<String, config::Value> = merged
        .try_deserialize()
        .map_err(|error| ConfigError::Source(error.to_string()))?;
    let mut raw = RawConfig::default();
    let mut problems = Vec::new();
    flatten("", table, &mut raw.values, &mut problems);
    // The environment source records no origin; name the variable instead.
    for (key, value) in raw.values.iter_mut() {
        let variable = format!("{ENV_PREFIX}__{}", key.replace('.', "__").to_uppercase());
        if env.contains_key(&variable) {
            value.origin = format!("environment variable {variable}");
        }
    }
    if problems.is_empty() {
        Ok(raw)
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

/// Reads every key once, section by section in a fixed order (so problems are listed in a
/// stable order), then runs the checks that span keys, then reports keys nobody read.
fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let mut reader = Reader::new(raw);
    let slack = slack::read(&mut reader);
    let bitbucket = bitbucket::read(&mut reader);
    let storage = daemon::read_storage(&mut reader);
    let http = daemon::read_http(&mut reader);
    let log = daemon::read_log(&mut reader);
    let admin = daemon::read_admin(&mut reader, &storage);
    let upgrade = upgrade::read(&mut reader);
    let shutdown = daemon::read_shutdown(&mut reader);
    let reminders = reminders::read(&mut reader);
    reader.report(upgrade::check(&upgrade));
    reader.report(slack::check(&slack));
    reader.finish()?;
    Ok(Config {
        slack,
        bitbucket,
        storage,
        http,
        log,
        shutdown,
        admin,
        upgrade,
        reminders,
    })
}

/// What the sections' tests share: an environment, the problems of a failed load, and an
/// app token.
#[cfg(test)]
mod test_support {
    use std::collections::HashMap;

    use super::{Config, ConfigError};

    pub(super) fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    pub(super) fn problems(result: Result<Config, ConfigError>) -> Vec<String> {
        match result {
            Ok(_) => panic!("expected a configuration error"),
            Err(error) => error.lines(),
        }
    }

    pub(super) const APP: (&str, &str) = ("BITBUCKET_SLACK__SLACK__APP_TOKEN", "xapp-1-A1-secret");
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::test_support::{APP, env, problems};
    use super::*;

    #[test]
    fn defaults_and_env_configure_everything() {
        let config = Config::load(None, &env(&[APP])).expect("valid");
        assert_eq!(config.slack.app_token.expose(), "xapp-1-A1-secret");
        assert_eq!(config.slack.socket_connections, 2);
        assert_eq!(config.slack.api_url.as_str(), "https://slack.com/api/");
        assert_eq!(
            config.bitbucket.api_url.as_str(),
            "https://api.bitbucket.org/2.0/"
        );
        assert_eq!(config.slack.reply_budget, Duration::from_millis(1500));
        assert_eq!(config.shutdown.drain_timeout, Duration::from_secs(10));
        assert!(config.slack.bot_token.is_none());
    }

    #[test]
    fn every_problem_is_reported_on_its_own_line() {
        let lines = problems(Config::load(
            None,
            &env(&[
                APP,
                ("BITBUCKET_SLACK__SLACK__SOCKET_CONNECTIONS", "11"),
                ("BITBUCKET_SLACK__HTTP__LISTEN", "nowhere"),
                ("BITBUCKET_SLACK__SLACK__API_URL", "ftp://slack.com"),
                ("BITBUCKET_SLACK__SLACK__COLOUR", "blue"),
                ("BITBUCKET_SLACK__LOG__FORMAT", "xml"),
            ]),
        ));
        let keys: Vec<&str> = lines
            .iter()
            .map(|l| l.split(':').next().unwrap_or(""))
            .collect();
        assert_eq!(
            keys,
            vec![
                "slack.api_url",
                "slack.socket_connections",
                "http.listen",
                "log.format",
                "slack.colour"
            ],
            "{lines:#?}"
        );
        assert!(lines[1].contains("allowed 1 to 10"), "{}", lines[1]);
        assert!(
            lines[1].ends_with(
                "(from environment variable BITBUCKET_SLACK__SLACK__SOCKET_CONNECTIONS)"
            ),
            "{}",
            lines[1]
        );
        assert!(lines[4].contains("unknown key"), "{}", lines[4]);
    }

    #[test]
    fn file_then_env_override_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "[slack]\napp_token = \"xapp-from-file\"\nsocket_connections = 3\n[http]\nlisten = \"127.0.0.1:9000\"\n",
        )
        .expect("write");
        let config = Config::load(
            Some(&file),
            &env(&[("BITBUCKET_SLACK__SLACK__SOCKET_CONNECTIONS", "4")]),
        )
        .expect("valid");
        assert_eq!(config.slack.app_token.expose(), "xapp-from-file");
        assert_eq!(config.slack.socket_connections, 4);
        assert_eq!(config.http.listen, "127.0.0.1:9000".parse().expect("addr"));
    }

    #[test]
    fn a_missing_config_file_is_a_source_error() {
        let error = Config::load(Some(Path::new("/nonexistent/c.toml")), &env(&[APP]))
            .expect_err("missing file");
        assert!(error.to_string().contains("/nonexistent/c.toml"));
    }

    #[test]
    fn a_toml_syntax_error_names_file_and_line_but_never_echoes_the_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[slack]\nsocket_connections = 2\nbot_token = \"xoxb-very-secret-value\n",
        )
        .expect("write");
        let error = Config::load(Some(&path), &env(&[APP])).expect_err("broken TOML");
        let text = error.lines().join("\n");
        assert!(!text.contains("very-secret"), "{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("line 3"), "{text}");
        assert!(text.contains("slack.bot_token"), "{text}");
    }

    #[test]
    fn unknown_keys_in_a_file_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[slak]\napp_token = \"x\"\n").expect("write");
        let lines = problems(Config::load(Some(&file), &env(&[APP])));
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with("slak.app_token: unknown key (from "),
            "{}",
            lines[0]
        );
    }
}
