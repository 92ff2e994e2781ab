//! Configuration: the embedded defaults, the `--config` file and the environment, layered
//! by the `config` crate, then validated into [`Config`].
//!
//! Owns the list of keys, their parsing and every message about a bad value. The raw
//! layer is a flat map of dotted keys to strings (`try_parsing` stays off, so a Slack
//! client id keeps all its digits); validation reads each key once, collects *every*
//! problem, and reports keys nobody read as unknown. The rest of the program only ever
//! sees a validated [`Config`], split into one part per component.
//!
//! Must never print a secret: secrets are wrapped in [`Secret`], whose `Debug` and
//! `Display` are redacted, and problems name the key, never the secret's value.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

/// The defaults, compiled in so the binary needs no file to run.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Environment variable prefix; `BITBUCKET_SLACK__SLACK__APP_TOKEN` sets `slack.app_token`.
pub const ENV_PREFIX: &str = "BITBUCKET_SLACK";

/// A value that must never be printed. `Debug` and `Display` show `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The secret itself, for the one place that sends it where it belongs.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

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
}

/// The permission-upgrade campaign's dates (`[upgrade]`).
#[derive(Debug, Clone)]
pub struct UpgradeConfig {
    pub schedule: crate::upgrade::campaign::CampaignSchedule,
    /// Slack user ids told about upgrades besides the workspace's admins and installer.
    pub admins: Vec<String>,
}

/// The local admin channel.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// The Unix socket the CLI talks to; default `{storage.path}/admin.sock`.
    pub socket: PathBuf,
}

#[derive(Debug, Clone)]
pub struct SlackConfig {
    pub app_token: Secret<String>,
    pub bot_token: Option<Secret<String>>,
    /// Base of every Web API call, such as `https://slack.com/api/`.
    pub api_url: Url,
    pub socket_connections: usize,
    pub reply_budget: Duration,
    pub ping_interval: Duration,
    pub socket_idle_timeout: Duration,
    /// The OAuth v2 app credentials; `None` when only `bot_token` installs are used.
    pub oauth: Option<SlackOAuthConfig>,
    pub oauth_authorize_url: Url,
    /// How often a configured `bot_token`'s scopes are re-read with auth.test.
    pub scope_recheck_interval: Duration,
    /// Slack team or enterprise ids that may install the app through `/slack/install`;
    /// empty means any.
    pub allowed_teams: Vec<String>,
    /// The bound on every Slack Web API call (response_url and apps.connections.open too).
    pub request_timeout: Duration,
}

/// The Slack app's OAuth credentials (Basic Information page).
#[derive(Debug, Clone)]
pub struct SlackOAuthConfig {
    pub client_id: String,
    pub client_secret: Secret<String>,
}

#[derive(Debug, Clone)]
pub struct BitbucketConfig {
    pub api_url: Url,
    /// Base of Bitbucket's OAuth endpoints (`authorize`, `access_token`).
    pub oauth_url: Url,
    /// The OAuth consumer people log in through (`/bitbucket login`); `None` disables it.
    pub user_oauth: Option<OAuthConsumerConfig>,
    /// The poller's credential; `None` runs the daemon without a poller.
    pub credential: Option<BitbucketCredential>,
    /// The shortest interval at which any repository is polled.
    pub poll_interval: Duration,
    /// Requests an hour the credential may make (learned from `X-RateLimit-Limit` when sent).
    pub rate_limit_per_hour: u32,
    /// The share of `rate_limit_per_hour` the poller spends, in percent.
    pub budget_percent: u32,
    /// The bound on every Bitbucket request, connect to last byte.
    pub request_timeout: Duration,
    /// Who decides whether a channel may follow a private repository.
    pub private_repositories: PrivateRepositories,
    /// The workspaces that may be subscribed and polled (lower case); empty means any the
    /// credential can read.
    pub workspaces: Vec<String>,
}

/// `bitbucket.private_repositories`: who may bring a private repository into a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivateRepositories {
    /// The subscriber's own linked Bitbucket account must be able to read it (default).
    Linked,
    /// Private repositories can never be subscribed.
    Deny,
    /// The daemon's credential decides: anything it can read (a one-team install).
    Credential,
}

