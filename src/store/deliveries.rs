//! The Slack outbox: rendered notifications waiting to be posted to a channel, each
//! channel's queue, the parked ones (a workspace not installed, or held by its permission
//! upgrade), the uncertain ones (posted or not, nobody knows), the dead letters that failed
//! for good, and each thread's parent message `ts`.
//!
//! Owns the delivery lifecycle in the store: enqueue (in the same transaction that takes
//! the activity off the activity outbox), mark in flight before a post, complete
//! (removing the delivery and recording a new thread parent together), reschedule, park,
//! make uncertain, dead-letter and retry. Every change is flushed before it returns, so a
//! restart resumes exactly where it stopped.
//!
//! Owns the park decision too ([`DeliveryStore::park_reason`]): wherever a delivery goes
//! into the outbox (routed, enqueued, retried, a digest, resumed), one for a workspace
//! without an active installation, or whose notifications are held (the `held_notifications`
//! set, written by `store::campaigns`), goes straight into the parked tree instead, where
//! it costs nothing until [`DeliveryStore::resume_parked`] finds its workspace ready. The
//! one decision left to post time is [`DeliveryStore::begin_post`]: a hold that began
//! after the delivery was queued parks it there, in the transaction that would otherwise
//! mark it in flight, so a held message is never posted.
//!
//! Layout of the `deliveries` tree: `d` and the id (big-endian) hold the delivery; `q`,
//! the team, NUL, the channel, NUL and the id mark it in its channel's queue, so the next
//! message of a channel is one ordered lookup, whatever the size of the outbox. Parked, uncertain and
//! dead deliveries live in their own trees, keyed by id, and cost nothing while there.

use std::collections::HashMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::installations::InstallationStore;
use super::{StoreError, WriteGate};
use crate::notify::Notification;

/// One notification for one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingDelivery {
    pub id: u64,
    pub team_id: String,
    pub channel_id: String,
    pub activity_id: String,
    pub notification: Notification,
    pub attempts: u32,
    pub not_before: Timestamp,
    pub last_error: Option<String>,
    /// Set (and flushed) just before a post: a delivery found in flight after a crash is
    /// uncertain, never posted again by itself.
    #[serde(default)]
    pub in_flight: Option<Timestamp>,
    /// Why it is parked, while it is.
    #[serde(default)]
    pub parked: Option<ParkReason>,
    /// Why nobody knows whether it was posted, once it is uncertain.
    #[serde(default)]
    pub uncertain: Option<String>,
}

/// Why a delivery waits outside its channel's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParkReason {
    /// The workspace has no active installation (uninstalled, token revoked); resumed by
    /// a reinstall, removed by the purge.
    NotInstalled,
    /// The workspace's permission upgrade is overdue; released as a digest.
    Held,
}

/// A delivery to create (the id is given on enqueue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    pub team_id: String,
    pub channel_id: String,
    pub activity_id: String,
    pub notification: Notification,
}

/// A channel: (team id, channel id).
pub type ChannelKey = (String, String);

/// What [`DeliveryStore::begin_post`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BeginPost {
    /// Marked in flight (flushed): post it.
    Post(Box<PendingDelivery>),
    /// Its workspace's notifications were held after it was queued: parked instead.
    Parked(ParkReason),
    /// No longer queued (replaced by a digest, purged): there is nothing to post.
    Gone,
}

#[derive(Clone)]
pub struct DeliveryStore {
    db: super::kv::Db,
    outbox: super::kv::Tree,
    dead: super::kv::Tree,
    threads: super::kv::Tree,
    parked: super::kv::Tree,
    uncertain: super::kv::Tree,
    /// The workspaces whose notifications are held (read only: `store::campaigns` writes it).
    held: super::kv::Tree,
    /// Which workspaces have an active installation.
    installations: InstallationStore,
    gate: WriteGate,
    /// Channels that got new deliveries since the delivery loop last asked.
    enqueued: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<ChannelKey>>>,
}

fn thread_key(team_id: &str, channel_id: &str, key: &str) -> String {
    format!("{team_id}:{channel_id}:{key}")
}

fn data_key(id: u64) -> Vec<u8> {
    let mut key = vec![b'd'];
    key.extend_from_slice(&id.to_be_bytes());
    key
}

