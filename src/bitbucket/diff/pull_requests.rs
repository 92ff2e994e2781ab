//! Pure: the pull request lane. New entries of a repository's pull request activity feed
//! (created, updated, merged, declined, approved, changes requested, commented) and the
//! approvals that disappeared (the feed shows no "unapproved" entry).
//!
//! Owns the feed's watermark, look-back ([`FEED_LOOKBACK`]) and per-entry keys, and the
//! tracked open pull requests and approvals in the cursor. Must never do I/O, read the
//! clock (`now` is passed in) or spawn; an entry without a date is skipped.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};

use super::{RepoCursor, ReviewerCheck, TrackedApproval, TrackedPullRequest, activity, actor};
use crate::bitbucket::activity::{
    Activity, ActivityKind, Actor, CommentRef, PullRequestRef, excerpt,
};
use crate::bitbucket::model::{
    Content, Endpoint, FeedEntry, Links, PullRequestDetail, PullRequestState, PullRequestSummary,
    User, same_commit,
};

/// Feed entries this much older than the watermark are read again (and deduplicated by
/// key), because an entry can show up late: a draft comment published after newer ones.
pub const FEED_LOOKBACK: SignedDuration = SignedDuration::from_mins(10);

/// How many comment authors the cursor remembers, for replies.
pub const KNOWN_COMMENT_AUTHORS: usize = 500;

/// What the cursor remembers of an open pull request listed at the baseline.
pub(super) fn tracked_from_summary(summary: &PullRequestSummary) -> TrackedPullRequest {
    TrackedPullRequest {
        title: summary.title.clone(),
        head: Endpoint::commit_hash(&summary.source),
        author: actor(&summary.author),
        source_branch: Endpoint::branch_name(&summary.source),
        destination_branch: Endpoint::branch_name(&summary.destination),
        draft: summary.state.as_deref() == Some("DRAFT") || summary.draft == Some(true),
        reviewers: None,
    }
}

/// The oldest entry date still worth reading; older pages need not be fetched.
pub fn feed_cutoff(cursor: &RepoCursor) -> Option<Timestamp> {
    cursor
        .feed
        .watermark
        .and_then(|watermark| watermark.checked_sub(FEED_LOOKBACK).ok())
}

/// Whether scrolling past this page (newest first) would only find what was processed:
/// it reaches below the look-back or the baseline's floor, or every entry on it was
/// processed already.
pub fn feed_page_is_enough(cursor: &RepoCursor, page: &[FeedEntry]) -> bool {
    let feed = &cursor.feed;
    let cutoff = feed_cutoff(cursor);
    let below = page.iter().filter_map(entry_date).any(|date| {
        cutoff.is_some_and(|cutoff| date < cutoff) || feed.floor.is_some_and(|floor| date <= floor)
    });
    let all_seen = !page.is_empty()
        && page
            .iter()
            .all(|entry| entry_key(entry).is_some_and(|key| feed.recent.contains_key(&key)));
    below || all_seen
}

/// New entries of the feed (as received, newest first) become activities.
pub fn feed(cursor: &mut RepoCursor, repo: &str, entries: &[FeedEntry]) -> Vec<Activity> {
    let mut activities = Vec::new();
    for entry in fresh_entries(cursor, entries) {
        activities.extend(apply_entry(cursor, repo, entry));
    }
    prune_recent(cursor);
    activities
}

/// Applies entries to the cursor without emitting anything (the baseline).
pub(super) fn feed_silently(cursor: &mut RepoCursor, entries: &[FeedEntry]) {
    for entry in fresh_entries(cursor, entries) {
        apply_entry(cursor, "", entry);
    }
    prune_recent(cursor);
}

