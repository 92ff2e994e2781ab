//! The daemon run in-process against the fakes, built one way for every integration test:
//! [`Harness::builder`] collects the configuration (as [`Settings`]), the clock and the
//! fakes to wire in, and [`HarnessBuilder::start`] starts `app::start` on a temporary
//! store, waits for its Socket Mode connection and hands back a [`Harness`] that sends
//! envelopes over it. [`Harness::stop`] gives the builder back, so a test can start the
//! same daemon again (same fakes, clock and store). Owns no assertions about behaviour;
//! never sleeps.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bitbucket_slack::app;
use bitbucket_slack::app::installations::Installer;
use bitbucket_slack::clock::{Clock, ManualClock, SystemClock};
use bitbucket_slack::config::{Config, Secret};
use bitbucket_slack::slack::web::SlackWeb;
use bitbucket_slack::store::Store;
use bitbucket_slack::upgrade::required_scopes;
use jiff::Timestamp;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::daemon::{browse, browse_with_cookie};
use super::fake_bitbucket::{FakeAccount, FakeBitbucket, TOKEN};
use super::fake_slack::{FakeSlack, FakeSocket, FakeWorkspace};

/// Where the daemon believes it is reachable (`http.public_url`, without the slash).
pub const PUBLIC_URL: &str = "http://bitbucket-slack.intranet.example";
/// The Slack app's OAuth client, as [`HarnessBuilder::slack_oauth`] configures it.
pub const CLIENT_ID: &str = "4242424242.5151515151515";
pub const CLIENT_SECRET: &str = "client-secret-do-not-log";
/// The app-level token unless a test sets `slack.app_token`.
pub const APP_TOKEN: &str = "xapp-1-A0FAKE-harness-app-secret";
/// The workspace of [`HarnessBuilder::installed_bot`].
pub const TEAM: &str = "T0FAKE";
/// When the default manual clock starts (Unix seconds).
pub const T0: i64 = 1_800_000_000;

/// Configuration by dotted key (`slack.app_token`), written out as the environment the
/// in-process daemon reads or as the TOML file the real binary reads.
#[derive(Debug, Clone, Default)]
pub struct Settings(BTreeMap<String, String>);

impl Settings {
    /// What every daemon under test has: the app token, the fake Slack's API, one
    /// socket, its store at `storage`, and HTTP on a free loopback port.
    pub fn base(slack: &FakeSlack, storage: &Path) -> Settings {
        Settings::default()
            .set("slack.app_token", APP_TOKEN)
            .set("slack.api_url", slack.api_url())
            .set("slack.socket_connections", "1")
            .set("storage.path", storage.display().to_string())
            .set("http.listen", "127.0.0.1:0")
    }

    /// Sets (or replaces) one key.
    pub fn set(mut self, key: &str, value: impl Into<String>) -> Settings {
        self.0.insert(key.to_string(), value.into());
        self
    }

    /// Every key set in `other` replaces this one's.
    pub fn merged(mut self, other: &Settings) -> Settings {
        self.0.extend(
            other
                .0
                .iter()
                .map(|(key, value)| (key.clone(), value.clone())),
        );
        self
    }

    /// As `BITBUCKET_SLACK__SECTION__KEY` variables.
    pub fn env(&self) -> HashMap<String, String> {
        self.0
            .iter()
            .map(|(key, value)| {
                let name = key.replace('.', "__").to_uppercase();
                (format!("BITBUCKET_SLACK__{name}"), value.clone())
            })
            .collect()
    }

    /// As a TOML file: a table per section; whole numbers and booleans unquoted.
    pub fn toml(&self) -> String {
        let mut sections: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (key, value) in &self.0 {
            let (section, name) = key.rsplit_once('.').expect("a `section.key` setting");
            let literal = if value.parse::<i64>().is_ok() || value == "true" || value == "false" {
                value.clone()
            } else {
                format!("{value:?}")
            };
            sections
                .entry(section)
                .or_default()
                .push(format!("{name} = {literal}"));
        }
        sections
            .iter()
            .map(|(section, lines)| format!("[{section}]\n{}\n", lines.join("\n")))
            .collect()
    }
}

/// What the daemon runs against; see [`Harness::builder`].
pub struct HarnessBuilder {
    slack: Option<Arc<FakeSlack>>,
    bitbucket: Option<FakeBitbucket>,
    /// Bot tokens the fake Slack learns at the next start.
    workspaces: Vec<(String, FakeWorkspace)>,
    slack_oauth: bool,
    /// The Bitbucket OAuth consumer people log in through (key, secret).
    bitbucket_logins: Option<(String, String)>,
    settings: Settings,
    clock: ManualClock,
    system_clock: bool,
    dir: Option<tempfile::TempDir>,
}

