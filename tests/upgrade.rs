//! The permission-upgrade campaign end to end: the daemon runs in-process against the
//! fake Slack with a manual clock. Each step moves the clock, wakes the driver
//! (`Running::wake_upgrades`) and waits for the calls it must make; nothing sleeps.

mod support;

use std::path::Path;
use std::sync::Arc;

use bitbucket_slack::clock::{Clock, ManualClock};
use bitbucket_slack::message::Message;
use bitbucket_slack::notify::Notification;
use bitbucket_slack::store::{NewDelivery, Store};
use bitbucket_slack::upgrade::required_scopes;
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use support::blocks::message_text;
use support::daemon::browse;
use support::fake_slack::{FakeSlack, FakeWorkspace, OAuthApproval, RecordedCall};
use support::harness::{Harness, HarnessBuilder, PUBLIC_URL, Settings, T0};

const APP_TOKEN: &str = "xapp-1-A0FAKE-upgrade-app-secret";

fn at(days: i64) -> Timestamp {
    Timestamp::from_second(T0 + days * 86_400).expect("valid")
}

struct Daemon(Harness);

impl std::ops::Deref for Daemon {
    type Target = Harness;
    fn deref(&self) -> &Harness {
        &self.0
    }
}

/// The daemon with the app's OAuth client on `fake`, its clock at day `day`.
fn on(fake: &Arc<FakeSlack>, day: i64) -> HarnessBuilder {
    Harness::builder()
        .slack(fake.clone())
        .slack_oauth()
        .clock(ManualClock::new(at(day)))
}

/// [`on`] with the campaign's dates: available on day 14, the deadline on day 21.
fn campaign_on(fake: &Arc<FakeSlack>, day: i64) -> HarnessBuilder {
    on(fake, day)
        .set("upgrade.available_at", at(14).to_string())
        .set("upgrade.deadline", at(21).to_string())
}

async fn start(builder: HarnessBuilder) -> Daemon {
    Daemon(builder.start().await)
}

impl Daemon {
    /// Stops the daemon; returns what starts it again.
    async fn stop(self) -> HarnessBuilder {
        self.0.stop().await
    }

    async fn advance_days(&self, days: i64) {
        self.clock.advance(SignedDuration::from_hours(24 * days));
        self.running.wake_upgrades();
    }

    /// Waits until the driver has done everything due now, so that "nothing else was
    /// sent" can be asserted.
    async fn settle(&self) {
        self.running.settle_upgrades().await;
    }

    /// What every DM so far says, in order (kind words only).
    fn dm_texts(&self) -> Vec<String> {
        self.dms().iter().map(message_text).collect()
    }

    /// Installs through `/slack/install` and Slack's consent, which grants `scopes`.
    async fn install(&self, team: &str, token: &str, scopes: &str, installer: &str) {
        let approval = approval(team, token, scopes, installer);
        self.oauth(approval, &format!("{PUBLIC_URL}/slack/install"))
            .await;
    }

    /// `team` upgrades: its admin goes through `/slack/install?team=` and Slack's consent
    /// grants every scope to the new `token`.
    async fn upgrade(&self, team: &str, token: &str, installer: &str) {
        let scopes = required_scopes().join(",");
        let start = format!("{PUBLIC_URL}/slack/install?team={team}");
        self.oauth(approval(team, token, &scopes, installer), &start)
            .await;
    }

    /// Goes through `/slack/install` (bound to `team` when given) and Slack's consent.
    async fn oauth(&self, approval: OAuthApproval, start: &str) -> u16 {
        let install = browse(&self.local(start)).await;
        assert_eq!(install.status, 302, "{}", install.body);
        self.slack.approve_next(approval);
        let slack = browse(&install.location.expect("a redirect to Slack")).await;
        let callback = slack.location.expect("Slack redirects back");
        let callback = self.local(&callback);
        let page = browse(&callback).await;
        assert_eq!(page.status, 200, "{}", page.body);
        page.status
    }

    async fn command(&self, team: &str, user: &str, text: &str) -> String {
        message_text(&self.0.command(team, "C1", user, text).await)
    }

