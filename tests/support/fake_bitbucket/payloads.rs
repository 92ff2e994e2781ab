//! The fake Bitbucket's JSON: Bitbucket Cloud's payload objects (account, repository, pull
//! request, commit, branch, pipeline, issue, comment) and its paginated collections,
//! built from the fake world in the shapes of the API description (short commit hashes
//! on pull requests, `closed_by` only on pull request objects, pipeline states with
//! stages, accounts of every kind and deleted ones as `null`), and the BBQL `q=` the
//! fake understands. Pure: reads the world, never changes it.

use std::collections::{BTreeSet, HashMap};

use jiff::Timestamp;
use serde_json::{Value, json};

use super::{
    FakeCommit, FakeIssue, FakePipeline, FakePullRequest, FakeRepo, PipelineState, PipelineTarget,
};

/// The activity-feed key of a request-changes entry (the API's spelling; one place).
pub const CHANGES_REQUEST_KEY: &str = "changes_request";

/// How many hex digits Bitbucket serves in a pull request's `source`/`destination` commit.
pub const SHORT_HASH_LEN: usize = 12;

/// What became of an account since it was first named ([`super::FakeBitbucket::set_account_kind`],
/// [`super::FakeBitbucket::delete_account`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum AccountState {
    /// `team` or `app_user`.
    Kind(&'static str),
    /// Every object that names it serves `null` in its place.
    Deleted,
}

pub(super) fn user(name: &str) -> Value {
    json!({
        "type": "user",
        "display_name": name,
        "uuid": uuid_of(name),
        "account_id": format!("5b10a2844c20165700ede{name}"),
        "nickname": name,
        "links": {"html": {"href": format!("https://bitbucket.org/%7B{name}%7D/")}}
    })
}

/// A commit hash as Bitbucket serves it in a pull request (12 hex digits).
pub(super) fn short(hash: &str) -> &str {
    &hash[..hash.len().min(SHORT_HASH_LEN)]
}

/// Rewrites every account object `answer` names (found by `uuid`) the way its account is
/// now: a team (no `account_id`, no `nickname`), an app user (no `nickname`), or deleted
/// (`null`; dropped from lists such as `reviewers`).
pub(super) fn present_accounts(answer: &mut Value, accounts: &HashMap<String, AccountState>) {
    if accounts.is_empty() {
        return;
    }
    let state_of = |value: &Value| -> Option<&AccountState> {
        let kind = value.get("type")?.as_str()?;
        if !matches!(kind, "user" | "team" | "app_user") {
            return None;
        }
        accounts.get(value.get("uuid")?.as_str()?)
    };
    match answer {
        Value::Object(object) => {
            for child in object.values_mut() {
                match state_of(child) {
                    Some(AccountState::Deleted) => *child = Value::Null,
                    Some(AccountState::Kind(kind)) => become_kind(child, kind),
                    None => present_accounts(child, accounts),
                }
            }
        }
        Value::Array(items) => {
            items.retain(|item| state_of(item) != Some(&AccountState::Deleted));
            for item in items.iter_mut() {
                match state_of(item) {
                    Some(AccountState::Kind(kind)) => become_kind(item, kind),
                    _ => present_accounts(item, accounts),
                }
            }
        }
        _ => {}
    }
}

fn become_kind(account: &mut Value, kind: &str) {
    account["type"] = json!(kind);
    if let Some(object) = account.as_object_mut() {
        object.remove("nickname");
        if kind == "team" {
            object.remove("account_id");
        }
    }
}

/// The `{uuid}` the fake gives a user name.
pub fn uuid_of(name: &str) -> String {
    format!("{{{name}-0000-4000-8000-000000000000}}")
}

pub(super) fn time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
}

pub(super) fn html(path: String) -> Value {
    json!({"html": {"href": format!("https://bitbucket.org/{path}")}, "self": {"href": format!("https://api.bitbucket.org/2.0/repositories/{path}")}})
}

/// The datetime of a BBQL `q` such as `updated_on>2026-01-01T00:00:00+00:00` (unquoted, as
/// BBQL writes datetimes; fractional seconds allowed). `Ok(None)` for a query without a
/// datetime comparison; `Err` (Bitbucket's message) for a quoted or unreadable datetime.
pub(super) fn q_time(q: &str) -> Result<Option<Timestamp>, String> {
    let Some(at) = q.find(['>', '<']) else {
        return Ok(None);
    };
    let field = q[..at].trim();
    if !field.ends_with("_on") {
        return Ok(None);
    }
    let value = q[at + 1..].trim_start_matches('=').trim();
    let value = value.split_whitespace().next().unwrap_or("");
    if value.starts_with('"') || value.starts_with('\'') {
        return Err(format!(
            "Invalid query: {field} is a datetime field, not a string: write the datetime unquoted ({value})"
        ));
    }
    value
        .parse()
        .map(Some)
        .map_err(|_| format!("Invalid query: cannot parse datetime {value:?}"))
}