/// Entries not processed before, oldest first; records their keys and the watermark.
fn fresh_entries<'a>(cursor: &mut RepoCursor, entries: &'a [FeedEntry]) -> Vec<&'a FeedEntry> {
    let cutoff = feed_cutoff(cursor);
    let mut fresh: Vec<(Timestamp, &FeedEntry, String)> = entries
        .iter()
        .filter_map(|entry| Some((entry_date(entry)?, entry, entry_key(entry)?)))
        .filter(|(date, _, _)| cutoff.is_none_or(|cutoff| *date >= cutoff))
        .filter(|(date, _, _)| cursor.feed.floor.is_none_or(|floor| *date > floor))
        .filter(|(_, _, key)| !cursor.feed.recent.contains_key(key))
        .collect();
    fresh.sort_by_key(|(date, _, _)| *date);
    fresh.dedup_by(|a, b| a.2 == b.2);
    for (date, entry, key) in &fresh {
        if !is_pending_comment(entry) {
            cursor.feed.recent.insert(key.clone(), *date);
        }
        cursor.feed.watermark = Some(cursor.feed.watermark.map_or(*date, |w| w.max(*date)));
    }
    fresh
        .into_iter()
        .filter(|(_, entry, _)| !is_pending_comment(entry))
        .map(|(_, entry, _)| entry)
        .collect()
}

fn is_pending_comment(entry: &FeedEntry) -> bool {
    entry
        .comment
        .as_ref()
        .is_some_and(|comment| comment.pending)
}

fn prune_recent(cursor: &mut RepoCursor) {
    if let Some(cutoff) = feed_cutoff(cursor) {
        cursor.feed.recent.retain(|_, date| *date >= cutoff);
    }
}

/// When an entry happened; `None` for an entry that cannot be placed.
pub(super) fn entry_date(entry: &FeedEntry) -> Option<Timestamp> {
    if let Some(update) = &entry.update {
        return update.date;
    }
    if let Some(approval) = &entry.approval {
        return approval.date;
    }
    if let Some(changes) = &entry.changes_request {
        return changes.date;
    }
    entry
        .comment
        .as_ref()
        .and_then(|comment| comment.created_on)
}

/// What identifies an entry across re-reads of the feed (it has no id of its own).
fn entry_key(entry: &FeedEntry) -> Option<String> {
    let pr = entry.pull_request.as_ref()?.id;
    let uuid = |user: &Option<User>| {
        user.as_ref()
            .and_then(|user| user.uuid.clone())
            .unwrap_or_default()
    };
    if let Some(update) = &entry.update {
        return Some(format!(
            "u:{pr}:{}:{}:{}",
            update.date?,
            update.state.as_deref().unwrap_or(""),
            Endpoint::commit_hash(&update.source).unwrap_or_default()
        ));
    }
    if let Some(approval) = &entry.approval {
        return Some(format!(
            "a:{pr}:{}:{}",
            uuid(&approval.user),
            approval.date?
        ));
    }
    if let Some(changes) = &entry.changes_request {
        return Some(format!("c:{pr}:{}:{}", uuid(&changes.user), changes.date?));
    }
    let comment = entry.comment.as_ref()?;
    Some(format!("m:{pr}:{}", comment.id))
}

fn pull_request_ref(cursor: &RepoCursor, entry: &FeedEntry) -> Option<PullRequestRef> {
    let condensed = entry.pull_request.as_ref()?;
    let tracked = cursor.pull_requests.get(&condensed.id);
    Some(PullRequestRef {
        id: condensed.id,
        title: condensed
            .title
            .clone()
            .or_else(|| tracked.and_then(|t| t.title.clone()))
            .unwrap_or_default(),
        link: Links::html(&condensed.links),
        author: tracked.and_then(|t| t.author.clone()),
        source_branch: tracked.and_then(|t| t.source_branch.clone()),
        destination_branch: tracked.and_then(|t| t.destination_branch.clone()),
        reviewers: tracked.map(reviewer_uuids).unwrap_or_default(),
    })
}

