//! The PostgreSQL engine: the same ordered trees as sled, as rows `(tree, key, value)` of
//! one table with its primary key in byte order, so every repository runs unchanged on it.
//!
//! Owns the connection pool (a bounded number of connections; a caller waits at most
//! the connect timeout for one), the background runtime that drives the connections,
//! the embedded versioned migrations (run at start under an advisory lock, so replicas
//! starting together migrate once), and serializable transactions run again on a
//! serialization failure. Every statement has a server-side timeout and every connection
//! TCP keepalives, so no call waits without bound.
//!
//! Calls block the calling thread, as sled's do: a query is driven by the background
//! runtime and awaited with a plain executor, so it works on any thread, inside tokio or
//! not. Must never print the connection URL: it may hold a password; messages name the
//! database by [`PgDb::target`] (user, host, port and database only).

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement};

use super::{
    CompareAndSwapError, ConflictableTransactionError, ConflictableTransactionResult, IVec,
    TransactionError, TransactionResult, UnabortableTransactionError,
};
use crate::store::StoreError;

/// The oldest server the migrations and queries are written for.
const OLDEST_SERVER: i32 = 12_00_00;
/// Held while migrating, so replicas that start together migrate once.
const MIGRATION_LOCK: i64 = 0x6262_736c_6163_6b01;
/// How many times a transaction runs before a run of serialization failures is an error.
const TRANSACTION_ATTEMPTS: u32 = 64;
/// Entries fetched per page of a scan.
const SCAN_PAGE: i64 = 512;

/// `MIGRATIONS[n]` brings the database from schema `n` to `n + 1`. Never edit a step
/// that has shipped; add one.
const MIGRATIONS: &[&str] = &[
    // 1: the trees, the id sequence, and the replicas' coordination tables.
    "CREATE TABLE kv (
         tree  TEXT  NOT NULL,
         key   BYTEA NOT NULL,
         value BYTEA NOT NULL,
         PRIMARY KEY (tree, key)
     );
     CREATE SEQUENCE kv_ids START 1;
     CREATE TABLE replicas (
         id          TEXT    PRIMARY KEY,
         host        TEXT    NOT NULL,
         pid         BIGINT  NOT NULL,
         started_ms  BIGINT  NOT NULL,
         seen_ms     BIGINT  NOT NULL
     );
     CREATE TABLE leases (
         name        TEXT    PRIMARY KEY,
         holder      TEXT    NOT NULL,
         expires_ms  BIGINT  NOT NULL,
         since_ms    BIGINT  NOT NULL
     );
     CREATE INDEX leases_by_holder ON leases (holder);
     CREATE TABLE request_budget (
         credential  TEXT    NOT NULL,
         minute      BIGINT  NOT NULL,
         requests    BIGINT  NOT NULL,
         PRIMARY KEY (credential, minute)
     );",
];

/// The schema version this binary brings a database to.
pub(crate) const PG_SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// How to reach the database.
#[derive(Clone)]
pub struct PgSettings {
    /// A `postgres://` URL or `key=value` connection string; may hold a password.
    pub url: crate::secret::Secret<String>,
    pub pool_size: usize,
    pub connect_timeout: Duration,
    /// The longest one statement may run on the server.
    pub statement_timeout: Duration,
}

impl std::fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSettings")
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

/// An open PostgreSQL database. Cheap to clone.
#[derive(Clone)]
pub(crate) struct PgDb {
    inner: Arc<Inner>,
}

struct Inner {
    config: tokio_postgres::Config,
    target: String,
    settings: PgSettings,
    runtime: tokio::runtime::Handle,
    /// Dropped with the last handle: the runtime's thread then ends.
    _stop: tokio::sync::oneshot::Sender<()>,
    pool: Mutex<PoolState>,
    returned: Condvar,
}

#[derive(Default)]
struct PoolState {
    idle: Vec<Conn>,
    /// Connections open, idle or in use.
    open: usize,
}

/// One connection and its prepared statements.
struct Conn {
    client: Client,
    statements: RefCell<HashMap<&'static str, Statement>>,
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    futures_executor::block_on(future)
}

fn is_conflict(error: &tokio_postgres::Error) -> bool {
    matches!(
        error.code(),
        Some(&SqlState::T_R_SERIALIZATION_FAILURE) | Some(&SqlState::T_R_DEADLOCK_DETECTED)
    )
}

