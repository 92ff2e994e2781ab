//! The fake Bitbucket's CI side: commit statuses that other CI systems report, tags, and
//! Bitbucket Deployments with their environments. Timeline calls change this state the
//! way a CI system or a person would; the payload functions serve it shaped like the API
//! description (`commitstatus`, `tag`, `deployment`, `deployment_environment`, each with
//! its `type`). Never touches HTTP itself; the server only reads what the timeline wrote.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde_json::{Value, json};

use super::payloads::{html, time, user};
use super::{Endpoint, FakeBitbucket, FakeRepo};

#[derive(Debug, Clone)]
struct FakeStatus {
    key: String,
    name: String,
    state: String,
    url: String,
    refname: Option<String>,
    created_on: Timestamp,
    updated_on: Timestamp,
}

#[derive(Debug, Clone)]
struct FakeTag {
    hash: String,
    date: Timestamp,
    tagger: String,
}

#[derive(Debug, Clone)]
struct FakeDeployment {
    uuid: String,
    number: u64,
    environment: String,
    commit: String,
    deployer: String,
    state: String,
    status: Option<String>,
    started_on: Timestamp,
    completed_on: Option<Timestamp>,
}

/// A repository's CI state.
#[derive(Debug, Clone, Default)]
pub(super) struct CiState {
    /// Commit hash to its statuses, one per key.
    statuses: BTreeMap<String, Vec<FakeStatus>>,
    tags: BTreeMap<String, FakeTag>,
    /// Environment uuid to name, in creation order.
    environments: Vec<(String, String)>,
    deployments: Vec<FakeDeployment>,
}

impl FakeBitbucket {
    /// Reports a build `state` (FAILED, INPROGRESS, STOPPED or SUCCESSFUL) for `key` on
    /// commit `hash`, as a CI system does with `POST …/commit/{hash}/statuses/build`: a
    /// second report with the same key replaces the first.
    pub fn set_commit_status(&self, repo: &str, hash: &str, key: &str, state: &str) {
        self.with_repo(repo, |r, now, _| {
            let refname = r
                .branches
                .iter()
                .find(|(_, head)| *head == hash)
                .map(|(name, _)| name.clone());
            let statuses = r.ci.statuses.entry(hash.to_string()).or_default();
            let run = statuses.len() + 1;
            match statuses.iter_mut().find(|s| s.key == key) {
                Some(status) => {
                    status.state = state.into();
                    status.updated_on = now;
                }
                None => statuses.push(FakeStatus {
                    key: key.into(),
                    name: format!("{key} #{run}"),
                    state: state.into(),
                    url: format!("https://ci.example.com/{key}/{run}"),
                    refname,
                    created_on: now,
                    updated_on: now,
                }),
            }
        });
    }

    /// Tags `branch`'s head as `name` (an annotated tag by `tagger`); returns the commit.
    pub fn create_tag(&self, repo: &str, name: &str, branch: &str, tagger: &str) -> String {
        self.with_repo(repo, |r, now, _| {
            let hash = r.branches[branch].clone();
            r.ci.tags.insert(
                name.into(),
                FakeTag {
                    hash: hash.clone(),
                    date: now,
                    tagger: tagger.into(),
                },
            );
            r.updated_on = Some(now);
            hash
        })
    }

    pub fn delete_tag(&self, repo: &str, name: &str) {
        self.with_repo(repo, |r, now, _| {
            r.ci.tags.remove(name);
            r.updated_on = Some(now);
        });
    }

    /// Adds a deployment environment named `name`; returns its uuid.
    pub fn add_environment(&self, repo: &str, name: &str) -> String {
        self.with_repo(repo, |r, _, _| {
            let uuid = format!(
                "{{env-{}-0000-4000-8000-000000000000}}",
                r.ci.environments.len() + 1
            );
            r.ci.environments.push((uuid.clone(), name.into()));
            uuid
        })
    }

    /// Starts deploying `main`'s head to the environment `environment` (a uuid from
    /// [`Self::add_environment`]); returns the deployment's uuid.
    pub fn start_deployment(&self, repo: &str, environment: &str, deployer: &str) -> String {
        self.with_repo(repo, |r, now, _| {
            let number = r.ci.deployments.len() as u64 + 1;
            let uuid = format!("{{deployment-{number}-0000-4000-8000-000000000000}}");
            r.ci.deployments.push(FakeDeployment {
                uuid: uuid.clone(),
                number,
                environment: environment.into(),
                commit: r.branches["main"].clone(),
                deployer: deployer.into(),
                state: "IN_PROGRESS".into(),
                status: None,
                started_on: now,
                completed_on: None,
            });
            uuid
        })
    }

    /// Completes a deployment with `status`: SUCCESSFUL, FAILED or STOPPED.
    pub fn finish_deployment(&self, repo: &str, uuid: &str, status: &str) {
        self.with_repo(repo, |r, now, _| {
            let deployment =
                r.ci.deployments
                    .iter_mut()
                    .find(|d| d.uuid == uuid)
                    .expect("deployment");
            deployment.state = "COMPLETED".into();
            deployment.status = Some(status.into());
            deployment.completed_on = Some(now);
        });
    }
}

fn commit_json(repo: &str, hash: &str, r: &FakeRepo) -> Value {
    let mut commit = json!({
        "type": "commit",
        "hash": hash,
        "links": html(format!("{repo}/commits/{hash}"))
    });
    if let Some(known) = r.commits.get(hash) {
        commit["date"] = json!(time(known.date));
        commit["message"] = json!(format!("{}\n", known.message));
        commit["author"] = json!({"type": "author", "raw": known.author, "user": user("ada")});
    }
    commit
}

