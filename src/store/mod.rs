//! The database: the only module that uses sled or PostgreSQL.
//!
//! Owns opening the database on its engine (`kv`: embedded sled by default, or
//! PostgreSQL for several replicas; errors name the path or the database), the schema
//! version and its migrations, and one typed repository per tree. Callers never see an
//! engine's types or raw keys. Every write that must survive a crash is flushed before the caller is told
//! it succeeded; writes that may be lost in a crash say so in their doc comment.

mod activities;
pub mod backup;
mod campaigns;
pub mod coordination;
pub mod crypto;
mod dedup;
mod deliveries;
pub(crate) mod installations;
pub(crate) mod kv;
mod migrate;
mod personal_settings;
mod poll;
mod purge;
mod reminders;
mod repositories;
mod slack_actions;
mod subscriptions;
mod unfurl_offers;
mod user_links;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use activities::ActivityStore;
pub use campaigns::CampaignStore;
pub use coordination::{Claimed, Coordination, ReplicaStatus};
pub use crypto::{KeySource, TokenCipher};
pub use dedup::{DedupKind, DedupStore};
pub use deliveries::{
    BeginPost, ChannelKey, DeliveryStore, NewDelivery, ParkReason, PendingDelivery,
};
pub use installations::{InstallSource, Installation, InstallationState, InstallationStore};
pub use kv::postgres::PgSettings;
pub use migrate::CopyReport;
pub use personal_settings::PersonalSettingsStore;
pub use purge::PurgedTeam;
pub use reminders::{ChannelReminder, ReminderStore, SlotCommit};
pub use repositories::{Broken, RepositoryStore, WatchedRepository};
pub use slack_actions::{ShownFromSlack, SlackActionStore};
pub use subscriptions::SubscriptionStore;
pub use unfurl_offers::UnfurlOfferStore;
pub use user_links::{UserLink, UserLinkStore};

/// The schema this binary writes. Bump it and add a step to [`MIGRATIONS`] together.
pub const SCHEMA_VERSION: u32 = 2;

/// `MIGRATIONS[n]` upgrades a store from schema `n + 1` to `n + 2`. Version 1 is the
/// first schema, so there is nothing to migrate yet.
/// One step of the store schema, run on either engine.
type Migration = fn(&kv::Db) -> Result<(), StoreError>;

const MIGRATIONS: &[Migration] = &[
    // 1 → 2: the outbox keyed by channel queue (`store::deliveries`).
    deliveries::migrate_to_queues,
];

const META_TREE: &str = "meta";
const SCHEMA_KEY: &str = "schema_version";
/// Written by [`Store::check_write`] to prove the store still writes.
const WRITE_CHECK_KEY: &str = "write_check";
/// A value sealed with the store's key when the store is created; if it does not open,
/// the configured key is not this store's key.
const KEY_CHECK_KEY: &str = "key_check";
const KEY_CHECK_PLAINTEXT: &str = "bitbucket-slack key check";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store at {path} is in use by another process (is the daemon already running?)")]
    Locked { path: PathBuf },
    #[error("cannot open the store at {path}: {cause}")]
    Open { path: PathBuf, cause: String },
    #[error(
        "the store at {path} has schema version {found}, newer than this binary's {supported}: \
         run a newer bitbucket-slack or restore a backup"
    )]
    NewerSchema {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(
        "the encryption key {key_path} does not open this store's tokens: configure the key \
         the store was created with (storage.encryption_key_file), or restore a backup"
    )]
    WrongKey { key_path: PathBuf },
    #[error("cannot use the encryption key file {path}: {cause}")]
    KeyFile { path: PathBuf, cause: String },
    #[error(
        "cannot reach the PostgreSQL database {target}: {cause} (check storage.postgres.url \
         and that the server runs and accepts this user)"
    )]
    Unreachable { target: String, cause: String },
    #[error(
        "the PostgreSQL server of {target} is version {found}; bitbucket-slack needs 12 or newer"
    )]
    ServerTooOld { target: String, found: String },
    #[error(
        "the PostgreSQL database {target} has schema version {found}, newer than this binary's \
         {supported}: run the newer bitbucket-slack on every replica"
    )]
    NewerDatabaseSchema {
        target: String,
        found: u32,
        supported: u32,
    },
    #[error("the store is damaged: {0}")]
    Corrupt(String),
    #[error("store I/O failed: {0}")]
    Io(String),
}