impl PrivateRepositories {
    pub fn as_str(self) -> &'static str {
        match self {
            PrivateRepositories::Linked => "linked",
            PrivateRepositories::Deny => "deny",
            PrivateRepositories::Credential => "credential",
        }
    }
}

/// How the poller authenticates to Bitbucket Cloud.
#[derive(Debug, Clone)]
pub enum BitbucketCredential {
    /// A repository, project or workspace access token, sent as a Bearer token.
    AccessToken(Secret<String>),
    /// An Atlassian API token of a (bot) user, sent with Basic auth and the account email.
    ApiToken {
        email: String,
        token: Secret<String>,
    },
    /// An OAuth consumer (`bitbucket.oauth.*`) using the client-credentials grant.
    OAuthConsumer(OAuthConsumerConfig),
}

/// A Bitbucket OAuth consumer's key and secret.
#[derive(Debug, Clone)]
pub struct OAuthConsumerConfig {
    pub key: String,
    pub secret: Secret<String>,
}

#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub path: PathBuf,
    pub dedup_retention: Duration,
    /// The token encryption key; `None` means `{path}/secret.key`, generated on first start.
    pub encryption_key_file: Option<PathBuf>,
    /// How long an uninstalled workspace's data is kept so a reinstall restores it.
    pub uninstalled_retention: Duration,
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
        let raw = RawConfig::load(file, env)?;
        raw.validate()
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

/// One raw value: its text and where it came from.
#[derive(Debug, Clone)]
struct RawValue {
    text: String,
    origin: String,
}

/// The merged sources as dotted keys, before any validation.
#[derive(Debug, Default)]
struct RawConfig {
    values: BTreeMap<String, RawValue>,
}

