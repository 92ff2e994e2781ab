//! Pure: the issue lane. Issues updated after the watermark are created (new) or
//! changed; a changed issue's newest comments tell a comment from another update.
//!
//! Owns the issue watermark in the cursor. Must never do I/O, read the clock or spawn; it
//! never reads comments itself (the poller does, for the issues it names).

use jiff::Timestamp;

use super::{RepoCursor, activity, actor};
use crate::bitbucket::activity::{Activity, ActivityKind, CommentRef, IssueRef, excerpt};
use crate::bitbucket::model::{Content, Issue, IssueComment, Links};

fn issue_ref(issue: &Issue) -> IssueRef {
    IssueRef {
        id: issue.id,
        title: issue.title.clone().unwrap_or_default(),
        state: issue.state.clone().unwrap_or_default(),
        kind: issue.kind.clone(),
        priority: issue.priority.clone(),
        link: Links::html(&issue.links),
    }
}

/// What the issue list said: new issues (as activities) and older issues that changed,
/// whose comments the poller reads to tell a comment from another update.
#[derive(Debug, Default)]
pub struct IssueChanges {
    pub activities: Vec<Activity>,
    pub changed: Vec<Issue>,
    /// The watermark the changes were measured against.
    pub since: Option<Timestamp>,
}

/// Issues updated after the cursor's watermark (the list was asked for exactly those).
pub fn issues(cursor: &mut RepoCursor, repo: &str, page: &[Issue]) -> IssueChanges {
    let since = cursor.issues.since;
    let mut changes = IssueChanges {
        since,
        ..IssueChanges::default()
    };
    for issue in page {
        let Some(updated_on) = issue.updated_on else {
            continue;
        };
        if since.is_some_and(|since| updated_on <= since) {
            continue;
        }
        cursor.issues.since = Some(
            cursor
                .issues
                .since
                .map_or(updated_on, |s| s.max(updated_on)),
        );
        let is_new = issue
            .created_on
            .is_some_and(|created| since.is_none_or(|since| created > since));
        if is_new {
            changes.activities.push(activity(
                format!("{repo}:issue:{}:created", issue.id),
                repo,
                issue.created_on.unwrap_or(updated_on),
                actor(&issue.reporter),
                Links::html(&issue.links),
                ActivityKind::IssueCreated {
                    issue: issue_ref(issue),
                },
            ));
        } else {
            changes.changed.push(issue.clone());
        }
    }
    changes
}

/// Whether an issue comment is the record of an edit rather than something a person
/// wrote: Bitbucket attaches one, with `{"raw": null, "html": ""}`, to every change.
fn is_change_record(comment: &IssueComment) -> bool {
    comment.content.as_ref().is_none_or(|c| c.raw.is_none())
}

/// A changed issue's newest comments: those after `since` that people wrote are comment
/// activities; with none (only change records, or nothing), the change was an update, by
/// the newest change record's author when there is one.
pub fn issue_comments(
    repo: &str,
    issue: &Issue,
    comments: &[IssueComment],
    since: Option<Timestamp>,
) -> Vec<Activity> {
    let (changes, fresh): (Vec<&IssueComment>, Vec<&IssueComment>) = comments
        .iter()
        .filter(|c| {
            c.created_on
                .is_some_and(|created| since.is_none_or(|s| created > s))
        })
        .partition(|c| is_change_record(c));
    if fresh.is_empty() {
        let updated_on = issue.updated_on.unwrap_or(Timestamp::UNIX_EPOCH);
        let editor = changes
            .iter()
            .max_by_key(|c| c.created_on)
            .and_then(|c| actor(&c.user));
        return vec![activity(
            format!("{repo}:issue:{}:updated:{updated_on}", issue.id),
            repo,
            updated_on,
            editor,
            Links::html(&issue.links),
            ActivityKind::IssueUpdated {
                issue: issue_ref(issue),
            },
        )];
    }
    fresh
        .into_iter()
        .map(|comment| {
            let comment_ref = CommentRef {
                id: comment.id,
                excerpt: excerpt(Content::raw_text(comment.content.as_ref())),
                link: Links::html(&comment.links),
                inline_path: None,
                inline_line: None,
                parent_author: None,
                mentions: super::pull_requests::mentions_in(Content::raw_text(
                    comment.content.as_ref(),
                )),
            };
            activity(
                format!("{repo}:issue:{}:comment:{}", issue.id, comment.id),
                repo,
                comment.created_on.unwrap_or(Timestamp::UNIX_EPOCH),
                actor(&comment.user),
                comment_ref
                    .link
                    .clone()
                    .or_else(|| Links::html(&issue.links)),
                ActivityKind::IssueCommented {
                    issue: issue_ref(issue),
                    comment: comment_ref,
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::bitbucket::diff::test_support::*;

    #[test]
    fn issues_are_created_commented_or_updated() {
        let mut cursor = baselined();
        let page: Vec<Issue> = serde_json::from_value(json!([
            {"id": 2, "title": "New", "created_on": time(3), "updated_on": time(3)},
            {"id": 1, "title": "Old", "created_on": time(-100), "updated_on": time(4)},
            {"id": 9, "title": "Stale", "created_on": time(-100), "updated_on": time(0)}
        ]))
        .expect("issues");
        let changes = issues(&mut cursor, REPO, &page);
        assert_eq!(kinds(&changes.activities), vec!["issue:2:created"]);
        assert_eq!(changes.changed.len(), 1);
        assert_eq!(cursor.issues.since, Some(at(4)));
        let comments: Vec<IssueComment> = serde_json::from_value(
            json!([{"id": 7, "content": {"raw": "me too"}, "created_on": time(4)}]),
        )
        .expect("comments");
        let old = &changes.changed[0];
        assert_eq!(
            kinds(&issue_comments(REPO, old, &comments, changes.since)),
            vec!["issue:1:comment:7"]
        );
        assert_eq!(
            kinds(&issue_comments(REPO, old, &[], changes.since)),
            vec![format!("issue:1:updated:{}", at(4))]
        );
    }

    #[test]
    fn an_edit_record_is_an_update_by_its_author_not_an_empty_comment() {
        let mut cursor = baselined();
        let page: Vec<Issue> = serde_json::from_value(json!([
            {"id": 1, "title": "Old", "state": "resolved", "created_on": time(-100), "updated_on": time(4)}
        ]))
        .expect("issues");
        let changes = issues(&mut cursor, REPO, &page);
        let comments: Vec<IssueComment> = serde_json::from_value(json!([{
            "id": 8, "content": {"raw": null, "markup": "markdown", "html": ""},
            "created_on": time(4), "user": {"display_name": "Eve", "uuid": "{eve}", "type": "user"}
        }]))
        .expect("comments");
        let found = issue_comments(REPO, &changes.changed[0], &comments, changes.since);
        assert_eq!(kinds(&found), vec![format!("issue:1:updated:{}", at(4))]);
        assert_eq!(
            found[0].actor.as_ref().map(|a| a.display_name.as_str()),
            Some("Eve")
        );
    }
}
