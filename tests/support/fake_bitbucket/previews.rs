//! The fake Bitbucket's single-object reads that link previews use, shaped as the API
//! description has them: `GET …/commit/{commit}` (a full hash or unique prefix),
//! `GET …/refs/branches/{name}` (names with `/` as further segments), `GET
//! …/issues/{issue_id}`, `GET …/pipelines/{n}` by build number (or 404, after
//! [`FakeBitbucket::refuse_pipeline_numbers`]), and `GET
//! …/src/{commit}/{path}` (a file's raw bytes, for a hash or branch). Files are added by
//! [`FakeBitbucket::add_file`]. Access is the one repository model: a person's token that
//! cannot read a private repository gets 403, as from every other read. Never changes the
//! fake world when answering.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::payloads::{branches, commit_json, error, issues, pipelines, resolve};
use super::{Endpoint, FakeBitbucket, FakeRepo, Reader, World, json_response};

impl FakeBitbucket {
    /// Puts `content` at `path` in `repo` (served for every revision).
    pub fn add_file(&self, repo: &str, path: &str, content: &[u8]) {
        self.with_repo(repo, |r, _, _| {
            r.files.insert(path.to_string(), content.to_vec());
        });
    }

    /// From now on `GET …/pipelines/{n}` of `repo` answers 404 for a build number, as the
    /// API description's `pipeline_uuid` would have it.
    pub fn refuse_pipeline_numbers(&self, repo: &str) {
        self.with_repo(repo, |r, _, _| r.pipelines_only_by_uuid = true);
    }
}

/// The preview endpoint of a GET on `tail` (the path after `workspace/slug`), if it is one.
pub(super) fn classify(method: &axum::http::Method, tail: &[&str]) -> Option<Endpoint> {
    if method != axum::http::Method::GET {
        return None;
    }
    Some(match tail {
        ["commit", _] => Endpoint::CommitDetail,
        ["refs", "branches", _, ..] => Endpoint::BranchDetail,
        ["issues", _] => Endpoint::IssueDetail,
        ["pipelines", n] if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            Endpoint::PipelineByNumber
        }
        ["src", _, _, ..] => Endpoint::Source,
        _ => return None,
    })
}

/// The whole answer (before `fields=`) of a JSON preview endpoint, or `None` for others.
pub(super) fn values(
    endpoint: Endpoint,
    repo_name: &str,
    repo: &FakeRepo,
    parts: &[String],
) -> Option<Result<Value, &'static str>> {
    let tail = &parts[2..];
    Some(match endpoint {
        Endpoint::CommitDetail => resolve(repo, &tail[1])
            .and_then(|hash| repo.commits.get(&hash))
            .map(|commit| commit_json(repo_name, commit))
            .ok_or("Commit not found"),
        Endpoint::BranchDetail => {
            let name = tail[2..].join("/");
            branches(repo_name, repo)
                .into_iter()
                .find(|branch| branch["name"] == name.as_str())
                .ok_or("Branch not found")
        }
        Endpoint::IssueDetail => {
            let id: u64 = tail[1].parse().unwrap_or(0);
            issues(repo_name, repo, None)
                .into_iter()
                .find(|issue| issue["id"] == id)
                .ok_or("Issue not found")
        }
        Endpoint::PipelineByNumber if repo.pipelines_only_by_uuid => {
            Err("No pipeline with the UUID provided exists.")
        }
        Endpoint::PipelineByNumber => {
            let number: u64 = tail[1].parse().unwrap_or(0);
            pipelines(repo)
                .into_iter()
                .find(|pipeline| pipeline["build_number"] == number)
                .ok_or("Pipeline not found")
        }
        _ => return None,
    })
}

/// `GET …/src/{commit}/{path}`: the file's raw bytes.
pub(super) fn source(
    world: &World,
    reader: &Reader,
    repo_name: Option<&str>,
    parts: &[String],
) -> Response {
    let not_found = |message: &str| json_response(StatusCode::NOT_FOUND, error(message), None);
    let Some(repo) = repo_name.and_then(|name| world.repos.get(name)) else {
        return not_found("Repository not found");
    };
    if !reader.reads(repo_name.unwrap_or(""), repo) {
        return json_response(StatusCode::FORBIDDEN, error("Access denied."), None);
    }
    let revision = &parts[3];
    let path = parts[4..].join("/");
    if resolve(repo, revision).is_none() {
        return not_found("Commit not found");
    }
    match repo.files.get(&path) {
        Some(content) => (
            StatusCode::OK,
            [("content-type", "application/octet-stream")],
            content.clone(),
        )
            .into_response(),
        None => not_found("No such file"),
    }
}