impl HarnessBuilder {
    /// Runs against this fake Slack (kept across restarts); a new one by default.
    pub fn slack(mut self, slack: Arc<FakeSlack>) -> Self {
        self.slack = Some(slack);
        self
    }

    /// The fake Slack knows `bot_token` as `workspace`'s bot (taught at start).
    pub fn workspace(mut self, bot_token: &str, workspace: FakeWorkspace) -> Self {
        self.workspaces.push((bot_token.into(), workspace));
        self
    }

    /// A configured `slack.bot_token`.
    pub fn bot_token(self, bot_token: &str) -> Self {
        self.set("slack.bot_token", bot_token)
    }

    /// A configured bot token for [`TEAM`] ("Fake Team") holding every scope the app asks
    /// for, so no permission upgrade stands in the way.
    pub fn installed_bot(self, bot_token: &str) -> Self {
        self.bot_token(bot_token).workspace(
            bot_token,
            FakeWorkspace::new(TEAM, "Fake Team", &required_scopes().join(",")),
        )
    }

    /// The Slack app's OAuth client ([`CLIENT_ID`], [`CLIENT_SECRET`]) in the config and
    /// in the fake Slack: installs go through `/slack/install`.
    pub fn slack_oauth(mut self) -> Self {
        self.slack_oauth = true;
        self
    }

    /// Polls this fake Bitbucket with its [`TOKEN`].
    pub fn bitbucket(mut self, bitbucket: FakeBitbucket) -> Self {
        self.bitbucket = Some(bitbucket);
        self
    }

    /// People link their Bitbucket accounts through the consumer `key`/`secret`, which
    /// the fake Bitbucket accepts (its tokens live two hours) and which sends the browser
    /// back to the daemon's callback under [`PUBLIC_URL`].
    pub fn bitbucket_logins(mut self, key: &str, secret: &str) -> Self {
        self.bitbucket_logins = Some((key.into(), secret.into()));
        self
    }

    /// `bitbucket.private_repositories`: `linked`, `credential` or `deny`.
    pub fn private_repositories(self, policy: &str) -> Self {
        self.set("bitbucket.private_repositories", policy)
    }

    /// Any other setting, by dotted key (`bitbucket.poll_interval_secs`).
    pub fn set(mut self, key: &str, value: impl Into<String>) -> Self {
        self.settings = self.settings.set(key, value);
        self
    }

    /// The daemon's clock; by default a manual clock at [`T0`].
    pub fn clock(mut self, clock: ManualClock) -> Self {
        self.clock = clock;
        self
    }

    /// The system clock instead of a manual one (for the poller's real-time schedule).
    pub fn system_clock(mut self) -> Self {
        self.system_clock = true;
        self
    }

    /// The store's directory (made at the first start).
    pub fn data(&self) -> PathBuf {
        self.dir
            .as_ref()
            .expect("the harness started once")
            .path()
            .join("data")
    }

    /// The manual clock the daemon runs on.
    pub fn manual_clock(&self) -> &ManualClock {
        &self.clock
    }

    /// The whole configuration for this start.
    fn settings(&self, slack: &FakeSlack) -> Settings {
        let mut settings =
            Settings::base(slack, &self.data()).set("http.public_url", format!("{PUBLIC_URL}/"));
        if self.slack_oauth {
            settings = settings
                .set("slack.client_id", CLIENT_ID)
                .set("slack.client_secret", CLIENT_SECRET)
                .set("slack.oauth_authorize_url", slack.oauth_authorize_url());
        }
        if let Some(bitbucket) = &self.bitbucket {
            settings = settings
                .set("bitbucket.api_url", bitbucket.api_url())
                .set("bitbucket.oauth_url", bitbucket.oauth_url())
                .set("bitbucket.token", TOKEN);
        }
        if let Some((key, secret)) = &self.bitbucket_logins {
            settings = settings
                .set("bitbucket.user_oauth.key", key.as_str())
                .set("bitbucket.user_oauth.secret", secret.as_str());
        }
        settings.merged(&self.settings)
    }