fn apply_entry(cursor: &mut RepoCursor, repo: &str, entry: &FeedEntry) -> Option<Activity> {
    if entry.update.is_some() {
        return apply_update(cursor, repo, entry);
    }
    let pull_request = pull_request_ref(cursor, entry)?;
    let pr = pull_request.id;
    if let Some(approval) = &entry.approval {
        let date = approval.date?;
        let who = actor(&approval.user);
        let uuid = who
            .as_ref()
            .and_then(|a| a.uuid.clone())
            .unwrap_or_default();
        cursor.approvals.entry(pr).or_default().insert(
            uuid.clone(),
            TrackedApproval {
                date,
                display_name: who
                    .as_ref()
                    .map(|a| a.display_name.clone())
                    .unwrap_or_default(),
            },
        );
        let id = format!("{repo}:pr:{pr}:approved:{uuid}:{date}");
        let link = pull_request.link.clone();
        let kind = ActivityKind::PullRequestApproved { pull_request };
        return Some(activity(id, repo, date, who, link, kind));
    }
    if let Some(changes) = &entry.changes_request {
        let date = changes.date?;
        let who = actor(&changes.user);
        let uuid = who
            .as_ref()
            .and_then(|a| a.uuid.clone())
            .unwrap_or_default();
        let id = format!("{repo}:pr:{pr}:changes_requested:{uuid}:{date}");
        let link = pull_request.link.clone();
        let kind = ActivityKind::PullRequestChangesRequested { pull_request };
        return Some(activity(id, repo, date, who, link, kind));
    }
    let comment = entry.comment.as_ref()?;
    if comment.deleted {
        return None;
    }
    let date = comment.created_on?;
    let inline = comment.inline.as_ref();
    let author = actor(&comment.user);
    let parent_author = comment
        .parent
        .as_ref()
        .and_then(|parent| parent.id)
        .and_then(|parent| cursor.comment_authors.get(&parent).cloned());
    note_comment_author(cursor, comment.id, author.as_ref());
    let raw = Content::raw_text(comment.content.as_ref());
    let comment_ref = CommentRef {
        id: comment.id,
        excerpt: excerpt(raw),
        link: Links::html(&comment.links),
        inline_path: inline.and_then(|i| i.path.clone()),
        inline_line: inline.and_then(|i| i.to.or(i.from)),
        parent_author,
        mentions: mentions_in(raw),
    };
    let id = format!("{repo}:pr:{pr}:comment:{}", comment.id);
    let link = comment_ref.link.clone().or(pull_request.link.clone());
    let kind = ActivityKind::PullRequestCommented {
        pull_request,
        comment: comment_ref,
    };
    Some(activity(id, repo, date, author, link, kind))
}

/// The reviewers a pull request's activities name: the uuids last read, in order.
fn reviewer_uuids(tracked: &TrackedPullRequest) -> Vec<String> {
    tracked
        .reviewers
        .as_ref()
        .map(|uuids| uuids.iter().cloned().collect())
        .unwrap_or_default()
}

/// Remembers who wrote a comment, so a reply to it can name them; the oldest are
/// forgotten beyond [`KNOWN_COMMENT_AUTHORS`].
fn note_comment_author(cursor: &mut RepoCursor, comment: u64, author: Option<&Actor>) {
    let Some(author) = author else { return };
    cursor.comment_authors.insert(comment, author.clone());
    while cursor.comment_authors.len() > KNOWN_COMMENT_AUTHORS {
        cursor.comment_authors.pop_first();
    }
}

/// At most this many mentions are read from one comment.
pub const MAX_MENTIONS: usize = 20;