fn queue_prefix(team_id: &str, channel_id: &str) -> Vec<u8> {
    let mut key = vec![b'q'];
    key.extend_from_slice(team_id.as_bytes());
    key.push(0);
    key.extend_from_slice(channel_id.as_bytes());
    key.push(0);
    key
}

fn queue_key(delivery: &PendingDelivery) -> Vec<u8> {
    let mut key = queue_prefix(&delivery.team_id, &delivery.channel_id);
    key.extend_from_slice(&delivery.id.to_be_bytes());
    key
}

/// The channel a queue key belongs to.
fn channel_of_queue_key(key: &[u8]) -> Option<ChannelKey> {
    let rest = key.strip_prefix(b"q")?;
    let mut parts = rest.splitn(3, |byte| *byte == 0);
    let team = String::from_utf8(parts.next()?.to_vec()).ok()?;
    let channel = String::from_utf8(parts.next()?.to_vec()).ok()?;
    Some((team, channel))
}

/// Upgrades the `deliveries` tree of schema 1 (keyed by id alone) to the keyed layout.
pub(super) fn migrate_to_queues(db: &super::kv::Db) -> Result<(), StoreError> {
    let tree = db.open_tree("deliveries")?;
    for item in tree.iter() {
        let (key, value) = item?;
        if key.len() != 8 {
            continue;
        }
        let delivery = decode(&value)
            .map_err(|error| StoreError::Corrupt(format!("cannot migrate a delivery: {error}")))?;
        tree.insert(data_key(delivery.id), value)?;
        tree.insert(queue_key(&delivery), &[])?;
        tree.remove(key)?;
    }
    Ok(())
}

fn decode(bytes: &[u8]) -> Result<PendingDelivery, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|error| StoreError::Corrupt(format!("delivery record: {error}")))
}

fn encode(delivery: &PendingDelivery) -> Vec<u8> {
    serde_json::to_vec(delivery).expect("a delivery always serializes")
}

type TxResult = Result<(), super::kv::ConflictableTransactionError<()>>;

