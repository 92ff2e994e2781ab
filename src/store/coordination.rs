//! How replicas on one PostgreSQL database share the work: each replica's heartbeat,
//! leases on named work (a repository to poll, a channel to deliver to, `leader` for the
//! singletons), and the request budget of a Bitbucket credential counted across replicas.
//!
//! Owns the `replicas`, `leases` and `request_budget` tables. A lease is claimed or renewed
//! with one `INSERT … ON CONFLICT DO UPDATE … WHERE` per batch, which locks each row it
//! touches, so two replicas never both win one; it expires `ttl` after its last renewal,
//! and then any replica may take it over. Times are the callers' (`now` passed in), so
//! tests run on a manual clock; replicas' clocks are assumed in step (NTP).
//!
//! On sled there is one replica: it holds every lease and the budget is its own. Must
//! never decide what to claim (the caller's fair share) nor touch the trees.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::StoreError;
use super::kv::Db;

/// The lease the singletons (campaign driver, purge, reminders) run under.
pub const LEADER: &str = "leader";

/// One replica, as the others see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    pub id: String,
    pub host: String,
    pub pid: u64,
    pub started_at: Timestamp,
    pub seen_at: Timestamp,
    /// Alive: seen within the lease time-to-live.
    pub alive: bool,
    /// The leases it holds now, by kind (`repo`, `channel`, `leader`): how many.
    pub leases: BTreeMap<String, usize>,
}

/// What a claim did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claimed {
    /// Every lease of those asked for that this replica holds now.
    pub held: BTreeSet<String>,
    /// Of those, how many it took over from another replica whose lease had expired.
    pub takeovers: usize,
}

/// This replica's side of the coordination. Cheap to clone.
#[derive(Clone)]
pub struct Coordination {
    db: Db,
    replica: String,
    host: String,
}

impl std::fmt::Debug for Coordination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordination")
            .field("replica", &self.replica)
            .finish()
    }
}

fn millis(at: Timestamp) -> i64 {
    at.as_millisecond()
}