/// Who a comment's raw text mentions, each once, in order: `@{...}` (an account id or a
/// `{uuid}`) as `{...}`, and `@nickname` as the nickname. An `@` inside a word (an
/// e-mail address) or inside code is not a mention.
pub fn mentions_in(raw: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let mut in_code = false;
    let mut previous: Option<char> = None;
    for (at, c) in raw.char_indices() {
        if c == '`' {
            in_code = !in_code;
        }
        let starts_word = previous.is_none_or(|p| !(p.is_alphanumeric() || p == '_' || p == '.'));
        previous = Some(c);
        if c != '@' || in_code || !starts_word {
            continue;
        }
        let rest = &raw[at + 1..];
        let mention = if let Some(braced) = rest.strip_prefix('{') {
            braced
                .find('}')
                .map(|end| &braced[..end])
                .filter(|inner| !inner.is_empty() && !inner.contains(char::is_whitespace))
                .map(|inner| format!("{{{inner}}}"))
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
                .collect();
            let name = name.trim_end_matches('.').to_string();
            (!name.is_empty()).then_some(name)
        };
        if let Some(mention) = mention {
            if !found.contains(&mention) && found.len() < MAX_MENTIONS {
                found.push(mention);
            }
        }
    }
    found
}

fn apply_update(cursor: &mut RepoCursor, repo: &str, entry: &FeedEntry) -> Option<Activity> {
    let update = entry.update.as_ref()?;
    let pr = entry.pull_request.as_ref()?.id;
    let date = update.date?;
    let head = Endpoint::commit_hash(&update.source);
    let previous = cursor.pull_requests.get(&pr).cloned();
    // An unknown state is not guessed at: the entry is skipped.
    let state = PullRequestState::parse(update.state.as_deref())?;
    let author = actor(&update.author);
    if state.is_open() {
        let tracked = TrackedPullRequest {
            title: update
                .title
                .clone()
                .or_else(|| entry.pull_request.as_ref().and_then(|p| p.title.clone())),
            head: head
                .clone()
                .or_else(|| previous.as_ref().and_then(|p| p.head.clone())),
            author: previous
                .as_ref()
                .and_then(|p| p.author.clone())
                .or_else(|| author.clone()),
            source_branch: Endpoint::branch_name(&update.source),
            destination_branch: Endpoint::branch_name(&update.destination),
            draft: state == PullRequestState::Draft,
            reviewers: previous.as_ref().and_then(|p| p.reviewers.clone()),
        };
        cursor.pull_requests.insert(pr, tracked);
    }
    let pull_request = pull_request_ref(cursor, entry)?;
    let link = pull_request.link.clone();
    let created = previous.is_none() && pr > cursor.max_pull_request_id;
    if state.is_open() {
        note_reviewers(cursor, pr, author.clone(), date, created);
    }
    // Merged and declined updates carry who closed the pull request as their author;
    // `closed_by` is read when present (it never is in the feed).
    let closer = actor(&update.closed_by).or_else(|| author.clone());
    let moved = |previous: &TrackedPullRequest| match (&previous.head, &head) {
        (Some(before), Some(now)) => !same_commit(before, now),
        (None, Some(_)) => true,
        _ => false,
    };
    let (suffix, kind, who) = match state {
        PullRequestState::Open | PullRequestState::Draft if created => {
            cursor.max_pull_request_id = pr;
            if state == PullRequestState::Draft {
                let kind = ActivityKind::PullRequestDraftCreated { pull_request };
                ("draft_created".to_string(), kind, author)
            } else {
                let kind = ActivityKind::PullRequestCreated { pull_request };
                ("created".to_string(), kind, author)
            }
        }
        PullRequestState::Open | PullRequestState::Draft | PullRequestState::Queued => {
            let previous = previous?;
            if moved(&previous) {
                let head = head.unwrap_or_default();
                let kind = ActivityKind::PullRequestUpdated {
                    pull_request,
                    previous_head: previous.head,
                    head: head.clone(),
                };
                (format!("updated:{head}"), kind, author)
            } else if previous.draft && state == PullRequestState::Open {
                let kind = ActivityKind::PullRequestReadyForReview { pull_request };
                (format!("ready:{date}"), kind, author)
            } else {
                // A title or description edit, a reviewer change (read from the detail),
                // a move into the merge queue or to draft: not news by itself.
                return None;
            }
        }
        PullRequestState::Merged => {
            forget_pull_request(cursor, pr);
            let kind = ActivityKind::PullRequestMerged { pull_request };
            ("merged".to_string(), kind, closer)
        }
        PullRequestState::Declined => {
            forget_pull_request(cursor, pr);
            let reason = update.reason.clone().filter(|r| !r.trim().is_empty());
            let kind = ActivityKind::PullRequestDeclined {
                pull_request,
                reason,
            };
            (format!("declined:{date}"), kind, closer)
        }
        // Replaced by a newer pull request, which is reported on its own.
        PullRequestState::Superseded => {
            forget_pull_request(cursor, pr);
            return None;
        }
    };
    let id = format!("{repo}:pr:{pr}:{suffix}");
    Some(activity(id, repo, date, who, link, kind))
}