impl RawConfig {
    fn load(file: Option<&Path>, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
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

    fn validate(self) -> Result<Config, ConfigError> {
        let mut reader = Reader {
            values: self.values,
            problems: Vec::new(),
        };
        let slack = SlackConfig {
            app_token: reader.required_secret("slack.app_token", Some("xapp-")),
            bot_token: reader.optional_secret("slack.bot_token", Some("xoxb-")),
            api_url: reader.url("slack.api_url"),
            socket_connections: reader.integer("slack.socket_connections", 1, 10) as usize,
            reply_budget: Duration::from_millis(reader.integer("slack.reply_budget_ms", 100, 2500)),
            ping_interval: Duration::from_secs(reader.integer("slack.ping_interval_secs", 1, 300)),
            socket_idle_timeout: Duration::from_secs(reader.integer(
                "slack.socket_idle_timeout_secs",
                2,
                600,
            )),
            oauth: reader.slack_oauth(),
            oauth_authorize_url: reader.url("slack.oauth_authorize_url"),
            allowed_teams: reader.team_ids("slack.allowed_teams"),
            request_timeout: Duration::from_secs(reader.integer(
                "slack.request_timeout_secs",
                1,
                300,
            )),
            scope_recheck_interval: Duration::from_secs(reader.integer(
                "slack.scope_recheck_interval_secs",
                60,
                7 * 24 * 3600,
            )),
        };
        let bitbucket = BitbucketConfig {
            api_url: reader.url("bitbucket.api_url"),
            oauth_url: reader.url("bitbucket.oauth_url"),
            user_oauth: reader.oauth_consumer("bitbucket.user_oauth"),
            credential: reader.bitbucket_credential(),
            poll_interval: Duration::from_secs(reader.integer(
                "bitbucket.poll_interval_secs",
                1,
                3600,
            )),
            rate_limit_per_hour: reader.integer("bitbucket.rate_limit_per_hour", 60, 100_000)
                as u32,
            budget_percent: reader.integer("bitbucket.budget_percent", 1, 100) as u32,
            request_timeout: Duration::from_secs(reader.integer(
                "bitbucket.request_timeout_secs",
                1,
                300,
            )),
            private_repositories: reader.private_repositories("bitbucket.private_repositories"),
            workspaces: reader.workspace_ids("bitbucket.workspaces"),
        };
        let storage = StorageConfig {
            path: reader.path("storage.path"),
            dedup_retention: Duration::from_secs(reader.integer(
                "storage.dedup_retention_secs",
                3600,
                7 * 24 * 3600,
            )),
            encryption_key_file: reader.optional_path("storage.encryption_key_file"),
            uninstalled_retention: Duration::from_secs(
                reader.integer("storage.uninstalled_retention_days", 1, 3650) * 24 * 3600,
            ),
        };
        let http = HttpConfig {
            listen: reader.socket_addr("http.listen"),
            public_url: reader.url("http.public_url"),
            max_connections: reader.integer("http.max_connections", 1, 10_000) as usize,
            idle_timeout: Duration::from_secs(reader.integer("http.idle_timeout_secs", 1, 3600)),
            header_read_timeout: Duration::from_secs(reader.integer(
                "http.header_read_timeout_secs",
                1,
                300,
            )),
        };
        let log = LogConfig {
            level: reader.log_filter("log.level"),
            format: reader.log_format("log.format"),
        };
        let admin = AdminConfig {
            socket: reader
                .optional_path("admin.socket")
                .unwrap_or_else(|| storage.path.join("admin.sock")),
        };
        let upgrade = UpgradeConfig {
            schedule: crate::upgrade::campaign::CampaignSchedule {
                announce_at: reader.optional_timestamp("upgrade.announce_at"),
                available_at: reader.optional_timestamp("upgrade.available_at"),
                deadline: reader.optional_timestamp("upgrade.deadline"),
                reminder_interval: jiff::SignedDuration::from_secs(reader.integer(
                    "upgrade.reminder_interval_secs",
                    60,
                    30 * 24 * 3600,
                ) as i64),
            },
            admins: reader.user_ids("upgrade.admins"),
        };
        let shutdown = ShutdownConfig {
            drain_timeout: Duration::from_secs(reader.integer(
                "shutdown.drain_timeout_secs",
                1,
                300,
            )),
        };
        let dates = &upgrade.schedule;
        match (dates.announce_at, dates.available_at) {
            (Some(_), None) => reader.problem(
                "upgrade.announce_at",
                "needs upgrade.available_at: the announcement says when the update becomes available",
            ),
            (Some(announce), Some(available)) if announce > available => reader.problem(
                "upgrade.announce_at",
                "must not be later than upgrade.available_at",
            ),
            _ => {}
        }
        if let (Some(available), Some(deadline)) = (dates.available_at, dates.deadline) {
            if deadline <= available {
                reader.problem(
                    "upgrade.deadline",
                    "must be later than upgrade.available_at, or admins could never update in time",
                );
            }
        }
        if slack.ping_interval >= slack.socket_idle_timeout {
            reader.problem(
                "slack.ping_interval_secs",
                "must be shorter than slack.socket_idle_timeout_secs, or every socket looks silent",
            );
        }
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
        })
    }
}

fn flatten(
    prefix: &str,
    table: config::Map<String, config::Value>,
    out: &mut BTreeMap<String, RawValue>,
    problems: &mut Vec<ConfigProblem>,
) {
    for (name, value) in table {
        let key = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}.{name}")
        };
        let origin = value.origin().unwrap_or("the defaults").to_string();
        match value.kind {
            config::ValueKind::Table(inner) => flatten(&key, inner, out, problems),
            config::ValueKind::Array(_) => problems.push(ConfigProblem {
                key,
                message: format!("expected a single value, found a list (from {origin})"),
            }),
            config::ValueKind::Nil => {}
            other => {
                let text = config::Value::new(None, other)
                    .into_string()
                    .unwrap_or_default();
                out.insert(key, RawValue { text, origin });
            }
        }
    }
}

/// Reads keys out of the raw map one by one, collecting every problem.
struct Reader {
    values: BTreeMap<String, RawValue>,
    problems: Vec<ConfigProblem>,
}

