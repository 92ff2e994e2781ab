//! Moving a whole store from one engine to the other (`bitbucket-slack migrate`): every
//! entry of every tree copied as stored (tokens stay sealed with the same key), ids raised
//! past the source's, then every tree's entry count checked on both sides.
//!
//! Owns the copy and its checks. Must never write into a target that holds data (a
//! half-copied target is refused on the next try, so an interrupted copy is retried into
//! a fresh target, never merged), and never change the source.

use std::collections::BTreeMap;

use super::{META_TREE, Store, StoreError};

/// What a copy moved: entries per tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    pub trees: BTreeMap<String, usize>,
}

impl CopyReport {
    pub fn entries(&self) -> usize {
        self.trees.values().sum()
    }
}

impl Store {
    /// Whether the store holds nothing yet (besides its schema and key check).
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        super::is_empty(&self.db)
    }

    /// Copies everything into `target` (another engine, opened with the same key), which
    /// must be empty; then checks every tree's count on both sides. Nobody may write to
    /// either store meanwhile (the daemons are stopped).
    pub fn copy_into(&self, target: &Store) -> Result<CopyReport, StoreError> {
        if !target.is_empty()? {
            return Err(StoreError::Open {
                path: target.path().to_path_buf(),
                cause: "the target store already holds data: migrate only into an empty one".into(),
            });
        }
        let mut trees = BTreeMap::new();
        for name in self.db.tree_names()? {
            if name == META_TREE {
                continue;
            }
            let source = self.db.open_tree(&name)?;
            let copy = target.db.open_tree(&name)?;
            let mut copied = 0;
            for entry in source.iter() {
                let (key, value) = entry?;
                copy.insert(key, value)?;
                copied += 1;
            }
            if copied > 0 {
                trees.insert(name, copied);
            }
        }
        // Ids the target hands out must come after every id the source handed out.
        let next = self.db.generate_id()?.saturating_add(1);
        target.db.raise_ids_to(next)?;
        target.db.flush()?;
        for (name, &copied) in &trees {
            let counted = target.db.open_tree(name)?.iter().count();
            let source_count = self.db.open_tree(name)?.iter().count();
            if counted != copied || source_count != copied {
                return Err(StoreError::Corrupt(format!(
                    "tree {name}: {source_count} entries in the source, {copied} copied, \
                     {counted} in the target"
                )));
            }
        }
        Ok(CopyReport { trees })
    }
}
