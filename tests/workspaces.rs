//! Workspaces end to end: the daemon runs in-process (real sled, real HTTP, real
//! WebSockets) against the fake Slack, with a manual clock for state expiry. Installs go
//! through the browser flow by hand, following each redirect as a browser would.

mod support;

use std::collections::HashMap;

use bitbucket_slack::upgrade::required_scopes;
use jiff::SignedDuration;
use serde_json::{Value, json};
use support::blocks::section_text;
use support::daemon::{Page, browse};
use support::fake_slack::{FakeWorkspace, OAuthApproval};
use support::harness::{CLIENT_ID, CLIENT_SECRET, Harness, HarnessBuilder};

/// The daemon with the app's OAuth client, so workspaces install through the browser.
struct Daemon(Harness);

impl std::ops::Deref for Daemon {
    type Target = Harness;
    fn deref(&self) -> &Harness {
        &self.0
    }
}

async fn start(builder: HarnessBuilder) -> Daemon {
    Daemon(builder.slack_oauth().start().await)
}

impl Daemon {
    async fn stop(self) {
        self.0.stop().await;
    }

    /// The callback URL the browser lands on after Slack's consent screen.
    async fn consent(&self, approval: Option<OAuthApproval>, team: Option<&str>) -> String {
        let start = match team {
            Some(team) => format!("{}/slack/install?team={team}", self.http),
            None => format!("{}/slack/install", self.http),
        };
        let install = browse(&start).await;
        assert_eq!(install.status, 302, "{}", install.body);
        let authorize = install.location.expect("a redirect to Slack");
        assert!(
            authorize.starts_with(&self.slack.oauth_authorize_url()),
            "{authorize}"
        );
        if let Some(approval) = approval {
            self.slack.approve_next(approval);
        }
        let slack = browse(&authorize).await;
        assert_eq!(slack.status, 302, "{}", slack.body);
        let callback = slack.location.expect("Slack redirects back");
        // The redirect goes to public_url; the test's "browser" reaches it on the bound port.
        self.local(&callback)
    }

    async fn install(&self, approval: OAuthApproval) -> Page {
        let callback = self.consent(Some(approval), None).await;
        browse(&callback).await
    }

    async fn command(&self, team: &str, text: &str) -> String {
        section_text(&self.0.command(team, "C1", "U1", text).await)
    }

    async fn event(&self, team: &str, event: Value) {
        let id = format!("Ev{}", event_id());
        self.envelope(
            "events_api",
            false,
            json!({
                "team_id": team, "api_app_id": "A0FAKE", "type": "event_callback",
                "event_id": id, "event_time": 1_800_000_000,
                "event": event
            }),
        )
        .await;
    }
}

fn event_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn all_scopes() -> String {
    required_scopes().join(",")
}

fn approval(team: &str, name: &str, token: &str, scopes: &str) -> OAuthApproval {
    OAuthApproval {
        workspace: FakeWorkspace::new(team, name, scopes),
        bot_token: token.into(),
        installer_user_id: "U0ADMIN".into(),
        error: None,
    }
}

/// Eventually-consistent reads are not needed: events are handled after their ack, so
/// wait until a command sees the effect.
async fn wait_until_not_installed(harness: &Daemon, team: &str) {
    for _ in 0..200 {
        if harness
            .command(team, "status")
            .await
            .contains("not installed")
        {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("{team} still looks installed");
}

#[tokio::test]
async fn install_redirects_to_slack_with_client_scopes_and_state() {
    let harness = start(Harness::builder()).await;
    let page = browse(&format!("{}/slack/install", harness.http)).await;
    assert_eq!(page.status, 302);
    let location = url::Url::parse(&page.location.expect("location")).expect("url");
    let query: HashMap<String, String> = location.query_pairs().into_owned().collect();
    assert_eq!(query["client_id"], CLIENT_ID);
    assert_eq!(query["scope"], all_scopes());
    assert_eq!(
        query["redirect_uri"],
        "http://bitbucket-slack.intranet.example/slack/oauth/callback"
    );
    assert!(query["state"].contains('.'), "signed: {}", query["state"]);
    harness.stop().await;
}

#[tokio::test]
async fn oauth_install_then_reinstall_updates_in_place() {
    let harness = start(Harness::builder()).await;
    assert!(
        harness
            .command("T1", "help")
            .await
            .contains("not installed")
    );

    let page = harness
        .install(approval(
            "T1",
            "Acme",
            "xoxb-t1-first",
            "commands,chat:write",
        ))
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("Bitbucket is installed"),
        "{}",
        page.body
    );
    assert!(page.body.contains("Acme"), "{}", page.body);
    assert!(page.body.contains("Still missing"), "{}", page.body);
    let exchange = harness.slack.calls_to("oauth.v2.access");
    assert_eq!(exchange.len(), 1);
    assert!(
        exchange[0]
            .authorization
            .as_deref()
            .is_some_and(|a| a.starts_with("Basic "))
    );

    let status = harness.command("T1", "status").await;
    assert!(status.contains("Acme"), "{status}");
    assert!(status.contains("*Permissions:* outdated"), "{status}");
    assert!(status.contains("`im:write`"), "{status}");

    // Reinstall with every scope: the same record, now current.
    let page = harness
        .install(approval("T1", "Acme", "xoxb-t1-second", &all_scopes()))
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("every permission"), "{}", page.body);
    let status = harness.command("T1", "status").await;
    assert!(status.contains("*Permissions:* current"), "{status}");
    harness.stop().await;
}