/// Bitbucket's error body.
pub(super) fn error(message: &str) -> Value {
    json!({"type": "error", "error": {"message": message}})
}

pub(super) fn page(
    values: Vec<Value>,
    query: &[(String, String)],
    base: &str,
    parts: &[String],
) -> Value {
    let pagelen: usize = query
        .iter()
        .find(|(k, _)| k == "pagelen")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(10)
        .clamp(1, 100);
    let number: usize = query
        .iter()
        .find(|(k, _)| k == "page")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let size = values.len();
    let slice: Vec<Value> = values
        .into_iter()
        .skip((number - 1) * pagelen)
        .take(pagelen)
        .collect();
    let mut body = json!({"pagelen": pagelen, "size": size, "page": number, "values": slice});
    if number * pagelen < size {
        let mut next_query: Vec<(String, String)> =
            query.iter().filter(|(k, _)| k != "page").cloned().collect();
        next_query.push(("page".into(), (number + 1).to_string()));
        let encoded = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(next_query)
            .finish();
        body["next"] = json!(format!(
            "{base}/2.0/repositories/{}?{encoded}",
            parts.join("/")
        ));
    }
    body
}

pub(super) fn repo_json(name: &str, repo: &FakeRepo) -> Value {
    let slug = name.split('/').nth(1).unwrap_or(name);
    json!({
        "type": "repository",
        "full_name": name,
        "name": slug,
        "slug": slug,
        "uuid": format!("{{repo-{slug}}}"),
        "is_private": repo.private,
        "has_issues": repo.has_issues,
        "mainbranch": {"name": "main", "type": "branch"},
        "updated_on": repo.updated_on.map(time),
        "links": html(name.to_string())
    })
}

fn pull_request_json(repo: &str, r: &FakeRepo, pr: &FakePullRequest) -> Value {
    let destination_head = r.branches.get(&pr.destination).cloned().unwrap_or_default();
    json!({
        "type": "pullrequest",
        "id": pr.id,
        "title": pr.title,
        "description": "",
        "state": pr.state,
        "draft": pr.draft,
        "queued": pr.state == "QUEUED",
        "author": user(&pr.author),
        "source": endpoint_json(repo, &pr.source, &pr.head),
        "destination": endpoint_json(repo, &pr.destination, &destination_head),
        "reason": pr.reason,
        "closed_by": pr.closed_by.as_deref().map(user),
        "reviewers": pr.reviewers.iter().map(|name| user(name)).collect::<Vec<_>>(),
        "participants": pr.participants.iter().map(|(who, p)| json!({
            "type": "participant",
            "user": user(who),
            "role": p.role,
            "approved": p.approved,
            "state": p.state,
            "participated_on": p.participated_on.map(time),
        })).collect::<Vec<_>>(),
        "comment_count": 0,
        "task_count": 0,
        "created_on": time(pr.created_on),
        "updated_on": time(pr.updated_on),
        "links": html(format!("{repo}/pull-requests/{}", pr.id))
    })
}

/// What the pull-request collection leaves out unless `fields=` names it.
pub(super) const PULL_REQUESTS_HIDDEN: &[&str] = &["values.reviewers", "values.participants"];

pub(super) fn pull_requests(repo: &str, r: &FakeRepo, query: &[(String, String)]) -> Vec<Value> {
    let states: Vec<&str> = query
        .iter()
        .filter(|(k, _)| k == "state")
        .map(|(_, v)| v.as_str())
        .collect();
    let mut prs: Vec<&FakePullRequest> = r
        .pull_requests
        .values()
        .filter(|pr| {
            if states.is_empty() {
                pr.state == "OPEN"
            } else {
                states.contains(&pr.state.as_str())
            }
        })
        .collect();
    prs.sort_by_key(|pr| std::cmp::Reverse(pr.id));
    prs.into_iter()
        .map(|pr| pull_request_json(repo, r, pr))
        .collect()
}

/// `…/pullrequests/{id}`: the only representation with `reviewers` and `participants`
/// by default.
pub(super) fn pull_request_detail(repo: &str, r: &FakeRepo, pr: &FakePullRequest) -> Value {
    pull_request_json(repo, r, pr)
}

