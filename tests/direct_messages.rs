//! End to end: a direct message to the app is answered once with the help and a link to
//! the Home tab; Slack's retry of the same event, the bot's own message and other bots'
//! messages get no answer; before the permission upgrade (no `im:history`) nothing is
//! answered, and right after it (no restart) the answer comes. Waits are for calls;
//! nothing sleeps.

mod support;

use bitbucket_slack::upgrade::required_scopes;
use serde_json::{Value, json};
use support::blocks::message_text;
use support::fake_slack::FakeWorkspace;
use support::harness::{Harness, TEAM, envelope};

fn message_im(user: &str, text: &str, ts: &str, bot_id: Option<&str>) -> Value {
    let mut event = json!({
        "type": "message", "channel_type": "im", "channel": "D0ADA",
        "user": user, "text": text, "ts": ts, "event_ts": ts,
    });
    if let Some(bot_id) = bot_id {
        event["bot_id"] = json!(bot_id);
    }
    event
}

/// Sends `event` as the events_api envelope `envelope_id` with event id `event_id`, and
/// waits for its ack.
async fn send(harness: &Harness, envelope_id: &str, event_id: &str, event: Value) {
    harness
        .socket
        .send_json(&envelope(
            envelope_id,
            "events_api",
            false,
            json!({
                "team_id": TEAM, "api_app_id": "A0BITBUCKET", "type": "event_callback",
                "event_id": event_id, "event_time": 1_800_000_000, "event": event
            }),
        ))
        .await;
    harness.socket.next_ack().await;
}

/// The answers posted in the DM channel so far, once `count` chat.postMessage calls came.
async fn answers(harness: &Harness, count: usize) -> Vec<Value> {
    harness
        .slack
        .wait_for_calls("chat.postMessage", count)
        .await
        .iter()
        .map(|call| call.json())
        .filter(|post| post["channel"] == "D0ADA")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_message_is_answered_once_with_help_and_the_home_link() {
    let harness = Harness::builder().installed_bot("xoxb-dm").start().await;

    send(
        &harness,
        "env-1",
        "Ev1",
        message_im("UADA", "hello?", "1.1", None),
    )
    .await;
    let posted = answers(&harness, 1).await;
    assert_eq!(posted.len(), 1);
    let text = message_text(&posted[0]);
    assert!(text.contains("do not read messages"), "{text}");
    assert!(
        text.contains(&format!(
            "<slack://app?team={TEAM}&id=A0BITBUCKET&tab=home|Home tab>"
        )),
        "{text}"
    );
    assert!(text.contains("/bitbucket subscribe"), "{text}");

    // Slack's retry (same event, a new envelope), the bot's own post and another bot's:
    // nothing. A second message from a person is answered again, which shows the three
    // before it were handled (envelopes are handled in order per socket).
    send(
        &harness,
        "env-2",
        "Ev1",
        message_im("UADA", "hello?", "1.1", None),
    )
    .await;
    let bot_user = format!("U{TEAM}BOT");
    send(
        &harness,
        "env-3",
        "Ev2",
        message_im(&bot_user, "help", "1.2", Some("BOURS")),
    )
    .await;
    send(
        &harness,
        "env-4",
        "Ev3",
        message_im("UOTHERBOT", "beep", "1.3", Some("BOTHER")),
    )
    .await;
    send(
        &harness,
        "env-5",
        "Ev4",
        message_im("UADA", "thanks", "1.4", None),
    )
    .await;
    let posted = answers(&harness, 2).await;
    assert_eq!(posted.len(), 2, "{posted:?}");
    assert_eq!(harness.slack.calls_to("chat.postMessage").len(), 2);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_messages_are_answered_right_after_the_upgrade() {
    let token = "xoxb-dm-old";
    let without_im_history: String = required_scopes()
        .into_iter()
        .filter(|scope| *scope != "im:history")
        .collect::<Vec<_>>()
        .join(",");
    let harness = Harness::builder()
        .bot_token(token)
        .workspace(
            token,
            FakeWorkspace::new(TEAM, "Fake Team", &without_im_history),
        )
        .start()
        .await;
    send(
        &harness,
        "env-1",
        "Ev1",
        message_im("UADA", "hi", "2.1", None),
    )
    .await;
    let status = harness.command(TEAM, "C1", "UADA", "status").await;
    assert!(status.to_string().contains("im:history"), "{status}");
    assert!(
        harness
            .slack
            .calls_to("chat.postMessage")
            .iter()
            .all(|call| call.json()["channel"] != "D0ADA"),
        "no answer before the upgrade"
    );

    // The admin updates the permissions; the next status check records them.
    harness.slack.add_workspace(
        token,
        FakeWorkspace::new(TEAM, "Fake Team", &required_scopes().join(",")),
    );
    let status = harness.command(TEAM, "C1", "UADA", "status").await;
    assert!(!status.to_string().contains("im:history"), "{status}");
    let before = harness.slack.calls_to("chat.postMessage").len();
    send(
        &harness,
        "env-2",
        "Ev2",
        message_im("UADA", "hi again", "2.2", None),
    )
    .await;
    let posted = answers(&harness, before + 1).await;
    assert_eq!(posted.len(), 1, "{posted:?}");
    harness.stop().await;
}
