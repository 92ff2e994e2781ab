//! The raw layer: the merged sources as a flat map of dotted keys to text (each with
//! where it came from), and the [`Reader`] that takes each key out once, turning text
//! into a typed value or a problem naming the key. Also the `_file` twin of every secret
//! (`slack.app_token_file` holds the path of a file holding `slack.app_token`), and the
//! keys nobody took, reported as unknown.
//!
//! Owns the generic value kinds (whole numbers in a range, URLs, addresses, paths, times,
//! lists, secrets) and their messages. Must never know which section a key belongs to,
//! and never print a secret's value (problems name the key or the file).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use url::Url;

use super::{ConfigError, ConfigProblem, Secret};

/// One raw value: its text and where it came from.
#[derive(Debug, Clone)]
pub(super) struct RawValue {
    pub(super) text: String,
    pub(super) origin: String,
}

/// The merged sources as dotted keys, before any validation.
#[derive(Debug, Default)]
pub(super) struct RawConfig {
    pub(super) values: BTreeMap<String, RawValue>,
}

/// Adds the merged table to `out` as dotted keys; a list is a problem (no key takes one).
pub(super) fn flatten(
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
pub(super) struct Reader {
    values: BTreeMap<String, RawValue>,
    problems: Vec<ConfigProblem>,
}

impl Reader {
    /// A reader over every key of the merged sources.
    pub(super) fn new(raw: RawConfig) -> Self {
        Reader {
            values: raw.values,
            problems: Vec::new(),
        }
    }

    /// Adds problems found by a check that spans keys.
    pub(super) fn report(&mut self, problems: Vec<ConfigProblem>) {
        self.problems.extend(problems);
    }

    pub(super) fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(ConfigProblem {
            key: key.to_string(),
            message: message.into(),
        });
    }

    pub(super) fn take(&mut self, key: &str) -> Option<RawValue> {
        self.values.remove(key)
    }

    /// A key the embedded defaults always set; its absence is a packaging bug.
    pub(super) fn take_defaulted(&mut self, key: &str) -> Option<RawValue> {
        let value = self.take(key);
        if value.is_none() {
            self.problem(
                key,
                "missing (and no default: config/default.toml is incomplete)",
            );
        }
        value
    }

    pub(super) fn integer(&mut self, key: &str, min: u64, max: u64) -> u64 {
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

    pub(super) fn url(&mut self, key: &str) -> Url {
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

    pub(super) fn socket_addr(&mut self, key: &str) -> SocketAddr {
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

    pub(super) fn path(&mut self, key: &str) -> PathBuf {
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
    pub(super) fn optional_timestamp(&mut self, key: &str) -> Option<jiff::Timestamp> {
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

    pub(super) fn optional_path(&mut self, key: &str) -> Option<PathBuf> {
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

    /// A comma-separated list, trimmed, without empty items.
    pub(super) fn list(&mut self, key: &str) -> Option<(Vec<String>, String)> {
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

    /// A secret given either inline (`key`) or as a file path (`key_file`).
    pub(super) fn optional_secret(
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

    pub(super) fn required_secret(
        &mut self,
        key: &str,
        expected_prefix: Option<&str>,
    ) -> Secret<String> {
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

    pub(super) fn finish(mut self) -> Result<(), ConfigError> {
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
    use crate::config::Config;
    use crate::config::test_support::{APP, env, problems};

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
}
