//! The outbox's layout, migration and park decisions, against a real store.

use super::*;
use crate::message::Message;

fn delivery(id: u64, channel: &str, text: &str) -> PendingDelivery {
    PendingDelivery {
        id,
        team_id: "T1".into(),
        channel_id: channel.into(),
        activity_id: format!("a{id}"),
        notification: Notification {
            message: Message::text(text),
            thread_key: None,
            parent_update: None,
        },
        attempts: 0,
        not_before: Timestamp::UNIX_EPOCH,
        last_error: None,
        in_flight: None,
        parked: None,
        uncertain: None,
    }
}

#[tokio::test]
async fn a_schema_1_outbox_is_migrated_into_channel_queues() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = sled::open(dir.path()).expect("sled");
        let meta = db.open_tree("meta").expect("meta");
        super::super::write_version(&crate::store::kv::Tree::Sled(meta), 1).expect("version");
        let outbox = db.open_tree("deliveries").expect("outbox");
        for (id, channel) in [(7u64, "C1"), (3, "C2"), (9, "C1")] {
            outbox
                .insert(id.to_be_bytes(), encode(&delivery(id, channel, "old")))
                .expect("insert");
        }
        db.flush().expect("flush");
    }
    let store = super::super::Store::open(dir.path()).expect("migrated");
    let deliveries = &store.deliveries;
    assert_eq!(deliveries.depth(), 3);
    let channels: Vec<ChannelKey> = deliveries
        .queued_channels()
        .expect("channels")
        .into_iter()
        .collect();
    assert_eq!(
        channels,
        [
            ("T1".to_string(), "C1".to_string()),
            ("T1".into(), "C2".into())
        ]
    );
    let head = deliveries.head("T1", "C1").expect("read").expect("queued");
    assert_eq!(head.id, 7, "oldest first");
    deliveries.complete(&head, None).await.expect("complete");
    assert_eq!(
        deliveries.head("T1", "C1").expect("read").map(|d| d.id),
        Some(9)
    );
    assert_eq!(
        deliveries.head("T1", "C2").expect("read").map(|d| d.id),
        Some(3)
    );
}

fn new_delivery(team: &str, channel: &str, text: &str) -> NewDelivery {
    NewDelivery {
        team_id: team.into(),
        channel_id: channel.into(),
        activity_id: format!("a-{text}"),
        notification: Notification {
            message: Message::text(text),
            thread_key: None,
            parent_update: None,
        },
    }
}

async fn installed(store: &super::super::Store, team: &str) {
    store
        .installations
        .upsert(super::super::installations::tests::sample(team, "xoxb-1"))
        .await
        .expect("install");
}

#[tokio::test]
async fn what_cannot_be_delivered_now_is_parked_when_queued_and_resumed_when_ready() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = super::super::Store::open(dir.path()).expect("store");
    let deliveries = &store.deliveries;
    installed(&store, "T1").await;
    store.campaigns.hold("T2").await.expect("hold");
    installed(&store, "T2").await;
    let ids = deliveries
        .enqueue(
            vec![
                new_delivery("T1", "C1", "ready"),
                new_delivery("T2", "C2", "held"),
                new_delivery("T3", "C3", "not installed"),
            ],
            Timestamp::UNIX_EPOCH,
        )
        .await
        .expect("enqueue");
    assert_eq!(deliveries.depth(), 1);
    let parked: Vec<(u64, Option<ParkReason>)> = deliveries
        .parked()
        .expect("parked")
        .iter()
        .map(|d| (d.id, d.parked))
        .collect();
    assert_eq!(
        parked,
        [
            (ids[1], Some(ParkReason::Held)),
            (ids[2], Some(ParkReason::NotInstalled))
        ]
    );
    assert_eq!(
        deliveries
            .take_enqueued_channels()
            .into_iter()
            .collect::<Vec<_>>(),
        [("T1".to_string(), "C1".to_string())],
        "parked ones are no work for the delivery loop"
    );
    assert_eq!(
        deliveries
            .resume_parked(Timestamp::UNIX_EPOCH)
            .await
            .expect("resume"),
        0
    );
    installed(&store, "T3").await;
    assert_eq!(
        deliveries
            .resume_parked(Timestamp::UNIX_EPOCH)
            .await
            .expect("resume"),
        1
    );
    assert_eq!(
        deliveries.head("T3", "C3").expect("read").map(|d| d.id),
        Some(ids[2])
    );
    // A dead letter retried while its workspace is held is parked, not queued.
    let queued = deliveries.head("T1", "C1").expect("read").expect("queued");
    deliveries.dead_letter(&queued).await.expect("dead");
    store.campaigns.hold("T1").await.expect("hold");
    assert_eq!(
        deliveries
            .retry_dead(None, Timestamp::UNIX_EPOCH)
            .await
            .expect("retry"),
        1
    );
    assert_eq!(deliveries.head("T1", "C1").expect("read"), None);
    assert_eq!(deliveries.parked().expect("parked").len(), 2);
}

