//! The ordered key-value trees every typed repository is written on, over one of two
//! engines: sled (embedded, the default) or PostgreSQL (`postgres.rs`, for several
//! replicas on one database).
//!
//! Owns the engine choice and the few operations the repositories need: point reads and
//! writes, ordered scans, compare-and-swap, ids, and transactions over several trees that
//! either engine carries out atomically (sled's optimistic transactions; PostgreSQL's
//! serializable ones, run again on a serialization failure, as sled runs a conflicted one
//! again). A transaction's closure may therefore run more than once and must only read
//! and write through its views. Values are sled's `IVec` on both engines, so the
//! repositories read them the same way.
//!
//! Must never hold a type of one engine where the other could be: every handle is an enum
//! over both, and a tree of one engine is never mixed into a transaction of the other.

pub(crate) mod postgres;

use std::ops::{Bound, RangeBounds};

use super::StoreError;

pub(crate) use sled::IVec;

/// The name sled gives its own default tree; it holds nothing of ours.
const SLED_DEFAULT_TREE: &str = "__sled__default";

/// One open database.
#[derive(Clone)]
pub(crate) enum Db {
    /// Boxed: a `Store` holds several handles, and a small one keeps the futures that
    /// hold a `Store` small.
    Sled(std::sync::Arc<sled::Db>),
    Postgres(postgres::PgDb),
}

impl Db {
    /// The tree `name` (created empty on first write).
    pub(crate) fn open_tree(&self, name: impl AsRef<[u8]>) -> Result<Tree, StoreError> {
        match self {
            Db::Sled(db) => Ok(Tree::Sled(db.open_tree(name)?)),
            Db::Postgres(db) => {
                let name = std::str::from_utf8(name.as_ref())
                    .map_err(|_| StoreError::Io("a tree name is not UTF-8".into()))?;
                Ok(Tree::Postgres(std::sync::Arc::new(db.tree(name))))
            }
        }
    }

    /// The names of the trees that hold (or held, on sled) entries.
    pub(crate) fn tree_names(&self) -> Result<Vec<String>, StoreError> {
        match self {
            Db::Sled(db) => Ok(db
                .tree_names()
                .into_iter()
                .map(|name| String::from_utf8_lossy(&name).into_owned())
                .filter(|name| name != SLED_DEFAULT_TREE)
                .collect()),
            Db::Postgres(db) => db.tree_names(),
        }
    }

    /// Makes every write so far durable (PostgreSQL's are once committed).
    pub(crate) fn flush(&self) -> Result<(), StoreError> {
        match self {
            Db::Sled(db) => {
                db.flush()?;
                Ok(())
            }
            Db::Postgres(_) => Ok(()),
        }
    }

    /// [`Self::flush`] without blocking the caller's thread on sled's fsync.
    pub(crate) async fn flush_async(&self) -> Result<(), StoreError> {
        match self {
            Db::Sled(db) => {
                db.flush_async().await?;
                Ok(())
            }
            Db::Postgres(_) => Ok(()),
        }
    }

    /// A new id, greater than every id this database handed out before (also across
    /// replicas on PostgreSQL, where it is a sequence).
    pub(crate) fn generate_id(&self) -> Result<u64, StoreError> {
        match self {
            Db::Sled(db) => Ok(db.generate_id()?),
            Db::Postgres(db) => db.generate_id(),
        }
    }

    /// Makes the next [`Self::generate_id`] at least `next` (after a migration).
    pub(crate) fn raise_ids_to(&self, next: u64) -> Result<(), StoreError> {
        match self {
            // sled's ids can only be drawn: draw until past `next` (cheap: they are
            // persisted once per million).
            Db::Sled(db) => {
                while db.generate_id()? + 1 < next {}
                Ok(())
            }
            Db::Postgres(db) => db.raise_ids_to(next),
        }
    }

    /// Which engine, for logs and `status`.
    pub(crate) fn engine(&self) -> &'static str {
        match self {
            Db::Sled(_) => "sled",
            Db::Postgres(_) => "postgres",
        }
    }
}

/// One tree: its keys in byte order.
#[derive(Clone)]
pub(crate) enum Tree {
    Sled(sled::Tree),
    /// Behind an `Arc`, to stay as small as sled's handle.
    Postgres(std::sync::Arc<postgres::PgTree>),
}

/// A compare-and-swap that found another value than expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CompareAndSwapError {
    pub current: Option<IVec>,
    pub proposed: Option<IVec>,
}

impl Tree {
    pub(crate) fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<IVec>, StoreError> {
        match self {
            Tree::Sled(tree) => Ok(tree.get(key)?),
            Tree::Postgres(tree) => tree.get(key.as_ref()),
        }
    }