#[tokio::test]
async fn a_team_outside_allowed_teams_cannot_install_and_nothing_is_stored() {
    let harness = start(Harness::builder().set("slack.allowed_teams", "T1, E0GRID")).await;
    let page = harness
        .install(approval("T9", "Elsewhere", "xoxb-t9", &all_scopes()))
        .await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(
        page.body
            .contains("not open to the workspace Elsewhere (T9)"),
        "{}",
        page.body
    );
    assert!(page.body.contains("Nothing was stored"), "{}", page.body);
    assert!(
        harness
            .command("T9", "help")
            .await
            .contains("not installed")
    );
    let revoked = harness.slack.calls_to("auth.revoke");
    assert_eq!(revoked.len(), 1, "the issued token is given back");
    assert_eq!(revoked[0].authorization.as_deref(), Some("Bearer xoxb-t9"));
    // A flow bound to a team outside the list is refused before Slack's page.
    let bound = browse(&format!("{}/slack/install?team=T9", harness.http)).await;
    assert_eq!(bound.status, 403, "{}", bound.body);

    // A listed team, and a workspace of a listed Enterprise Grid org, may install.
    let page = harness
        .install(approval("T1", "Acme", "xoxb-t1", &all_scopes()))
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let mut grid = approval("T5", "Grid Team", "xoxb-t5", &all_scopes());
    grid.workspace.enterprise_id = Some("E0GRID".into());
    let page = harness.install(grid).await;
    assert_eq!(page.status, 200, "{}", page.body);
    harness.stop().await;
}

#[tokio::test]
async fn replayed_tampered_and_expired_states_are_refused_and_change_nothing() {
    let harness = start(Harness::builder()).await;
    let callback = harness
        .consent(Some(approval("T1", "Acme", "xoxb-t1", &all_scopes())), None)
        .await;
    assert_eq!(browse(&callback).await.status, 200);
    let replay = browse(&callback).await;
    assert_eq!(replay.status, 400, "{}", replay.body);
    assert!(replay.body.contains("already used"), "{}", replay.body);

    let tampered = harness
        .consent(
            Some(approval("T2", "Globex", "xoxb-t2", &all_scopes())),
            None,
        )
        .await
        .replace("state=", "state=x");
    let page = browse(&tampered).await;
    assert_eq!(page.status, 400);
    assert!(page.body.contains("not valid"), "{}", page.body);

    let late = harness
        .consent(
            Some(approval("T2", "Globex", "xoxb-t2", &all_scopes())),
            None,
        )
        .await;
    harness.clock.advance(SignedDuration::from_mins(11));
    let page = browse(&late).await;
    assert_eq!(page.status, 400);
    assert!(page.body.contains("expired"), "{}", page.body);

    let missing = browse(&format!("{}/slack/oauth/callback?code=abc", harness.http)).await;
    assert_eq!(missing.status, 400);

    assert_eq!(
        harness.slack.calls_to("oauth.v2.access").len(),
        1,
        "only the good one"
    );
    assert!(
        harness
            .command("T2", "status")
            .await
            .contains("not installed")
    );
    harness.stop().await;
}

