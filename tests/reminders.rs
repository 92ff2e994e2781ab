//! End to end: review reminders and the personal morning digest against both fakes, on a
//! manual clock. A channel's reminder is posted at its slot with the pull requests that
//! wait for review (a draft and an approved one left out), nothing in a channel where
//! none waits, and a restart at the slot posts nothing twice; a slot the daemon was down
//! through is sent on start within `reminders.grace_secs` and skipped beyond it;
//! `remind list|off`, bad input and the defaults (the setter's Slack time zone); before
//! the permission upgrade `remind` is refused naming the admins, right after it works
//! with no restart; the digest reaches a linked person at 09:00 in their time zone.
//! Waits are for calls and for the reminders' pass; nothing sleeps.

mod support;

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use support::blocks::message_text;
use support::fake_bitbucket::{FakeAccount, FakeBitbucket, uuid_of};
use support::fake_slack::{FakeSlack, FakeWorkspace};
use support::harness::{Harness, HarnessBuilder, T0, TEAM};

use bitbucket_slack::upgrade::required_scopes;

const REPO: &str = "acme/api";
const QUIET: &str = "acme/quiet";
const BOT: &str = "xoxb-reminders-bot";

/// T0 is Friday 15 January 2027, 08:00 UTC.
fn at_t0_plus(hours: i64, minutes: i64) -> Timestamp {
    Timestamp::from_second(T0 + hours * 3600 + minutes * 60).expect("valid")
}

/// acme/api: #1 waits for Grace, #2 is a draft, #3 was approved by its reviewer.
/// acme/quiet: nothing open.
async fn bitbucket() -> FakeBitbucket {
    let bitbucket = FakeBitbucket::start().await;
    bitbucket.add_repository(REPO);
    bitbucket.add_repository(QUIET);
    bitbucket.push(REPO, "feature/retries", &["Retry with backoff"]);
    bitbucket.push(REPO, "feature/draft", &["Not yet"]);
    bitbucket.push(REPO, "feature/done", &["Done"]);
    bitbucket.open_pull_request_with_reviewers(
        REPO,
        "feature/retries",
        "Add retries",
        "ada",
        &["grace"],
    );
    bitbucket.open_draft_pull_request(REPO, "feature/draft", "Draft work", "ada");
    let done = bitbucket.open_pull_request_with_reviewers(
        REPO,
        "feature/done",
        "All done",
        "ada",
        &["bob"],
    );
    bitbucket.approve(REPO, done, "bob");
    bitbucket
}

fn builder(bitbucket: FakeBitbucket) -> HarnessBuilder {
    Harness::builder()
        .installed_bot(BOT)
        .bitbucket(bitbucket)
        .bitbucket_logins("rm-consumer", "rm-consumer-secret")
        .set("bitbucket.poll_interval_secs", "3600")
}

async fn reply(harness: &Harness, channel: &str, user: &str, text: &str) -> String {
    let payload = harness.command(TEAM, channel, user, text).await;
    assert!(!payload.is_null(), "{text}: answered in the ack");
    message_text(&payload)
}

/// Every message posted to `channel` so far.
/// The digests posted to `user` so far.
fn digests_to(slack: &FakeSlack, user: &str) -> Vec<String> {
    slack
        .posts_to(user)
        .iter()
        .map(message_text)
        .filter(|text| text.contains("waiting for your review"))
        .collect()
}

/// Waits until `channel` has `count` messages; returns them.
async fn wait_posts(slack: &FakeSlack, channel: &str, count: usize) -> Vec<Value> {
    let mut total = count;
    loop {
        slack.wait_for_calls("chat.postMessage", total).await;
        let found = slack.posts_to(channel);
        if found.len() >= count {
            return found;
        }
        total += 1;
    }
}

/// Nothing waits in the outbox: every reminder queued was posted, none is pending.
fn outbox_is_empty(harness: &Harness) -> bool {
    harness
        .running
        .store()
        .deliveries
        .queued_channels()
        .expect("read the outbox")
        .is_empty()
}

