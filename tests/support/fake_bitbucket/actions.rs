//! The fake Bitbucket's write endpoints, as a linked person calls them with their own
//! token: approve and withdraw (`POST`/`DELETE …/approve`), `…/request-changes`,
//! `…/comments`, `…/merge` (with `pullrequest_merge_parameters`), `…/decline`, and a
//! pipeline read and re-run (`GET …/pipelines/{uuid}`, `POST …/pipelines/`).
//!
//! Only a person's bearer token ([`FakeAccount`]) may write; each change lands in the
//! fake world as that person (an approval in the activity feed by them, a merge whose
//! MERGED update they author, a new pipeline for the same target), and refusals have
//! Bitbucket's error shape, `{"type": "error", "error": {"message": …}}`: 403 for a
//! person the test made unpermitted, 400 for a merge blocked by a failing check, 409
//! for conflicts (whatever status the test scripted), 400 for a closed pull request.

use std::collections::{HashMap, HashSet};

use axum::http::{Method, StatusCode};
use axum::response::Response;
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::oauth::{FakeAccount, user_json};
use super::payloads::{condensed, pipeline_target_json, time, update_entry};
use super::{
    Endpoint, FakeBitbucket, FakePipeline, Inner, PipelineState, PipelineTarget, Reader, World,
    json_response,
};

/// What the test scripted about writes, and what the writes were.
#[derive(Debug, Default)]
pub(super) struct ActionRules {
    /// (account uuid, repository) pairs that may read but not write.
    read_only: HashSet<(String, String)>,
    /// (repository, pull request) → the status and message a merge is refused with.
    blocked_merges: HashMap<(String, u64), (u16, String)>,
    /// repository → the merge strategies its main branch allows.
    strategies: HashMap<String, Vec<String>>,
    /// Every merge done: repository, pull request, who, and the parameters sent.
    merges: Vec<FakeMerge>,
    /// Every comment: repository, pull request, who, text.
    comments: Vec<(String, u64, String, String)>,
}

/// A merge the fake did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeMerge {
    pub repository: String,
    pub id: u64,
    pub by_uuid: String,
    pub strategy: Option<String>,
    pub close_source_branch: bool,
}

impl FakeBitbucket {
    /// The account may read `repo` but every write is refused with 403.
    pub fn forbid_writes(&self, uuid: &str, repo: &str) {
        self.inner
            .lock()
            .actions
            .read_only
            .insert((uuid.into(), repo.into()));
    }

    /// A merge of this pull request is refused with `status` and Bitbucket's `message`.
    pub fn block_merge(&self, repo: &str, id: u64, status: u16, message: &str) {
        self.inner
            .lock()
            .actions
            .blocked_merges
            .insert((repo.into(), id), (status, message.into()));
    }

    /// The merge strategies the repository's destination branches allow.
    pub fn allow_merge_strategies(&self, repo: &str, strategies: &[&str]) {
        self.inner.lock().actions.strategies.insert(
            repo.into(),
            strategies.iter().map(|s| s.to_string()).collect(),
        );
    }

    /// Every merge done through the API.
    pub fn merges(&self) -> Vec<FakeMerge> {
        self.inner.lock().actions.merges.clone()
    }

    /// Every comment posted through the API: (repository, pull request, author uuid, text).
    pub fn comments_posted(&self) -> Vec<(String, u64, String, String)> {
        self.inner.lock().actions.comments.clone()
    }

    /// Whether the account with `uuid` approves the pull request now.
    pub fn approved_by(&self, repo: &str, id: u64, nickname: &str) -> bool {
        self.inner
            .lock()
            .repos
            .get(repo)
            .and_then(|r| r.pull_requests.get(&id))
            .and_then(|pr| pr.participants.get(nickname))
            .is_some_and(|p| p.approved)
    }