/// An update of an open pull request may have changed its reviewers; the feed does not
/// say who was added, so the pull request's detail is to be read (by the poller, a few per
/// poll). A just-opened pull request's reviewers are all news.
fn note_reviewers(
    cursor: &mut RepoCursor,
    pr: u64,
    by: Option<Actor>,
    date: Timestamp,
    created: bool,
) {
    let announce_all = created
        || cursor
            .reviewer_checks
            .get(&pr)
            .is_some_and(|check| check.announce_all);
    cursor.reviewer_checks.insert(
        pr,
        ReviewerCheck {
            date,
            by,
            announce_all,
        },
    );
}

fn forget_pull_request(cursor: &mut RepoCursor, pr: u64) {
    cursor.pull_requests.remove(&pr);
    cursor.approvals.remove(&pr);
    cursor.reviewer_checks.remove(&pr);
    cursor.max_pull_request_id = cursor.max_pull_request_id.max(pr);
}

/// Reads a pull request's reviewers from its detail, for a queued [`ReviewerCheck`]: each
/// reviewer not known before is asked to review, by who made the update. The first read
/// of a pull request the baseline found only records.
pub fn reviewers(cursor: &mut RepoCursor, repo: &str, detail: &PullRequestDetail) -> Vec<Activity> {
    let pr = detail.id;
    let Some(check) = cursor.reviewer_checks.remove(&pr) else {
        return Vec::new();
    };
    if !PullRequestState::names_open(detail.state.as_deref()) {
        return Vec::new();
    }
    let Some(tracked) = cursor.pull_requests.get(&pr) else {
        return Vec::new();
    };
    // `reviewers` when the answer carries it, else the participants in the reviewer role.
    let now: Vec<&User> = match &detail.reviewers {
        Some(reviewers) => reviewers.iter().flatten().collect(),
        None => detail
            .participants
            .iter()
            .filter(|p| p.role.as_deref() == Some("REVIEWER"))
            .filter_map(|p| p.user.as_ref())
            .collect(),
    };
    let known = tracked.reviewers.clone();
    let mut activities = Vec::new();
    let announce = check.announce_all || known.is_some();
    if announce {
        let known = known.unwrap_or_default();
        for user in &now {
            let Some(uuid) = &user.uuid else { continue };
            if known.contains(uuid) {
                continue;
            }
            let Some(reviewer) = actor(&Some((*user).clone())) else {
                continue;
            };
            let Some(pull_request) = tracked_pull_request_ref(cursor, pr, detail) else {
                continue;
            };
            let date = check.date;
            let id = format!("{repo}:pr:{pr}:review_requested:{uuid}:{date}");
            let link = pull_request.link.clone();
            let kind = ActivityKind::PullRequestReviewRequested {
                pull_request,
                reviewer,
            };
            activities.push(activity(id, repo, date, check.by.clone(), link, kind));
        }
    }
    let uuids = now.iter().filter_map(|u| u.uuid.clone()).collect();
    if let Some(tracked) = cursor.pull_requests.get_mut(&pr) {
        tracked.reviewers = Some(uuids);
    }
    activities
}