#[tokio::test]
async fn denied_consent_and_slack_errors_give_a_clear_page_and_change_nothing() {
    let harness = start(Harness::builder()).await;
    let mut denied = approval("T1", "Acme", "xoxb-t1", &all_scopes());
    denied.error = Some("access_denied".into());
    let page = harness.install(denied).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("You cancelled the installation"),
        "{}",
        page.body
    );

    harness
        .slack
        .set_oauth_client(CLIENT_ID, "a-rotated-secret");
    let page = harness
        .install(approval("T1", "Acme", "xoxb-t1", &all_scopes()))
        .await;
    assert_eq!(page.status, 502, "{}", page.body);
    assert!(
        page.body.contains("Slack refused the installation"),
        "{}",
        page.body
    );
    assert!(page.body.contains("invalid_client_id"), "{}", page.body);
    assert!(!page.body.contains(CLIENT_SECRET));
    assert!(
        harness
            .command("T1", "status")
            .await
            .contains("not installed")
    );
    harness.stop().await;
}

#[tokio::test]
async fn a_flow_bound_to_one_workspace_refuses_another() {
    let harness = start(Harness::builder()).await;
    let callback = harness
        .consent(
            Some(approval("T2", "Globex", "xoxb-t2", &all_scopes())),
            Some("T1"),
        )
        .await;
    let page = browse(&callback).await;
    assert_eq!(page.status, 502, "{}", page.body);
    assert!(page.body.contains("different workspace"), "{}", page.body);
    assert!(
        harness
            .command("T2", "status")
            .await
            .contains("not installed")
    );
    harness.stop().await;
}

#[tokio::test]
async fn two_workspaces_see_only_themselves() {
    let harness = start(Harness::builder()).await;
    harness
        .install(approval("T1", "Acme", "xoxb-t1", &all_scopes()))
        .await;
    harness
        .install(approval("T2", "Globex", "xoxb-t2", "commands,chat:write"))
        .await;
    let acme = harness.command("T1", "status").await;
    assert!(acme.contains("Acme") && !acme.contains("Globex"), "{acme}");
    assert!(acme.contains("current"), "{acme}");
    let globex = harness.command("T2", "status").await;
    assert!(
        globex.contains("Globex") && !globex.contains("Acme"),
        "{globex}"
    );
    assert!(globex.contains("outdated"), "{globex}");
    assert!(
        harness
            .command("T3", "status")
            .await
            .contains("not installed")
    );
    harness.stop().await;
}

#[tokio::test]
async fn uninstall_and_revoke_in_either_order_stop_serving_the_workspace() {
    let harness = start(Harness::builder()).await;
    harness
        .install(approval("T1", "Acme", "xoxb-t1", &all_scopes()))
        .await;
    harness
        .install(approval("T2", "Globex", "xoxb-t2", &all_scopes()))
        .await;
    // T1: uninstalled, then its tokens revoked.
    harness
        .event("T1", json!({"type": "app_uninstalled"}))
        .await;
    harness
        .event(
            "T1",
            json!({"type": "tokens_revoked", "tokens": {"oauth": [], "bot": ["UT1BOT"]}}),
        )
        .await;
    wait_until_not_installed(&harness, "T1").await;
    // T2: revoked first (user ids, not tokens), then uninstalled.
    harness
        .event(
            "T2",
            json!({"type": "tokens_revoked", "tokens": {"oauth": ["U9"], "bot": ["UT2BOT"]}}),
        )
        .await;
    wait_until_not_installed(&harness, "T2").await;
    harness
        .event("T2", json!({"type": "app_uninstalled"}))
        .await;
    assert!(
        harness
            .command("T2", "status")
            .await
            .contains("not installed")
    );
    // A reinstall restores the workspace.
    harness
        .install(approval("T1", "Acme", "xoxb-t1-again", &all_scopes()))
        .await;
    assert!(harness.command("T1", "status").await.contains("current"));
    harness.stop().await;
}

