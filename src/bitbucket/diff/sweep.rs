//! Pure: the workspace sweep. Each sweep lists a workspace's repositories by
//! `updated_on`; those that moved since the last sweep are polled early.
//!
//! Owns the sweep cursor and its overlap ([`SWEEP_OVERLAP`]). Must never do I/O, read the
//! clock or spawn; it never decides when to poll (the poller's schedule does).

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};

use crate::bitbucket::model::RepositoryInfo;

/// What the sweeps of one workspace saw: each repository's last `updated_on`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepCursor {
    pub seen: BTreeMap<String, Timestamp>,
    /// The newest `updated_on` seen; `None` before the first sweep.
    pub newest: Option<Timestamp>,
}

/// How far back each sweep asks, so an `updated_on` written late is still seen.
pub const SWEEP_OVERLAP: SignedDuration = SignedDuration::from_mins(2);

/// The `updated_on` a sweep asks after.
pub fn sweep_since(cursor: &SweepCursor) -> Option<Timestamp> {
    cursor
        .newest
        .map(|newest| newest.checked_sub(SWEEP_OVERLAP).unwrap_or(newest))
}

/// Repositories (full names, lower case) whose `updated_on` moved since the last sweep.
/// The first sweep only records.
pub fn sweep(cursor: &mut SweepCursor, repos: &[RepositoryInfo]) -> Vec<String> {
    let first = cursor.newest.is_none();
    let mut changed = Vec::new();
    for repo in repos {
        let (Some(name), Some(updated_on)) = (&repo.full_name, repo.updated_on) else {
            continue;
        };
        let name = name.to_ascii_lowercase();
        let previous = cursor.seen.insert(name.clone(), updated_on);
        if !first && previous != Some(updated_on) {
            changed.push(name);
        }
        cursor.newest = Some(cursor.newest.map_or(updated_on, |n| n.max(updated_on)));
    }
    if first && cursor.newest.is_none() {
        cursor.newest = Some(Timestamp::UNIX_EPOCH);
    }
    changed
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::bitbucket::diff::test_support::*;

    #[test]
    fn the_first_sweep_records_and_later_ones_flag_changes() {
        let repos = |minute: i64| -> Vec<RepositoryInfo> {
            serde_json::from_value(json!([
                {"full_name": "Acme/API", "updated_on": time(minute)},
                {"full_name": "acme/web", "updated_on": time(0)}
            ]))
            .expect("repos")
        };
        let mut cursor = SweepCursor::default();
        assert!(sweep(&mut cursor, &repos(0)).is_empty());
        assert_eq!(sweep_since(&cursor), Some(at(-2)));
        assert!(sweep(&mut cursor, &repos(0)).is_empty());
        assert_eq!(sweep(&mut cursor, &repos(5)), vec!["acme/api"]);
    }
}