    /// Sets `key` to `value`; the value it had before.
    pub(crate) fn insert(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<IVec>,
    ) -> Result<Option<IVec>, StoreError> {
        match self {
            Tree::Sled(tree) => Ok(tree.insert(key, value)?),
            Tree::Postgres(tree) => tree.insert(key.as_ref(), &value.into()),
        }
    }

    /// Removes `key`; the value it had.
    pub(crate) fn remove(&self, key: impl AsRef<[u8]>) -> Result<Option<IVec>, StoreError> {
        match self {
            Tree::Sled(tree) => Ok(tree.remove(key)?),
            Tree::Postgres(tree) => tree.remove(key.as_ref()),
        }
    }

    pub(crate) fn contains_key(&self, key: impl AsRef<[u8]>) -> Result<bool, StoreError> {
        Ok(self.get(key)?.is_some())
    }

    /// Every entry, in key order.
    pub(crate) fn iter(&self) -> Iter {
        self.range::<&[u8], _>(..)
    }

    /// The entries whose key starts with `prefix`, in key order.
    pub(crate) fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Iter {
        match self {
            Tree::Sled(tree) => Iter::Sled(tree.scan_prefix(prefix)),
            Tree::Postgres(tree) => {
                let prefix = prefix.as_ref();
                let end = match prefix_successor(prefix) {
                    Some(end) => Bound::Excluded(end),
                    None => Bound::Unbounded,
                };
                Iter::Postgres(tree.scan(Bound::Included(prefix.to_vec()), end))
            }
        }
    }

    /// The entries with keys in `range`, in key order.
    pub(crate) fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Iter {
        match self {
            Tree::Sled(tree) => Iter::Sled(tree.range(range)),
            Tree::Postgres(tree) => {
                let owned = |bound: Bound<&K>| match bound {
                    Bound::Included(key) => Bound::Included(key.as_ref().to_vec()),
                    Bound::Excluded(key) => Bound::Excluded(key.as_ref().to_vec()),
                    Bound::Unbounded => Bound::Unbounded,
                };
                Iter::Postgres(tree.scan(owned(range.start_bound()), owned(range.end_bound())))
            }
        }
    }

    /// How many entries (a full count: keep it off hot paths).
    pub(crate) fn len(&self) -> usize {
        match self {
            Tree::Sled(tree) => tree.len(),
            Tree::Postgres(tree) => tree.len().unwrap_or_else(|error| {
                tracing::warn!(%error, "counting a tree failed");
                0
            }),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        match self {
            Tree::Sled(tree) => tree.is_empty(),
            Tree::Postgres(_) => self.iter().next().is_none(),
        }
    }

    /// Sets `key` to `new` (or removes it, for `None`) only while it is `old` (absent,
    /// for `None`); otherwise reports what it found.
    pub(crate) fn compare_and_swap(
        &self,
        key: impl AsRef<[u8]>,
        old: Option<impl AsRef<[u8]>>,
        new: Option<impl Into<IVec>>,
    ) -> Result<Result<(), CompareAndSwapError>, StoreError> {
        match self {
            Tree::Sled(tree) => {
                Ok(tree
                    .compare_and_swap(key, old, new)?
                    .map_err(|error| CompareAndSwapError {
                        current: error.current,
                        proposed: error.proposed,
                    }))
            }
            Tree::Postgres(tree) => tree.compare_and_swap(
                key.as_ref(),
                old.as_ref().map(|old| old.as_ref()),
                new.map(Into::into),
            ),
        }
    }

    /// Replaces the value of `key` with what `update` makes of it (`None` removes it),
    /// atomically; the value it had before.
    pub(crate) fn fetch_and_update<V: Into<IVec>>(
        &self,
        key: impl AsRef<[u8]>,
        mut update: impl FnMut(Option<&[u8]>) -> Option<V>,
    ) -> Result<Option<IVec>, StoreError> {
        match self {
            Tree::Sled(tree) => Ok(tree.fetch_and_update(key, update)?),
            Tree::Postgres(_) => loop {
                let key = key.as_ref();
                let current = self.get(key)?;
                let next = update(current.as_deref()).map(Into::into);
                if self.compare_and_swap(key, current.as_ref(), next)?.is_ok() {
                    return Ok(current);
                }
            },
        }
    }

    /// Makes this tree's writes durable (every tree's, on sled), blocking.
    pub(crate) fn flush(&self) -> Result<(), StoreError> {
        match self {
            Tree::Sled(tree) => {
                tree.flush()?;
                Ok(())
            }
            Tree::Postgres(_) => Ok(()),
        }
    }

    /// Makes this tree's writes durable (every tree's, on sled).
    pub(crate) async fn flush_async(&self) -> Result<(), StoreError> {
        match self {
            Tree::Sled(tree) => {
                tree.flush_async().await?;
                Ok(())
            }
            Tree::Postgres(_) => Ok(()),
        }
    }
}

/// The key just after every key that starts with `prefix`, if there is one.
fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Entries in key order; an engine failure ends it with an error.
pub(crate) enum Iter {
    Sled(sled::Iter),
    Postgres(postgres::PgIter),
}

impl Iterator for Iter {
    type Item = Result<(IVec, IVec), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Sled(iter) => iter.next().map(|item| item.map_err(StoreError::from)),
            Iter::Postgres(iter) => iter.next(),
        }
    }
}