fn status_json(repo: &str, hash: &str, status: &FakeStatus) -> Value {
    json!({
        "type": "build",
        "key": status.key,
        "name": status.name,
        "state": status.state,
        "url": status.url,
        "refname": status.refname,
        "description": format!("{} is {}", status.name, status.state.to_lowercase()),
        "created_on": time(status.created_on),
        "updated_on": time(status.updated_on),
        "commit": {"type": "commit", "hash": hash, "links": html(format!("{repo}/commits/{hash}"))},
        "links": {
            "self": {"href": format!("https://api.bitbucket.org/2.0/repositories/{repo}/commit/{hash}/statuses/build/{}", status.key)},
            "commit": {"href": format!("https://api.bitbucket.org/2.0/repositories/{repo}/commit/{hash}")}
        }
    })
}

fn tag_json(repo: &str, name: &str, tag: &FakeTag, r: &FakeRepo) -> Value {
    json!({
        "type": "tag",
        "name": name,
        "target": commit_json(repo, &tag.hash, r),
        "date": time(tag.date),
        "message": format!("Release {name}\n"),
        "tagger": {"type": "author", "raw": format!("{} <{}@example.com>", tag.tagger, tag.tagger), "user": user(&tag.tagger)},
        "links": {
            "self": {"href": format!("https://api.bitbucket.org/2.0/repositories/{repo}/refs/tags/{name}")},
            "commits": {"href": format!("https://api.bitbucket.org/2.0/repositories/{repo}/commits/{name}")},
            "html": {"href": format!("https://bitbucket.org/{repo}/commits/tag/{name}")}
        }
    })
}

fn deployment_json(repo: &str, d: &FakeDeployment) -> Value {
    let url = format!(
        "https://bitbucket.org/{repo}/addon/pipelines/home#!/results/{}",
        d.number
    );
    let state = match &d.status {
        None => json!({
            "type": "deployment_state_in_progress",
            "name": d.state,
            "url": url,
            "deployer": user(&d.deployer),
            "start_date": time(d.started_on)
        }),
        Some(status) => json!({
            "type": "deployment_state_completed",
            "name": d.state,
            "status": {
                "type": format!("deployment_state_completed_status_{}", status.to_lowercase()),
                "name": status
            },
            "url": url,
            "deployer": user(&d.deployer),
            "start_date": time(d.started_on),
            "completion_date": d.completed_on.map(time)
        }),
    };
    json!({
        "type": "deployment",
        "uuid": d.uuid,
        "state": state,
        // Only the uuid unless `fields=` asks for more: names come from `…/environments`.
        "environment": {"type": "deployment_environment", "uuid": d.environment},
        "release": {
            "type": "deployment_release",
            "uuid": format!("{{release-{}-0000-4000-8000-000000000000}}", d.number),
            "name": format!("#{}", d.number),
            "url": url,
            "commit": {"type": "commit", "hash": d.commit, "links": html(format!("{repo}/commits/{}", d.commit))},
            "created_on": time(d.started_on)
        }
    })
}

fn environment_json(uuid: &str, name: &str, rank: usize) -> Value {
    json!({
        "type": "deployment_environment",
        "uuid": uuid,
        "name": name,
        "slug": name.to_lowercase(),
        "rank": rank,
        "environment_type": {"type": "deployment_environment_type", "name": name, "rank": rank}
    })
}

/// The values of a CI collection endpoint (before paging); `None` for other endpoints.
pub(super) fn values(
    endpoint: Endpoint,
    repo: &str,
    r: &FakeRepo,
    parts: &[String],
) -> Option<Vec<Value>> {
    match endpoint {
        Endpoint::CommitStatuses => {
            // Like Bitbucket, a commit is named by its full hash or a unique prefix.
            let asked = &parts[3];
            let found =
                r.ci.statuses
                    .iter()
                    .find(|(hash, _)| hash.starts_with(asked.as_str()));
            Some(
                found
                    .map(|(hash, statuses)| {
                        statuses
                            .iter()
                            .map(|s| status_json(repo, hash, s))
                            .collect()
                    })
                    .unwrap_or_default(),
            )
        }
        Endpoint::Tags => {
            let mut tags: Vec<(Timestamp, Value)> =
                r.ci.tags
                    .iter()
                    .map(|(name, tag)| {
                        let date = r.commits.get(&tag.hash).map_or(tag.date, |c| c.date);
                        (date, tag_json(repo, name, tag, r))
                    })
                    .collect();
            tags.sort_by_key(|t| std::cmp::Reverse(t.0));
            Some(tags.into_iter().map(|(_, v)| v).collect())
        }
        Endpoint::Deployments => {
            let mut deployments: Vec<&FakeDeployment> = r.ci.deployments.iter().collect();
            deployments.sort_by_key(|d| std::cmp::Reverse(d.started_on));
            Some(
                deployments
                    .into_iter()
                    .map(|d| deployment_json(repo, d))
                    .collect(),
            )
        }
        Endpoint::Environments => Some(
            r.ci.environments
                .iter()
                .enumerate()
                .map(|(rank, (uuid, name))| environment_json(uuid, name, rank))
                .collect(),
        ),
        _ => None,
    }
}