impl From<sled::Error> for StoreError {
    fn from(error: sled::Error) -> Self {
        match error {
            sled::Error::Corruption { .. } => StoreError::Corrupt(error.to_string()),
            other => StoreError::Io(other.to_string()),
        }
    }
}

/// Lets many writers in at once, or one backup alone, so a backup taken while the daemon
/// runs is a consistent snapshot of every tree. Writers hold it only around sled calls,
/// never across an await.
#[derive(Debug, Clone, Default)]
pub(crate) struct WriteGate {
    lock: Arc<RwLock<()>>,
    /// Every write fails while this is set ([`Store::set_write_faults`]).
    failing: Arc<std::sync::atomic::AtomicBool>,
    /// Whether the last write check failed (so a failure is logged once).
    unwritable: Arc<std::sync::atomic::AtomicBool>,
}

impl WriteGate {
    /// Admits one write. Fails while failures are injected: the write does not happen.
    pub(crate) fn writing(&self) -> Result<RwLockReadGuard<'_, ()>, StoreError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Io(
                "write refused (an injected fault, as a full disk would)".into(),
            ));
        }
        Ok(self
            .lock
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    fn exclusive(&self) -> RwLockWriteGuard<'_, ()> {
        self.lock
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What [`Store::commit_routing`] did with an activity's deliveries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Queued {
    /// Into their channels' queues.
    pub queued: usize,
    /// Parked at once: their workspace is not installed, or its notifications are held.
    pub parked: usize,
}

/// Which engine holds the store (`storage.backend`).
#[derive(Debug, Clone, Default)]
pub enum Backend {
    /// Embedded, in the storage directory; one process at a time.
    #[default]
    Sled,
    /// A PostgreSQL database several replicas share.
    Postgres(PgSettings),
}

/// The open database and its repositories. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: kv::Db,
    path: PathBuf,
    cipher: TokenCipher,
    key_source: KeySource,
    gate: WriteGate,
    pub dedup: DedupStore,
    pub installations: InstallationStore,
    pub user_links: UserLinkStore,
    pub subscriptions: SubscriptionStore,
    pub deliveries: DeliveryStore,
    pub repositories: RepositoryStore,
    pub activities: ActivityStore,
    pub campaigns: CampaignStore,
    pub personal_settings: PersonalSettingsStore,
    /// Actions done from Slack messages, so the poller's echo is not posted again.
    pub slack_actions: SlackActionStore,
    /// When people were last offered to connect for a link preview (once a day each).
    pub unfurl_offers: UnfurlOfferStore,
    /// Review reminders of channels and people's digests, with the last slot handled.
    pub reminders: ReminderStore,
    /// Replicas, leases and the shared request budget (PostgreSQL; trivial on sled).
    pub coordination: Coordination,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// How long a locked store is tried again before it is reported as in use.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(1500);
/// The pause between those tries.
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(50);