/// A tracked pull request as activities name it, with the detail's title and link.
fn tracked_pull_request_ref(
    cursor: &RepoCursor,
    pr: u64,
    detail: &PullRequestDetail,
) -> Option<PullRequestRef> {
    let tracked = cursor.pull_requests.get(&pr)?;
    Some(PullRequestRef {
        id: pr,
        title: detail
            .title
            .clone()
            .or_else(|| tracked.title.clone())
            .unwrap_or_default(),
        link: Links::html(&detail.links),
        author: tracked.author.clone(),
        source_branch: tracked.source_branch.clone(),
        destination_branch: tracked.destination_branch.clone(),
        reviewers: reviewer_uuids(tracked),
    })
}

// ---------------------------------------------------------------------------
// Approvals that disappeared (the feed shows no "unapproved" entry)
// ---------------------------------------------------------------------------

/// Compares a pull request's participants with the approvals we saw: each approval that
/// is gone is an unapprove, detected at `now`.
pub fn approvals(
    cursor: &mut RepoCursor,
    repo: &str,
    detail: &PullRequestDetail,
    now: Timestamp,
) -> Vec<Activity> {
    let pr = detail.id;
    let Some(known) = cursor.approvals.remove(&pr) else {
        return Vec::new();
    };
    if !PullRequestState::names_open(detail.state.as_deref()) {
        return Vec::new();
    }
    let approved_now: BTreeSet<String> = detail
        .participants
        .iter()
        .filter(|p| p.approved)
        .filter_map(|p| p.user.as_ref().and_then(|u| u.uuid.clone()))
        .collect();
    let mut activities = Vec::new();
    let mut still = BTreeMap::new();
    for (uuid, approval) in known {
        if approved_now.contains(&uuid) {
            still.insert(uuid, approval);
            continue;
        }
        let pull_request = tracked_pull_request_ref(cursor, pr, detail).unwrap_or(PullRequestRef {
            id: pr,
            title: detail.title.clone().unwrap_or_default(),
            link: Links::html(&detail.links),
            author: None,
            source_branch: None,
            destination_branch: None,
            reviewers: Vec::new(),
        });
        let id = format!("{repo}:pr:{pr}:unapproved:{uuid}:{}", approval.date);
        let who = Actor {
            display_name: approval.display_name.clone(),
            uuid: Some(uuid),
        };
        let link = pull_request.link.clone();
        let kind = ActivityKind::PullRequestUnapproved { pull_request };
        activities.push(activity(id, repo, now, Some(who), link, kind));
    }
    if !still.is_empty() {
        cursor.approvals.insert(pr, still);
    }
    activities
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::bitbucket::diff::test_support::*;

    #[test]
    fn the_baseline_emits_nothing_and_the_feed_then_reports_each_entry_once() {
        let mut cursor = baselined();
        assert_eq!(cursor.max_pull_request_id, 5);
        let page = entries(json!([
            comment(3, 77, 6, false),
            approval(3, "bob", 5),
            update(6, "OPEN", "n1", 4),
            update(3, "OPEN", "h2", 3),
            update(3, "OPEN", "h1", 0)
        ]));
        let found = feed(&mut cursor, REPO, &page);
        let ts = at(5);
        assert_eq!(
            kinds(&found),
            vec![
                "pr:3:updated:h2".to_string(),
                "pr:6:created".to_string(),
                format!("pr:3:approved:{{bob}}:{ts}"),
                "pr:3:comment:77".to_string(),
            ]
        );
        // The same page again (a re-read, or a poll redone): nothing.
        assert!(feed(&mut cursor, REPO, &page).is_empty());
        assert!(feed_page_is_enough(&cursor, &page));
        assert_eq!(cursor.approved_pull_requests(), vec![3]);
    }

    #[test]
    fn comments_name_the_author_they_reply_to_and_who_they_mention() {
        let mut cursor = baselined();
        let page = entries(json!([
            json!({"pull_request": pr(3), "comment": {"id": 91, "content": {"raw": "@{557058:x} and @bob, mail ada@example.com, `@code`"},
                "created_on": time(2), "user": {"display_name": "Cy", "uuid": "{cy}"}, "parent": {"id": 90}}}),
            comment(3, 90, 1, false),
        ]));
        let found = feed(&mut cursor, REPO, &page);
        let comments: Vec<&CommentRef> = found
            .iter()
            .filter_map(|a| match &a.kind {
                ActivityKind::PullRequestCommented { comment, .. } => Some(comment),
                _ => None,
            })
            .collect();
        assert_eq!(comments.len(), 2);
        assert_eq!(comments[0].parent_author, None);
        assert_eq!(
            comments[1]
                .parent_author
                .as_ref()
                .and_then(|a| a.uuid.as_deref()),
            Some("{bob}"),
            "the reply names the author of comment 90"
        );
        assert_eq!(comments[1].mentions, vec!["{557058:x}", "bob"]);
    }

    #[test]
    fn mentions_are_read_once_each_and_never_from_addresses_or_code() {
        assert_eq!(mentions_in("@ada, @ada and @{u-1}."), vec!["ada", "{u-1}"]);
        assert_eq!(
            mentions_in("ada@example.com `@x` @ @{} @{a b}"),
            Vec::<String>::new()
        );
        assert_eq!(mentions_in("cc @grace.hopper."), vec!["grace.hopper"]);
    }

    #[test]
    fn state_changes_title_edits_and_comments() {
        let mut cursor = baselined();
        let page = entries(json!([
            update(3, "OPEN", "h1", 2),
            json!({"pull_request": pr(3), "changes_requested": {"date": time(3), "user": {"display_name": "Cy", "uuid": "{cy}"}}}),
            comment(3, 80, 4, true),
            update(4, "OPEN", "x", 5),
            update(3, "MERGED", "h1", 6),
            update(2, "DECLINED", "y", 7),
        ]));
        let found = feed(&mut cursor, REPO, &page);
        assert_eq!(
            kinds(&found),
            vec![
                format!("pr:3:changes_requested:{{cy}}:{}", at(3)),
                "pr:3:merged".to_string(),
                format!("pr:2:declined:{}", at(7)),
            ],
            "a title edit, a draft comment and an old pull request's update are not news"
        );
        assert!(cursor.pull_requests.contains_key(&4));
        assert!(!cursor.pull_requests.contains_key(&3));
        // The draft is published later, with its old date: still reported.
        let published = entries(json!([comment(3, 80, 4, false)]));
        assert_eq!(
            kinds(&feed(&mut cursor, REPO, &published)),
            vec!["pr:3:comment:80"]
        );
    }

    #[test]
    fn a_missing_approval_is_an_unapprove() {
        let mut cursor = baselined();
        feed(
            &mut cursor,
            REPO,
            &entries(json!([approval(3, "bob", 2), approval(3, "cy", 3)])),
        );
        let detail: PullRequestDetail = serde_json::from_value(json!({
            "id": 3, "state": "OPEN", "title": "PR 3",
            "participants": [{"user": {"uuid": "{cy}"}, "approved": true}, {"user": {"uuid": "{bob}"}, "approved": false}]
        }))
        .expect("detail");
        let found = approvals(&mut cursor, REPO, &detail, at(9));
        assert_eq!(
            kinds(&found),
            vec![format!("pr:3:unapproved:{{bob}}:{}", at(2))]
        );
        assert_eq!(
            found[0].actor.as_ref().map(|a| a.display_name.as_str()),
            Some("bob")
        );
        assert!(approvals(&mut cursor, REPO, &detail, at(10)).is_empty());
    }
    #[test]
    fn merged_and_declined_name_the_update_author_as_the_feed_has_no_closed_by() {
        let mut cursor = baselined();
        let page = entries(json!([update(3, "MERGED", "h1", 2)]));
        let found = feed(&mut cursor, REPO, &page);
        assert_eq!(
            found[0].actor.as_ref().map(|a| a.display_name.as_str()),
            Some("Ada"),
            "who merged is the update's author"
        );
    }

    #[test]
    fn a_short_hash_is_the_same_head_as_the_full_one() {
        let full = "h1aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let feed_page = entries(json!([update(3, "OPEN", full, 0)]));
        let prs =
            summaries(json!([{"id": 3, "state": "OPEN", "source": {"commit": {"hash": full}}}]));
        let mut cursor = crate::bitbucket::diff::baseline(&info(), &prs, &feed_page, &[], at(1));
        let page = entries(json!([update(3, "OPEN", &full[..12], 2)]));
        assert!(
            feed(&mut cursor, REPO, &page).is_empty(),
            "a 12-character hash of the same commit is not new commits"
        );
    }

    #[test]
    fn drafts_open_quietly_then_become_ready_and_queued_stays_open() {
        let mut cursor = baselined();
        let page = entries(json!([update(7, "DRAFT", "d1", 2)]));
        assert_eq!(
            kinds(&feed(&mut cursor, REPO, &page)),
            vec!["pr:7:draft_created"]
        );
        assert!(cursor.pull_requests[&7].draft);
        let page = entries(json!([update(7, "OPEN", "d1", 3)]));
        assert_eq!(
            kinds(&feed(&mut cursor, REPO, &page)),
            vec![format!("pr:7:ready:{}", at(3))],
            "the later OPEN of a draft is 'ready for review', not lost"
        );
        let page = entries(json!([update(7, "QUEUED", "d1", 4)]));
        assert!(feed(&mut cursor, REPO, &page).is_empty());
        assert!(
            cursor.has_open_pull_requests(),
            "a queued pull request is open"
        );
        let page = entries(json!([
            update(7, "SUPERSEDED", "d1", 5),
            update(8, "OPEN", "e1", 5)
        ]));
        assert_eq!(kinds(&feed(&mut cursor, REPO, &page)), vec!["pr:8:created"]);
        assert!(!cursor.pull_requests.contains_key(&7));
    }

    #[test]
    fn reviewers_added_are_asked_to_review_once() {
        let mut cursor = baselined();
        // The baseline queued a quiet first read of PR 3's reviewers.
        let detail = |reviewers: serde_json::Value| -> PullRequestDetail {
            serde_json::from_value(
                json!({"id": 3, "state": "OPEN", "title": "PR 3", "reviewers": reviewers}),
            )
            .expect("detail")
        };
        let bob = json!({"type": "user", "display_name": "Bob", "uuid": "{bob}"});
        let cy = json!({"type": "user", "display_name": "Cy", "uuid": "{cy}"});
        assert!(reviewers(&mut cursor, REPO, &detail(json!([bob]))).is_empty());
        // An edit adds Cy: the feed entry queues a read; the detail names the new reviewer.
        feed(
            &mut cursor,
            REPO,
            &entries(json!([update(3, "OPEN", "h1", 4)])),
        );
        assert!(cursor.reviewer_checks.contains_key(&3));
        let found = reviewers(&mut cursor, REPO, &detail(json!([bob, cy])));
        assert_eq!(
            kinds(&found),
            vec![format!("pr:3:review_requested:{{cy}}:{}", at(4))]
        );
        assert_eq!(
            found[0].actor.as_ref().map(|a| a.display_name.as_str()),
            Some("Ada")
        );
        assert!(reviewers(&mut cursor, REPO, &detail(json!([bob, cy]))).is_empty());
        // A new pull request's reviewers are all asked; deleted accounts are skipped.
        feed(
            &mut cursor,
            REPO,
            &entries(json!([update(9, "OPEN", "n1", 5)])),
        );
        let detail9: PullRequestDetail = serde_json::from_value(json!({
            "id": 9, "state": "OPEN", "reviewers": [bob, null],
        }))
        .expect("detail");
        assert_eq!(
            kinds(&reviewers(&mut cursor, REPO, &detail9)),
            vec![format!("pr:9:review_requested:{{bob}}:{}", at(5))]
        );
    }
}
