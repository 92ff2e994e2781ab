//! What a linked person does to a pull request or pipeline with their own token:
//! approve and withdraw it, request changes, comment, merge (with a strategy), decline,
//! re-run a pipeline on the same target, and the facts the merge dialog needs (the
//! strategies the destination branch allows).
//!
//! Owns the wire format of those calls. Every call is bounded by the client's timeout.
//! Never logs or returns a token; an error carries the HTTP status and Bitbucket's own
//! `error.message` (what it tells the person, such as why a merge is blocked), never the
//! rest of a response body.

use reqwest::Method;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use url::Url;

use super::{UserOAuthClient, without_url};
use crate::bitbucket::name::RepositoryName;
use crate::secret::Secret;

/// A pull request by repository and number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequestAddress {
    pub repository: String,
    pub id: u64,
}

/// Why Bitbucket refused or could not take an action.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    /// The token was refused (expired or revoked): the link needs a refresh or a login.
    #[error("Bitbucket refused the access token (HTTP 401)")]
    Unauthorized,
    /// The person may not do this; `reason` is Bitbucket's.
    #[error("Bitbucket refused the action (HTTP 403): {reason}")]
    Forbidden { reason: String },
    #[error("Bitbucket found no such pull request or pipeline (HTTP 404): {reason}")]
    NotFound { reason: String },
    /// Bitbucket would not do it (a merge blocked by checks or conflicts, a pull request
    /// already closed, ...); `reason` is Bitbucket's.
    #[error("Bitbucket refused the action (HTTP {status}): {reason}")]
    Refused { status: u16, reason: String },
    #[error("Bitbucket answered HTTP {status}")]
    Http { status: u16 },
    #[error("could not reach Bitbucket: {0}")]
    Transport(String),
    #[error("Bitbucket's answer was not understood: {0}")]
    Decode(String),
    /// A name that would change the request's path; nothing was sent.
    #[error("{0}")]
    InvalidPath(String),
}

/// The merge dialog's choices.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MergeRequest {
    /// One of Bitbucket's `merge_strategy` values; `None` for the branch's default.
    pub strategy: Option<String>,
    pub close_source_branch: bool,
    pub message: Option<String>,
}

/// What the merge dialog and a refreshed message show about a pull request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequestFacts {
    pub title: String,
    /// `OPEN`, `MERGED`, `DECLINED`, ...
    pub state: String,
    pub source_branch: Option<String>,
    pub destination_branch: Option<String>,
    /// The strategies the destination branch allows, in Bitbucket's order (empty when it
    /// did not say).
    pub merge_strategies: Vec<String>,
    pub default_merge_strategy: Option<String>,
    pub link: Option<String>,
}

/// A pipeline started again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineRerun {
    pub uuid: String,
    pub build_number: Option<u64>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: Option<ErrorDetail>,
}

#[derive(Deserialize)]
struct ErrorDetail {
    message: Option<String>,
    detail: Option<String>,
}

#[derive(Deserialize)]
struct FactsAnswer {
    title: Option<String>,
    state: Option<String>,
    source: Option<Endpoint>,
    destination: Option<Endpoint>,
    links: Option<Links>,
}

#[derive(Deserialize)]
struct Endpoint {
    branch: Option<Branch>,
}

#[derive(Deserialize)]
struct Branch {
    name: Option<String>,
    #[serde(default)]
    merge_strategies: Vec<String>,
    default_merge_strategy: Option<String>,
}

#[derive(Deserialize)]
struct Links {
    html: Option<Href>,
}

#[derive(Deserialize)]
struct Href {
    href: Option<String>,
}

#[derive(Deserialize)]
struct PipelineAnswer {
    uuid: Option<String>,
    build_number: Option<u64>,
    target: Option<Value>,
}

/// The keys of a pipeline target that say where it runs (links and the like dropped).
const TARGET_KEYS: &[&str] = &[
    "type",
    "ref_type",
    "ref_name",
    "selector",
    "source",
    "destination",
];

impl UserOAuthClient {
    fn pull_request_url(
        &self,
        address: &PullRequestAddress,
        tail: &[&str],
    ) -> Result<Url, ActionError> {
        let name: RepositoryName = address.repository.parse().map_err(
            |error: crate::bitbucket::InvalidRepositoryName| {
                ActionError::InvalidPath(error.to_string())
            },
        )?;
        let id = address.id.to_string();
        let mut segments = vec!["repositories", name.as_str(), "pullrequests", id.as_str()];
        segments.extend_from_slice(tail);
        Self::endpoint(&self.api_url, &segments)
            .map_err(|error| ActionError::InvalidPath(error.to_string()))
    }