impl Store {
    /// Opens the store in `path` with the key generated in it (see [`Self::open_with_key`]).
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Self::open_with_key(path, None)
    }

    /// Opens (creating if needed) the store in the directory `path`, brings its schema up
    /// to date and checks that the encryption key (`key_file`, or `{path}/secret.key`,
    /// generated on first start) is the store's. Never panics on a bad path: every
    /// failure names it.
    pub fn open_with_key(path: &Path, key_file: Option<&Path>) -> Result<Store, StoreError> {
        Self::open_backend(&Backend::Sled, path, key_file)
    }

    /// Opens the store on `backend`: sled in the directory `path`, or the PostgreSQL
    /// database (whose own migrations run first); then as [`Self::open_with_key`]. On
    /// PostgreSQL `path` only holds a generated key, when no `key_file` is given.
    pub fn open_backend(
        backend: &Backend,
        path: &Path,
        key_file: Option<&Path>,
    ) -> Result<Store, StoreError> {
        match backend {
            Backend::Sled => {
                let db = open_sled(path)?;
                Self::on(kv::Db::Sled(Arc::new(db)), path, path, key_file)
            }
            Backend::Postgres(settings) => {
                let db = kv::postgres::PgDb::open(settings)?;
                let location = PathBuf::from(db.target());
                Self::on(kv::Db::Postgres(db), &location, path, key_file)
            }
        }
    }

    /// The repositories on `db`, after its schema is current and the key is checked.
    /// `location` names the database in messages; `key_dir` holds a generated key.
    fn on(
        db: kv::Db,
        location: &Path,
        key_dir: &Path,
        key_file: Option<&Path>,
    ) -> Result<Store, StoreError> {
        migrate(&db, location)?;
        if key_file.is_none() {
            std::fs::create_dir_all(key_dir).map_err(|error| StoreError::Open {
                path: key_dir.to_path_buf(),
                cause: error.to_string(),
            })?;
        }
        let (cipher, key_source) = TokenCipher::load_or_generate(key_file, key_dir)?;
        check_key(&db, &cipher)?;
        let path = location;
        let gate = WriteGate::default();
        let watched = db.open_tree("bitbucket_repositories")?;
        let cursors = db.open_tree("bitbucket_cursors")?;
        let installations =
            InstallationStore::new(db.open_tree("installations")?, cipher.clone(), gate.clone());
        let deliveries = DeliveryStore::new(db.clone(), installations.clone(), gate.clone())?;
        let reminders =
            ReminderStore::new(db.open_tree("reminders")?, deliveries.clone(), gate.clone());
        Ok(Store {
            repositories: RepositoryStore::new(watched.clone(), cursors.clone(), gate.clone()),
            activities: ActivityStore::new(
                watched,
                cursors,
                db.open_tree("activity_outbox")?,
                db.open_tree("activity_ids")?,
                gate.clone(),
            ),
            dedup: DedupStore::new(db.open_tree("dedup")?, gate.clone()),
            installations,
            campaigns: CampaignStore::new(
                db.clone(),
                db.open_tree("campaigns")?,
                db.open_tree("held_notifications")?,
                db.open_tree("deliveries")?,
                deliveries.clone(),
                gate.clone(),
            )?,
            deliveries,
            subscriptions: SubscriptionStore::new(
                db.open_tree("subscriptions")?,
                db.open_tree("channel_settings")?,
                gate.clone(),
            ),
            slack_actions: SlackActionStore::new(db.open_tree("slack_actions")?, gate.clone()),
            unfurl_offers: UnfurlOfferStore::new(db.open_tree("unfurl_offers")?, gate.clone()),
            user_links: UserLinkStore::new(
                db.open_tree("user_links")?,
                db.open_tree("user_links_by_bitbucket")?,
                cipher.clone(),
                gate.clone(),
            ),
            personal_settings: PersonalSettingsStore::new(
                db.open_tree("personal_settings")?,
                gate.clone(),
            ),
            reminders,
            coordination: Coordination::new(db.clone()),
            db,
            path: path.to_path_buf(),
            cipher,
            key_source,
            gate,
        })
    }

    /// Where the encryption key came from (for the startup log).
    pub fn key_source(&self) -> &KeySource {
        &self.key_source
    }

    /// The store's cipher (its key path, for messages).
    pub fn cipher(&self) -> &TokenCipher {
        &self.cipher
    }

    /// The key that signs OAuth `state` values, derived from the encryption key so there
    /// is one secret to keep.
    pub fn oauth_state_key(&self) -> [u8; 32] {
        self.cipher.derive_key("oauth-state")
    }

    /// The sled directory, or the PostgreSQL database as `postgres://user@host:port/db`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `"sled"` or `"postgres"`.
    pub fn engine(&self) -> &'static str {
        self.db.engine()
    }

    /// On PostgreSQL, how many replicas are alive at `now` (seen within `lease_ttl`) and
    /// which holds the leader lease.
    pub fn replicas_summary(
        &self,
        now: jiff::Timestamp,
        lease_ttl: std::time::Duration,
    ) -> Option<String> {
        if !self.coordination.is_shared() {
            return None;
        }
        match self.coordination.replicas(now, lease_ttl) {
            Ok(replicas) => {
                let alive = replicas.iter().filter(|replica| replica.alive).count();
                let leader = replicas
                    .iter()
                    .find(|replica| replica.leases.contains_key(coordination::LEADER))
                    .map_or("none", |replica| replica.id.as_str());
                Some(format!("{alive} replica(s) alive, leader {leader}"))
            }
            Err(error) => Some(format!("replicas unreadable: {error}")),
        }
    }

    /// Makes every write so far durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// Routes one activity: takes it off the activity outbox and puts its deliveries into
    /// the Slack outbox in one transaction, then flushes. A crash leaves either the
    /// activity (routed again after the restart) or the deliveries, never both or neither.
    /// A delivery whose workspace cannot take it now (not installed, or its notifications
    /// held) is parked at once ([`DeliveryStore::park_reason`]). The records of actions
    /// done from Slack that this activity matched (`shown`, so a channel was skipped) are
    /// used up in the same transaction: a failed commit keeps them for the retry. An
    /// activity no longer in the outbox was routed already (by another replica): nothing
    /// is queued twice, and the answer is all zeros.
    pub async fn commit_routing(
        &self,
        activity_seq: u64,
        deliveries: Vec<NewDelivery>,
        shown: &[slack_actions::ShownFromSlack],
        now: jiff::Timestamp,
    ) -> Result<Queued, StoreError> {
        use kv::Transactional;
        let prepared = self.deliveries.prepare(deliveries, now)?;
        let routed = {
            let _writing = self.gate.writing()?;
            (
                self.activities.outbox_tree(),
                self.deliveries.outbox_tree(),
                self.deliveries.parked_tree(),
                self.slack_actions.tree(),
            )
                .transaction(|(activities, outbox, parked, actions)| {
                    if activities.remove(activity_seq.to_be_bytes())?.is_none() {
                        // Routed already (by another replica, or a retry after a commit
                        // whose answer was lost): its deliveries are queued.
                        return Ok(false);
                    }
                    for used in shown {
                        actions.remove(used.key())?;
                    }
                    for delivery in &prepared {
                        DeliveryStore::insert_in(outbox, parked, delivery)?;
                    }
                    Ok(true)
                })
                .map_err(|error: kv::TransactionError<()>| {
                    StoreError::Io(format!("routing transaction: {error:?}"))
                })?
        };
        if !routed {
            return Ok(Queued::default());
        }
        self.deliveries.db().flush_async().await?;
        self.deliveries.note_enqueued(&prepared);
        Ok(Queued {
            queued: prepared.iter().filter(|d| d.parked.is_none()).count(),
            parked: prepared.iter().filter(|d| d.parked.is_some()).count(),
        })
    }

    /// Fault injection for tests and drills: while `on`, every write fails as on a full
    /// disk (nothing is written), through the same path real failures take.
    pub fn set_write_faults(&self, on: bool) {
        self.gate
            .failing
            .store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether the store can still write: writes and flushes a small marker. A failure is
    /// logged once (with what to do) until writes work again; the caller counts it and
    /// reports the daemon unready.
    pub async fn check_write(&self) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        let result = async {
            {
                let _writing = self.gate.writing()?;
                self.db
                    .open_tree(META_TREE)?
                    .insert(WRITE_CHECK_KEY, &[1u8])?;
            }
            self.db.flush_async().await?;
            Ok::<(), StoreError>(())
        }
        .await;
        let was_failing = self.gate.unwritable.swap(result.is_err(), Ordering::SeqCst);
        match &result {
            Err(error) if !was_failing => tracing::error!(
                %error,
                path = %self.path.display(),
                "the store cannot write: free disk space or check the disk; the daemon is not ready and stores (and acknowledges) nothing until it can"
            ),
            Ok(()) if was_failing => tracing::info!("the store writes again"),
            _ => {}
        }
        result
    }

    /// A cheap read that fails if the database no longer works.
    pub fn check(&self) -> Result<(), StoreError> {
        self.db.open_tree(META_TREE)?.get(SCHEMA_KEY)?;
        Ok(())
    }
}