fn from_millis(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

/// The kind of a lease name: the part before the first `:`.
fn kind_of(name: &str) -> &str {
    name.split(':').next().unwrap_or(name)
}

impl Coordination {
    pub(super) fn new(db: Db) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_owned())
            .unwrap_or_else(|_| "localhost".into());
        let replica = format!(
            "{host}-{}-{:04x}",
            std::process::id(),
            rand::random::<u16>()
        );
        Coordination { db, replica, host }
    }

    /// This replica's id: `{host}-{pid}-{random}`.
    pub fn replica_id(&self) -> &str {
        &self.replica
    }

    /// Whether several replicas may share this store (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        matches!(self.db, Db::Postgres(_))
    }

    /// Says this replica is alive; first call records when it started.
    pub fn heartbeat(&self, now: Timestamp) -> Result<(), StoreError> {
        let Db::Postgres(db) = &self.db else {
            return Ok(());
        };
        let pid = i64::from(std::process::id());
        db.with_sql(|sql| {
            sql.query(
                "INSERT INTO replicas (id, host, pid, started_ms, seen_ms) VALUES ($1, $2, $3, $4, $4)
                 ON CONFLICT (id) DO UPDATE SET seen_ms = EXCLUDED.seen_ms",
                &[&self.replica, &self.host, &pid, &millis(now)],
            )
            .map(drop)
        })
    }

    /// Claims the leases `names` that are free, expired or already this replica's, until
    /// `now + ttl`; renews those it holds. Returns which of `names` it holds now.
    pub fn claim(
        &self,
        names: &[String],
        now: Timestamp,
        ttl: Duration,
    ) -> Result<Claimed, StoreError> {
        let Db::Postgres(db) = &self.db else {
            return Ok(Claimed {
                held: names.iter().cloned().collect(),
                takeovers: 0,
            });
        };
        if names.is_empty() {
            return Ok(Claimed::default());
        }
        let now_ms = millis(now);
        let until = now_ms.saturating_add(ttl_ms(ttl));
        let rows = db.with_sql(|sql| {
            sql.query(
                "WITH previous AS (
                     SELECT name, holder FROM leases WHERE name = ANY($1)
                 ), claimed AS (
                     INSERT INTO leases (name, holder, expires_ms, since_ms)
                     SELECT unnest($1::text[]), $2, $3, $4
                     ON CONFLICT (name) DO UPDATE
                         SET holder = EXCLUDED.holder,
                             expires_ms = EXCLUDED.expires_ms,
                             since_ms = CASE WHEN leases.holder = EXCLUDED.holder
                                             THEN leases.since_ms ELSE EXCLUDED.since_ms END
                         WHERE leases.holder = EXCLUDED.holder OR leases.expires_ms < $4
                     RETURNING name
                 )
                 SELECT claimed.name, previous.holder
                 FROM claimed LEFT JOIN previous ON previous.name = claimed.name",
                &[&names, &self.replica, &until, &now_ms],
            )
        })?;
        let mut claimed = Claimed::default();
        for row in rows {
            let name: String = row.get(0);
            let previous: Option<String> = row.get(1);
            if previous.is_some_and(|holder| holder != self.replica) {
                claimed.takeovers += 1;
            }
            claimed.held.insert(name);
        }
        Ok(claimed)
    }

    /// Gives up the leases `names` this replica holds (on a clean stop, or when it holds
    /// more than its share), so another replica takes them at once.
    pub fn release(&self, names: &[String]) -> Result<(), StoreError> {
        let Db::Postgres(db) = &self.db else {
            return Ok(());
        };
        if names.is_empty() {
            return Ok(());
        }
        db.with_sql(|sql| {
            sql.query(
                "DELETE FROM leases WHERE holder = $1 AND name = ANY($2)",
                &[&self.replica, &names],
            )
            .map(drop)
        })
    }

    /// Every live lease this replica holds.
    pub fn held(&self, now: Timestamp) -> Result<BTreeSet<String>, StoreError> {
        let Db::Postgres(db) = &self.db else {
            return Ok(BTreeSet::new());
        };
        let rows = db.with_sql(|sql| {
            sql.query(
                "SELECT name FROM leases WHERE holder = $1 AND expires_ms >= $2",
                &[&self.replica, &millis(now)],
            )
        })?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// Every live lease another replica holds.
    pub fn held_by_others(&self, now: Timestamp) -> Result<BTreeSet<String>, StoreError> {
        let Db::Postgres(db) = &self.db else {
            return Ok(BTreeSet::new());
        };
        let rows = db.with_sql(|sql| {
            sql.query(
                "SELECT name FROM leases WHERE holder <> $1 AND expires_ms >= $2",
                &[&self.replica, &millis(now)],
            )
        })?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// How many replicas are alive (seen within `ttl`), this one included.
    pub fn live_replicas(&self, now: Timestamp, ttl: Duration) -> Result<usize, StoreError> {
        Ok(self
            .replicas(now, ttl)?
            .iter()
            .filter(|replica| replica.alive)
            .count()
            .max(1))
    }

    /// Every replica seen within an hour, with the leases each holds now.
    pub fn replicas(
        &self,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<Vec<ReplicaStatus>, StoreError> {
        let Db::Postgres(db) = &self.db else {
            return Ok(Vec::new());
        };
        let now_ms = millis(now);
        let (replicas, leases) = db.with_sql(|sql| {
            let replicas = sql.query(
                "SELECT id, host, pid, started_ms, seen_ms FROM replicas
                 WHERE seen_ms >= $1 ORDER BY started_ms, id",
                &[&now_ms.saturating_sub(3_600_000)],
            )?;
            let leases = sql.query(
                "SELECT holder, name FROM leases WHERE expires_ms >= $1",
                &[&now_ms],
            )?;
            Ok((replicas, leases))
        })?;
        let mut held: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
        for row in &leases {
            let holder: String = row.get(0);
            let name: String = row.get(1);
            *held
                .entry(holder)
                .or_default()
                .entry(kind_of(&name).to_owned())
                .or_default() += 1;
        }
        Ok(replicas
            .iter()
            .map(|row| {
                let id: String = row.get(0);
                let seen_ms: i64 = row.get(4);
                ReplicaStatus {
                    leases: held.remove(&id).unwrap_or_default(),
                    host: row.get(1),
                    pid: row.get::<_, i64>(2) as u64,
                    started_at: from_millis(row.get(3)),
                    seen_at: from_millis(seen_ms),
                    alive: seen_ms >= now_ms.saturating_sub(ttl_ms(ttl)),
                    id,
                }
            })
            .collect())
    }

    /// Spends one request of `credential`'s budget if fewer than `per_hour` were spent in
    /// the rolling hour before `now`, counted across every replica (by minute, so the
    /// window is exact to the minute and never exceeded). On sled, always yes: the
    /// process's own budget is the only one.
    pub fn spend(
        &self,
        credential: &str,
        per_hour: u64,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let Db::Postgres(db) = &self.db else {
            return Ok(true);
        };
        let minute = now.as_second().div_euclid(60);
        let per_hour = i64::try_from(per_hour).unwrap_or(i64::MAX);
        db.with_transaction(|sql| {
            // One row lock per credential serialises spenders, so two replicas never
            // both take the last request of an hour.
            sql.query(
                "INSERT INTO request_budget (credential, minute, requests) VALUES ($1, -1, 0)
                 ON CONFLICT (credential, minute) DO UPDATE SET requests = request_budget.requests",
                &[&credential],
            )?;
            if spent_in_hour(sql, credential, minute)? >= per_hour {
                return Ok(false);
            }
            sql.query(
                "INSERT INTO request_budget (credential, minute, requests) VALUES ($1, $2, 1)
                 ON CONFLICT (credential, minute) DO UPDATE SET requests = request_budget.requests + 1",
                &[&credential, &minute],
            )?;
            sql.query(
                "DELETE FROM request_budget WHERE credential = $1 AND minute >= 0 AND minute <= $2",
                &[&credential, &(minute - 120)],
            )?;
            Ok(true)
        })
    }

    /// Requests of `credential` spent in the rolling hour before `now`, by every replica.
    pub fn spent(&self, credential: &str, now: Timestamp) -> Result<u64, StoreError> {
        let Db::Postgres(db) = &self.db else {
            return Ok(0);
        };
        let minute = now.as_second().div_euclid(60);
        let spent = db.with_sql(|sql| spent_in_hour(sql, credential, minute))?;
        Ok(spent.max(0) as u64)
    }
}

/// Requests of `credential` counted in the hour of minutes ending with `minute`.
fn spent_in_hour(
    sql: &super::kv::postgres::PgSql<'_>,
    credential: &str,
    minute: i64,
) -> Result<i64, StoreError> {
    Ok(sql
        .query(
            "SELECT coalesce(sum(requests), 0)::bigint FROM request_budget
             WHERE credential = $1 AND minute > $2 AND minute <= $3",
            &[&credential, &(minute - 60), &minute],
        )?
        .first()
        .map_or(0, |row| row.get(0)))
}

/// This replica's fair share of `total` pieces of work among `replicas` live ones.
pub fn fair_share(total: usize, replicas: usize) -> usize {
    total.div_ceil(replicas.max(1))
}