#[tokio::test]
async fn begin_post_parks_what_a_later_hold_covers_and_skips_what_is_gone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = super::super::Store::open(dir.path()).expect("store");
    let deliveries = &store.deliveries;
    installed(&store, "T1").await;
    deliveries
        .enqueue(
            vec![
                new_delivery("T1", "C1", "one"),
                new_delivery("T1", "C2", "two"),
            ],
            Timestamp::UNIX_EPOCH,
        )
        .await
        .expect("enqueue");
    let one = deliveries.head("T1", "C1").expect("read").expect("queued");
    let two = deliveries.head("T1", "C2").expect("read").expect("queued");
    let now = Timestamp::from_second(10).expect("valid");
    match deliveries.begin_post(&one, now).await.expect("begin") {
        BeginPost::Post(marked) => assert_eq!(marked.in_flight, Some(now)),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        deliveries
            .head("T1", "C1")
            .expect("read")
            .and_then(|d| d.in_flight),
        Some(now),
        "the marker is stored"
    );
    store.campaigns.hold("T1").await.expect("hold");
    assert_eq!(
        deliveries.begin_post(&two, now).await.expect("begin"),
        BeginPost::Parked(ParkReason::Held)
    );
    assert_eq!(deliveries.head("T1", "C2").expect("read"), None);
    assert_eq!(
        deliveries.begin_post(&two, now).await.expect("begin"),
        BeginPost::Gone,
        "no longer queued: nothing to post"
    );
}

#[tokio::test]
async fn queued_channels_are_found_one_lookup_each_and_heads_follow_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = super::super::Store::open(dir.path()).expect("store");
    let deliveries = &store.deliveries;
    installed(&store, "T1").await;
    let new = |channel: &str| NewDelivery {
        team_id: "T1".into(),
        channel_id: channel.into(),
        activity_id: "a".into(),
        notification: Notification {
            message: Message::text("x"),
            thread_key: None,
            parent_update: None,
        },
    };
    // Channel ids that are prefixes of each other stay apart.
    let ids = deliveries
        .enqueue(
            vec![new("C1"), new("C10"), new("C1"), new("C2")],
            Timestamp::UNIX_EPOCH,
        )
        .await
        .expect("enqueue");
    let channels = deliveries.queued_channels().expect("channels");
    assert_eq!(channels.len(), 3, "{channels:?}");
    assert_eq!(
        deliveries.take_enqueued_channels(),
        channels,
        "the delivery loop hears of every channel"
    );
    assert!(deliveries.take_enqueued_channels().is_empty());
    let head = deliveries.head("T1", "C1").expect("read").expect("queued");
    assert_eq!(head.id, ids[0]);
    deliveries
        .park(&head, ParkReason::NotInstalled)
        .await
        .expect("park");
    assert_eq!(
        deliveries.head("T1", "C1").expect("read").map(|d| d.id),
        Some(ids[2])
    );
    assert_eq!(deliveries.parked().expect("parked").len(), 1);
    let resumed = deliveries
        .unpark(|_| true, Timestamp::UNIX_EPOCH)
        .await
        .expect("unpark");
    assert_eq!(resumed, 1);
    assert_eq!(
        deliveries.head("T1", "C1").expect("read").map(|d| d.id),
        Some(ids[0])
    );
    assert_eq!(
        store.purge_team("T1").await.expect("purge"),
        9,
        "4 records, 4 queue keys, the installation"
    );
    assert_eq!(deliveries.depth(), 0);
    assert!(deliveries.queued_channels().expect("channels").is_empty());
}