    /// The pipelines of a repository: (uuid, build number, branch, commit).
    pub fn pipeline_runs(&self, repo: &str) -> Vec<(String, u64, String, String)> {
        self.inner
            .lock()
            .repos
            .get(repo)
            .map(|r| {
                r.pipelines
                    .iter()
                    .map(|p| {
                        (
                            p.uuid.clone(),
                            p.build_number,
                            match &p.target {
                                PipelineTarget::Branch(branch) => branch.clone(),
                                PipelineTarget::PullRequest { source, .. } => source.clone(),
                            },
                            p.commit.clone(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The write endpoint a request is for, by method and path after the repository.
pub(super) fn classify(method: &Method, tail: &[&str]) -> Option<Endpoint> {
    Some(match (method, tail) {
        (&Method::POST, ["pullrequests", _, "approve"]) => Endpoint::Approve,
        (&Method::DELETE, ["pullrequests", _, "approve"]) => Endpoint::Unapprove,
        (&Method::POST, ["pullrequests", _, "request-changes"]) => Endpoint::RequestChanges,
        (&Method::POST, ["pullrequests", _, "comments"]) => Endpoint::Comment,
        (&Method::POST, ["pullrequests", _, "merge"]) => Endpoint::Merge,
        (&Method::POST, ["pullrequests", _, "decline"]) => Endpoint::Decline,
        (&Method::GET, ["pipelines", _]) => Endpoint::Pipeline,
        (&Method::POST, ["pipelines"]) => Endpoint::PipelineRun,
        _ => return None,
    })
}

fn error(status: u16, message: &str) -> Response {
    json_response(
        StatusCode::from_u16(status).expect("status"),
        json!({"type": "error", "error": {"message": message}}),
        None,
    )
}

fn now(inner: &Inner, world: &mut World) -> Timestamp {
    let elapsed = SignedDuration::try_from(inner.started.elapsed()).expect("elapsed fits");
    let next = (inner.epoch + elapsed).max(world.last_time + SignedDuration::from_micros(1));
    world.last_time = next;
    next
}

impl ActionRules {
    /// The strategies the test allowed for `repo`'s branches.
    pub(super) fn strategies_of(&self, repo: &str) -> Option<Vec<String>> {
        self.strategies.get(repo).cloned()
    }
}

/// Adds the strategies the test allowed to a pull request's detail.
pub(super) fn decorate_detail(strategies: Option<&[String]>, body: &mut Value) {
    if let Some(strategies) = strategies.filter(|s| !s.is_empty()) {
        body["destination"]["branch"]["merge_strategies"] = json!(strategies);
        body["destination"]["branch"]["default_merge_strategy"] = json!(strategies[0]);
    }
}

/// Answers a write (or a pipeline read) for `repo`, as the person `reader` speaks for.
/// Whether `endpoint` is one of the write endpoints this file answers.
pub(super) fn is_write(endpoint: Endpoint) -> bool {
    matches!(
        endpoint,
        Endpoint::Approve
            | Endpoint::Unapprove
            | Endpoint::RequestChanges
            | Endpoint::Comment
            | Endpoint::Merge
            | Endpoint::Decline
            | Endpoint::Pipeline
            | Endpoint::PipelineRun
    )
}

pub(super) fn answer(
    inner: &Inner,
    world: &mut World,
    endpoint: Endpoint,
    reader: &Reader,
    repo: &str,
    parts: &[String],
    body: &[u8],
) -> Response {
    let account: FakeAccount = match reader {
        Reader::Person { account, .. } => account.clone(),
        // The daemon's own credential never writes for people in this fake.
        Reader::Daemon if endpoint == Endpoint::Pipeline => {
            FakeAccount::new("{daemon}", "daemon", "daemon")
        }
        Reader::Daemon => {
            return error(
                403,
                "Access denied. This credential cannot act for a person.",
            );
        }
    };
    if endpoint != Endpoint::Pipeline
        && world
            .actions
            .read_only
            .contains(&(account.uuid.clone(), repo.to_string()))
    {
        return error(
            403,
            "You do not have write access to this repository, so you cannot do that.",
        );
    }
    let now = now(inner, world);
    let sent: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let actor = user_json(&account);
    if matches!(endpoint, Endpoint::Pipeline | Endpoint::PipelineRun) {
        return pipeline(world, endpoint, repo, parts, &sent, now);
    }
    let id: u64 = parts[3].parse().unwrap_or(0);
    let blocked = world
        .actions
        .blocked_merges
        .get(&(repo.to_string(), id))
        .cloned();
    let r = world.repos.get_mut(repo).expect("repository checked");
    let Some(pr) = r.pull_requests.get_mut(&id) else {
        return error(404, &format!("Pull request {id} not found."));
    };
    if pr.state != "OPEN" {
        return error(
            400,
            &format!("This pull request is already {}.", pr.state.to_lowercase()),
        );
    }
    match endpoint {
        Endpoint::Approve => {
            pr.participate(&account.nickname, now, true, Some("approved"));
            pr.updated_on = now;
            let entry = json!({
                "approval": {"date": time(now), "user": actor, "pullrequest": condensed(repo, pr)},
                "pull_request": condensed(repo, pr)
            });
            r.feed.push((now, entry));
            json_response(
                StatusCode::OK,
                json!({"type": "participant", "user": actor, "role": "REVIEWER", "approved": true, "state": "approved"}),
                None,
            )
        }
        Endpoint::Unapprove => {
            pr.participate(&account.nickname, now, false, None);
            pr.updated_on = now;
            r.feed.retain(|(_, entry)| {
                !(entry["approval"]["user"]["uuid"] == account.uuid.as_str()
                    && entry["pull_request"]["id"] == id)
            });
            json_response(StatusCode::NO_CONTENT, Value::Null, None)
        }
        Endpoint::RequestChanges => {
            pr.participate(&account.nickname, now, false, Some("changes_requested"));
            pr.updated_on = now;
            let entry = json!({
                "changes_request": {"date": time(now), "user": actor, "pullrequest": condensed(repo, pr)},
                "pull_request": condensed(repo, pr)
            });
            r.feed.push((now, entry));
            json_response(
                StatusCode::OK,
                json!({"type": "participant", "user": actor, "state": "changes_requested"}),
                None,
            )
        }
        Endpoint::Comment => {
            let Some(text) = sent["content"]["raw"].as_str().map(str::to_string) else {
                return error(400, "content.raw is required.");
            };
            let comment_id = 1000 + r.next_id;
            r.next_id += 1;
            pr.updated_on = now;
            let comment = json!({
                "type": "pullrequest_comment", "id": comment_id,
                "content": {"raw": text, "markup": "markdown", "html": format!("<p>{text}</p>"), "type": "rendered"},
                "user": actor, "created_on": time(now), "updated_on": time(now),
                "deleted": false, "pending": false,
                "links": {"html": {"href": format!("https://bitbucket.org/{repo}/pull-requests/{id}/_/diff#comment-{comment_id}")}},
                "pullrequest": condensed(repo, pr)
            });
            r.feed.push((
                now,
                json!({"comment": comment.clone(), "pull_request": condensed(repo, pr)}),
            ));
            world
                .actions
                .comments
                .push((repo.into(), id, account.uuid.clone(), text));
            json_response(StatusCode::CREATED, comment, None)
        }
        Endpoint::Merge | Endpoint::Decline => {
            if endpoint == Endpoint::Merge {
                if let Some((status, message)) = blocked {
                    return error(status, &message);
                }
                if sent["type"] != "pullrequest_merge_parameters" {
                    return error(400, "type must be pullrequest_merge_parameters.");
                }
            }
            pr.state = if endpoint == Endpoint::Merge {
                "MERGED".into()
            } else {
                "DECLINED".into()
            };
            pr.updated_on = now;
            pr.closed_by = Some(account.nickname.clone());
            let merged = pr.clone();
            // As in Bitbucket's feed: who closed it is the update's author, no closed_by.
            let mut entry = update_entry(repo, r, &merged, now, &account.nickname);
            entry["update"]["author"] = actor;
            r.feed.push((now, entry));
            r.updated_on = Some(now);
            if endpoint == Endpoint::Merge {
                world.actions.merges.push(FakeMerge {
                    repository: repo.into(),
                    id,
                    by_uuid: account.uuid.clone(),
                    strategy: sent["merge_strategy"].as_str().map(str::to_string),
                    close_source_branch: sent["close_source_branch"].as_bool().unwrap_or(false),
                });
            }
            json_response(
                StatusCode::OK,
                json!({"type": "pullrequest", "id": merged.id, "state": merged.state}),
                None,
            )
        }
        _ => error(404, "No such endpoint."),
    }
}

fn pipeline(
    world: &mut World,
    endpoint: Endpoint,
    repo: &str,
    parts: &[String],
    sent: &Value,
    now: Timestamp,
) -> Response {
    let r = world.repos.get_mut(repo).expect("repository checked");
    let target_of = pipeline_target_json;
    if endpoint == Endpoint::Pipeline {
        // Braces arrive percent-encoded, as a client must send them.
        let wanted = parts[3]
            .replace("%7B", "{")
            .replace("%7b", "{")
            .replace("%7D", "}")
            .replace("%7d", "}");
        return match r.pipelines.iter().find(|p| p.uuid == wanted) {
            Some(p) => json_response(
                StatusCode::OK,
                json!({"type": "pipeline", "uuid": p.uuid, "build_number": p.build_number, "target": target_of(p)}),
                None,
            ),
            None => error(404, "Pipeline not found."),
        };
    }
    let target = &sent["target"];
    let Some(commit) = target["commit"]["hash"].as_str() else {
        return error(400, "target.commit.hash is required.");
    };
    // A branch target (`ref_name`) or a pull-request target (`source`, `destination`,
    // `pullrequest.id`), as the API description has them.
    let pipeline_target = match (
        target["type"].as_str(),
        target["ref_name"].as_str(),
        target["source"].as_str(),
        target["destination"].as_str(),
        target["pullrequest"]["id"].as_u64(),
    ) {
        (Some("pipeline_pullrequest_target"), _, Some(source), Some(destination), Some(id)) => {
            PipelineTarget::PullRequest {
                id,
                source: source.into(),
                destination: destination.into(),
            }
        }
        (_, Some(branch), _, _, _) => PipelineTarget::Branch(branch.into()),
        _ => {
            return error(
                400,
                "target.ref_name (or a pull-request target) is required.",
            );
        }
    };
    let build_number = r.pipelines.len() as u64 + 1;
    let uuid = format!("{{pipeline-{build_number}-0000-4000-8000-000000000000}}");
    r.pipelines.push(FakePipeline {
        uuid: uuid.clone(),
        build_number,
        target: pipeline_target,
        commit: commit.into(),
        state: PipelineState::Pending,
        created_on: now,
        completed_on: None,
    });
    json_response(
        StatusCode::CREATED,
        json!({"type": "pipeline", "uuid": uuid, "build_number": build_number, "target": target}),
        None,
    )
}