    /// Clicks a button of a DM, shaped like Slack's block_actions payload.
    async fn click(&self, team: &str, user: &str, action_id: &str, response: &str) {
        self.envelope(
            "interactive",
            false,
            json!({
                "type": "block_actions",
                "user": {"id": user, "username": "someone", "team_id": team},
                "api_app_id": "A0FAKE",
                "container": {"type": "message", "message_ts": "1700000000.000100",
                              "channel_id": "D1", "is_ephemeral": false},
                "trigger_id": "111.222.xxx",
                "team": {"id": team, "domain": "acme"},
                "channel": {"id": "D1", "name": "directmessage"},
                "response_url": self.slack.response_url(response),
                "actions": [{
                    "action_id": action_id, "block_id": "b",
                    "text": {"type": "plain_text", "text": "Update permissions"},
                    "type": "button", "action_ts": "1605853645.582706"
                }]
            }),
        )
        .await;
    }

    /// The campaign DMs so far (chat.postMessage to a user id), in order.
    fn dms(&self) -> Vec<Value> {
        dms(&self.slack.calls_to("chat.postMessage"))
    }

    async fn wait_for_dms(&self, count: usize) -> Vec<Value> {
        let all = self.slack.calls_to("chat.postMessage").len();
        let missing = count.saturating_sub(self.dms().len());
        self.slack
            .wait_for_calls("chat.postMessage", all + missing)
            .await;
        let dms = self.dms();
        assert_eq!(dms.len(), count, "{dms:#?}");
        dms
    }
}

fn dms(calls: &[RecordedCall]) -> Vec<Value> {
    calls
        .iter()
        .map(RecordedCall::json)
        .filter(|call| call["channel"].as_str().is_some_and(|c| c.starts_with('U')))
        .collect()
}

fn outdated_scopes() -> String {
    required_scopes()
        .into_iter()
        .filter(|scope| !scope.starts_with("links:"))
        .collect::<Vec<_>>()
        .join(",")
}

/// An older granular install without `im:write` either: no personal notifications or
/// actions until the upgrade.
fn outdated_scopes_without_direct_messages() -> String {
    required_scopes()
        .into_iter()
        .filter(|scope| !scope.starts_with("links:") && *scope != "im:write")
        .collect::<Vec<_>>()
        .join(",")
}

/// A fake Slack for [`on`] (which teaches it the app's OAuth client).
async fn oauth_fake() -> Arc<FakeSlack> {
    Arc::new(FakeSlack::start().await)
}

fn approval(team: &str, token: &str, scopes: &str, installer: &str) -> OAuthApproval {
    OAuthApproval {
        workspace: FakeWorkspace::new(team, "Acme", scopes),
        bot_token: token.into(),
        installer_user_id: installer.into(),
        error: None,
    }
}

fn held(team: &str, channel: &str, text: &str) -> NewDelivery {
    NewDelivery {
        team_id: team.into(),
        channel_id: channel.into(),
        activity_id: format!("held-{text}"),
        notification: Notification {
            message: Message::text(text),
            thread_key: None,
            parent_update: None,
        },
    }
}

/// Opens the store of a stopped daemon (whose last tasks may still be letting go).
async fn open_store(data: &Path) -> Store {
    for _ in 0..1000 {
        match Store::open(data) {
            Ok(store) => return store,
            Err(_) => tokio::task::yield_now().await,
        }
    }
    Store::open(data).expect("the stopped daemon's store opens")
}

