//! The fake Bitbucket's JSON: Bitbucket Cloud's payload objects (user, repository, pull
//! request, commit, branch, pipeline, issue, comment) and its paginated collections,
//! built from the fake world. Pure: reads the world, never changes it.

use std::collections::BTreeSet;

use jiff::Timestamp;
use serde_json::{Value, json};

use super::{FakeCommit, FakeIssue, FakePipeline, FakePullRequest, FakeRepo};

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

/// The timestamp of a BBQL `field>"time"` query.
pub(super) fn q_time(q: &str) -> Option<Timestamp> {
    let start = q.find('"')? + 1;
    let end = start + q[start..].find('"')?;
    q[start..end].parse().ok()
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

fn pull_request_json(repo: &str, pr: &FakePullRequest) -> Value {
    json!({
        "type": "pullrequest",
        "id": pr.id,
        "title": pr.title,
        "state": pr.state,
        "draft": false,
        "author": user(&pr.author),
        "source": endpoint_json(repo, &pr.source, &pr.head),
        "destination": endpoint_json(repo, &pr.destination, ""),
        "comment_count": 0,
        "task_count": 0,
        "updated_on": time(pr.updated_on),
        "links": html(format!("{repo}/pull-requests/{}", pr.id))
    })
}

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
        .map(|pr| pull_request_json(repo, pr))
        .collect()
}

pub(super) fn pull_request_detail(repo: &str, pr: &FakePullRequest) -> Value {
    let mut body = pull_request_json(repo, pr);
    body["participants"] = pr
        .participants
        .iter()
        .map(|(who, (approved, state))| {
            json!({"type": "participant", "user": user(who), "role": "REVIEWER", "approved": approved, "state": state, "participated_on": time(pr.updated_on)})
        })
        .collect();
    body["reviewers"] = json!([]);
    body
}

fn commit_json(repo: &str, commit: &FakeCommit) -> Value {
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

pub(super) fn commits(repo: &str, r: &FakeRepo, head: &str, exclude: Option<&str>) -> Vec<Value> {
    let excluded = exclude.map(|e| ancestors(r, e)).unwrap_or_default();
    let mut list = Vec::new();
    let mut at = Some(head.to_string());
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
    list.into_iter()
        .map(|p| {
            let mut state = json!({"name": p.state, "type": "pipeline_state_in_progress"});
            if let Some(result) = &p.result {
                state = json!({"name": "COMPLETED", "type": "pipeline_state_completed", "result": {"name": result, "type": "pipeline_state_completed_result"}});
            }
            json!({
                "type": "pipeline",
                "uuid": p.uuid,
                "build_number": p.build_number,
                "creator": user("ada"),
                "target": {"type": "pipeline_ref_target", "ref_type": "branch", "ref_name": p.branch, "commit": {"type": "commit", "hash": p.commit}},
                "trigger": {"name": "PUSH", "type": "pipeline_trigger_push"},
                "state": state,
                "created_on": time(p.created_on),
                "completed_on": p.completed_on.map(time),
                "build_seconds_used": 42
            })
        })
        .collect()
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
        .filter(|(_, _, _, at)| since.is_none_or(|s| *at > s))
        .map(|(cid, text, who, at)| {
            json!({
                "type": "issue_comment", "id": cid, "content": {"raw": text}, "user": user(who),
                "created_on": time(*at), "links": html(format!("{repo}/issues/{id}#comment-{cid}"))
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

pub(super) fn endpoint_json(repo: &str, branch: &str, hash: &str) -> Value {
    json!({
        "branch": {"name": branch},
        "commit": {"type": "commit", "hash": hash},
        "repository": {"type": "repository", "full_name": repo}
    })
}

pub(super) fn update_entry(
    repo: &str,
    pr: &FakePullRequest,
    now: Timestamp,
    closed: Option<(&str, &str)>,
) -> Value {
    let mut update = json!({
        "state": pr.state,
        "title": pr.title,
        "description": "",
        "reason": closed.map(|(_, reason)| reason).unwrap_or(""),
        "source": endpoint_json(repo, &pr.source, &pr.head),
        "destination": endpoint_json(repo, &pr.destination, ""),
        "author": user(&pr.author),
        "date": time(now)
    });
    if let Some((who, _)) = closed {
        update["closed_by"] = user(who);
    }
    json!({"update": update, "pull_request": condensed(repo, pr)})
}
