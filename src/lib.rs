//! bitbucket-slack: a self-hosted Bitbucket Cloud ⇄ Slack integration.
//!
//! One daemon holds Socket Mode WebSockets to Slack (no inbound port), answers the
//! `/bitbucket` command, and keeps what it must remember in an embedded sled store, or in
//! a PostgreSQL database several replicas share through leases.
//! The design is `docs/ARCHITECTURE.md`; in short:
//!
//! | module      | owns                                                            |
//! |-------------|-----------------------------------------------------------------|
//! | `config`    | raw layered config → validated [`config::Config`], one file per section |
//! | `message`   | pure: the message type, the one mrkdwn escaper, Block Kit limits |
//! | `oauth_state` | pure: signed, expiring OAuth `state` values                   |
//! | `secret`    | `Secret<T>`: a value never printed                              |
//! | `clock`     | the only reader of the wall clock                               |
//! | `shutdown`  | the only installer of signal handlers                           |
//! | `app`       | wiring, supervision, dispatch, installs, accounts, subscriptions, the router, actions, link previews, the Home tab, review reminders, the permission-upgrade driver (the only executor of campaign effects), replicas' leases, the admin socket and CLI; the only place combining services |
//! | `slack`     | Socket Mode (`socket`, `envelope`), Web API (`web`), the outbox drain (`delivery`), Block Kit (`convert`); the only slack-morphism / tungstenite user |
//! | `bitbucket` | REST client, budget, poller, pure diff and schedule, people's OAuth (`accounts`), target lookup; the only module that knows Bitbucket's JSON |
//! | `store`     | the only sled and PostgreSQL user: typed repositories (installations, links, subscriptions, outbox, activities, campaigns and held workspaces, ...) over either engine (`kv`), schema, migrations, token encryption, backup/restore, migrate between engines, replicas' leases and shared budget |
//! | `commands`  | pure: `/bitbucket` text → `Command`, help from the same table   |
//! | `notify`    | pure: subscriptions and filters, routing, rendering, personal notifications, preview cards, reminder schedules |
//! | `upgrade`   | pure: the scope table, permission levels, the campaign state machine |
//! | `http`      | axum routes: health, readiness, metrics, the OAuth pages; the `Backend` trait `app` implements |
//! | `metrics`   | the Prometheus registry handed to each component                |
//!
//! Invariants, checked by `tests/tidy.rs`:
//! 1. Pure modules (`commands/`, `notify/`, `upgrade/`, `message`, `oauth_state`,
//!    `bitbucket/diff/`, `slack/envelope.rs`, ...: the list is in `tests/tidy.rs`) do no
//!    I/O, never read the clock, never spawn, and import no edge module; no two top-level
//!    modules import each other, directly or round a cycle.
//! 2. Only `slack/` imports `slack_morphism` or `tokio_tungstenite`; only `bitbucket/`
//!    knows Bitbucket's JSON; only `store/` imports `sled` or `tokio_postgres`.
//! 3. Only `clock.rs` reads the wall clock.
//! 4. Only `shutdown.rs` installs signal handlers.
//! 5. No global mutable state; each component gets its own part of the config.
//! 6. A handler's error never stops the listener or the process.
//! 7. Secrets never reach a log line, a panic message or a Slack message.

pub mod app;
pub mod bitbucket;
pub mod clock;
pub mod commands;
pub mod config;
pub mod http;
pub mod message;
pub mod metrics;
pub mod notify;
pub mod oauth_state;
pub mod secret;
pub mod shutdown;
pub mod slack;
pub mod store;
pub mod upgrade;