impl Reader {
    fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(ConfigProblem {
            key: key.to_string(),
            message: message.into(),
        });
    }

    fn take(&mut self, key: &str) -> Option<RawValue> {
        self.values.remove(key)
    }

    /// A key the embedded defaults always set; its absence is a packaging bug.
    fn take_defaulted(&mut self, key: &str) -> Option<RawValue> {
        let value = self.take(key);
        if value.is_none() {
            self.problem(
                key,
                "missing (and no default: config/default.toml is incomplete)",
            );
        }
        value
    }

    fn integer(&mut self, key: &str, min: u64, max: u64) -> u64 {
        let Some(raw) = self.take_defaulted(key) else {
            return min;
        };
        match raw.text.trim().parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => n,
            Ok(n) => {
                self.problem(
                    key,
                    format!(
                        "{n} is out of range: allowed {min} to {max} (from {})",
                        raw.origin
                    ),
                );
                min
            }
            Err(_) => {
                self.problem(
                    key,
                    format!(
                        "`{}` is not a whole number: allowed {min} to {max} (from {})",
                        raw.text, raw.origin
                    ),
                );
                min
            }
        }
    }

    fn url(&mut self, key: &str) -> Url {
        let fallback = || Url::parse("http://invalid.invalid/").expect("a constant URL parses");
        let Some(raw) = self.take_defaulted(key) else {
            return fallback();
        };
        match Url::parse(raw.text.trim()) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => url,
            Ok(_) => {
                self.problem(
                    key,
                    format!(
                        "`{}` must be an http:// or https:// URL (from {})",
                        raw.text, raw.origin
                    ),
                );
                fallback()
            }
            Err(error) => {
                self.problem(
                    key,
                    format!("`{}` is not a URL: {error} (from {})", raw.text, raw.origin),
                );
                fallback()
            }
        }
    }

    fn socket_addr(&mut self, key: &str) -> SocketAddr {
        let fallback = SocketAddr::from(([127, 0, 0, 1], 0));
        let Some(raw) = self.take_defaulted(key) else {
            return fallback;
        };
        raw.text.trim().parse().unwrap_or_else(|_| {
            self.problem(
                key,
                format!(
                    "`{}` is not an address and port such as 127.0.0.1:8080 or [::1]:8080 (from {})",
                    raw.text, raw.origin
                ),
            );
            fallback
        })
    }

    fn path(&mut self, key: &str) -> PathBuf {
        let Some(raw) = self.take_defaulted(key) else {
            return PathBuf::new();
        };
        let text = raw.text.trim();
        if text.is_empty() {
            self.problem(key, format!("must not be empty (from {})", raw.origin));
        }
        PathBuf::from(text)
    }

    /// An RFC 3339 time such as `2026-12-01T09:00:00Z`, or unset.
    fn optional_timestamp(&mut self, key: &str) -> Option<jiff::Timestamp> {
        let raw = self.take(key)?;
        match raw.text.trim().parse::<jiff::Timestamp>() {
            Ok(at) => Some(at),
            Err(error) => {
                self.problem(
                    key,
                    format!(
                        "`{}` is not an RFC 3339 time such as 2026-12-01T09:00:00Z: {error} (from {})",
                        raw.text, raw.origin
                    ),
                );
                None
            }
        }
    }

    /// A comma-separated list of Slack user ids (`U123,W456`), possibly empty.
    fn user_ids(&mut self, key: &str) -> Vec<String> {
        let Some(raw) = self.take(key) else {
            return Vec::new();
        };
        let ids: Vec<String> = raw
            .text
            .split(',')
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .map(str::to_string)
            .collect();
        if let Some(bad) = ids.iter().find(|id| {
            !id.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        }) {
            self.problem(
                key,
                format!(
                    "`{bad}` is not a Slack user id such as U0123ABCD (from {})",
                    raw.origin
                ),
            );
            return Vec::new();
        }
        ids
    }

    fn optional_path(&mut self, key: &str) -> Option<PathBuf> {
        let raw = self.take(key)?;
        let text = raw.text.trim();
        if text.is_empty() {
            self.problem(
                key,
                format!("must not be empty when set (from {})", raw.origin),
            );
            return None;
        }
        Some(PathBuf::from(text))
    }

    /// `{prefix}.key` and `{prefix}.secret` (or `secret_file`) together, or neither.
    fn oauth_consumer(&mut self, prefix: &str) -> Option<OAuthConsumerConfig> {
        let key_name = format!("{prefix}.key");
        let secret_name = format!("{prefix}.secret");
        let key = self.take(&key_name).map(|raw| raw.text.trim().to_string());
        let secret = self.optional_secret(&secret_name, None);
        match (key, secret) {
            (Some(key), Some(secret)) if !key.is_empty() => {
                Some(OAuthConsumerConfig { key, secret })
            }
            (None, None) => None,
            (Some(_), None) => {
                self.problem(
                    &secret_name,
                    format!("is required when {key_name} is set (or set {secret_name}_file)"),
                );
                None
            }
            (_, Some(_)) => {
                self.problem(&key_name, format!("is required when {secret_name} is set"));
                None
            }
        }
    }

    /// `bitbucket.token` (with `bitbucket.email` for an API token) or the
    /// `bitbucket.oauth.*` consumer; none at all is fine, both is a mistake.
    fn bitbucket_credential(&mut self) -> Option<BitbucketCredential> {
        let token = self.optional_secret("bitbucket.token", None);
        let email = self
            .take("bitbucket.email")
            .map(|raw| raw.text.trim().to_string());
        let consumer = self.oauth_consumer("bitbucket.oauth");
        match (token, email, consumer) {
            (Some(_), _, Some(_)) => {
                self.problem(
                    "bitbucket.token",
                    "set either bitbucket.token or bitbucket.oauth.key and bitbucket.oauth.secret, not both",
                );
                None
            }
            (Some(token), None, None) => Some(BitbucketCredential::AccessToken(token)),
            (Some(token), Some(email), None) if !email.is_empty() => {
                Some(BitbucketCredential::ApiToken { email, token })
            }
            (_, Some(_), _) => {
                self.problem(
                    "bitbucket.email",
                    "is only used with bitbucket.token (an API token); set the token too",
                );
                None
            }
            (None, None, consumer) => consumer.map(BitbucketCredential::OAuthConsumer),
        }
    }

    /// `slack.client_id` and `slack.client_secret` come together or not at all.
    fn slack_oauth(&mut self) -> Option<SlackOAuthConfig> {
        let client_id = self
            .take("slack.client_id")
            .map(|raw| raw.text.trim().to_string());
        let client_secret = self.optional_secret("slack.client_secret", None);
        match (client_id, client_secret) {
            (Some(client_id), Some(client_secret)) if !client_id.is_empty() => {
                Some(SlackOAuthConfig {
                    client_id,
                    client_secret,
                })
            }
            (None, None) => None,
            (Some(_), None) => {
                self.problem(
                    "slack.client_secret",
                    "is required when slack.client_id is set (or set slack.client_secret_file)",
                );
                None
            }
            (_, Some(_)) => {
                self.problem(
                    "slack.client_id",
                    "is required when slack.client_secret is set",
                );
                None
            }
        }
    }

    fn log_filter(&mut self, key: &str) -> String {
        let Some(raw) = self.take_defaulted(key) else {
            return "info".into();
        };
        match tracing_subscriber::EnvFilter::builder().parse(raw.text.trim()) {
            Ok(_) => raw.text.trim().to_string(),
            Err(error) => {
                self.problem(
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

    fn private_repositories(&mut self, key: &str) -> PrivateRepositories {
        let Some(raw) = self.take_defaulted(key) else {
            return PrivateRepositories::Linked;
        };
        match raw.text.trim() {
            "linked" => PrivateRepositories::Linked,
            "deny" => PrivateRepositories::Deny,
            "credential" => PrivateRepositories::Credential,
            other => {
                self.problem(
                    key,
                    format!(
                        "`{}` must be \"linked\", \"deny\" or \"credential\" (from {})",
                        other.escape_debug(),
                        raw.origin
                    ),
                );
                PrivateRepositories::Linked
            }
        }
    }

    /// A comma-separated list, trimmed, without empty items.
    fn list(&mut self, key: &str) -> Option<(Vec<String>, String)> {
        let raw = self.take(key)?;
        let items = raw
            .text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_string)
            .collect();
        Some((items, raw.origin))
    }

    /// Comma-separated Bitbucket workspace ids (`acme,globex`), lower-cased; possibly empty.
    fn workspace_ids(&mut self, key: &str) -> Vec<String> {
        let Some((items, origin)) = self.list(key) else {
            return Vec::new();
        };
        let mut ids = Vec::new();
        for item in items {
            match item.parse::<crate::bitbucket::name::WorkspaceId>() {
                Ok(id) => ids.push(id.as_str().to_string()),
                Err(error) => {
                    self.problem(
                        key,
                        format!(
                            "`{}` is not a Bitbucket workspace id such as `acme`: {} (from {origin})",
                            item.escape_debug(),
                            error.reason
                        ),
                    );
                    return Vec::new();
                }
            }
        }
        ids
    }

    /// Comma-separated Slack team or Enterprise Grid ids (`T0123ABCD,E0456EFGH`).
    fn team_ids(&mut self, key: &str) -> Vec<String> {
        let Some((items, origin)) = self.list(key) else {
            return Vec::new();
        };
        if let Some(bad) = items.iter().find(|id| {
            !(id.starts_with('T') || id.starts_with('E'))
                || id.len() < 2
                || !id
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        }) {
            self.problem(
                key,
                format!(
                    "`{}` is not a Slack team id (T…) or enterprise id (E…) (from {origin})",
                    bad.escape_debug()
                ),
            );
            return Vec::new();
        }
        items
    }

    fn log_format(&mut self, key: &str) -> LogFormat {
        let Some(raw) = self.take_defaulted(key) else {
            return LogFormat::Text;
        };
        match raw.text.trim() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                self.problem(
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

    /// A secret given either inline (`key`) or as a file path (`key_file`).
    fn optional_secret(
        &mut self,
        key: &str,
        expected_prefix: Option<&str>,
    ) -> Option<Secret<String>> {
        let file_key = format!("{key}_file");
        let inline = self.take(key);
        let file = self.take(&file_key);
        let value = match (inline, file) {
            (Some(_), Some(_)) => {
                self.problem(key, format!("set either {key} or {file_key}, not both"));
                return None;
            }
            (Some(raw), None) => raw.text,
            (None, Some(raw)) => match read_secret_file(Path::new(raw.text.trim())) {
                Ok(secret) => secret,
                Err(message) => {
                    self.problem(&file_key, message);
                    return None;
                }
            },
            (None, None) => return None,
        };
        if value.trim().is_empty() {
            self.problem(key, "is empty");
            return None;
        }
        if let Some(prefix) = expected_prefix {
            if !value.starts_with(prefix) {
                self.problem(
                    key,
                    format!("does not look right: it should start with `{prefix}`"),
                );
                return None;
            }
        }
        Some(Secret::new(value))
    }

    fn required_secret(&mut self, key: &str, expected_prefix: Option<&str>) -> Secret<String> {
        let before = self.problems.len();
        match self.optional_secret(key, expected_prefix) {
            Some(secret) => secret,
            None => {
                if self.problems.len() == before {
                    self.problem(
                        key,
                        format!("is required (or set {key}_file to a file holding it)"),
                    );
                }
                Secret::new(String::new())
            }
        }
    }

    fn finish(mut self) -> Result<(), ConfigError> {
        let unknown: Vec<(String, RawValue)> =
            std::mem::take(&mut self.values).into_iter().collect();
        for (key, raw) in unknown {
            self.problem(&key, format!("unknown key (from {})", raw.origin));
        }
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(self.problems))
        }
    }
}

fn read_secret_file(path: &Path) -> Result<String, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let trimmed = text.trim_end_matches(['\n', '\r']).to_string();
            if trimmed.is_empty() {
                Err(format!("the file {} is empty", path.display()))
            } else {
                Ok(trimmed)
            }
        }
        Err(error) => Err(format!("cannot read {}: {error}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn problems(result: Result<Config, ConfigError>) -> Vec<String> {
        match result {
            Ok(_) => panic!("expected a configuration error"),
            Err(error) => error.lines(),
        }
    }

    const APP: (&str, &str) = ("BITBUCKET_SLACK__SLACK__APP_TOKEN", "xapp-1-A1-secret");

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
    fn missing_app_token_names_the_key() {
        assert_eq!(
            problems(Config::load(None, &env(&[]))),
            vec!["slack.app_token: is required (or set slack.app_token_file to a file holding it)"]
        );
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
    fn secrets_come_from_files_and_never_print() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("app-token");
        std::fs::write(&secret, "xapp-1-from-a-file\n").expect("write");
        let config = Config::load(
            None,
            &env(&[(
                "BITBUCKET_SLACK__SLACK__APP_TOKEN_FILE",
                secret.to_str().expect("utf-8 path"),
            )]),
        )
        .expect("valid");
        assert_eq!(config.slack.app_token.expose(), "xapp-1-from-a-file");
        assert!(!format!("{config:?}").contains("xapp-1-from-a-file"));
    }

    #[test]
    fn secret_file_problems_name_the_file_key() {
        let lines = problems(Config::load(
            None,
            &env(&[(
                "BITBUCKET_SLACK__SLACK__APP_TOKEN_FILE",
                "/nonexistent/token",
            )]),
        ));
        assert_eq!(lines.len(), 1);
        assert!(lines[0].starts_with("slack.app_token_file: cannot read /nonexistent/token"));
    }

    #[test]
    fn both_inline_and_file_is_an_error() {
        let lines = problems(Config::load(
            None,
            &env(&[APP, ("BITBUCKET_SLACK__SLACK__APP_TOKEN_FILE", "/x")]),
        ));
        assert_eq!(
            lines,
            vec!["slack.app_token: set either slack.app_token or slack.app_token_file, not both"]
        );
    }

    #[test]
    fn a_wrong_token_kind_is_caught_without_echoing_it() {
        let lines = problems(Config::load(
            None,
            &env(&[("BITBUCKET_SLACK__SLACK__APP_TOKEN", "xoxb-oops-a-bot-token")]),
        ));
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains("should start with `xapp-`"));
        assert!(!lines[0].contains("oops"));
    }

    #[test]
    fn a_missing_config_file_is_a_source_error() {
        let error = Config::load(Some(Path::new("/nonexistent/c.toml")), &env(&[APP]))
            .expect_err("missing file");
        assert!(error.to_string().contains("/nonexistent/c.toml"));
    }

    #[test]
    fn oauth_credentials_come_in_pairs_and_keep_their_digits() {
        let config = Config::load(
            None,
            &env(&[
                APP,
                (
                    "BITBUCKET_SLACK__SLACK__CLIENT_ID",
                    "4242424242.5151515151515",
                ),
                ("BITBUCKET_SLACK__SLACK__CLIENT_SECRET", "shh"),
            ]),
        )
        .expect("valid");
        let oauth = config.slack.oauth.expect("configured");
        assert_eq!(oauth.client_id, "4242424242.5151515151515");
        assert_eq!(oauth.client_secret.expose(), "shh");
        let lines = problems(Config::load(
            None,
            &env(&[APP, ("BITBUCKET_SLACK__SLACK__CLIENT_ID", "1.2")]),
        ));
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with("slack.client_secret: is required"),
            "{}",
            lines[0]
        );
    }

    #[test]
    fn bitbucket_runs_without_a_credential_by_default() {
        let config = Config::load(None, &env(&[APP])).expect("valid");
        let bitbucket = &config.bitbucket;
        assert!(bitbucket.credential.is_none());
        assert_eq!(bitbucket.poll_interval, Duration::from_secs(60));
        assert_eq!(bitbucket.rate_limit_per_hour, 1000);
        assert_eq!(bitbucket.budget_percent, 80);
    }

    #[test]
    fn bitbucket_credentials_of_each_kind() {
        let access = Config::load(
            None,
            &env(&[APP, ("BITBUCKET_SLACK__BITBUCKET__TOKEN", "ATCTT-access")]),
        )
        .expect("valid");
        assert!(matches!(
            access.bitbucket.credential,
            Some(BitbucketCredential::AccessToken(ref t)) if t.expose() == "ATCTT-access"
        ));
        let api = Config::load(
            None,
            &env(&[
                APP,
                ("BITBUCKET_SLACK__BITBUCKET__TOKEN", "ATATT-api"),
                ("BITBUCKET_SLACK__BITBUCKET__EMAIL", "bot@example.com"),
            ]),
        )
        .expect("valid");
        assert!(matches!(
            api.bitbucket.credential,
            Some(BitbucketCredential::ApiToken { ref email, .. }) if email == "bot@example.com"
        ));
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "[bitbucket]\npoll_interval_secs = 1\n[bitbucket.oauth]\nkey = \"consumer-key\"\nsecret = \"consumer-secret\"\n",
        )
        .expect("write");
        let oauth = Config::load(Some(&file), &env(&[APP])).expect("valid");
        assert!(matches!(
            oauth.bitbucket.credential,
            Some(BitbucketCredential::OAuthConsumer(ref consumer)) if consumer.key == "consumer-key"
        ));
        assert_eq!(oauth.bitbucket.poll_interval, Duration::from_secs(1));
        assert!(!format!("{oauth:?}").contains("consumer-secret"));
    }

    #[test]
    fn bitbucket_credential_mistakes_name_the_keys() {
        let both = problems(Config::load(
            None,
            &env(&[
                APP,
                ("BITBUCKET_SLACK__BITBUCKET__TOKEN", "t"),
                ("BITBUCKET_SLACK__BITBUCKET__OAUTH__KEY", "k"),
                ("BITBUCKET_SLACK__BITBUCKET__OAUTH__SECRET", "s"),
            ]),
        ));
        assert_eq!(both.len(), 1, "{both:?}");
        assert!(
            both[0].starts_with("bitbucket.token: set either"),
            "{both:?}"
        );
        let email_only = problems(Config::load(
            None,
            &env(&[APP, ("BITBUCKET_SLACK__BITBUCKET__EMAIL", "a@b.c")]),
        ));
        assert_eq!(email_only.len(), 1, "{email_only:?}");
        assert!(email_only[0].starts_with("bitbucket.email:"));
        let zero = problems(Config::load(
            None,
            &env(&[APP, ("BITBUCKET_SLACK__BITBUCKET__POLL_INTERVAL_SECS", "0")]),
        ));
        assert!(
            zero[0].starts_with("bitbucket.poll_interval_secs: 0 is out of range"),
            "{zero:?}"
        );
    }

    #[test]
    fn upgrade_dates_and_admins() {
        let config = Config::load(
            None,
            &env(&[
                APP,
                ("BITBUCKET_SLACK__UPGRADE__DEADLINE", "2026-12-11T00:00:00Z"),
                ("BITBUCKET_SLACK__UPGRADE__ADMINS", "U1, U2"),
            ]),
        )
        .expect("valid");
        assert_eq!(config.upgrade.admins, vec!["U1", "U2"]);
        assert_eq!(
            config.upgrade.schedule.deadline.map(|d| d.as_second()),
            Some(1_796_947_200)
        );
        assert!(config.upgrade.schedule.available_at.is_none());
        let lines = problems(Config::load(
            None,
            &env(&[
                APP,
                ("BITBUCKET_SLACK__UPGRADE__AVAILABLE_AT", "next tuesday"),
                ("BITBUCKET_SLACK__UPGRADE__ADMINS", "u1"),
            ]),
        ));
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].starts_with("upgrade.available_at: `next tuesday` is not an RFC 3339 time")
        );
        assert!(lines[1].starts_with("upgrade.admins: `u1` is not a Slack user id"));
        let lines = problems(Config::load(
            None,
            &env(&[
                APP,
                (
                    "BITBUCKET_SLACK__UPGRADE__ANNOUNCE_AT",
                    "2026-12-20T00:00:00Z",
                ),
                (
                    "BITBUCKET_SLACK__UPGRADE__AVAILABLE_AT",
                    "2026-12-10T00:00:00Z",
                ),
                ("BITBUCKET_SLACK__UPGRADE__DEADLINE", "2026-12-01T00:00:00Z"),
            ]),
        ));
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0]
                .starts_with("upgrade.announce_at: must not be later than upgrade.available_at")
        );
        assert!(lines[1].starts_with("upgrade.deadline: must be later than upgrade.available_at"));
        let lines = problems(Config::load(
            None,
            &env(&[
                APP,
                (
                    "BITBUCKET_SLACK__UPGRADE__ANNOUNCE_AT",
                    "2026-12-20T00:00:00Z",
                ),
            ]),
        ));
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].starts_with("upgrade.announce_at: needs upgrade.available_at"));
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