/// Opens (creating if needed) the sled database in the directory `path`, waiting a
/// moment for a lock a handle closed just now may still hold.
fn open_sled(path: &Path) -> Result<sled::Db, StoreError> {
    let open_error = |cause: String| StoreError::Open {
        path: path.to_path_buf(),
        cause,
    };
    std::fs::create_dir_all(path).map_err(|error| open_error(error.to_string()))?;
    if !path.is_dir() {
        return Err(open_error("not a directory".into()));
    }
    // A handle closed a moment ago (by this process: a CLI command, a restart in
    // tests) can keep the lock while sled's background writes finish, so a locked
    // store is tried again for a short while before it is reported as in use.
    let give_up_at = std::time::Instant::now() + LOCK_WAIT;
    let db = loop {
        let opened = sled::Config::new()
            .path(path)
            .cache_capacity(8 * 1024 * 1024)
            .flush_every_ms(Some(500))
            .open();
        match opened {
            Ok(db) => break db,
            Err(sled::Error::Io(io)) if is_lock_error(&io) => {
                if std::time::Instant::now() >= give_up_at {
                    return Err(StoreError::Locked {
                        path: path.to_path_buf(),
                    });
                }
                std::thread::sleep(LOCK_RETRY);
            }
            Err(other) => return Err(open_error(other.to_string())),
        }
    };
    Ok(db)
}