#[tokio::test]
async fn a_configured_bot_token_installs_its_workspace_with_header_scopes() {
    let harness = start(Harness::builder().bot_token("xoxb-configured-single")).await;
    // The fake's default answer for unknown xoxb tokens is team T0FAKE with two scopes.
    let status = harness.command("T0FAKE", "status").await;
    assert!(status.contains("Fake Team"), "{status}");
    assert!(
        status.contains("installed with a configured bot token"),
        "{status}"
    );
    assert!(status.contains("outdated"), "{status}");
    // The app is reinstalled from its settings page with more scopes: status re-checks.
    harness.slack.add_workspace(
        "xoxb-configured-single",
        FakeWorkspace {
            team_id: "T0FAKE".into(),
            team_name: "Fake Team".into(),
            enterprise_id: None,
            bot_user_id: "U0BOT".into(),
            bot_id: "B0BOT".into(),
            scopes: all_scopes(),
        },
    );
    let status = harness.command("T0FAKE", "status").await;
    assert!(status.contains("current"), "{status}");
    harness.stop().await;
}

#[tokio::test]
async fn install_without_oauth_configured_explains_itself() {
    let harness = Harness::builder().start().await;
    let page = browse(&format!("{}/slack/install", harness.http)).await;
    assert_eq!(page.status, 404);
    assert!(page.body.contains("slack.client_id"), "{}", page.body);
    harness.stop().await;
}

/// The bot scopes listed under `oauth_config.scopes.bot` in the manifest.
fn manifest_bot_scopes(manifest: &str) -> Vec<String> {
    let mut scopes = Vec::new();
    let mut in_bot = false;
    let mut bot_indent = 0;
    for line in manifest.lines() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim();
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        if trimmed == "bot:" {
            in_bot = true;
            bot_indent = indent;
            continue;
        }
        if in_bot {
            match trimmed.strip_prefix("- ") {
                Some(scope) if indent >= bot_indent => scopes.push(scope.trim().to_string()),
                _ => in_bot = false,
            }
        }
    }
    scopes
}

#[test]
fn the_manifest_requests_exactly_the_scope_table() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/slack-app-manifest.yml");
    let manifest = std::fs::read_to_string(&path).expect("the manifest");
    let mut listed = manifest_bot_scopes(&manifest);
    let mut required: Vec<String> = required_scopes().into_iter().map(str::to_string).collect();
    listed.sort();
    required.sort();
    assert_eq!(
        listed, required,
        "config/slack-app-manifest.yml and src/upgrade/scopes.rs disagree"
    );
    assert!(manifest.contains("socket_mode_enabled: true"));
    assert!(manifest.contains("command: /bitbucket"));
}

#[tokio::test]
async fn an_outdated_workspace_is_gated_by_the_upgrade_dates_until_it_upgrades() {
    // The harness clock starts at 2027-01-15.
    let harness = start(
        Harness::builder()
            .set("upgrade.available_at", "2027-01-01T00:00:00Z")
            .set("upgrade.deadline", "2027-02-01T00:00:00Z")
            .set("upgrade.admins", "U0OPS"),
    )
    .await;
    harness
        .install(approval("T1", "Acme", "xoxb-t1", "commands,chat:write"))
        .await;
    let login = harness.command("T1", "login").await;
    assert!(
        login.contains("needs to update this app's permissions before new users can log in"),
        "{login}"
    );
    assert!(
        login.contains("U0OPS") && login.contains("U0ADMIN"),
        "names the admins: {login}"
    );
    let status = harness.command("T1", "status").await;
    assert!(
        status.contains("*Permission update:* available")
            && status.contains("Deadline: 2027-02-01 00:00 UTC"),
        "{status}"
    );
    assert!(
        harness
            .command("T1", "subscriptions")
            .await
            .contains("no subscriptions")
    );

    harness.clock.advance(SignedDuration::from_hours(24 * 20));
    let refused = harness.command("T1", "subscriptions").await;
    assert!(
        refused.contains("a Slack admin of this workspace must update the app's permissions"),
        "{refused}"
    );
    assert!(
        harness
            .command("T1", "help")
            .await
            .contains("/bitbucket help")
    );
    assert!(harness.command("T1", "status").await.contains("overdue"));

    // The upgrade takes effect at once.
    harness
        .install(approval("T1", "Acme", "xoxb-t1-upgraded", &all_scopes()))
        .await;
    assert!(
        harness
            .command("T1", "subscriptions")
            .await
            .contains("no subscriptions")
    );
    assert!(
        !harness
            .command("T1", "status")
            .await
            .contains("Permission update")
    );
    harness.stop().await;
}
