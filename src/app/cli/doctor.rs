//! `bitbucket-slack doctor`: one line per check (configuration, store, encryption key,
//! Slack app and bot tokens, Bitbucket credential), each saying what to do when it fails.
//!
//! Owns the checks and their wording; exit code 1 when any check fails. Must never write
//! to the store, print a token, or post anything to Slack (it only calls
//! `apps.connections.open` and `auth.test`, and reads one watched repository).

use crate::config::Config;
use crate::slack::web::SlackWeb;
use crate::store::StoreError;
use crate::upgrade;

use super::client;

/// One doctor line.
struct Check {
    ok: bool,
    name: &'static str,
    detail: String,
}

/// `bitbucket-slack doctor`: one line per check, with what to do when it fails.
pub async fn doctor(config: &Config) -> anyhow::Result<u8> {
    let mut checks = vec![Check {
        ok: true,
        name: "config",
        detail: "valid".into(),
    }];
    checks.extend(check_store(config).await);
    checks.extend(check_slack(config).await);
    checks.push(check_bitbucket(config).await);
    let mut failed = 0;
    for check in &checks {
        let mark = if check.ok { "ok  " } else { "FAIL" };
        failed += usize::from(!check.ok);
        println!("[{mark}] {:<14} {}", check.name, check.detail);
    }
    Ok(if failed == 0 { 0 } else { 1 })
}

async fn check_store(config: &Config) -> Vec<Check> {
    // A PostgreSQL store is shared by the running replicas: it is checked either way.
    let shared = matches!(config.storage.backend, crate::store::Backend::Postgres(_));
    if !shared && client::daemon_answers(config).await {
        return vec![Check {
            ok: true,
            name: "store",
            detail: "in use by the running daemon (its admin socket answers)".into(),
        }];
    }
    match crate::app::open_store(&config.storage) {
        Ok(store) => vec![
            Check {
                ok: true,
                name: "store",
                detail: format!(
                    "{} ({}) opens (schema current){}",
                    store.path().display(),
                    store.engine(),
                    store
                        .replicas_summary(
                            crate::clock::Clock::now(&crate::clock::SystemClock),
                            config.storage.lease_ttl,
                        )
                        .map(|summary| format!("; {summary}"))
                        .unwrap_or_default()
                ),
            },
            Check {
                ok: true,
                name: "encryption key",
                detail: format!(
                    "{} opens this store's tokens",
                    store.cipher().key_path().display()
                ),
            },
        ],
        Err(error @ (StoreError::WrongKey { .. } | StoreError::KeyFile { .. })) => vec![Check {
            ok: false,
            name: "encryption key",
            detail: error.to_string(),
        }],
        Err(error) => vec![Check {
            ok: false,
            name: "store",
            detail: match config.storage.backend {
                crate::store::Backend::Sled => {
                    format!("{error} (check storage.path and its permissions)")
                }
                crate::store::Backend::Postgres(_) => {
                    format!("{error} (check storage.postgres.url and the database)")
                }
            },
        }],
    }
}

async fn check_bitbucket(config: &Config) -> Check {
    use crate::bitbucket::{BitbucketClient, LookupError};
    let name = "bitbucket";
    let Some(settings) = config.bitbucket.client_settings() else {
        return Check {
            ok: true,
            name,
            detail: "no credential configured: the daemon will not poll (set bitbucket.token or [bitbucket.oauth])".into(),
        };
    };
    let client = match BitbucketClient::new(settings) {
        Ok(client) => client,
        Err(error) => {
            return Check {
                ok: false,
                name,
                detail: error.to_string(),
            };
        }
    };
    // A repository the daemon watches exercises the credential for real (the store can
    // only be read while the daemon is stopped).
    let watched = crate::app::open_store(&config.storage)
        .ok()
        .and_then(|store| store.repositories.names().ok())
        .and_then(|names| names.into_iter().next());
    let Some(repository) = watched else {
        return Check {
            ok: true,
            name,
            detail: format!(
                "credential configured; not exercised (no watched repository readable here); budget {} requests an hour",
                client.budget().allowance()
            ),
        };
    };
    match client
        .lookup_target(&crate::bitbucket::Target::Repository(repository.clone()))
        .await
    {
        Ok(_) => Check {
            ok: true,
            name,
            detail: format!(
                "the credential reads {repository}; budget {} requests an hour, {} used by this check",
                client.budget().allowance(),
                client.budget().used_in_last_hour()
            ),
        },
        Err(LookupError::Forbidden | LookupError::NotFound) => Check {
            ok: false,
            name,
            detail: format!(
                "the credential cannot read {repository}: give it read access, or unsubscribe from it"
            ),
        },
        Err(LookupError::Invalid(reason)) => Check {
            ok: false,
            name,
            detail: format!("{reason}: not a repository name; unsubscribe from it"),
        },
        Err(LookupError::Unavailable(reason)) => Check {
            ok: false,
            name,
            detail: format!(
                "{reason}: check bitbucket.token / [bitbucket.oauth] and that {} is reachable",
                config.bitbucket.api_url
            ),
        },
    }
}

async fn check_slack(config: &Config) -> Vec<Check> {
    let web = match SlackWeb::with_timeout(&config.slack.api_url, config.slack.request_timeout) {
        Ok(web) => web,
        Err(error) => {
            return vec![Check {
                ok: false,
                name: "slack",
                detail: error.to_string(),
            }];
        }
    };
    let mut checks = vec![match web.open_socket_url(&config.slack.app_token).await {
        Ok(_) => Check {
            ok: true,
            name: "slack app",
            detail: "apps.connections.open accepts slack.app_token".into(),
        },
        Err(error) => Check {
            ok: false,
            name: "slack app",
            detail: format!(
                "{error}: check slack.app_token (an xapp- token with connections:write) and that {} is reachable",
                config.slack.api_url
            ),
        },
    }];
    if let Some(token) = &config.slack.bot_token {
        checks.push(match web.auth_test(token).await {
            Ok(identity) => {
                let level = upgrade::permission_level(&identity.scopes.unwrap_or_default());
                Check {
                    ok: true,
                    name: "slack bot",
                    detail: format!(
                        "slack.bot_token works for {} ({}); permissions {}{}",
                        identity.team_name,
                        identity.team_id,
                        level.name(),
                        if level.missing().is_empty() {
                            String::new()
                        } else {
                            format!(
                                ", missing {}: reinstall the app to grant them",
                                level.missing().join(",")
                            )
                        }
                    ),
                }
            }
            Err(error) => Check {
                ok: false,
                name: "slack bot",
                detail: format!("{error}: reinstall the app and configure its new xoxb- token"),
            },
        });
    }
    checks
}