impl Iter {
    pub(crate) fn keys(self) -> impl Iterator<Item = Result<IVec, StoreError>> {
        self.map(|item| item.map(|(key, _)| key))
    }

    pub(crate) fn values(self) -> impl Iterator<Item = Result<IVec, StoreError>> {
        self.map(|item| item.map(|(_, value)| value))
    }
}

/// A failure inside a transaction the closure cannot choose: a conflict (the
/// transaction runs again) or the engine failing.
#[derive(Debug)]
pub(crate) enum UnabortableTransactionError {
    Conflict,
    Storage(StoreError),
}

/// How a transaction's closure ends early: `Abort` with the caller's reason, or one of
/// the engine's ([`UnabortableTransactionError`]).
#[derive(Debug)]
pub(crate) enum ConflictableTransactionError<E> {
    Abort(E),
    Storage(StoreError),
    Conflict,
}

impl<E> From<UnabortableTransactionError> for ConflictableTransactionError<E> {
    fn from(error: UnabortableTransactionError) -> Self {
        match error {
            UnabortableTransactionError::Conflict => ConflictableTransactionError::Conflict,
            UnabortableTransactionError::Storage(error) => {
                ConflictableTransactionError::Storage(error)
            }
        }
    }
}

/// How a transaction failed: the closure's `Abort`, or the engine.
#[derive(Debug)]
pub(crate) enum TransactionError<E> {
    Abort(E),
    Storage(StoreError),
}

pub(crate) type ConflictableTransactionResult<R, E> = Result<R, ConflictableTransactionError<E>>;
pub(crate) type TransactionResult<R, E> = Result<R, TransactionError<E>>;

/// One tree inside a transaction.
pub(crate) enum TxTree<'t> {
    Sled(&'t sled::transaction::TransactionalTree),
    Postgres(postgres::PgTxTree<'t>),
}

fn from_sled_unabortable(
    error: sled::transaction::UnabortableTransactionError,
) -> UnabortableTransactionError {
    match error {
        sled::transaction::UnabortableTransactionError::Conflict => {
            UnabortableTransactionError::Conflict
        }
        sled::transaction::UnabortableTransactionError::Storage(error) => {
            UnabortableTransactionError::Storage(error.into())
        }
    }
}

impl TxTree<'_> {
    pub(crate) fn get(
        &self,
        key: impl AsRef<[u8]>,
    ) -> Result<Option<IVec>, UnabortableTransactionError> {
        match self {
            TxTree::Sled(tree) => tree.get(key).map_err(from_sled_unabortable),
            TxTree::Postgres(tree) => tree.get(key.as_ref()),
        }
    }

    pub(crate) fn insert(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<IVec>,
    ) -> Result<Option<IVec>, UnabortableTransactionError> {
        match self {
            TxTree::Sled(tree) => tree
                .insert(key.as_ref(), value)
                .map_err(from_sled_unabortable),
            TxTree::Postgres(tree) => tree.insert(key.as_ref(), &value.into()),
        }
    }

    pub(crate) fn remove(
        &self,
        key: impl AsRef<[u8]>,
    ) -> Result<Option<IVec>, UnabortableTransactionError> {
        match self {
            TxTree::Sled(tree) => tree.remove(key.as_ref()).map_err(from_sled_unabortable),
            TxTree::Postgres(tree) => tree.remove(key.as_ref()),
        }
    }

    /// A new id (see [`Db::generate_id`]).
    pub(crate) fn generate_id(&self) -> Result<u64, UnabortableTransactionError> {
        match self {
            TxTree::Sled(tree) => tree
                .generate_id()
                .map_err(|error| UnabortableTransactionError::Storage(error.into())),
            TxTree::Postgres(tree) => tree.generate_id(),
        }
    }
}

/// What a sled transaction's closure aborts with: the caller's reason, or a failure of
/// ours that sled must not retry.
enum SledAbort<E> {
    Caller(E),
    Storage(StoreError),
}