    /// `POST …/approve` as the token's owner.
    pub async fn approve(
        &self,
        token: &Secret<String>,
        address: &PullRequestAddress,
    ) -> Result<(), ActionError> {
        let url = self.pull_request_url(address, &["approve"])?;
        self.send(Method::POST, url, token, None).await.map(drop)
    }

    /// `DELETE …/approve`: withdraws the token owner's approval.
    pub async fn unapprove(
        &self,
        token: &Secret<String>,
        address: &PullRequestAddress,
    ) -> Result<(), ActionError> {
        let url = self.pull_request_url(address, &["approve"])?;
        self.send(Method::DELETE, url, token, None).await.map(drop)
    }

    /// `POST …/request-changes`.
    pub async fn request_changes(
        &self,
        token: &Secret<String>,
        address: &PullRequestAddress,
    ) -> Result<(), ActionError> {
        let url = self.pull_request_url(address, &["request-changes"])?;
        self.send(Method::POST, url, token, None).await.map(drop)
    }

    /// `POST …/comments` with `text` as the comment's markdown.
    pub async fn comment(
        &self,
        token: &Secret<String>,
        address: &PullRequestAddress,
        text: &str,
    ) -> Result<(), ActionError> {
        let url = self.pull_request_url(address, &["comments"])?;
        let body = json!({"content": {"raw": text}});
        self.send(Method::POST, url, token, Some(body))
            .await
            .map(drop)
    }

    /// `POST …/merge` with `pullrequest_merge_parameters`. True when merged at once,
    /// false when Bitbucket accepted it to finish later (202).
    pub async fn merge(
        &self,
        token: &Secret<String>,
        address: &PullRequestAddress,
        request: &MergeRequest,
    ) -> Result<bool, ActionError> {
        let url = self.pull_request_url(address, &["merge"])?;
        let mut body = json!({
            "type": "pullrequest_merge_parameters",
            "close_source_branch": request.close_source_branch,
        });
        if let Some(strategy) = &request.strategy {
            body["merge_strategy"] = json!(strategy);
        }
        if let Some(message) = request.message.as_deref().filter(|m| !m.trim().is_empty()) {
            body["message"] = json!(message);
        }
        let (status, _) = self.send(Method::POST, url, token, Some(body)).await?;
        Ok(status != 202)
    }

    /// `POST …/decline`.
    pub async fn decline(
        &self,
        token: &Secret<String>,
        address: &PullRequestAddress,
    ) -> Result<(), ActionError> {
        let url = self.pull_request_url(address, &["decline"])?;
        self.send(Method::POST, url, token, None).await.map(drop)
    }

    /// The pull request's title, state, branches and the merge strategies its
    /// destination branch allows.
    pub async fn pull_request_facts(
        &self,
        token: &Secret<String>,
        address: &PullRequestAddress,
    ) -> Result<PullRequestFacts, ActionError> {
        let mut url = self.pull_request_url(address, &[])?;
        url.query_pairs_mut().append_pair(
            "fields",
            "title,state,links.html.href,source.branch.name,destination.branch.name,\
             destination.branch.merge_strategies,destination.branch.default_merge_strategy",
        );
        let (_, body) = self.send(Method::GET, url, token, None).await?;
        let answer: FactsAnswer = serde_json::from_slice(&body)
            .map_err(|error| ActionError::Decode(error.to_string()))?;
        let branch = |endpoint: &Option<Endpoint>| {
            endpoint
                .as_ref()
                .and_then(|endpoint| endpoint.branch.as_ref())
                .and_then(|branch| branch.name.clone())
        };
        let destination = answer
            .destination
            .as_ref()
            .and_then(|endpoint| endpoint.branch.as_ref());
        Ok(PullRequestFacts {
            title: answer.title.clone().unwrap_or_default(),
            state: answer.state.clone().unwrap_or_default(),
            source_branch: branch(&answer.source),
            destination_branch: branch(&answer.destination),
            merge_strategies: destination
                .map(|branch| branch.merge_strategies.clone())
                .unwrap_or_default(),
            default_merge_strategy: destination.and_then(|b| b.default_merge_strategy.clone()),
            link: answer
                .links
                .and_then(|links| links.html)
                .and_then(|html| html.href),
        })
    }