pub(super) fn commit_json(repo: &str, commit: &FakeCommit) -> Value {
    json!({
        "type": "commit",
        "hash": commit.hash,
        "date": time(commit.date),
        "message": format!("{}\n", commit.message),
        "author": {"type": "author", "raw": commit.author, "user": user("ada")},
        "parents": commit.parents.iter().map(|p| json!({"hash": p, "type": "commit"})).collect::<Vec<_>>(),
        "links": html(format!("{repo}/commits/{}", commit.hash))
    })
}

pub(super) fn branches(repo: &str, r: &FakeRepo) -> Vec<Value> {
    let mut list: Vec<(Timestamp, Value)> = r
        .branches
        .iter()
        .map(|(name, hash)| {
            let commit = &r.commits[hash];
            (
                commit.date,
                json!({"type": "branch", "name": name, "target": commit_json(repo, commit), "links": html(format!("{repo}/branch/{name}"))}),
            )
        })
        .collect();
    list.sort_by_key(|b| std::cmp::Reverse(b.0));
    list.into_iter().map(|(_, v)| v).collect()
}

fn ancestors(r: &FakeRepo, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from.to_string()];
    while let Some(hash) = stack.pop() {
        if let Some(commit) = r.commits.get(&hash) {
            if seen.insert(hash) {
                stack.extend(commit.parents.iter().cloned());
            }
        }
    }
    seen
}

/// The full hash a revision names: a full hash, a unique prefix of one, or a branch.
pub(super) fn resolve(r: &FakeRepo, revision: &str) -> Option<String> {
    if r.commits.contains_key(revision) {
        return Some(revision.to_string());
    }
    if let Some(head) = r.branches.get(revision) {
        return Some(head.clone());
    }
    let mut found = r.commits.keys().filter(|hash| hash.starts_with(revision));
    match (found.next(), found.next()) {
        (Some(hash), None) if revision.len() >= 4 => Some(hash.clone()),
        _ => None,
    }
}

pub(super) fn commits(repo: &str, r: &FakeRepo, head: &str, exclude: Option<&str>) -> Vec<Value> {
    let excluded = exclude
        .and_then(|e| resolve(r, e))
        .map(|e| ancestors(r, &e))
        .unwrap_or_default();
    let mut list = Vec::new();
    let mut at = resolve(r, head);
    while let Some(hash) = at {
        if excluded.contains(&hash) {
            break;
        }
        let Some(commit) = r.commits.get(&hash) else {
            break;
        };
        list.push(commit_json(repo, commit));
        at = commit.parents.first().cloned();
    }
    list
}

pub(super) fn pipelines(r: &FakeRepo) -> Vec<Value> {
    let mut list: Vec<&FakePipeline> = r.pipelines.iter().collect();
    list.sort_by_key(|p| std::cmp::Reverse(p.created_on));
    list.into_iter().map(pipeline_json).collect()
}

fn pipeline_json(p: &FakePipeline) -> Value {
    let state = match &p.state {
        PipelineState::Pending => json!({"name": "PENDING", "type": "pipeline_state_pending"}),
        PipelineState::InProgress { stage } => json!({
            "name": "IN_PROGRESS",
            "type": "pipeline_state_in_progress",
            "stage": {"name": stage, "type": format!("pipeline_state_in_progress_{}", stage.to_lowercase())}
        }),
        PipelineState::Completed { result } => json!({
            "name": "COMPLETED",
            "type": "pipeline_state_completed",
            "result": {"name": result, "type": format!("pipeline_state_completed_{}", result.to_lowercase())}
        }),
    };
    let target = pipeline_target_json(p);
    json!({
        "type": "pipeline",
        "uuid": p.uuid,
        "build_number": p.build_number,
        "creator": user("ada"),
        "target": target,
        "trigger": {"name": "PUSH", "type": "pipeline_trigger_push"},
        "state": state,
        "created_on": time(p.created_on),
        "completed_on": p.completed_on.map(time),
        "build_seconds_used": 42
    })
}

pub(super) fn issues(repo: &str, r: &FakeRepo, since: Option<Timestamp>) -> Vec<Value> {
    let mut list: Vec<&FakeIssue> = r
        .issues
        .values()
        .filter(|i| since.is_none_or(|s| i.updated_on > s))
        .collect();
    list.sort_by_key(|i| std::cmp::Reverse(i.updated_on));
    list.into_iter()
        .map(|i| {
            json!({
                "type": "issue", "id": i.id, "title": i.title, "state": i.state, "kind": "bug",
                "priority": "major", "reporter": user(&i.reporter), "assignee": null,
                "created_on": time(i.created_on), "updated_on": time(i.updated_on),
                "links": html(format!("{repo}/issues/{}", i.id))
            })
        })
        .collect()
}