fn storage(error: tokio_postgres::Error) -> StoreError {
    StoreError::Io(format!("PostgreSQL: {}", describe_error(&error)))
}

/// The error with the server's message, which tokio-postgres keeps in its source.
fn describe_error(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => error.to_string(),
    }
}

fn in_transaction(error: tokio_postgres::Error) -> UnabortableTransactionError {
    if is_conflict(&error) {
        UnabortableTransactionError::Conflict
    } else {
        UnabortableTransactionError::Storage(storage(error))
    }
}

impl Conn {
    fn statement(&self, sql: &'static str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(statement) = self.statements.borrow().get(sql) {
            return Ok(statement.clone());
        }
        let statement = block_on(self.client.prepare(sql))?;
        self.statements.borrow_mut().insert(sql, statement.clone());
        Ok(statement)
    }

    fn query(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let statement = self.statement(sql)?;
        block_on(self.client.query(&statement, params))
    }

    fn query_opt(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, tokio_postgres::Error> {
        let statement = self.statement(sql)?;
        block_on(self.client.query_opt(&statement, params))
    }

    fn batch(&self, sql: &str) -> Result<(), tokio_postgres::Error> {
        block_on(self.client.batch_execute(sql))
    }
}

/// A connection taken from the pool; back into it when dropped (unless it broke).
struct Checkout<'p> {
    conn: Option<Conn>,
    inner: &'p Inner,
}

impl std::ops::Deref for Checkout<'_> {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        self.conn
            .as_ref()
            .expect("a checkout holds its connection until dropped")
    }
}

impl Drop for Checkout<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let mut pool = self
            .inner
            .pool
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if conn.client.is_closed() {
            pool.open -= 1;
        } else {
            pool.idle.push(conn);
        }
        drop(pool);
        self.inner.returned.notify_one();
    }
}