impl DeliveryStore {
    pub(super) fn new(
        db: super::kv::Db,
        installations: InstallationStore,
        gate: WriteGate,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            outbox: db.open_tree("deliveries")?,
            dead: db.open_tree("dead_letters")?,
            threads: db.open_tree("threads")?,
            parked: db.open_tree("parked_deliveries")?,
            uncertain: db.open_tree("uncertain_deliveries")?,
            held: db.open_tree("held_notifications")?,
            installations,
            db,
            gate,
            enqueued: Default::default(),
        })
    }

    /// Why a delivery for `team_id` queued now waits outside its channel's queue: the
    /// workspace has no active installation (checked first: nothing can be posted
    /// without its token), or its notifications are held. `None`: it is queued.
    pub fn park_reason(&self, team_id: &str) -> Result<Option<ParkReason>, StoreError> {
        match self.installations.get(team_id)? {
            Some(installation) if installation.is_active() => {}
            _ => return Ok(Some(ParkReason::NotInstalled)),
        }
        Ok(self
            .held
            .contains_key(team_id.as_bytes())?
            .then_some(ParkReason::Held))
    }

    /// Remembers that these deliveries' channels have work (after their commit); parked
    /// ones are not work.
    pub(super) fn note_enqueued<'a>(
        &self,
        deliveries: impl IntoIterator<Item = &'a PendingDelivery>,
    ) {
        let mut enqueued = self
            .enqueued
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        for delivery in deliveries {
            if delivery.parked.is_none() {
                enqueued.insert((delivery.team_id.clone(), delivery.channel_id.clone()));
            }
        }
    }

    /// The channels that got deliveries since the last call.
    pub fn take_enqueued_channels(&self) -> std::collections::BTreeSet<ChannelKey> {
        std::mem::take(
            &mut *self
                .enqueued
                .lock()
                .unwrap_or_else(|poison| poison.into_inner()),
        )
    }

    /// Every channel with queued deliveries (read once, when the delivery loop starts).
    pub fn queued_channels(&self) -> Result<std::collections::BTreeSet<ChannelKey>, StoreError> {
        let mut channels = std::collections::BTreeSet::new();
        let mut cursor = vec![b'q'];
        // One ordered lookup per channel: jump past each channel's queue.
        while let Some((key, _)) = self.outbox.range(cursor.clone()..).next().transpose()? {
            if key.first() != Some(&b'q') {
                break;
            }
            let Some(channel) = channel_of_queue_key(&key) else {
                break;
            };
            let mut next = queue_prefix(&channel.0, &channel.1);
            // Past every id of this channel.
            next.extend_from_slice(&[0xff; 9]);
            channels.insert(channel);
            cursor = next;
        }
        Ok(channels)
    }

    /// The oldest queued delivery of a channel.
    pub fn head(
        &self,
        team_id: &str,
        channel_id: &str,
    ) -> Result<Option<PendingDelivery>, StoreError> {
        let prefix = queue_prefix(team_id, channel_id);
        let Some(item) = self.outbox.scan_prefix(&prefix).next() else {
            return Ok(None);
        };
        let (key, _) = item?;
        let id_bytes: [u8; 8] = key[prefix.len()..]
            .try_into()
            .map_err(|_| StoreError::Corrupt("a queue key without an id".into()))?;
        self.get(u64::from_be_bytes(id_bytes))
    }

    /// A queued delivery by id.
    pub fn get(&self, id: u64) -> Result<Option<PendingDelivery>, StoreError> {
        self.outbox
            .get(data_key(id))?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    pub(super) fn outbox_tree(&self) -> &super::kv::Tree {
        &self.outbox
    }

    pub(super) fn parked_tree(&self) -> &super::kv::Tree {
        &self.parked
    }

    pub(super) fn db(&self) -> &super::kv::Db {
        &self.db
    }

    /// Builds the stored deliveries (with fresh ids) for a routing transaction, each
    /// parked already when its workspace cannot take it now ([`Self::park_reason`]).
    pub(super) fn prepare(
        &self,
        deliveries: Vec<NewDelivery>,
        now: Timestamp,
    ) -> Result<Vec<PendingDelivery>, StoreError> {
        let mut reasons: HashMap<String, Option<ParkReason>> = HashMap::new();
        deliveries
            .into_iter()
            .map(|new| {
                let parked = match reasons.get(&new.team_id) {
                    Some(reason) => *reason,
                    None => {
                        let reason = self.park_reason(&new.team_id)?;
                        reasons.insert(new.team_id.clone(), reason);
                        reason
                    }
                };
                Ok(PendingDelivery {
                    id: self.db.generate_id()?,
                    team_id: new.team_id,
                    channel_id: new.channel_id,
                    activity_id: new.activity_id,
                    notification: new.notification,
                    attempts: 0,
                    not_before: now,
                    last_error: None,
                    in_flight: None,
                    parked,
                    uncertain: None,
                })
            })
            .collect()
    }

    /// Stores a prepared `delivery` inside a transaction: into its channel's queue, or,
    /// when it is parked, into the parked tree.
    pub(super) fn insert_in(
        outbox: &super::kv::TxTree<'_>,
        parked: &super::kv::TxTree<'_>,
        delivery: &PendingDelivery,
    ) -> TxResult {
        if delivery.parked.is_some() {
            parked.insert(delivery.id.to_be_bytes(), encode(delivery))?;
            return Ok(());
        }
        Self::queue_in(outbox, delivery)
    }

    /// Queues `delivery` inside a transaction on the `deliveries` tree.
    pub(super) fn queue_in(tx: &super::kv::TxTree<'_>, delivery: &PendingDelivery) -> TxResult {
        tx.insert(data_key(delivery.id), encode(delivery))?;
        tx.insert(queue_key(delivery), &[])?;
        Ok(())
    }

    /// Takes `delivery` out of its queue inside a transaction on the `deliveries` tree.
    pub(super) fn remove_in(tx: &super::kv::TxTree<'_>, delivery: &PendingDelivery) -> TxResult {
        tx.remove(data_key(delivery.id))?;
        tx.remove(queue_key(delivery))?;
        Ok(())
    }

    /// Adds deliveries on their own (routing uses [`super::Store::commit_routing`], which
    /// also takes the activity off its outbox); those whose workspace cannot take them now
    /// are parked at once.
    pub async fn enqueue(
        &self,
        deliveries: Vec<NewDelivery>,
        now: Timestamp,
    ) -> Result<Vec<u64>, StoreError> {
        let prepared = self.prepare(deliveries, now)?;
        {
            let _writing = self.gate.writing()?;
            use super::kv::Transactional;
            (&self.outbox, &self.parked)
                .transaction(|(outbox, parked)| {
                    for delivery in &prepared {
                        Self::insert_in(outbox, parked, delivery)?;
                    }
                    Ok(())
                })
                .map_err(|error: super::kv::TransactionError<()>| {
                    StoreError::Io(format!("delivery transaction: {error:?}"))
                })?;
        }
        self.db.flush_async().await?;
        self.note_enqueued(&prepared);
        Ok(prepared.iter().map(|delivery| delivery.id).collect())
    }

    /// Every queued delivery, by id.
    pub fn pending(&self) -> Result<Vec<PendingDelivery>, StoreError> {
        self.outbox
            .scan_prefix([b'd'])
            .values()
            .map(|item| decode(&item?))
            .collect()
    }

    /// Queued deliveries (not parked, uncertain or dead).
    pub fn depth(&self) -> usize {
        self.outbox.scan_prefix([b'd']).count()
    }

    /// Parked deliveries, by id.
    pub fn parked(&self) -> Result<Vec<PendingDelivery>, StoreError> {
        self.parked
            .iter()
            .values()
            .map(|item| decode(&item?))
            .collect()
    }

    /// Deliveries nobody knows were posted or not, by id.
    pub fn uncertain(&self) -> Result<Vec<PendingDelivery>, StoreError> {
        self.uncertain
            .iter()
            .values()
            .map(|item| decode(&item?))
            .collect()
    }

    pub fn dead_letters(&self) -> Result<Vec<PendingDelivery>, StoreError> {
        self.dead
            .iter()
            .values()
            .map(|item| decode(&item?))
            .collect()
    }

    /// The `ts` of a thread's parent message in a channel.
    pub fn thread_parent(
        &self,
        team_id: &str,
        channel_id: &str,
        key: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .threads
            .get(thread_key(team_id, channel_id, key).as_bytes())?
            .map(|ts| String::from_utf8_lossy(&ts).into_owned()))
    }

    /// Posted: the delivery is gone and, for a new thread, its parent `ts` is recorded,
    /// together.
    pub async fn complete(
        &self,
        delivery: &PendingDelivery,
        new_parent: Option<(&str, &str)>,
    ) -> Result<(), StoreError> {
        use super::kv::Transactional;
        {
            let _writing = self.gate.writing()?;
            (&self.outbox, &self.threads)
                .transaction(|(outbox, threads)| {
                    Self::remove_in(outbox, delivery)?;
                    if let Some((key, ts)) = new_parent {
                        threads.insert(
                            thread_key(&delivery.team_id, &delivery.channel_id, key).as_bytes(),
                            ts.as_bytes(),
                        )?;
                    }
                    Ok::<_, super::kv::ConflictableTransactionError<()>>(())
                })
                .map_err(|error| StoreError::Io(format!("delivery transaction: {error:?}")))?;
        }
        self.db.flush_async().await?;
        Ok(())
    }

    /// Stores a changed delivery in place (tried again at its `not_before`; or marked in
    /// flight), flushed. A delivery no longer in the outbox (its workspace was purged
    /// meanwhile) stays gone.
    pub async fn reschedule(&self, delivery: &PendingDelivery) -> Result<(), StoreError> {
        let encoded = encode(delivery);
        {
            let _writing = self.gate.writing()?;
            self.outbox
                .fetch_and_update(data_key(delivery.id), |current| {
                    current.map(|_| encoded.clone())
                })?;
        }
        self.db.flush_async().await?;
        Ok(())
    }

    /// Just before a post, in one transaction: parks the delivery if its workspace's
    /// notifications were held since it was queued, else marks it in flight (if the
    /// process dies during the post, it is found in flight and made uncertain); flushed.
    /// A hold that begins after this finds the delivery in flight and leaves it to its
    /// post, which then happened before the hold.
    pub async fn begin_post(
        &self,
        delivery: &PendingDelivery,
        now: Timestamp,
    ) -> Result<BeginPost, StoreError> {
        use super::kv::Transactional;
        let mut marked = delivery.clone();
        marked.in_flight = Some(now);
        let mut held = delivery.clone();
        held.in_flight = None;
        held.parked = Some(ParkReason::Held);
        let found = {
            let _writing = self.gate.writing()?;
            (&self.outbox, &self.parked, &self.held)
                .transaction(|(outbox, parked, holds)| {
                    if outbox.get(data_key(delivery.id))?.is_none() {
                        return Ok(BeginPost::Gone);
                    }
                    if holds.get(delivery.team_id.as_bytes())?.is_some() {
                        Self::remove_in(outbox, delivery)?;
                        parked.insert(delivery.id.to_be_bytes(), encode(&held))?;
                        return Ok(BeginPost::Parked(ParkReason::Held));
                    }
                    outbox.insert(data_key(delivery.id), encode(&marked))?;
                    Ok(BeginPost::Post(Box::new(marked.clone())))
                })
                .map_err(|error: super::kv::TransactionError<()>| {
                    StoreError::Io(format!("delivery transaction: {error:?}"))
                })?
        };
        if found != BeginPost::Gone {
            self.db.flush_async().await?;
        }
        Ok(found)
    }

    /// Marks the delivery in flight and flushes, before it is posted: if the process dies
    /// during the post, the delivery is found in flight and made uncertain.
    pub async fn mark_in_flight(
        &self,
        delivery: &PendingDelivery,
        now: Timestamp,
    ) -> Result<PendingDelivery, StoreError> {
        let mut marked = delivery.clone();
        marked.in_flight = Some(now);
        self.reschedule(&marked).await?;
        Ok(marked)
    }

    /// Moves `delivery` out of its queue into `to` (parked, uncertain or dead), together;
    /// one no longer queued (purged meanwhile) is not moved.
    async fn move_out(
        &self,
        to: &super::kv::Tree,
        delivery: &PendingDelivery,
    ) -> Result<(), StoreError> {
        use super::kv::Transactional;
        {
            let _writing = self.gate.writing()?;
            (&self.outbox, to)
                .transaction(|(outbox, to)| {
                    if outbox.get(data_key(delivery.id))?.is_some() {
                        Self::remove_in(outbox, delivery)?;
                        to.insert(delivery.id.to_be_bytes(), encode(delivery))?;
                    }
                    Ok::<_, super::kv::ConflictableTransactionError<()>>(())
                })
                .map_err(|error| StoreError::Io(format!("delivery transaction: {error:?}")))?;
        }
        self.db.flush_async().await?;
        Ok(())
    }

    /// Parks a delivery for `reason`: out of its channel's queue until [`Self::unpark`].
    pub async fn park(
        &self,
        delivery: &PendingDelivery,
        reason: ParkReason,
    ) -> Result<(), StoreError> {
        let mut parked = delivery.clone();
        parked.parked = Some(reason);
        parked.in_flight = None;
        self.move_out(&self.parked, &parked).await
    }

    /// Posted or not, nobody knows: out of the queue, listed for the operator, never
    /// posted again by itself.
    pub async fn make_uncertain(
        &self,
        delivery: &PendingDelivery,
        why: &str,
    ) -> Result<(), StoreError> {
        let mut uncertain = delivery.clone();
        uncertain.uncertain = Some(why.to_string());
        self.move_out(&self.uncertain, &uncertain).await
    }

    /// Deliveries found in flight (the process stopped during their post) become
    /// uncertain. Run when the delivery loop starts. Returns how many.
    pub async fn recover_in_flight(&self) -> Result<usize, StoreError> {
        let mut recovered = 0;
        for delivery in self.pending()? {
            if delivery.in_flight.is_some() {
                self.make_uncertain(
                    &delivery,
                    "the daemon stopped while posting it: it may or may not have been posted",
                )
                .await?;
                recovered += 1;
            }
        }
        Ok(recovered)
    }

    /// Puts the parked deliveries whose workspace can take them now ([`Self::park_reason`]
    /// is `None`) back into their queues, due at `now`: those of workspaces installed
    /// again, and held ones whose hold was lifted without a digest. One whose workspace
    /// cannot be read stays parked. Returns how many.
    pub async fn resume_parked(&self, now: Timestamp) -> Result<usize, StoreError> {
        let mut ready: HashMap<String, bool> = HashMap::new();
        for delivery in self.parked()? {
            if let std::collections::hash_map::Entry::Vacant(entry) = ready.entry(delivery.team_id)
            {
                let can = matches!(self.park_reason(entry.key()), Ok(None));
                entry.insert(can);
            }
        }
        self.unpark(
            |delivery| ready.get(&delivery.team_id).copied().unwrap_or(false),
            now,
        )
        .await
    }

    /// Puts parked deliveries for which `resume` says yes back into their queues, due at
    /// `now`. Returns how many.
    pub async fn unpark(
        &self,
        resume: impl Fn(&PendingDelivery) -> bool,
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        let mut moved = Vec::new();
        for mut delivery in self.parked()? {
            if !resume(&delivery) {
                continue;
            }
            delivery.parked = None;
            delivery.not_before = now;
            self.move_in(&self.parked, &delivery).await?;
            moved.push(delivery);
        }
        self.note_enqueued(&moved);
        Ok(moved.len())
    }

    /// Moves `delivery` from `from` (parked, uncertain or dead) back into its queue, or
    /// (from uncertain or dead) into the parked tree when it is parked.
    async fn move_in(
        &self,
        from: &super::kv::Tree,
        delivery: &PendingDelivery,
    ) -> Result<(), StoreError> {
        use super::kv::Transactional;
        {
            let _writing = self.gate.writing()?;
            let to = if delivery.parked.is_some() {
                &self.parked
            } else {
                &self.outbox
            };
            (from, to)
                .transaction(|(from, to)| {
                    if from.remove(delivery.id.to_be_bytes())?.is_some() {
                        if delivery.parked.is_some() {
                            to.insert(delivery.id.to_be_bytes(), encode(delivery))?;
                        } else {
                            Self::queue_in(to, delivery)?;
                        }
                    }
                    Ok::<_, super::kv::ConflictableTransactionError<()>>(())
                })
                .map_err(|error| StoreError::Io(format!("delivery transaction: {error:?}")))?;
        }
        self.db.flush_async().await?;
        Ok(())
    }

    /// Gives up: the delivery moves to the dead letters, where `outbox retry` finds it.
    pub async fn dead_letter(&self, delivery: &PendingDelivery) -> Result<(), StoreError> {
        let mut dead = delivery.clone();
        dead.in_flight = None;
        self.move_out(&self.dead, &dead).await
    }

    /// Puts dead letters back into the outbox (all of them, or one by id; parked at once
    /// when their workspace cannot take them now). Returns how many.
    pub async fn retry_dead(&self, id: Option<u64>, now: Timestamp) -> Result<usize, StoreError> {
        let dead = self.dead_letters()?;
        self.retry_from(&self.dead, dead, id, now).await
    }

    /// Puts uncertain deliveries back into the outbox (the operator checked the channel and
    /// wants them posted): all of them, or one by id; parked at once when their workspace
    /// cannot take them now. Returns how many.
    pub async fn retry_uncertain(
        &self,
        id: Option<u64>,
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        let uncertain = self.uncertain()?;
        self.retry_from(&self.uncertain, uncertain, id, now).await
    }

    async fn retry_from(
        &self,
        tree: &super::kv::Tree,
        deliveries: Vec<PendingDelivery>,
        id: Option<u64>,
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        let mut moved = Vec::new();
        for mut delivery in deliveries {
            if id.is_some_and(|id| id != delivery.id) {
                continue;
            }
            delivery.parked = self.park_reason(&delivery.team_id)?;
            delivery.attempts = 0;
            delivery.not_before = now;
            delivery.in_flight = None;
            delivery.uncertain = None;
            self.move_in(tree, &delivery).await?;
            moved.push(delivery);
        }
        self.note_enqueued(&moved);
        Ok(moved.len())
    }
}

#[cfg(test)]
mod tests;