    /// Runs the pipeline `pipeline_uuid` of `repository` again: reads its target and
    /// starts a new pipeline for the same target (`POST …/pipelines`).
    pub async fn rerun_pipeline(
        &self,
        token: &Secret<String>,
        repository: &str,
        pipeline_uuid: &str,
    ) -> Result<PipelineRerun, ActionError> {
        let name: RepositoryName =
            repository
                .parse()
                .map_err(|error: crate::bitbucket::InvalidRepositoryName| {
                    ActionError::InvalidPath(error.to_string())
                })?;
        let one = Self::endpoint(
            &self.api_url,
            &["repositories", name.as_str(), "pipelines", pipeline_uuid],
        )
        .map_err(|error| ActionError::InvalidPath(error.to_string()))?;
        let (_, body) = self.send(Method::GET, one, token, None).await?;
        let answer: PipelineAnswer = serde_json::from_slice(&body)
            .map_err(|error| ActionError::Decode(error.to_string()))?;
        let target = same_target(answer.target.as_ref())
            .ok_or_else(|| ActionError::Decode("the pipeline names no target".into()))?;
        // The collection's path ends with a slash, as Bitbucket documents it.
        let mut all = Self::endpoint(&self.api_url, &["repositories", name.as_str(), "pipelines"])
            .map_err(|error| ActionError::InvalidPath(error.to_string()))?;
        all.path_segments_mut()
            .map_err(|()| ActionError::InvalidPath("no path".into()))?
            .push("");
        let (_, body) = self
            .send(Method::POST, all, token, Some(json!({"target": target})))
            .await?;
        let started: PipelineAnswer = serde_json::from_slice(&body)
            .map_err(|error| ActionError::Decode(error.to_string()))?;
        Ok(PipelineRerun {
            uuid: started.uuid.unwrap_or_default(),
            build_number: started.build_number,
        })
    }

    /// One call with the person's token; the status and body of a success, else the
    /// typed refusal with Bitbucket's `error.message`.
    async fn send(
        &self,
        method: Method,
        url: Url,
        token: &Secret<String>,
        body: Option<Value>,
    ) -> Result<(u16, Vec<u8>), ActionError> {
        let mut request = self.http.request(method, url).bearer_auth(token.expose());
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|error| ActionError::Transport(without_url(error)))?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|error| ActionError::Transport(without_url(error)))?
            .to_vec();
        if (200..300).contains(&status) {
            return Ok((status, body));
        }
        let reason = reason_of(&body);
        Err(match status {
            401 => ActionError::Unauthorized,
            403 => ActionError::Forbidden {
                reason: reason.unwrap_or_else(|| "Access denied.".into()),
            },
            404 => ActionError::NotFound {
                reason: reason.unwrap_or_else(|| "Not found.".into()),
            },
            400..=499 => match reason {
                Some(reason) => ActionError::Refused { status, reason },
                None => ActionError::Http { status },
            },
            _ => ActionError::Http { status },
        })
    }
}

/// Bitbucket's `error.message` (and `detail`), cut to a readable length.
fn reason_of(body: &[u8]) -> Option<String> {
    let detail = serde_json::from_slice::<ErrorBody>(body).ok()?.error?;
    let message = detail.message.filter(|m| !m.trim().is_empty())?;
    let text = match detail.detail.filter(|d| !d.trim().is_empty()) {
        Some(detail) => format!("{message} {detail}"),
        None => message,
    };
    Some(crate::message::truncate(&text, 500))
}

/// The part of a pipeline's `target` that says where it ran, to run it there again.
fn same_target(target: Option<&Value>) -> Option<Value> {
    let target = target?.as_object()?;
    let mut same = Map::new();
    for key in TARGET_KEYS {
        if let Some(value) = target.get(*key) {
            same.insert((*key).to_string(), value.clone());
        }
    }
    for key in ["commit", "destination_commit"] {
        if let Some(hash) = target.get(key).and_then(|commit| commit.get("hash")) {
            same.insert(key.to_string(), json!({"type": "commit", "hash": hash}));
        }
    }
    if let Some(id) = target.get("pullrequest").and_then(|pr| pr.get("id")) {
        same.insert("pullrequest".into(), json!({"id": id}));
    }
    same.get("type")?;
    Some(Value::Object(same))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_is_bitbuckets_message_and_detail() {
        let body = br#"{"type":"error","error":{"message":"You can't merge until you resolve all merge checks.","detail":"1 failed build"}}"#;
        assert_eq!(
            reason_of(body).as_deref(),
            Some("You can't merge until you resolve all merge checks. 1 failed build")
        );
        assert_eq!(reason_of(b"<html>"), None);
        assert_eq!(reason_of(br#"{"type":"error"}"#), None);
    }

    #[test]
    fn the_same_target_keeps_where_it_ran_and_drops_links() {
        let target = json!({
            "type": "pipeline_ref_target", "ref_type": "branch", "ref_name": "main",
            "commit": {"type": "commit", "hash": "abc", "links": {"self": {"href": "x"}}},
            "selector": {"type": "default"}
        });
        assert_eq!(
            same_target(Some(&target)),
            Some(json!({
                "type": "pipeline_ref_target", "ref_type": "branch", "ref_name": "main",
                "commit": {"type": "commit", "hash": "abc"}, "selector": {"type": "default"}
            }))
        );
        assert_eq!(same_target(Some(&json!({"ref_name": "main"}))), None);
    }
}