    /// Starts the daemon and waits for its Socket Mode connection. A previous daemon's
    /// tasks may still be letting go of the store: a locked store is tried again after
    /// they ran.
    pub async fn start(mut self) -> Harness {
        let slack = match &self.slack {
            Some(slack) => slack.clone(),
            None => Arc::new(FakeSlack::start().await),
        };
        self.slack = Some(slack.clone());
        for (token, workspace) in self.workspaces.drain(..) {
            slack.add_workspace(&token, workspace);
        }
        // The fakes learn the daemon's OAuth clients once, so a test may change them later.
        if self.dir.is_none() {
            self.dir = Some(tempfile::tempdir().expect("tempdir"));
            if self.slack_oauth {
                slack.set_oauth_client(CLIENT_ID, CLIENT_SECRET);
            }
            if let (Some(bitbucket), Some((key, secret))) =
                (&self.bitbucket, &self.bitbucket_logins)
            {
                bitbucket.accept_oauth_consumer(key, secret, 7200);
                bitbucket.set_callback_url(&format!("{PUBLIC_URL}/bitbucket/oauth/callback"));
            }
        }
        let clock: Arc<dyn Clock> = if self.system_clock {
            Arc::new(SystemClock)
        } else {
            Arc::new(self.clock.clone())
        };
        let shutdown = CancellationToken::new();
        let mut attempts = 0;
        let running = loop {
            let env = self.settings(&slack).env();
            let config = Config::load(None, &env).expect("valid config");
            match app::start(config, clock.clone(), shutdown.clone()).await {
                Ok(running) => break running,
                Err(error) if attempts < 1000 && error.to_string().contains("in use") => {
                    attempts += 1;
                    tokio::task::yield_now().await;
                }
                Err(error) => panic!("the daemon does not start: {error:#}"),
            }
        };
        let http = format!("http://{}", running.http_address);
        let socket = slack.accept().await;
        Harness {
            slack,
            clock: self.clock.clone(),
            http,
            socket,
            shutdown,
            running,
            setup: self,
        }
    }
}

/// A daemon running in-process, connected to the fake Slack over one socket.
pub struct Harness {
    pub slack: Arc<FakeSlack>,
    /// The daemon's manual clock (not read when it runs on the system clock).
    pub clock: ManualClock,
    /// `http://127.0.0.1:port` of its HTTP server.
    pub http: String,
    pub socket: FakeSocket,
    pub running: app::Running,
    shutdown: CancellationToken,
    setup: HarnessBuilder,
}

impl Harness {
    pub fn builder() -> HarnessBuilder {
        HarnessBuilder {
            slack: None,
            bitbucket: None,
            workspaces: Vec::new(),
            slack_oauth: false,
            bitbucket_logins: None,
            settings: Settings::default(),
            clock: ManualClock::new(Timestamp::from_second(T0).expect("valid")),
            system_clock: false,
            dir: None,
        }
    }

    /// The fake Bitbucket given to [`HarnessBuilder::bitbucket`].
    pub fn bitbucket(&self) -> &FakeBitbucket {
        self.setup
            .bitbucket
            .as_ref()
            .expect("the harness was built with a fake Bitbucket")
    }

    /// The store's directory.
    pub fn data(&self) -> PathBuf {
        self.setup.data()
    }

    /// `url` under [`PUBLIC_URL`] as the test's browser reaches it: on the bound port.
    pub fn local(&self, url: &str) -> String {
        url.replace(PUBLIC_URL, &self.http)
    }

    /// Stops the daemon and waits for every task; gives back what starts it again.
    pub async fn stop(self) -> HarnessBuilder {
        self.shutdown.cancel();
        self.running.wait().await.expect("clean stop");
        self.setup
    }

    /// Sends one envelope of `kind` with a fresh id and returns its ack.
    pub async fn envelope(
        &self,
        kind: &str,
        accepts_response_payload: bool,
        payload: Value,
    ) -> Value {
        let id = format!("env-{kind}-{}", next_id());
        self.socket
            .send_json(&envelope(&id, kind, accepts_response_payload, payload))
            .await;
        let ack = self.socket.next_ack().await;
        assert_eq!(ack["envelope_id"], id.as_str());
        ack
    }

    /// `/bitbucket text` from `user` in `channel` of `team`: the ack's payload (null when
    /// the answer went to the response URL `r` instead).
    pub async fn command(&self, team: &str, channel: &str, user: &str, text: &str) -> Value {
        let ack = self
            .envelope(
                "slash_commands",
                true,
                slash_command(team, channel, user, text, &self.slack),
            )
            .await;
        ack["payload"].clone()
    }
}

impl Harness {
    /// Sends an interaction (a [`block_actions`] click) and waits for its ack.
    #[allow(dead_code)]
    pub async fn click(&self, payload: Value) {
        self.envelope("interactive", false, payload).await;
    }

