//! The Slack outbox: rendered notifications waiting to be posted to a channel, the
//! dead letters that failed for good, and each thread's parent message `ts`.
//!
//! Owns the delivery lifecycle in the store: enqueue (in the same transaction that takes
//! the activity off the activity outbox), complete (removing the delivery and recording
//! a new thread parent together), reschedule, dead-letter and retry. Every change is
//! flushed before it returns, so a restart resumes exactly where it stopped.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

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
}

/// A delivery to create (the id is given on enqueue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    pub team_id: String,
    pub channel_id: String,
    pub activity_id: String,
    pub notification: Notification,
}

#[derive(Clone)]
pub struct DeliveryStore {
    db: sled::Db,
    outbox: sled::Tree,
    dead: sled::Tree,
    threads: sled::Tree,
    gate: WriteGate,
}

fn thread_key(team_id: &str, channel_id: &str, key: &str) -> String {
    format!("{team_id}:{channel_id}:{key}")
}

fn decode(bytes: &[u8]) -> Result<PendingDelivery, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|error| StoreError::Corrupt(format!("delivery record: {error}")))
}

fn encode(delivery: &PendingDelivery) -> Vec<u8> {
    serde_json::to_vec(delivery).expect("a delivery always serializes")
}

type TxResult = Result<(), sled::transaction::ConflictableTransactionError<()>>;

impl DeliveryStore {
    pub(super) fn new(
        db: sled::Db,
        outbox: sled::Tree,
        dead: sled::Tree,
        threads: sled::Tree,
        gate: WriteGate,
    ) -> Self {
        Self {
            db,
            outbox,
            dead,
            threads,
            gate,
        }
    }

    pub(super) fn outbox_tree(&self) -> &sled::Tree {
        &self.outbox
    }

    pub(super) fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Builds the stored deliveries (with fresh ids) for a routing transaction.
    pub(super) fn prepare(
        &self,
        deliveries: Vec<NewDelivery>,
        now: Timestamp,
    ) -> Result<Vec<PendingDelivery>, StoreError> {
        deliveries
            .into_iter()
            .map(|new| {
                Ok(PendingDelivery {
                    id: self.db.generate_id()?,
                    team_id: new.team_id,
                    channel_id: new.channel_id,
                    activity_id: new.activity_id,
                    notification: new.notification,
                    attempts: 0,
                    not_before: now,
                    last_error: None,
                })
            })
            .collect()
    }

    pub(super) fn insert_in(
        tx: &sled::transaction::TransactionalTree,
        delivery: &PendingDelivery,
    ) -> TxResult {
        tx.insert(&delivery.id.to_be_bytes(), encode(delivery))?;
        Ok(())
    }

    /// Adds deliveries on their own (routing uses [`super::Store::commit_routing`], which
    /// also takes the activity off its outbox).
    pub async fn enqueue(
        &self,
        deliveries: Vec<NewDelivery>,
        now: Timestamp,
    ) -> Result<Vec<u64>, StoreError> {
        let prepared = self.prepare(deliveries, now)?;
        {
            let _writing = self.gate.writing();
            self.outbox
                .transaction(|outbox| {
                    for delivery in &prepared {
                        Self::insert_in(outbox, delivery)?;
                    }
                    Ok(())
                })
                .map_err(|error: sled::transaction::TransactionError<()>| {
                    StoreError::Io(format!("delivery transaction: {error:?}"))
                })?;
        }
        self.db.flush_async().await?;
        Ok(prepared.iter().map(|delivery| delivery.id).collect())
    }

    /// Deliveries that may be attempted at `now`, oldest first.
    pub fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<PendingDelivery>, StoreError> {
        let mut due = Vec::new();
        for item in self.outbox.iter().values() {
            let delivery = decode(&item?)?;
            if delivery.not_before <= now {
                due.push(delivery);
                if due.len() == limit {
                    break;
                }
            }
        }
        Ok(due)
    }

    /// When the next delivery becomes due, if any is waiting.
    pub fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        let mut next: Option<Timestamp> = None;
        for item in self.outbox.iter().values() {
            let delivery = decode(&item?)?;
            next = Some(next.map_or(delivery.not_before, |n| n.min(delivery.not_before)));
        }
        Ok(next)
    }

    pub fn pending(&self) -> Result<Vec<PendingDelivery>, StoreError> {
        self.outbox
            .iter()
            .values()
            .map(|item| decode(&item?))
            .collect()
    }

    pub fn depth(&self) -> usize {
        self.outbox.len()
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
        use sled::Transactional;
        {
            let _writing = self.gate.writing();
            (&self.outbox, &self.threads)
                .transaction(|(outbox, threads)| {
                    outbox.remove(&delivery.id.to_be_bytes())?;
                    if let Some((key, ts)) = new_parent {
                        threads.insert(
                            thread_key(&delivery.team_id, &delivery.channel_id, key).as_bytes(),
                            ts.as_bytes(),
                        )?;
                    }
                    Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
                })
                .map_err(|error| StoreError::Io(format!("delivery transaction: {error:?}")))?;
        }
        self.db.flush_async().await?;
        Ok(())
    }

    /// Tries again at `not_before`.
    pub async fn reschedule(&self, delivery: &PendingDelivery) -> Result<(), StoreError> {
        {
            let _writing = self.gate.writing();
            self.outbox
                .insert(delivery.id.to_be_bytes(), encode(delivery))?;
        }
        self.db.flush_async().await?;
        Ok(())
    }

    /// Like [`Self::reschedule`], but only while `current` is still in the outbox as
    /// read: a delivery removed meanwhile (a held one replaced by a digest) stays gone.
    pub async fn reschedule_if_unchanged(
        &self,
        current: &PendingDelivery,
        next: &PendingDelivery,
    ) -> Result<bool, StoreError> {
        let swapped = {
            let _writing = self.gate.writing();
            self.outbox
                .compare_and_swap(
                    current.id.to_be_bytes(),
                    Some(encode(current)),
                    Some(encode(next)),
                )?
                .is_ok()
        };
        self.db.flush_async().await?;
        Ok(swapped)
    }

    /// Gives up: the delivery moves to the dead letters, where `outbox retry` finds it.
    pub async fn dead_letter(&self, delivery: &PendingDelivery) -> Result<(), StoreError> {
        self.move_between(&self.outbox, &self.dead, delivery).await
    }

    /// Puts dead letters back into the outbox (all of them, or one by id). Returns how many.
    pub async fn retry_dead(&self, id: Option<u64>, now: Timestamp) -> Result<usize, StoreError> {
        let mut moved = 0;
        for mut delivery in self.dead_letters()? {
            if id.is_some_and(|id| id != delivery.id) {
                continue;
            }
            delivery.attempts = 0;
            delivery.not_before = now;
            self.move_between(&self.dead, &self.outbox, &delivery)
                .await?;
            moved += 1;
        }
        Ok(moved)
    }

    async fn move_between(
        &self,
        from: &sled::Tree,
        to: &sled::Tree,
        delivery: &PendingDelivery,
    ) -> Result<(), StoreError> {
        use sled::Transactional;
        {
            let _writing = self.gate.writing();
            (from, to)
                .transaction(|(from, to)| {
                    from.remove(&delivery.id.to_be_bytes())?;
                    to.insert(&delivery.id.to_be_bytes(), encode(delivery))?;
                    Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
                })
                .map_err(|error| StoreError::Io(format!("delivery transaction: {error:?}")))?;
        }
        self.db.flush_async().await?;
        Ok(())
    }
}