fn to_sled<E>(
    error: ConflictableTransactionError<E>,
) -> sled::transaction::ConflictableTransactionError<SledAbort<E>> {
    use sled::transaction::ConflictableTransactionError as Sled;
    match error {
        ConflictableTransactionError::Abort(reason) => Sled::Abort(SledAbort::Caller(reason)),
        ConflictableTransactionError::Storage(error) => Sled::Abort(SledAbort::Storage(error)),
        ConflictableTransactionError::Conflict => Sled::Conflict,
    }
}

fn from_sled<E>(error: sled::transaction::TransactionError<SledAbort<E>>) -> TransactionError<E> {
    match error {
        sled::transaction::TransactionError::Abort(SledAbort::Caller(reason)) => {
            TransactionError::Abort(reason)
        }
        sled::transaction::TransactionError::Abort(SledAbort::Storage(error)) => {
            TransactionError::Storage(error)
        }
        sled::transaction::TransactionError::Storage(error) => {
            TransactionError::Storage(error.into())
        }
    }
}

fn mixed_engines<E>() -> TransactionError<E> {
    TransactionError::Storage(StoreError::Io(
        "a transaction over trees of two engines".into(),
    ))
}

/// Trees that can be written together in one transaction: a tuple of trees (the closure
/// gets a tuple of views) or a slice (a slice of views).
pub(crate) trait Transactional {
    type View<'t>: ?Sized;

    fn transaction<R, E>(
        &self,
        run: impl Fn(&Self::View<'_>) -> ConflictableTransactionResult<R, E>,
    ) -> TransactionResult<R, E>;
}

impl Transactional for [Tree] {
    type View<'t> = [TxTree<'t>];

    fn transaction<R, E>(
        &self,
        run: impl Fn(&Self::View<'_>) -> ConflictableTransactionResult<R, E>,
    ) -> TransactionResult<R, E> {
        if let Some(sled_trees) = self
            .iter()
            .map(|tree| match tree {
                Tree::Sled(tree) => Some(tree.clone()),
                Tree::Postgres(_) => None,
            })
            .collect::<Option<Vec<sled::Tree>>>()
        {
            use sled::Transactional as _;
            return sled_trees[..]
                .transaction(|views| {
                    let views: Vec<TxTree<'_>> = views.iter().map(TxTree::Sled).collect();
                    run(&views).map_err(to_sled)
                })
                .map_err(from_sled);
        }
        let Some(Tree::Postgres(first)) = self.first() else {
            return Err(mixed_engines());
        };
        let mut names = Vec::with_capacity(self.len());
        for tree in self {
            match tree {
                Tree::Postgres(tree) => names.push(tree.name()),
                Tree::Sled(_) => return Err(mixed_engines()),
            }
        }
        first.db().transaction(|txn| {
            let views: Vec<TxTree<'_>> = names
                .iter()
                .map(|name| TxTree::Postgres(txn.tree(name)))
                .collect();
            run(&views)
        })
    }
}

macro_rules! transactional_tuple {
    ($($tree:ident : $index:tt),+) => {
        impl Transactional for ($(transactional_tuple!(@tree $tree),)+) {
            type View<'t> = ($(transactional_tuple!(@view $tree),)+);

            fn transaction<R, E>(
                &self,
                run: impl Fn(&Self::View<'_>) -> ConflictableTransactionResult<R, E>,
            ) -> TransactionResult<R, E> {
                if let ($(Tree::Sled($tree),)+) = ($(self.$index,)+) {
                    use sled::Transactional as _;
                    return ($($tree,)+)
                        .transaction(|($($tree,)+)| {
                            run(&($(TxTree::Sled($tree),)+)).map_err(to_sled)
                        })
                        .map_err(from_sled);
                }
                if let ($(Tree::Postgres($tree),)+) = ($(self.$index,)+) {
                    let Tree::Postgres(first) = self.0 else {
                        return Err(mixed_engines());
                    };
                    return first.db().transaction(|txn| {
                        run(&($(TxTree::Postgres(txn.tree($tree.name())),)+))
                    });
                }
                Err(mixed_engines())
            }
        }
    };
    (@view $tree:ident) => { TxTree<'t> };
    (@tree $tree:ident) => { &Tree };
}

transactional_tuple!(a: 0, b: 1);
transactional_tuple!(a: 0, b: 1, c: 2);
transactional_tuple!(a: 0, b: 1, c: 2, d: 3);
transactional_tuple!(a: 0, b: 1, c: 2, d: 3, e: 4);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_successor_skips_trailing_0xff() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_successor(&[0xff, 0xff]), None);
        assert_eq!(prefix_successor(b""), None);
    }
}