    /// Links `user` of [`TEAM`] to `account` through the browser flow, as a person does:
    /// `/bitbucket login` in C1, the Connect button's page, Bitbucket's consent (the fake
    /// Bitbucket logs in as `account`), back to the daemon with the confirming cookie.
    #[allow(dead_code)]
    pub async fn link(&self, user: &str, account: FakeAccount) {
        let payload = self.command(TEAM, "C1", user, "login").await;
        let button = payload["blocks"][1]["elements"][0]["url"]
            .as_str()
            .unwrap_or_else(|| panic!("a Connect button: {payload}"))
            .to_string();
        let confirm = browse(&self.local(&button)).await;
        assert_eq!(confirm.status, 200, "{}", confirm.body);
        let start = confirm.body.find("<a href=\"").expect("a Continue link") + "<a href=\"".len();
        let end = start + confirm.body[start..].find('"').expect("end of href");
        let consent = confirm.body[start..end].replace("&amp;", "&");
        self.bitbucket().next_login(Ok(account));
        let back = browse(&consent).await;
        assert_eq!(back.status, 302);
        let page = browse_with_cookie(
            &self.local(&back.location.expect("back to the daemon")),
            confirm.cookie().as_deref(),
        )
        .await;
        assert_eq!(page.status, 200, "{}", page.body);
    }

    /// `user` of `team` submits the modal `callback_id` with `private_metadata` and the
    /// inputs' state `values` (`state.values` as Slack sends it).
    #[allow(dead_code)]
    pub async fn submit_view(
        &self,
        team: &str,
        user: &str,
        callback_id: &str,
        private_metadata: &str,
        values: Value,
    ) {
        self.envelope(
            "interactive",
            false,
            json!({
                "type": "view_submission",
                "team": {"id": team, "domain": "acme"},
                "user": {"id": user, "username": "someone", "team_id": team},
                "api_app_id": "A0FAKE",
                "trigger_id": "333.444.view",
                "view": {
                    "id": "V0FAKEVIEW", "type": "modal", "team_id": team,
                    "callback_id": callback_id, "private_metadata": private_metadata,
                    "state": {"values": values},
                    "hash": "h", "title": {"type": "plain_text", "text": "x"}
                }
            }),
        )
        .await;
    }
}

/// A block_actions payload: a button clicked on a bot message.
#[allow(dead_code)]
pub fn block_actions(
    team: &str,
    channel: &str,
    ts: &str,
    sections: &[&str],
    user: &str,
    action_id: &str,
    value: &str,
) -> Value {
    let blocks: Vec<Value> = sections
        .iter()
        .map(|text| json!({"type": "section", "block_id": "s", "text": {"type": "mrkdwn", "text": text}}))
        .collect();
    json!({
        "type": "block_actions",
        "user": {"id": user, "username": "someone", "team_id": team},
        "api_app_id": "A0FAKE",
        "container": {"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": false},
        "trigger_id": "111.222.trigger",
        "team": {"id": team, "domain": "acme"},
        "channel": {"id": channel, "name": "reviews"},
        "message": {"type": "message", "ts": ts, "text": "fallback", "blocks": blocks},
        "actions": [{
            "action_id": action_id, "block_id": "actions", "value": value,
            "text": {"type": "plain_text", "text": "button"},
            "type": "button", "action_ts": "1605853645.582706"
        }]
    })
}

/// Installs `bot_token` as the daemon installs a configured `slack.bot_token` at start,
/// for tests that run one component without the whole daemon.
pub async fn install_configured_bot(
    web: &SlackWeb,
    store: &Store,
    clock: &ManualClock,
    bot_token: &str,
) {
    Installer {
        web: web.clone(),
        store: store.clone(),
        clock: Arc::new(clock.clone()),
        changed: Default::default(),
        upgrades: Default::default(),
        allowed_teams: Vec::new(),
    }
    .install_configured_token(&Secret::new(bot_token.into()))
    .await
    .expect("install the configured bot token");
}

/// A Socket Mode envelope as Slack sends it.
pub fn envelope(id: &str, kind: &str, accepts_response_payload: bool, payload: Value) -> Value {
    json!({
        "envelope_id": id,
        "type": kind,
        "accepts_response_payload": accepts_response_payload,
        "payload": payload
    })
}

/// A `/bitbucket` slash command's payload, its response URL `r` on `slack`.
pub fn slash_command(
    team: &str,
    channel: &str,
    user: &str,
    text: &str,
    slack: &FakeSlack,
) -> Value {
    json!({
        "team_id": team, "channel_id": channel, "user_id": user,
        "command": "/bitbucket", "text": text,
        "response_url": slack.response_url("r"), "trigger_id": "t"
    })
}

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