pub(super) fn issue_comments(
    repo: &str,
    r: &FakeRepo,
    id: u64,
    since: Option<Timestamp>,
) -> Vec<Value> {
    let Some(issue) = r.issues.get(&id) else {
        return Vec::new();
    };
    issue
        .comments
        .iter()
        .rev()
        .filter(|c| since.is_none_or(|s| c.created_on > s))
        .map(|c| {
            // An edit's comment has no text: Bitbucket serves `raw: null` and empty html.
            let content = match &c.raw {
                Some(text) => json!({"raw": text, "markup": "markdown", "html": format!("<p>{text}</p>"), "type": "rendered"}),
                None => json!({"raw": null, "markup": "markdown", "html": "", "type": "rendered"}),
            };
            json!({
                "type": "issue_comment", "id": c.id, "content": content, "user": user(&c.user),
                "created_on": time(c.created_on), "updated_on": null,
                "links": html(format!("{repo}/issues/{id}#comment-{}", c.id))
            })
        })
        .collect()
}

/// `…/issues/{id}/changes`: every edit, oldest first.
pub(super) fn issue_changes(repo: &str, r: &FakeRepo, id: u64) -> Vec<Value> {
    let Some(issue) = r.issues.get(&id) else {
        return Vec::new();
    };
    issue
        .changes
        .iter()
        .map(|change| {
            json!({
                "type": "issue_change",
                "id": change.id,
                "name": change.id.to_string(),
                "created_on": time(change.created_on),
                "user": user(&change.user),
                "issue": {"type": "issue", "id": id, "title": issue.title},
                "changes": {"state": {"old": change.old_state, "new": change.new_state}},
                "message": {"raw": null, "markup": "markdown", "html": ""},
                "links": html(format!("{repo}/issues/{id}/changes/{}", change.id))
            })
        })
        .collect()
}

pub(super) fn condensed(repo: &str, pr: &FakePullRequest) -> Value {
    json!({
        "type": "pullrequest",
        "id": pr.id,
        "title": pr.title,
        "links": html(format!("{repo}/pull-requests/{}", pr.id))
    })
}

/// A pull request's `source` or `destination`: its commit as a short hash.
pub(super) fn endpoint_json(repo: &str, branch: &str, hash: &str) -> Value {
    json!({
        "branch": {"name": branch},
        "commit": {"type": "commit", "hash": short(hash)},
        "repository": {"type": "repository", "full_name": repo}
    })
}

/// A feed `update` entry: the pull request as it now is, written by `author` (who opened,
/// pushed, merged, declined, ...). Never `closed_by`, never a reviewer list.
pub(super) fn update_entry(
    repo: &str,
    r: &FakeRepo,
    pr: &FakePullRequest,
    now: Timestamp,
    author: &str,
) -> Value {
    let destination_head = r.branches.get(&pr.destination).cloned().unwrap_or_default();
    let update = json!({
        "state": pr.state,
        "title": pr.title,
        "description": "",
        "reason": pr.reason,
        "source": endpoint_json(repo, &pr.source, &pr.head),
        "destination": endpoint_json(repo, &pr.destination, &destination_head),
        "author": user(author),
        "date": time(now)
    });
    json!({"update": update, "pull_request": condensed(repo, pr)})
}

/// A pipeline's `target`: a branch (`pipeline_ref_target`) or a pull request
/// (`pipeline_pullrequest_target`, no `ref_name`).
pub(super) fn pipeline_target_json(p: &FakePipeline) -> Value {
    let commit = json!({"type": "commit", "hash": p.commit});
    match &p.target {
        PipelineTarget::Branch(branch) => json!({
            "type": "pipeline_ref_target",
            "ref_type": "branch",
            "ref_name": branch,
            "commit": commit,
            "selector": {"type": "branches", "pattern": branch}
        }),
        PipelineTarget::PullRequest {
            id,
            source,
            destination,
        } => json!({
            "type": "pipeline_pullrequest_target",
            "source": source,
            "destination": destination,
            "commit": commit,
            "pullrequest": {"type": "pullrequest", "id": id},
            "selector": {"type": "pull-requests", "pattern": "**"}
        }),
    }
}
