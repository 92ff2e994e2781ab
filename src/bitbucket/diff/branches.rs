//! Pure: the branch lane. The branch list against the remembered heads gives branches
//! created and deleted (as activities) and branches moved; a moved branch's commits give
//! its push activity.
//!
//! Owns the branch heads in the cursor and the push's commit list (at most
//! [`MAX_COMMITS`], the rest marked truncated). Must never do I/O, read the clock (`now`
//! is passed in) or spawn; it never lists commits itself (the poller does).

use std::collections::BTreeMap;

use jiff::Timestamp;

use super::{RepoCursor, activity, actor};
use crate::bitbucket::activity::{Activity, ActivityKind, Actor, CommitRef, MAX_COMMITS};
use crate::bitbucket::model::{Branch, Commit, Links};

/// Each listed branch's head commit, by branch name.
pub(super) fn branch_heads(branches: &[Branch]) -> BTreeMap<String, String> {
    branches
        .iter()
        .filter_map(|b| Some((b.name.clone(), b.target.as_ref()?.hash.clone())))
        .collect()
}

/// A branch whose head moved: the poller lists the commits between the two heads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedBranch {
    pub name: String,
    pub previous_head: String,
    pub head: String,
}

/// Branches created and deleted (as activities) and branches moved (to be listed).
#[derive(Debug, Default)]
pub struct BranchChanges {
    pub activities: Vec<Activity>,
    pub moved: Vec<MovedBranch>,
}

/// Diffs the branch list against the cursor and records the new heads. `complete` says
/// whether `branches` is the whole list; only then does a missing branch count as deleted.
pub fn branches(
    cursor: &mut RepoCursor,
    repo: &str,
    branches: &[Branch],
    complete: bool,
    now: Timestamp,
) -> BranchChanges {
    let mut changes = BranchChanges::default();
    for branch in branches {
        let Some(target) = &branch.target else {
            continue;
        };
        let name = &branch.name;
        match cursor.branches.get(name) {
            Some(previous) if *previous == target.hash => {}
            Some(previous) => changes.moved.push(MovedBranch {
                name: name.clone(),
                previous_head: previous.clone(),
                head: target.hash.clone(),
            }),
            None => changes.activities.push(activity(
                format!("{repo}:branch:{name}:created:{}", target.hash),
                repo,
                target.date.unwrap_or(now),
                commit_actor(target),
                Links::html(&target.links),
                ActivityKind::BranchCreated {
                    branch: name.clone(),
                    head: target.hash.clone(),
                },
            )),
        }
    }
    let present = branch_heads(branches);
    if complete {
        for (name, previous) in &cursor.branches {
            if !present.contains_key(name) {
                changes.activities.push(activity(
                    format!("{repo}:branch:{name}:deleted:{previous}"),
                    repo,
                    now,
                    None,
                    None,
                    ActivityKind::BranchDeleted {
                        branch: name.clone(),
                        previous_head: previous.clone(),
                    },
                ));
            }
        }
        cursor.branches = present;
    } else {
        cursor.branches.extend(present);
    }
    changes
}

pub(super) fn commit_actor(commit: &Commit) -> Option<Actor> {
    let author = commit.author.as_ref()?;
    if let Some(found) = actor(&author.user) {
        return Some(found);
    }
    let raw = author.raw.as_deref()?;
    let name = raw.split('<').next().unwrap_or(raw).trim();
    Some(Actor {
        display_name: name.to_string(),
        uuid: None,
    })
}

fn commit_ref(commit: &Commit) -> CommitRef {
    CommitRef {
        hash: commit.hash.clone(),
        summary: commit
            .message
            .as_deref()
            .and_then(|m| m.lines().next())
            .unwrap_or("")
            .to_string(),
        author: commit_actor(commit)
            .map(|a| a.display_name)
            .unwrap_or_default(),
        link: Links::html(&commit.links),
    }
}

/// The push activity of a moved branch, from its commits (newest first, as listed by
/// `commits/{head}?exclude={previous}`); `more` says the listing had further pages.
pub fn push(
    repo: &str,
    moved: &MovedBranch,
    commits: &[Commit],
    more: bool,
    now: Timestamp,
) -> Activity {
    let listed: Vec<CommitRef> = commits.iter().take(MAX_COMMITS).map(commit_ref).collect();
    let newest = commits.first();
    activity(
        format!(
            "{repo}:push:{}:{}..{}",
            moved.name, moved.previous_head, moved.head
        ),
        repo,
        newest.and_then(|c| c.date).unwrap_or(now),
        newest.and_then(commit_actor),
        newest.and_then(|c| Links::html(&c.links)),
        ActivityKind::Push {
            branch: moved.name.clone(),
            previous_head: moved.previous_head.clone(),
            head: moved.head.clone(),
            commits: listed,
            truncated: more || commits.len() > MAX_COMMITS,
        },
    )
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::bitbucket::diff::test_support::*;

    fn branch_list(values: Value) -> Vec<Branch> {
        serde_json::from_value(values).expect("branches")
    }

    #[test]
    fn branch_heads_give_created_moved_and_deleted() {
        let mut cursor = baselined();
        cursor.branches = [("main", "a"), ("old", "o"), ("feature", "f1")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let listed = branch_list(json!([
            {"name": "main", "target": {"hash": "a"}},
            {"name": "feature", "target": {"hash": "f2"}},
            {"name": "new", "target": {"hash": "n", "author": {"raw": "Ada <ada@x>"}}}
        ]));
        let partial = branches(&mut cursor.clone(), REPO, &listed, false, at(1));
        assert!(
            partial
                .activities
                .iter()
                .all(|a| a.kind.name() != "branch_deleted")
        );
        let changes = branches(&mut cursor, REPO, &listed, true, at(1));
        assert_eq!(
            kinds(&changes.activities),
            vec!["branch:new:created:n", "branch:old:deleted:o"]
        );
        assert_eq!(
            changes.activities[0]
                .actor
                .as_ref()
                .map(|a| a.display_name.as_str()),
            Some("Ada")
        );
        assert_eq!(
            changes.moved,
            vec![MovedBranch {
                name: "feature".into(),
                previous_head: "f1".into(),
                head: "f2".into()
            }]
        );
        let commits: Vec<Commit> = serde_json::from_value(json!([
            {"hash": "f2", "message": "Second\n\nbody", "author": {"raw": "Ada <ada@x>"}},
            {"hash": "f1b", "message": "First"}
        ]))
        .expect("commits");
        let pushed = push(REPO, &changes.moved[0], &commits, true, at(2));
        let ActivityKind::Push {
            commits, truncated, ..
        } = &pushed.kind
        else {
            panic!("{pushed:?}");
        };
        assert_eq!(commits[0].summary, "Second");
        assert!(*truncated);
        assert_eq!(pushed.id, "acme/api:push:feature:f1..f2");
    }
}