async fn drained(harness: &Harness) {
    while !outbox_is_empty(harness) {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reminder_is_posted_once_at_its_slot_with_what_waits_and_a_restart_sends_nothing_twice() {
    let harness = builder(bitbucket().await).start().await;
    let slack = harness.slack.clone();
    for (channel, target) in [("C1", REPO), ("C2", QUIET)] {
        let subscribed = reply(&harness, channel, "UADA", &format!("subscribe {target}")).await;
        assert!(
            subscribed.contains("Subscribed this channel"),
            "{subscribed}"
        );
        let set = reply(&harness, channel, "UADA", "remind at 09:00 UTC").await;
        assert!(
            set.contains("Review reminders for this channel: 09:00 on weekdays (UTC). The first one: Fri 15 Jan 09:00."),
            "{set}"
        );
    }
    let listed = reply(&harness, "C1", "UADA", "remind list").await;
    assert!(
        listed.contains("09:00 on weekdays (UTC), set by <@UADA>"),
        "{listed}"
    );
    let before = slack.posts_to("C1").len();

    // 08:59: not yet.
    harness.clock.set(at_t0_plus(0, 59));
    harness.running.settle_reminders().await;
    assert!(outbox_is_empty(&harness));
    assert_eq!(slack.posts_to("C1").len(), before);

    // 09:00: the reminder, with the one pull request that waits.
    harness.clock.set(at_t0_plus(1, 0));
    harness.running.settle_reminders().await;
    let posts = wait_posts(&slack, "C1", before + 1).await;
    let text = message_text(&posts[before]);
    assert!(
        text.contains("1 pull request is waiting for review"),
        "{text}"
    );
    assert!(text.contains("#1 Add retries"), "{text}");
    assert!(
        text.contains("reviewers: grace") || text.contains("reviewers: Grace"),
        "{text}"
    );
    assert!(!text.contains("Draft work"), "drafts never wait: {text}");
    assert!(
        !text.contains("All done"),
        "approved by everyone asked: {text}"
    );
    assert!(text.contains("days"), "its age: {text}");
    drained(&harness).await;
    assert!(
        slack
            .posts_to("C2")
            .iter()
            .all(|post| !message_text(post).contains("waiting for review")),
        "nothing waits in acme/quiet: nothing posted"
    );

    // A restart at the slot: the slot is recorded with its message, never sent again.
    let posted = slack.posts_to("C1").len();
    let builder = harness.stop().await;
    let harness = builder.start().await;
    harness.running.settle_reminders().await;
    harness.clock.set(at_t0_plus(1, 30));
    harness.running.settle_reminders().await;
    assert!(outbox_is_empty(&harness), "nothing queued again");
    assert_eq!(slack.posts_to("C1").len(), posted);
    let reminder = harness
        .running
        .store()
        .reminders
        .channel(TEAM, "C1")
        .expect("read")
        .expect("still set");
    assert_eq!(reminder.last_slot, at_t0_plus(1, 0));
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_missed_while_down_is_sent_within_the_grace_window_and_skipped_beyond_it() {
    let harness = builder(bitbucket().await).start().await;
    let slack = harness.slack.clone();
    let subscribed = reply(&harness, "C1", "UADA", &format!("subscribe {REPO}")).await;
    assert!(
        subscribed.contains("Subscribed this channel"),
        "{subscribed}"
    );
    let set = reply(&harness, "C1", "UADA", "remind at 09:00 weekdays UTC").await;
    assert!(set.contains("09:00 on weekdays (UTC)"), "{set}");
    let before = slack.posts_to("C1").len();

    // Down through Friday's 09:00; started at 10:30, within the two hours of grace.
    let builder = harness.stop().await;
    let clock = builder.manual_clock().clone();
    clock.set(at_t0_plus(2, 30));
    let harness = builder.start().await;
    harness.running.settle_reminders().await;
    let posts = wait_posts(&slack, "C1", before + 1).await;
    assert!(
        message_text(&posts[before]).contains("1 pull request is waiting for review"),
        "{}",
        message_text(&posts[before])
    );
    drained(&harness).await;
    let posted = slack.posts_to("C1").len();

    // Down through the weekend and Monday's 09:00; started at 11:30 Monday: skipped.
    let builder = harness.stop().await;
    let monday_slot = at_t0_plus(3 * 24 + 1, 0);
    builder.manual_clock().set(
        monday_slot
            .checked_add(SignedDuration::from_mins(150))
            .expect("valid"),
    );
    let harness = builder.start().await;
    harness.running.settle_reminders().await;
    assert!(outbox_is_empty(&harness), "nothing queued");
    assert_eq!(slack.posts_to("C1").len(), posted, "nothing posted");
    let reminder = harness
        .running
        .store()
        .reminders
        .channel(TEAM, "C1")
        .expect("read")
        .expect("still set");
    assert_eq!(
        reminder.last_slot, monday_slot,
        "the skipped slot is recorded"
    );
    harness.stop().await;
}

/// Every scope but `im:write`: review reminders are not allowed yet.
fn without_im_write() -> String {
    required_scopes()
        .into_iter()
        .filter(|scope| *scope != "im:write")
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remind_is_refused_before_the_upgrade_and_then_sets_lists_replaces_and_turns_off() {
    let token = "xoxb-old-bot";
    let harness = Harness::builder()
        .bot_token(token)
        .workspace(
            token,
            FakeWorkspace::new(TEAM, "Fake Team", &without_im_write()),
        )
        .set("upgrade.admins", "UADMIN")
        .start()
        .await;
    let slack = harness.slack.clone();
    slack.set_user_time_zone("UADA", "Europe/Paris");

    let refused = reply(&harness, "C1", "UADA", "remind").await;
    assert!(refused.contains("review reminders"), "{refused}");
    assert!(refused.contains("`im:write`"), "{refused}");
    assert!(refused.contains("<@UADMIN>"), "names the admins: {refused}");
    let help = reply(&harness, "C1", "UADA", "help").await;
    assert!(!help.contains("/bitbucket remind"), "{help}");

    // The admin updates the permissions; the next status check sees them, no restart.
    slack.add_workspace(
        token,
        FakeWorkspace::new(TEAM, "Fake Team", &required_scopes().join(",")),
    );
    let status = reply(&harness, "C1", "UADA", "status").await;
    assert!(!status.contains("im:write"), "{status}");

    // Bad input: says what was wrong and the form; nothing stored.
    for (text, wrong) in [
        ("remind at 25:00", "`25:00` is not a time of day"),
        ("remind Mars/Olympus", "`Mars/Olympus` is not a time zone"),
        ("remind daily UTC extra", "`extra` is one word too many"),
    ] {
        let answer = reply(&harness, "C1", "UADA", text).await;
        assert!(answer.contains(wrong), "{text}: {answer}");
        assert!(
            answer.contains("Usage: `/bitbucket remind"),
            "{text}: {answer}"
        );
    }
    let none = reply(&harness, "C1", "UADA", "remind list").await;
    assert!(
        none.contains("This channel has no review reminder"),
        "{none}"
    );

    // The defaults: 09:00 on weekdays, in the setter's Slack time zone.
    let set = reply(&harness, "C1", "UADA", "remind").await;
    assert!(
        set.contains("Review reminders for this channel: 09:00 on weekdays (Europe/Paris)"),
        "{set}"
    );
    assert!(set.contains("no active subscription yet"), "{set}");
    let replaced = reply(
        &harness,
        "C1",
        "UADA",
        "remind at 16:30 daily America/New_York",
    )
    .await;
    assert!(
        replaced.contains("16:30 every day (America/New_York)"),
        "{replaced}"
    );
    assert!(
        replaced.contains("This replaces the previous reminder (09:00 on weekdays (Europe/Paris))"),
        "{replaced}"
    );
    let listed = reply(&harness, "C1", "UADA", "remind list").await;
    assert!(
        listed.contains("16:30 every day (America/New_York)"),
        "{listed}"
    );
    let other = reply(&harness, "C2", "UADA", "remind list").await;
    assert!(
        other.contains("no review reminder"),
        "one reminder per channel: {other}"
    );
    let off = reply(&harness, "C1", "UADA", "remind off").await;
    assert!(
        off.contains("Review reminders for this channel are off"),
        "{off}"
    );
    let again = reply(&harness, "C1", "UADA", "remind off").await;
    assert!(again.contains("had no review reminder"), "{again}");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_digest_reaches_a_linked_reviewer_at_nine_in_their_time_zone() {
    let harness = builder(bitbucket().await).start().await;
    let slack = harness.slack.clone();
    slack.set_user_time_zone("UGRACE", "Europe/London");
    let subscribed = reply(&harness, "C1", "UADA", &format!("subscribe {REPO}")).await;
    assert!(
        subscribed.contains("Subscribed this channel"),
        "{subscribed}"
    );
    harness
        .link(
            "UGRACE",
            FakeAccount::new(&uuid_of("grace"), "Grace Hopper", "grace"),
        )
        .await;
    harness.bitbucket().set_readable(&uuid_of("grace"), &[REPO]);
    let on = reply(&harness, "C1", "UGRACE", "notify on digest").await;
    assert!(on.contains("digest"), "{on}");

    // 08:59 in London (UTC in January): nothing yet.
    harness.clock.set(at_t0_plus(0, 59));
    harness.running.settle_reminders().await;
    assert!(outbox_is_empty(&harness));
    assert!(digests_to(&slack, "UGRACE").is_empty());
    let before = slack.posts_to("UGRACE").len();

    harness.clock.set(at_t0_plus(1, 0));
    harness.running.settle_reminders().await;
    let dms = wait_posts(&slack, "UGRACE", before + 1).await;
    let text = message_text(&dms[before]);
    assert!(
        text.contains("1 pull request is waiting for your review"),
        "{text}"
    );
    assert!(text.contains("#1 Add retries"), "{text}");
    drained(&harness).await;

    // Once per slot; muted people get none.
    harness.clock.set(at_t0_plus(1, 30));
    harness.running.settle_reminders().await;
    assert!(outbox_is_empty(&harness));
    assert_eq!(digests_to(&slack, "UGRACE").len(), 1);
    let muted = reply(&harness, "C1", "UGRACE", "notify mute 1w").await;
    assert!(muted.contains("mute") || muted.contains("Mute"), "{muted}");
    harness.clock.set(at_t0_plus(3 * 24 + 1, 0));
    harness.running.settle_reminders().await;
    assert!(outbox_is_empty(&harness));
    assert_eq!(
        digests_to(&slack, "UGRACE").len(),
        1,
        "a mute holds the digest"
    );
    harness.stop().await;
}

/// The real binary, killed with SIGKILL right after its reminder reached Slack: the
/// restarted daemon's first pass finds the slot handled (recorded in the transaction that
/// queued the message) and queues nothing again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_after_a_reminder_was_posted_queues_nothing_twice() {
    use bitbucket_slack::bitbucket::Target;
    use bitbucket_slack::notify::reminders::{Days, Schedule};
    use bitbucket_slack::notify::subscription::{Features, Filters, Subscription};
    use bitbucket_slack::store::{ChannelReminder, Store};
    use support::daemon::{Daemon, write_config};
    use support::fake_bitbucket::TOKEN;
    use support::harness::{APP_TOKEN, Settings};

    let slack = FakeSlack::start().await;
    slack.add_workspace(
        BOT,
        FakeWorkspace::new(TEAM, "Fake Team", &required_scopes().join(",")),
    );
    let bitbucket = bitbucket().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = write_config(
        dir.path(),
        &Settings::base(&slack, &data)
            .set("slack.app_token", APP_TOKEN)
            .set("slack.bot_token", BOT)
            .set("bitbucket.api_url", bitbucket.api_url())
            .set("bitbucket.oauth_url", bitbucket.oauth_url())
            .set("bitbucket.token", TOKEN)
            .set("bitbucket.poll_interval_secs", "3600")
            .set("log.level", "info,bitbucket_slack::app::reminders=debug")
            .toml(),
    );
    // A first run installs the bot and creates the store.
    let mut daemon = Daemon::spawn(&["run", "--config", &config], &[]);
    let _socket = slack.accept().await;
    daemon.wait_for_log("review reminders checked").await;
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit().await, 0);

    // C1 follows acme/api and has a daily reminder whose slot is this very minute (UTC),
    // last handled a day ago: due at once, well inside the grace window.
    let now = Timestamp::now();
    let utc = now.to_zoned(jiff::tz::TimeZone::UTC);
    let day_ago = now - SignedDuration::from_hours(24);
    {
        let store = Store::open(&data).expect("the stopped daemon's store opens");
        store
            .subscriptions
            .put(&Subscription {
                team_id: TEAM.into(),
                channel_id: "C1".into(),
                target: Target::Repository(REPO.into()),
                features: Features::defaults(),
                filters: Filters::default(),
                main_branch: Some("main".into()),
                created_by: "UADA".into(),
                created_at: day_ago,
                paused: None,
                private: Some(false),
                coverage: Default::default(),
            })
            .await
            .expect("subscribe");
        store
            .reminders
            .set_channel(&ChannelReminder {
                team_id: TEAM.into(),
                channel_id: "C1".into(),
                schedule: Schedule {
                    hour: utc.hour(),
                    minute: utc.minute(),
                    days: Days::Daily,
                    zone: "UTC".into(),
                },
                set_by: "UADA".into(),
                set_at: day_ago,
                last_slot: day_ago,
            })
            .await
            .expect("remind");
    }

    let mut daemon = Daemon::spawn(&["run", "--config", &config], &[]);
    let _socket = slack.accept().await;
    let posts = wait_posts(&slack, "C1", 1).await;
    assert!(
        message_text(&posts[0]).contains("1 pull request is waiting for review"),
        "{}",
        posts[0]
    );
    daemon.signal("KILL");
    daemon.wait_exit().await;

    let mut daemon = Daemon::spawn(&["run", "--config", &config], &[]);
    let _socket = slack.accept().await;
    daemon.wait_for_log("review reminders checked").await;
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit().await, 0);
    assert_eq!(slack.posts_to("C1").len(), 1, "{:#?}", daemon.log());
    let store = Store::open(&data).expect("the stopped daemon's store opens");
    let reminder = store
        .reminders
        .channels()
        .expect("read reminders")
        .into_iter()
        .find(|reminder| reminder.channel_id == "C1")
        .expect("C1's reminder");
    assert!(
        reminder.last_slot > day_ago && reminder.last_slot <= now,
        "the slot was recorded: {}",
        reminder.last_slot
    );
    let queued = store.deliveries.queued_channels().expect("read the outbox");
    assert!(queued.is_empty(), "nothing queued again: {queued:?}");
}