#[tokio::test]
async fn a_whole_campaign_from_announcement_to_instant_upgrade() {
    let fake = oauth_fake().await;
    fake.set_members("T1", &[("UADMIN2", true), ("UPLAIN", false)]);
    let harness = start(campaign_on(&fake, 0)).await;

    // Installed with the old scopes 14 days before availability: both admins (the
    // workspace admin from users.list and the installer) get the announcement.
    harness
        .install(
            "T1",
            "xoxb-t1-old",
            &outdated_scopes_without_direct_messages(),
            "U0INSTALLER",
        )
        .await;
    let dms = harness.wait_for_dms(2).await;
    let recipients: Vec<&str> = dms.iter().filter_map(|d| d["channel"].as_str()).collect();
    assert_eq!(recipients, vec!["UADMIN2", "U0INSTALLER"]);
    assert!(message_text(&dms[0]).contains("will need updated permissions soon"));
    assert!(!message_text(&dms[0]).contains("upgrade_update_permissions"));
    let login = harness.command("T1", "UNEW", "login").await;
    assert!(!login.contains("needs to update"), "{login}");

    // Availability day: the Update permissions button.
    harness.advance_days(14).await;
    let dms = harness.wait_for_dms(4).await;
    for dm in &dms[2..] {
        assert!(
            dm["blocks"]
                .to_string()
                .contains("upgrade_update_permissions"),
            "{dm}"
        );
    }
    let login = harness.command("T1", "UNEW", "login").await;
    assert!(
        login.contains("Your Slack admin needs to update this app's permissions"),
        "{login}"
    );
    let status = harness.command("T1", "UNEW", "status").await;
    assert!(status.contains("available"), "{status}");
    // New features stay off: personal notifications are left out of the help and refused.
    let help = harness.command("T1", "UNEW", "help").await;
    assert!(!help.contains("/bitbucket notify"), "{help}");
    let notify = harness.command("T1", "UNEW", "notify").await;
    assert!(notify.contains("`im:write`"), "{notify}");

    // A day later: a reminder to each admin.
    harness.advance_days(1).await;
    harness.wait_for_dms(6).await;

    // The deadline: every command refused, notifications held.
    harness.advance_days(6).await;
    let dms = harness.wait_for_dms(8).await;
    for dm in &dms[6..] {
        assert!(message_text(dm).contains("is paused until its permissions are updated"));
    }
    let refused = harness.command("T1", "UNEW", "subscriptions").await;
    assert!(refused.contains("is paused"), "{refused}");
    assert!(refused.contains("<@UADMIN2>"), "{refused}");
    let help = harness.command("T1", "UNEW", "help").await;
    assert!(help.contains("/bitbucket help"), "{help}");

    // Notifications arrive for the held workspace (written while it is stopped), and the
    // restart in the Overdue phase sends nothing again.
    let harness = restart_with(
        harness,
        vec![
            held("T1", "C1", "PR #1 opened"),
            held("T1", "C1", "PR #2 merged"),
            held("T1", "C2", "Pipeline failed"),
        ],
    )
    .await;
    // The delivery loop keeps them in the outbox: held, not attempted, not posted.
    let socket = harness.data().join("admin.sock");
    let mut rows = Vec::new();
    for _ in 0..10_000 {
        let answer = admin_request(&socket, r#"{"command":"outbox","dead":false}"#).await;
        rows = answer["deliveries"].as_array().cloned().unwrap_or_default();
        let held = |row: &Value| {
            row["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("held"))
        };
        if rows.len() == 3 && rows.iter().all(held) {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(
        rows.iter().all(|row| row["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("held until the workspace's permissions are updated"))
            && row["attempts"] == 0),
        "{rows:#?}"
    );

    // A non-admin's click: only admins can, naming one.
    harness
        .click("T1", "UPLAIN", "upgrade_update_permissions", "plain")
        .await;
    let answer = harness.slack.wait_for_calls("/response/plain", 1).await;
    let text = message_text(&answer[0].json());
    assert!(text.contains("Only workspace admins"), "{text}");
    assert!(text.contains("<@UADMIN2>"), "{text}");

    // An admin's click: the permissions with reasons and Allow, bound to the workspace.
    harness
        .click("T1", "UADMIN2", "upgrade_update_permissions", "admin")
        .await;
    let answer = harness.slack.wait_for_calls("/response/admin", 1).await;
    let body = answer[0].json();
    let text = message_text(&body);
    assert!(text.contains("`links:write`"), "{text}");
    let allow = format!("{PUBLIC_URL}/slack/install?team=T1");
    assert!(body.to_string().contains(&allow), "{body}");
    assert!(
        harness.slack.calls_to("chat.postMessage").len() == 8,
        "nothing posted while held, nothing resent by the restart"
    );

    // Allow: Slack's consent with every scope.
    harness
        .oauth(
            approval("T1", "xoxb-t1-new", &required_scopes().join(","), "UADMIN2"),
            &allow,
        )
        .await;
    // Every campaign message is edited to say the app is up to date.
    let updates = harness.slack.wait_for_calls("chat.update", 8).await;
    assert!(
        updates
            .iter()
            .all(|u| message_text(&u.json()).contains("up to date"))
    );
    assert!(
        updates.iter().all(|u| u.json()["channel"]
            .as_str()
            .is_some_and(|c| c.starts_with('D'))),
        "edited in the DM channels Slack answered, not at the user ids"
    );
    // One digest per channel.
    let posts = harness.slack.wait_for_calls("chat.postMessage", 10).await;
    let mut digests: Vec<(String, String)> = posts
        .iter()
        .map(RecordedCall::json)
        .filter(|p| p["channel"].as_str().is_some_and(|c| c.starts_with('C')))
        .map(|p| {
            (
                p["channel"].as_str().unwrap_or("").to_string(),
                message_text(&p),
            )
        })
        .collect();
    digests.sort();
    assert_eq!(digests.len(), 2, "{digests:#?}");
    assert!(
        digests[0].1.contains("2 notifications were held"),
        "{}",
        digests[0].1
    );
    assert!(digests[0].1.contains("PR #2 merged"));
    assert!(digests[1].1.contains("1 notification was held"));

    // Login works at once; commands answer; no reminder follows.
    let login = harness.command("T1", "UNEW", "login").await;
    assert!(!login.contains("needs to update"), "{login}");
    let status = harness.command("T1", "UNEW", "status").await;
    assert!(!status.contains("Permission update"), "{status}");
    // The new features are on at once: `notify` is in the help and answers (an unlinked
    // person is asked to connect first).
    let help = harness.command("T1", "UNEW", "help").await;
    assert!(help.contains("/bitbucket notify"), "{help}");
    let notify = harness.command("T1", "UNEW", "notify").await;
    assert!(!notify.contains("`im:write`"), "{notify}");
    harness.advance_days(3).await;
    harness.settle().await;
    assert_eq!(harness.dms().len(), 8, "no reminder after the upgrade");
    assert_eq!(harness.slack.calls_to("chat.update").len(), 8);
    harness.stop().await;
}

#[tokio::test]
async fn two_workspaces_in_different_phases_at_once() {
    let fake = oauth_fake().await;
    // The deadline has passed already.
    let harness = start(campaign_on(&fake, 22)).await;
    harness
        .install("T1", "xoxb-t1", &outdated_scopes(), "U1ADMIN")
        .await;
    harness
        .install("T2", "xoxb-t2", &required_scopes().join(","), "U2ADMIN")
        .await;
    let dms = harness.wait_for_dms(1).await;
    assert_eq!(dms[0]["channel"], "U1ADMIN");
    let refused = harness.command("T1", "UX", "subscriptions").await;
    assert!(refused.contains("is paused"), "{refused}");
    let served = harness.command("T2", "UX", "subscriptions").await;
    assert!(!served.contains("is paused"), "{served}");
    let upgrade = harness.command("T2", "U2ADMIN", "upgrade").await;
    assert!(upgrade.contains("up to date"), "{upgrade}");
    let upgrade = harness.command("T1", "U1ADMIN", "upgrade").await;
    assert!(upgrade.contains("`links:read`"), "{upgrade}");

    // A day later T1 is reminded; T2 never hears of it.
    harness.advance_days(1).await;
    let dms = harness.wait_for_dms(2).await;
    assert!(dms.iter().all(|dm| dm["channel"] == "U1ADMIN"));

    // `upgrade-status` through the running daemon's admin socket.
    harness.settle().await;
    let answer = admin_request(
        &harness.data().join("admin.sock"),
        r#"{"command":"upgrade_status"}"#,
    )
    .await;
    let campaigns = answer["campaigns"].as_array().expect("campaigns").clone();
    let phase = |team: &str| {
        campaigns
            .iter()
            .find(|row| row["team_id"] == team)
            .map(|row| row["phase"].clone())
    };
    assert_eq!(phase("T1"), Some(json!("overdue")), "{answer}");
    assert_eq!(phase("T2"), Some(json!("not_needed")), "{answer}");
    let t1 = campaigns
        .iter()
        .find(|row| row["team_id"] == "T1")
        .expect("T1");
    assert_eq!(t1["notifications_held"], true);
    assert_eq!(t1["missing_scopes"], json!(["links:read", "links:write"]));
    assert!(t1["next_reminder_at"].is_string(), "{t1}");
    harness.stop().await;
}

async fn admin_request(socket: &Path, request: &str) -> Value {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut stream = tokio::net::UnixStream::connect(socket)
        .await
        .expect("the admin socket answers");
    stream
        .write_all(format!("{request}\n").as_bytes())
        .await
        .expect("send");
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .await
        .expect("an answer");
    serde_json::from_str(&line).expect("JSON")
}

/// Stops and starts the daemon on the same store and clock, then waits for the driver's
/// first pass: whatever a restart would resend has been sent by then.
async fn restart(harness: Daemon) -> Daemon {
    restart_with(harness, Vec::new()).await
}

/// [`restart`], writing `held` into the outbox while the daemon is stopped, as its
/// router would have.
async fn restart_with(harness: Daemon, held: Vec<NewDelivery>) -> Daemon {
    let stopped = harness.stop().await;
    if !held.is_empty() {
        let store = open_store(&stopped.data()).await;
        store
            .deliveries
            .enqueue(held, stopped.manual_clock().now())
            .await
            .expect("enqueue");
    }
    let harness = start(stopped).await;
    harness.settle().await;
    harness
}

#[tokio::test]
async fn a_restart_in_every_phase_sends_nothing_twice() {
    let fake = oauth_fake().await;
    let mut harness = start(campaign_on(&fake, 0)).await;
    harness
        .install("T1", "xoxb-t1-old", &outdated_scopes(), "U0INSTALLER")
        .await;
    harness.settle().await;
    let mut told = vec!["will need updated permissions soon"];
    // Announced, Available (after its message and after a reminder), Overdue.
    for (days, said) in [
        (14, "upgrade_update_permissions"),
        (1, "Reminder"),
        (6, "is paused until its permissions are updated"),
        (0, "is paused until its permissions are updated"),
    ] {
        assert_eq!(harness.dms().len(), told.len(), "{:#?}", harness.dm_texts());
        harness = restart(harness).await;
        assert_eq!(
            harness.dms().len(),
            told.len(),
            "the restart resent: {:#?}",
            harness.dm_texts()
        );
        if days == 0 {
            break;
        }
        harness.advance_days(days).await;
        harness.settle().await;
        told.push(said);
        let dms = harness.dms();
        assert_eq!(dms.len(), told.len(), "{:#?}", harness.dm_texts());
        let last = dms.last().expect("a DM").to_string();
        assert!(last.contains(said), "{last}");
    }

    // Upgraded: every DM edited once, and a restart edits and sends nothing more.
    harness.upgrade("T1", "xoxb-t1-new", "U0INSTALLER").await;
    harness.settle().await;
    assert_eq!(harness.slack.calls_to("chat.update").len(), told.len());
    harness = restart(harness).await;
    harness.advance_days(5).await;
    harness.settle().await;
    assert_eq!(harness.dms().len(), told.len());
    assert_eq!(harness.slack.calls_to("chat.update").len(), told.len());
    harness.stop().await;
}

#[tokio::test]
async fn a_refused_login_nudges_the_admins_at_most_once_per_interval() {
    let fake = oauth_fake().await;
    // No dates: available at once, no deadline. This install also lacks
    // chat:write.public, which subscribing channels needs.
    let scopes: Vec<&str> = required_scopes()
        .into_iter()
        .filter(|scope| *scope != "chat:write.public")
        .collect();
    let harness = start(on(&fake, 0)).await;
    harness
        .install("T1", "xoxb-t1", &scopes.join(","), "U0INSTALLER")
        .await;
    harness.settle().await;
    let dms = harness.dms();
    assert_eq!(dms.len(), 1, "{:#?}", harness.dm_texts());
    assert!(dms[0].to_string().contains("upgrade_update_permissions"));

    // Refused at once, but the admin was just told: no nudge.
    let login = harness.command("T1", "UNEW", "login").await;
    assert!(
        login.contains("needs to update this app's permissions"),
        "{login}"
    );
    assert_eq!(harness.dms().len(), 1);

    // A day later the refusal nudges the admin, in place of the reminder.
    harness.clock.advance(SignedDuration::from_hours(24));
    let _ = harness.command("T1", "UNEW", "login").await;
    let dms = harness.dms();
    assert_eq!(dms.len(), 2, "{:#?}", harness.dm_texts());
    let nudge = message_text(&dms[1]);
    assert!(nudge.contains("<@UNEW> tried to connect"), "{nudge}");
    assert!(dms[1].to_string().contains("upgrade_update_permissions"));
    let _ = harness.command("T1", "USECOND", "login").await;
    harness.settle().await;
    assert_eq!(harness.dms().len(), 2, "never two inside the interval");
    harness.advance_days(1).await;
    harness.settle().await;
    let dms = harness.dms();
    assert_eq!(dms.len(), 3);
    assert!(message_text(&dms[2]).contains("Reminder"));

    // A feature whose scopes are missing is left out of the help and refused.
    let help = harness.command("T1", "UNEW", "help").await;
    assert!(!help.contains("/bitbucket subscribe"), "{help}");
    assert!(help.contains("/bitbucket unsubscribe"), "{help}");
    let refused = harness
        .command("T1", "UNEW", "subscribe acme/widgets")
        .await;
    assert!(refused.contains("`chat:write.public`"), "{refused}");
    assert!(refused.contains("/bitbucket upgrade"), "{refused}");
    assert!(refused.contains("<@U0INSTALLER>"), "{refused}");
    harness.stop().await;
}

#[tokio::test]
async fn a_configured_token_is_updated_by_reinstalling_and_check_again() {
    const BOT_TOKEN: &str = "xoxb-configured-upgrade-secret";
    let fake = Arc::new(FakeSlack::start().await);
    fake.add_workspace(
        BOT_TOKEN,
        FakeWorkspace::new("T1", "Acme", &outdated_scopes()),
    );
    fake.set_members("T1", &[("UOWNER", true), ("UPLAIN", false)]);
    let harness = start(
        on(&fake, 0)
            .bot_token(BOT_TOKEN)
            .set("upgrade.admins", "U0OPS"),
    )
    .await;
    harness.settle().await;
    let dms = harness.dms();
    let recipients: Vec<&str> = dms.iter().filter_map(|d| d["channel"].as_str()).collect();
    assert_eq!(
        recipients,
        vec!["UOWNER", "U0OPS"],
        "{:#?}",
        harness.dm_texts()
    );

    // The button explains the reinstall and offers Check again, not Allow.
    harness
        .click("T1", "UOWNER", "upgrade_update_permissions", "update")
        .await;
    let answer = harness.slack.wait_for_calls("/response/update", 1).await;
    let body = answer[0].json();
    assert!(
        message_text(&body).contains("Reinstall to Workspace"),
        "{body}"
    );
    assert!(body.to_string().contains("upgrade_check_again"), "{body}");
    assert!(!body.to_string().contains("/slack/install"), "{body}");

    // Check again before the reinstall: still missing.
    harness
        .click("T1", "UOWNER", "upgrade_check_again", "early")
        .await;
    let answer = harness.slack.wait_for_calls("/response/early", 1).await;
    let text = message_text(&answer[0].json());
    assert!(
        text.contains("Still missing: `links:read`, `links:write`"),
        "{text}"
    );

    // The admin reinstalls from the manifest (same token, new scopes), then checks again.
    fake.add_workspace(
        BOT_TOKEN,
        FakeWorkspace::new("T1", "Acme", &required_scopes().join(",")),
    );
    harness
        .click("T1", "UOWNER", "upgrade_check_again", "done")
        .await;
    let answer = harness.slack.wait_for_calls("/response/done", 1).await;
    let text = message_text(&answer[0].json());
    assert!(text.contains("up to date"), "{text}");
    harness.settle().await;
    let updates = harness.slack.calls_to("chat.update");
    assert_eq!(updates.len(), 2, "both DMs marked done");
    let login = harness.command("T1", "UNEW", "login").await;
    assert!(!login.contains("needs to update"), "{login}");
    harness.advance_days(3).await;
    harness.settle().await;
    assert_eq!(harness.dms().len(), 2, "nothing after the upgrade");
    harness.stop().await;
}

#[tokio::test]
async fn admins_are_looked_up_again_before_each_reminder() {
    let fake = oauth_fake().await;
    fake.set_members("T1", &[("UADMIN2", true)]);
    let harness = start(on(&fake, 0)).await;
    harness
        .install("T1", "xoxb-t1", &outdated_scopes(), "U0INSTALLER")
        .await;
    harness.settle().await;
    assert_eq!(harness.dms().len(), 2, "{:#?}", harness.dm_texts());

    // A new admin gets the message with the button, not a reminder.
    fake.set_members("T1", &[("UADMIN2", true), ("UADMIN3", true)]);
    harness.advance_days(1).await;
    harness.settle().await;
    let dms = harness.dms();
    let told: Vec<(String, bool)> = dms[2..]
        .iter()
        .map(|dm| {
            (
                dm["channel"].as_str().unwrap_or("").to_string(),
                message_text(dm).contains("Reminder"),
            )
        })
        .collect();
    assert_eq!(
        told,
        vec![
            ("UADMIN2".to_string(), true),
            ("UADMIN3".to_string(), false),
            ("U0INSTALLER".to_string(), true),
        ]
    );

    // A former admin hears no more.
    fake.set_members("T1", &[("UADMIN3", true)]);
    harness.advance_days(1).await;
    harness.settle().await;
    let recipients: Vec<String> = harness.dms()[5..]
        .iter()
        .map(|dm| dm["channel"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(recipients, vec!["UADMIN3", "U0INSTALLER"]);
    harness.stop().await;
}

/// The real binary, killed with SIGKILL right after its first campaign DM reached Slack:
/// the restarted daemon sends nothing again (the DM was recorded before it was posted).
#[tokio::test]
async fn a_kill_9_after_a_campaign_dm_sends_nothing_twice() {
    use support::daemon::{Daemon, write_config};
    const BOT_TOKEN: &str = "xoxb-kill9-upgrade-secret";
    let fake = FakeSlack::start().await;
    fake.add_workspace(
        BOT_TOKEN,
        FakeWorkspace::new("T1", "Acme", &outdated_scopes()),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        &Settings::base(&fake, &dir.path().join("data"))
            .set("slack.app_token", APP_TOKEN)
            .set("slack.bot_token", BOT_TOKEN)
            .set("upgrade.admins", "U0OPS")
            .toml(),
    );
    let mut daemon = Daemon::spawn(&["run", "--config", &config], &[]);
    let _socket = fake.accept().await;
    let dms = fake.wait_for_calls("chat.postMessage", 1).await;
    assert_eq!(dms[0].json()["channel"], "U0OPS");
    daemon.signal("KILL");
    daemon.wait_exit().await;

    let mut daemon = Daemon::spawn(&["run", "--config", &config], &[]);
    let _socket = fake.accept().await;
    daemon
        .wait_for_log("permission-upgrade campaigns checked at startup")
        .await;
    let line = daemon.wait_for_log("running=1").await;
    assert!(line.contains("permission-upgrade"), "{line}");
    assert_eq!(
        fake.calls_to("chat.postMessage").len(),
        1,
        "{:#?}",
        daemon.log()
    );
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit().await, 0);
}

#[tokio::test]
async fn a_rate_limited_campaign_dm_is_sent_after_retry_after() {
    let fake = oauth_fake().await;
    let harness = start(on(&fake, 0)).await;
    fake.rate_limit_posts(1, 0);
    harness
        .install("T1", "xoxb-t1", &outdated_scopes(), "U0INSTALLER")
        .await;
    harness.settle().await;
    // The 429 and its retry: the same message to the same admin, posted once.
    let dms = harness.dms();
    assert_eq!(dms.len(), 2, "{:#?}", harness.dm_texts());
    assert_eq!(dms[0], dms[1]);
    // The retry's ts was recorded: the upgrade edits the message.
    harness.upgrade("T1", "xoxb-t1-new", "U0INSTALLER").await;
    harness.settle().await;
    assert_eq!(harness.slack.calls_to("chat.update").len(), 1);
    harness.stop().await;
}

#[tokio::test]
async fn one_workspace_upgrading_releases_only_its_own_held_notifications() {
    let fake = oauth_fake().await;
    let harness = start(campaign_on(&fake, 22)).await;
    for (team, admin) in [("T1", "U1ADMIN"), ("T2", "U2ADMIN")] {
        harness
            .install(team, &format!("xoxb-{team}"), &outdated_scopes(), admin)
            .await;
    }
    harness.settle().await;
    assert_eq!(harness.dms().len(), 2, "{:#?}", harness.dm_texts());

    let harness = restart_with(
        harness,
        vec![
            held("T1", "C1", "T1 pull request"),
            held("T2", "C2", "T2 pull request"),
            held("T2", "C2", "T2 pipeline"),
        ],
    )
    .await;

    // T2 upgrades: its two notifications arrive as one digest, its admin's DM is edited.
    harness.upgrade("T2", "xoxb-T2-new", "U2ADMIN").await;
    harness.settle().await;
    let posts = harness.slack.wait_for_calls("chat.postMessage", 3).await;
    let channel_posts: Vec<Value> = posts
        .iter()
        .map(RecordedCall::json)
        .filter(|post| post["channel"].as_str().is_some_and(|c| c.starts_with('C')))
        .collect();
    assert_eq!(channel_posts.len(), 1, "{channel_posts:#?}");
    assert_eq!(channel_posts[0]["channel"], "C2");
    assert!(message_text(&channel_posts[0]).contains("2 notifications were held"));
    let updates = harness.slack.calls_to("chat.update");
    assert_eq!(updates.len(), 1);
    assert_eq!(
        updates[0].json()["channel"],
        "DU2ADMIN",
        "edited in the DM channel"
    );

    // T1 is still paused and its notification still held.
    let refused = harness.command("T1", "UX", "subscriptions").await;
    assert!(refused.contains("is paused"), "{refused}");
    let served = harness.command("T2", "UX", "subscriptions").await;
    assert!(!served.contains("is paused"), "{served}");
    let answer = admin_request(
        &harness.data().join("admin.sock"),
        r#"{"command":"upgrade_status"}"#,
    )
    .await;
    let rows = answer["campaigns"].as_array().cloned().unwrap_or_default();
    let row = |team: &str| rows.iter().find(|row| row["team_id"] == team).cloned();
    let t1 = row("T1").expect("T1");
    let t2 = row("T2").expect("T2");
    assert_eq!(
        (t1["phase"].clone(), t1["notifications_held"].clone()),
        (json!("overdue"), json!(true))
    );
    assert_eq!(
        (t2["phase"].clone(), t2["notifications_held"].clone()),
        (json!("upgraded"), json!(false))
    );
    let address = harness.running.http_address.to_string();
    let (status, metrics) = support::daemon::http_get(&address, "/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "bitbucket_slack_campaign_phase{phase=\"overdue\"} 1",
        "bitbucket_slack_campaign_phase{phase=\"upgraded\"} 1",
        "bitbucket_slack_campaign_phase{phase=\"available\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    harness.stop().await;
}