fn check_key(db: &kv::Db, cipher: &TokenCipher) -> Result<(), StoreError> {
    let meta = db.open_tree(META_TREE)?;
    match meta.get(KEY_CHECK_KEY)? {
        Some(sealed) => {
            let sealed = String::from_utf8_lossy(&sealed);
            let opened = cipher.open(&sealed, KEY_CHECK_KEY)?;
            if opened.expose() != KEY_CHECK_PLAINTEXT {
                return Err(StoreError::WrongKey {
                    key_path: cipher.key_path().to_path_buf(),
                });
            }
        }
        None => {
            meta.insert(
                KEY_CHECK_KEY,
                cipher.seal(KEY_CHECK_PLAINTEXT, KEY_CHECK_KEY).as_bytes(),
            )?;
            db.flush()?;
        }
    }
    Ok(())
}

fn is_lock_error(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::WouldBlock || error.to_string().contains("lock")
}

fn migrate(db: &kv::Db, path: &Path) -> Result<(), StoreError> {
    let meta = db.open_tree(META_TREE)?;
    let found = match meta.get(SCHEMA_KEY)? {
        None if is_empty(db)? => {
            // A new store (nothing besides `meta`): start current.
            write_version(&meta, SCHEMA_VERSION)?;
            db.flush()?;
            return Ok(());
        }
        None => {
            return Err(StoreError::Corrupt(format!(
                "{} has data but no schema version",
                path.display()
            )));
        }
        Some(bytes) => read_version(&bytes)?,
    };
    if found > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for version in found..SCHEMA_VERSION {
        let step = MIGRATIONS[(version - 1) as usize];
        step(db)?;
        write_version(&meta, version + 1)?;
        db.flush()?;
        tracing::info!(from = version, to = version + 1, "store migrated");
    }
    Ok(())
}

/// Whether the database holds nothing besides the `meta` tree.
fn is_empty(db: &kv::Db) -> Result<bool, StoreError> {
    for name in db.tree_names()? {
        if name != META_TREE && !db.open_tree(&name)?.is_empty() {
            return Ok(false);
        }
    }
    Ok(true)
}

fn write_version(meta: &kv::Tree, version: u32) -> Result<(), StoreError> {
    meta.insert(SCHEMA_KEY, &version.to_be_bytes())?;
    Ok(())
}

fn read_version(bytes: &[u8]) -> Result<u32, StoreError> {
    let array: [u8; 4] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("schema version is not 4 bytes".into()))?;
    Ok(u32::from_be_bytes(array))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_store_gets_the_current_schema_and_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        store.check().expect("healthy");
        drop(store);
        Store::open(dir.path()).expect("reopen");
    }

    #[test]
    fn a_second_open_is_refused_as_locked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _first = Store::open(dir.path()).expect("open");
        let error = Store::open(dir.path()).expect_err("locked");
        assert!(matches!(error, StoreError::Locked { .. }), "{error}");
        assert!(
            error
                .to_string()
                .contains(&dir.path().display().to_string())
        );
    }

    #[test]
    fn an_unusable_path_names_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").expect("write");
        let error = Store::open(&file.join("store")).expect_err("parent is a file");
        assert!(matches!(error, StoreError::Open { .. }), "{error}");
        assert!(error.to_string().contains("a-file/store"), "{error}");
    }

    #[test]
    fn a_wrong_encryption_key_is_a_clear_startup_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(Store::open(dir.path()).expect("create with a generated key"));
        let other = tempfile::tempdir().expect("tempdir");
        let (_, _) = TokenCipher::load_or_generate(None, other.path()).expect("another key");
        let other_key = other.path().join(crypto::GENERATED_KEY_FILE);
        let error = Store::open_with_key(dir.path(), Some(&other_key)).expect_err("wrong key");
        assert!(matches!(error, StoreError::WrongKey { .. }), "{error}");
        assert!(
            error.to_string().contains("storage.encryption_key_file"),
            "{error}"
        );
        Store::open(dir.path()).expect("the right key still works");
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = sled::open(dir.path()).expect("open");
            let meta = db.open_tree(META_TREE).expect("tree");
            meta.insert(SCHEMA_KEY, &(SCHEMA_VERSION + 1).to_be_bytes())
                .expect("insert");
            db.flush().expect("flush");
        }
        let error = Store::open(dir.path()).expect_err("newer");
        assert!(matches!(error, StoreError::NewerSchema { .. }), "{error}");
    }
}