impl PgDb {
    /// Connects (within the connect timeout), checks the server's version and brings the
    /// schema up to date. Every error names the database by its target, never its URL.
    pub(crate) fn open(settings: &PgSettings) -> Result<PgDb, StoreError> {
        let mut config: tokio_postgres::Config =
            settings
                .url
                .expose()
                .parse()
                .map_err(|error: tokio_postgres::Error| StoreError::Open {
                    path: "storage.postgres.url".into(),
                    cause: format!("not a PostgreSQL connection URL: {error}"),
                })?;
        config
            .connect_timeout(settings.connect_timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .application_name("bitbucket-slack");
        let target = target_of(&config);
        let (runtime, stop) = start_runtime().map_err(|error| StoreError::Open {
            path: target.clone().into(),
            cause: format!("cannot start the database runtime: {error}"),
        })?;
        let db = PgDb {
            inner: Arc::new(Inner {
                config,
                target,
                settings: settings.clone(),
                runtime,
                _stop: stop,
                pool: Mutex::new(PoolState::default()),
                returned: Condvar::new(),
            }),
        };
        db.check_server()?;
        db.migrate()?;
        Ok(db)
    }

    /// The database as messages name it: `postgres://user@host:port/database`.
    pub(crate) fn target(&self) -> &str {
        &self.inner.target
    }

    fn connect(&self) -> Result<Conn, StoreError> {
        let config = self.inner.config.clone();
        let timeout = self.inner.settings.connect_timeout;
        let connecting = self
            .inner
            .runtime
            .spawn(async move { tokio::time::timeout(timeout, config.connect(NoTls)).await });
        let unreachable = |cause: String| StoreError::Unreachable {
            target: self.inner.target.clone(),
            cause,
        };
        let (client, connection) = match block_on(connecting) {
            Ok(Ok(Ok(connected))) => connected,
            Ok(Ok(Err(error))) => return Err(unreachable(describe_error(&error))),
            Ok(Err(_)) => {
                return Err(unreachable(format!(
                    "no connection within {} s (storage.postgres.connect_timeout_secs)",
                    timeout.as_secs()
                )));
            }
            Err(error) => return Err(unreachable(error.to_string())),
        };
        let target = self.inner.target.clone();
        self.inner.runtime.spawn(async move {
            if let Err(error) = connection.await {
                tracing::warn!(database = %target, error = %describe_error(&error), "a database connection closed");
            }
        });
        let statement_ms = self.inner.settings.statement_timeout.as_millis();
        block_on(client.batch_execute(&format!(
            "SET statement_timeout = {statement_ms}; SET lock_timeout = {statement_ms}; \
             SET idle_in_transaction_session_timeout = {}",
            statement_ms * 2
        )))
        .map_err(storage)?;
        Ok(Conn {
            client,
            statements: RefCell::new(HashMap::new()),
        })
    }

    /// A connection from the pool, opening one while fewer than the pool size are open;
    /// waits at most the connect timeout for one to come back.
    fn checkout(&self) -> Result<Checkout<'_>, StoreError> {
        let inner = &*self.inner;
        let deadline = Instant::now() + inner.settings.connect_timeout;
        let mut pool = inner
            .pool
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        loop {
            if let Some(conn) = pool.idle.pop() {
                if conn.client.is_closed() {
                    pool.open -= 1;
                    continue;
                }
                return Ok(Checkout {
                    conn: Some(conn),
                    inner,
                });
            }
            if pool.open < inner.settings.pool_size.max(1) {
                pool.open += 1;
                drop(pool);
                return match self.connect() {
                    Ok(conn) => Ok(Checkout {
                        conn: Some(conn),
                        inner,
                    }),
                    Err(error) => {
                        let mut pool = inner
                            .pool
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner());
                        pool.open -= 1;
                        drop(pool);
                        inner.returned.notify_one();
                        Err(error)
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(StoreError::Io(format!(
                    "all {} connections to {} stayed busy for {} s (storage.postgres.pool_size)",
                    inner.settings.pool_size,
                    inner.target,
                    inner.settings.connect_timeout.as_secs()
                )));
            }
            pool = inner
                .returned
                .wait_timeout(pool, deadline - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    /// Runs `work` on a pooled connection, outside any transaction.
    fn with_conn<R>(
        &self,
        work: impl FnOnce(&Conn) -> Result<R, tokio_postgres::Error>,
    ) -> Result<R, StoreError> {
        let conn = self.checkout()?;
        work(&conn).map_err(storage)
    }

    fn check_server(&self) -> Result<(), StoreError> {
        let version: i32 = self.with_conn(|conn| {
            conn.query_opt("SELECT current_setting('server_version_num')::integer", &[])
                .map(|row| row.map_or(0, |row| row.get(0)))
        })?;
        if version < OLDEST_SERVER {
            return Err(StoreError::ServerTooOld {
                target: self.inner.target.clone(),
                found: format!("{}.{}", version / 10000, version % 10000),
            });
        }
        Ok(())
    }

    /// Brings the schema up to date in one transaction under an advisory lock; refuses a
    /// database a newer binary has migrated.
    fn migrate(&self) -> Result<(), StoreError> {
        let conn = self.checkout()?;
        let result = (|| {
            conn.batch("BEGIN")?;
            conn.query("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
            conn.batch(
                "CREATE TABLE IF NOT EXISTS bitbucket_slack_schema (
                     version    INTEGER     PRIMARY KEY,
                     applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
                 )",
            )?;
            let found: i32 = conn
                .query_opt(
                    "SELECT coalesce(max(version), 0) FROM bitbucket_slack_schema",
                    &[],
                )?
                .map_or(0, |row| row.get(0));
            if found > PG_SCHEMA_VERSION {
                conn.batch("ROLLBACK")?;
                return Ok(Some(found));
            }
            for version in found..PG_SCHEMA_VERSION {
                conn.batch(MIGRATIONS[version as usize])?;
                conn.query(
                    "INSERT INTO bitbucket_slack_schema (version) VALUES ($1)",
                    &[&(version + 1)],
                )?;
                tracing::info!(to = version + 1, "database migrated");
            }
            conn.batch("COMMIT")?;
            Ok(None)
        })();
        match result {
            Ok(None) => Ok(()),
            Ok(Some(found)) => Err(StoreError::NewerDatabaseSchema {
                target: self.inner.target.clone(),
                found: found as u32,
                supported: PG_SCHEMA_VERSION as u32,
            }),
            Err(error) => {
                let _ = conn.batch("ROLLBACK");
                Err(storage(error))
            }
        }
    }

    pub(crate) fn tree(&self, name: &str) -> PgTree {
        PgTree {
            db: self.clone(),
            name: Arc::from(name),
        }
    }

    pub(crate) fn tree_names(&self) -> Result<Vec<String>, StoreError> {
        self.with_conn(|conn| {
            let rows = conn.query("SELECT DISTINCT tree FROM kv ORDER BY tree", &[])?;
            Ok(rows.iter().map(|row| row.get(0)).collect())
        })
    }

    pub(crate) fn generate_id(&self) -> Result<u64, StoreError> {
        self.with_conn(next_id)
    }

    /// Sets the id sequence so the next id is at least `next` (after a migration).
    pub(crate) fn raise_ids_to(&self, next: u64) -> Result<(), StoreError> {
        let next = i64::try_from(next.max(1)).unwrap_or(i64::MAX);
        self.with_conn(|conn| {
            conn.query(
                "SELECT setval('kv_ids', greatest($1, (SELECT last_value + 1 FROM kv_ids)), false)",
                &[&next],
            )
            .map(drop)
        })
    }

    /// Runs `run` in a serializable transaction, again (with a short randomised pause) on
    /// a serialization failure or deadlock, at most [`TRANSACTION_ATTEMPTS`] times.
    pub(crate) fn transaction<R, E>(
        &self,
        run: impl Fn(&PgTxn<'_>) -> ConflictableTransactionResult<R, E>,
    ) -> TransactionResult<R, E> {
        for attempt in 0..TRANSACTION_ATTEMPTS {
            if attempt > 0 {
                let cap = 1u64 << attempt.min(6);
                std::thread::sleep(Duration::from_millis(rand::random_range(0..cap)));
            }
            let conn = self.checkout().map_err(TransactionError::Storage)?;
            conn.batch("BEGIN ISOLATION LEVEL SERIALIZABLE")
                .map_err(|error| TransactionError::Storage(storage(error)))?;
            let txn = PgTxn { conn: &conn };
            let outcome = run(&txn);
            let failed = match outcome {
                Ok(result) => match conn.batch("COMMIT") {
                    Ok(()) => return Ok(result),
                    Err(error) if is_conflict(&error) => continue,
                    Err(error) => return Err(TransactionError::Storage(storage(error))),
                },
                Err(failed) => failed,
            };
            // A failed rollback leaves the connection broken; the pool drops it.
            let _ = conn.batch("ROLLBACK");
            match failed {
                ConflictableTransactionError::Conflict => continue,
                ConflictableTransactionError::Abort(reason) => {
                    return Err(TransactionError::Abort(reason));
                }
                ConflictableTransactionError::Storage(error) => {
                    return Err(TransactionError::Storage(error));
                }
            }
        }
        Err(TransactionError::Storage(StoreError::Io(format!(
            "a transaction on {} conflicted {TRANSACTION_ATTEMPTS} times in a row",
            self.inner.target
        ))))
    }

    /// Runs `work` on one connection inside a plain (read committed) transaction, for the
    /// replicas' coordination tables, which lock the rows they change.
    pub(crate) fn with_transaction<R>(
        &self,
        work: impl FnOnce(&PgSql<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let conn = self.checkout()?;
        conn.batch("BEGIN").map_err(storage)?;
        match work(&PgSql { conn: &conn }) {
            Ok(result) => {
                conn.batch("COMMIT").map_err(storage)?;
                Ok(result)
            }
            Err(error) => {
                let _ = conn.batch("ROLLBACK");
                Err(error)
            }
        }
    }

    /// Runs `work` on one connection outside a transaction (each statement its own).
    pub(crate) fn with_sql<R>(
        &self,
        work: impl FnOnce(&PgSql<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let conn = self.checkout()?;
        work(&PgSql { conn: &conn })
    }
}

/// Direct SQL on one connection, for the coordination tables outside the trees.
pub(crate) struct PgSql<'c> {
    conn: &'c Conn,
}

impl PgSql<'_> {
    pub(crate) fn query(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        self.conn.query(sql, params).map_err(storage)
    }
}

fn next_id(conn: &Conn) -> Result<u64, tokio_postgres::Error> {
    let id: i64 = conn
        .query_opt("SELECT nextval('kv_ids')", &[])?
        .map_or(0, |row| row.get(0));
    Ok(id as u64)
}

/// Starts the thread whose runtime drives the connections; it ends when the returned
/// sender is dropped.
fn start_runtime() -> std::io::Result<(tokio::runtime::Handle, tokio::sync::oneshot::Sender<()>)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("bitbucket-slack-db")
        .build()?;
    let handle = runtime.handle().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("bitbucket-slack-db".into())
        .spawn(move || {
            runtime.block_on(async {
                let _ = stopped.await;
            });
        })?;
    Ok((handle, stop))
}

/// `postgres://user@host:port/database`, without the password.
fn target_of(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("postgres");
    let database = config.get_dbname().unwrap_or(user);
    format!("postgres://{user}@{host}:{port}/{database}")
}

const GET: &str = "SELECT value FROM kv WHERE tree = $1 AND key = $2";
const INSERT: &str = "WITH old AS (SELECT value FROM kv WHERE tree = $1 AND key = $2)
     INSERT INTO kv (tree, key, value) VALUES ($1, $2, $3)
     ON CONFLICT (tree, key) DO UPDATE SET value = EXCLUDED.value
     RETURNING (SELECT value FROM old)";
const REMOVE: &str = "DELETE FROM kv WHERE tree = $1 AND key = $2 RETURNING value";

fn value_of(row: Option<Row>) -> Option<IVec> {
    row.and_then(|row| row.get::<_, Option<Vec<u8>>>(0))
        .map(IVec::from)
}

/// One tree of a PostgreSQL database.
#[derive(Clone)]
pub(crate) struct PgTree {
    db: PgDb,
    name: Arc<str>,
}

impl PgTree {
    pub(crate) fn db(&self) -> &PgDb {
        &self.db
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<IVec>, StoreError> {
        self.db
            .with_conn(|conn| conn.query_opt(GET, &[&&*self.name, &key]).map(value_of))
    }

    pub(crate) fn insert(&self, key: &[u8], value: &[u8]) -> Result<Option<IVec>, StoreError> {
        self.db.with_conn(|conn| {
            conn.query_opt(INSERT, &[&&*self.name, &key, &value])
                .map(value_of)
        })
    }

    pub(crate) fn remove(&self, key: &[u8]) -> Result<Option<IVec>, StoreError> {
        self.db
            .with_conn(|conn| conn.query_opt(REMOVE, &[&&*self.name, &key]).map(value_of))
    }

    pub(crate) fn len(&self) -> Result<usize, StoreError> {
        self.db.with_conn(|conn| {
            let count: i64 = conn
                .query_opt("SELECT count(*) FROM kv WHERE tree = $1", &[&&*self.name])?
                .map_or(0, |row| row.get(0));
            Ok(count as usize)
        })
    }

    pub(crate) fn compare_and_swap(
        &self,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<IVec>,
    ) -> Result<Result<(), CompareAndSwapError>, StoreError> {
        let name = &*self.name;
        let swapped = self.db.with_conn(|conn| {
            let row = match (old, new.as_deref()) {
                (None, Some(new)) => conn.query_opt(
                    "INSERT INTO kv (tree, key, value) VALUES ($1, $2, $3)
                     ON CONFLICT (tree, key) DO NOTHING RETURNING 1",
                    &[&name, &key, &new],
                )?,
                (Some(old), Some(new)) => conn.query_opt(
                    "UPDATE kv SET value = $3 WHERE tree = $1 AND key = $2 AND value = $4
                     RETURNING 1",
                    &[&name, &key, &new, &old],
                )?,
                (Some(old), None) => conn.query_opt(
                    "DELETE FROM kv WHERE tree = $1 AND key = $2 AND value = $3 RETURNING 1",
                    &[&name, &key, &old],
                )?,
                (None, None) => {
                    let absent = conn.query_opt(GET, &[&name, &key])?.is_none();
                    return Ok(absent);
                }
            };
            Ok(row.is_some())
        })?;
        if swapped {
            return Ok(Ok(()));
        }
        Ok(Err(CompareAndSwapError {
            current: self.get(key)?,
            proposed: new,
        }))
    }

    /// The entries from `start` to `end`, fetched a page at a time.
    pub(crate) fn scan(&self, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> PgIter {
        PgIter {
            tree: self.clone(),
            start,
            end,
            buffer: VecDeque::new(),
            done: false,
        }
    }
}

/// A scan of a PostgreSQL tree, a page at a time (keyset pagination, so entries written
/// behind the scan are not seen twice).
pub(crate) struct PgIter {
    tree: PgTree,
    start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    buffer: VecDeque<(IVec, IVec)>,
    done: bool,
}

/// The page query for a start bound (inclusive or not) and an end bound.
fn scan_sql(start_inclusive: bool, end: &Bound<Vec<u8>>) -> &'static str {
    match (start_inclusive, end) {
        (true, Bound::Unbounded) => {
            "SELECT key, value FROM kv WHERE tree = $1 AND key >= $2 ORDER BY key LIMIT $3"
        }
        (false, Bound::Unbounded) => {
            "SELECT key, value FROM kv WHERE tree = $1 AND key > $2 ORDER BY key LIMIT $3"
        }
        (true, Bound::Included(_)) => {
            "SELECT key, value FROM kv WHERE tree = $1 AND key >= $2 AND key <= $4
             ORDER BY key LIMIT $3"
        }
        (false, Bound::Included(_)) => {
            "SELECT key, value FROM kv WHERE tree = $1 AND key > $2 AND key <= $4
             ORDER BY key LIMIT $3"
        }
        (true, Bound::Excluded(_)) => {
            "SELECT key, value FROM kv WHERE tree = $1 AND key >= $2 AND key < $4
             ORDER BY key LIMIT $3"
        }
        (false, Bound::Excluded(_)) => {
            "SELECT key, value FROM kv WHERE tree = $1 AND key > $2 AND key < $4
             ORDER BY key LIMIT $3"
        }
    }
}

impl PgIter {
    fn fetch(&mut self) -> Result<(), StoreError> {
        let (inclusive, from) = match &self.start {
            Bound::Included(key) => (true, key.clone()),
            Bound::Excluded(key) => (false, key.clone()),
            Bound::Unbounded => (true, Vec::new()),
        };
        let sql = scan_sql(inclusive, &self.end);
        let name = &*self.tree.name;
        let rows = self.tree.db.with_conn(|conn| match &self.end {
            Bound::Unbounded => conn.query(sql, &[&name, &from, &SCAN_PAGE]),
            Bound::Included(end) | Bound::Excluded(end) => {
                conn.query(sql, &[&name, &from, &SCAN_PAGE, end])
            }
        })?;
        if (rows.len() as i64) < SCAN_PAGE {
            self.done = true;
        }
        for row in rows {
            let key: Vec<u8> = row.get(0);
            let value: Vec<u8> = row.get(1);
            self.start = Bound::Excluded(key.clone());
            self.buffer.push_back((IVec::from(key), IVec::from(value)));
        }
        Ok(())
    }
}

impl Iterator for PgIter {
    type Item = Result<(IVec, IVec), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buffer.is_empty() && !self.done {
            if let Err(error) = self.fetch() {
                self.done = true;
                return Some(Err(error));
            }
        }
        self.buffer.pop_front().map(Ok)
    }
}

/// A serializable transaction in progress.
pub(crate) struct PgTxn<'c> {
    conn: &'c Conn,
}

impl<'c> PgTxn<'c> {
    pub(crate) fn tree(&self, name: &str) -> PgTxTree<'c> {
        PgTxTree {
            conn: self.conn,
            name: Arc::from(name),
        }
    }
}

/// One tree inside a PostgreSQL transaction.
pub(crate) struct PgTxTree<'c> {
    conn: &'c Conn,
    name: Arc<str>,
}

impl PgTxTree<'_> {
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<IVec>, UnabortableTransactionError> {
        self.conn
            .query_opt(GET, &[&&*self.name, &key])
            .map(value_of)
            .map_err(in_transaction)
    }

    pub(crate) fn insert(
        &self,
        key: &[u8],
        value: &[u8],
    ) -> Result<Option<IVec>, UnabortableTransactionError> {
        self.conn
            .query_opt(INSERT, &[&&*self.name, &key, &value])
            .map(value_of)
            .map_err(in_transaction)
    }

    pub(crate) fn remove(&self, key: &[u8]) -> Result<Option<IVec>, UnabortableTransactionError> {
        self.conn
            .query_opt(REMOVE, &[&&*self.name, &key])
            .map(value_of)
            .map_err(in_transaction)
    }

    pub(crate) fn generate_id(&self) -> Result<u64, UnabortableTransactionError> {
        next_id(self.conn).map_err(in_transaction)
    }
}
