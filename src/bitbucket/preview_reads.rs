//! Bitbucket reads for link previews: one small GET (with `fields=`) per kind of link,
//! plus at most one for a pull request's or commit's build statuses, turned into the
//! plain [`Preview`] values of `preview.rs`.
//!
//! Reads either with the daemon's credential (a [`BitbucketClient`] made by
//! [`BitbucketClient::for_previews`]: its own small budget, never waiting, no retries) or
//! with the sharer's own token ([`UserOAuthClient::get_bytes`]), which takes a slot from
//! the same preview budget. Every path segment goes through `push_segments`. Must never
//! log or return a token, read anything the caller did not ask for, or decide who may
//! see what (the caller does).

use jiff::Timestamp;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::accounts::{AccountError, UserOAuthClient};
use super::budget::BudgetGate;
use super::client::{BitbucketClient, BitbucketError};
use super::links::{BitbucketLink, LinkTarget};
use super::name::RepositoryName;
use super::preview::{
    BranchPreview, BuildSummary, CommitPreview, FilePreview, IssuePreview, PipelinePreview, Place,
    Preview, PullRequestPreview, RepositoryPreview, first_line, snippet,
};
use crate::secret::Secret;

const FIELDS_REPOSITORY: &str = "full_name,description,language,is_private,updated_on,\
mainbranch.name";
const FIELDS_PULL_REQUEST: &str = "id,title,state,draft,updated_on,author.display_name,\
source.branch.name,source.commit.hash,destination.branch.name,participants.role,\
participants.approved,participants.user.display_name";
const FIELDS_COMMIT: &str = "hash,date,message,author.raw,author.user.display_name";
const FIELDS_BRANCH: &str = "name,target.hash,target.date,target.message,target.author.raw,\
target.author.user.display_name";
const FIELDS_ISSUE: &str = "id,title,state,kind,priority,updated_on,assignee.display_name,\
reporter.display_name";
const FIELDS_PIPELINE: &str = "build_number,state.name,state.stage.name,state.result.name,\
target.ref_name,target.source,target.pullrequest.id,creator.display_name,created_on,\
completed_on";
/// [`FIELDS_PIPELINE`] for each entry of the pipelines list.
const FIELDS_PIPELINES: &str = "values.build_number,values.state.name,values.state.stage.name,\
values.state.result.name,values.target.ref_name,values.target.source,\
values.target.pullrequest.id,values.creator.display_name,values.created_on,values.completed_on";
/// How far back the list is searched for a build number (one page, newest first).
const PIPELINES_SEARCHED: &str = "100";
const FIELDS_STATUSES: &str = "values.state";
/// Statuses counted per commit (one page).
const STATUS_PAGELEN: &str = "50";

/// Who reads.
#[derive(Clone, Copy)]
pub enum PreviewReader<'a> {
    /// The daemon's credential, through its preview share.
    Daemon(&'a BitbucketClient),
    /// The person who shared the link, with their own token.
    Person {
        client: &'a UserOAuthClient,
        token: &'a Secret<String>,
        budget: &'a BudgetGate,
    },
}

impl std::fmt::Debug for PreviewReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PreviewReader::Daemon(_) => f.write_str("PreviewReader::Daemon"),
            PreviewReader::Person { .. } => f.write_str("PreviewReader::Person"),
        }
    }
}

/// Why a preview could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreviewError {
    /// 403 or 404: gone, or out of this reader's reach.
    #[error("not readable with this credential")]
    NoAccess,
    /// The person's token was refused (401): their link is stale.
    #[error("Bitbucket refused the person's token")]
    Unauthorized,
    /// The preview share has no request left this hour; nothing was sent.
    #[error("the preview budget is spent")]
    BudgetSpent,
    #[error("{0}")]
    Unavailable(String),
}

impl From<BitbucketError> for PreviewError {
    fn from(error: BitbucketError) -> Self {
        match error {
            BitbucketError::NotFound { .. } | BitbucketError::Forbidden { .. } => {
                PreviewError::NoAccess
            }
            BitbucketError::BudgetSpent => PreviewError::BudgetSpent,
            other => PreviewError::Unavailable(other.to_string()),
        }
    }
}

impl From<AccountError> for PreviewError {
    fn from(error: AccountError) -> Self {
        match error {
            AccountError::Http {
                status: 403 | 404 | 410,
            } => PreviewError::NoAccess,
            AccountError::Unauthorized => PreviewError::Unauthorized,
            other => PreviewError::Unavailable(other.to_string()),
        }
    }
}

impl PreviewReader<'_> {
    async fn bytes(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<Vec<u8>, PreviewError> {
        match self {
            PreviewReader::Daemon(client) => Ok(client.get_bytes(segments, query).await?),
            PreviewReader::Person {
                client,
                token,
                budget,
            } => {
                if !budget.try_acquire() {
                    return Err(PreviewError::BudgetSpent);
                }
                Ok(client.get_bytes(token, segments, query).await?)
            }
        }
    }

    async fn json<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<T, PreviewError> {
        let body = self.bytes(segments, query).await?;
        serde_json::from_slice(&body).map_err(|error| PreviewError::Unavailable(error.to_string()))
    }

    /// The repository's card (which also says whether it is private).
    pub async fn repository(
        &self,
        repository: &RepositoryName,
        url: &str,
    ) -> Result<RepositoryPreview, PreviewError> {
        #[derive(Deserialize)]
        struct Answer {
            description: Option<String>,
            language: Option<String>,
            is_private: Option<bool>,
            updated_on: Option<String>,
            mainbranch: Option<Named>,
        }
        let answer: Answer = self
            .json(
                &["repositories", repository.as_str()],
                &[("fields", FIELDS_REPOSITORY)],
            )
            .await?;
        Ok(RepositoryPreview {
            place: place(repository, url),
            description: answer.description.filter(|d| !d.trim().is_empty()),
            language: answer.language.filter(|l| !l.trim().is_empty()),
            // Unsaid privacy counts as private: nothing leaks on a short answer.
            is_private: answer.is_private.unwrap_or(true),
            main_branch: answer.mainbranch.map(|b| b.name),
            updated_on: time(answer.updated_on),
        })
    }

    /// The preview of `link` (shared as `url`).
    pub async fn preview(&self, link: &BitbucketLink, url: &str) -> Result<Preview, PreviewError> {
        let repo = &link.repository;
        Ok(match &link.target {
            LinkTarget::Repository => Preview::Repository(self.repository(repo, url).await?),
            LinkTarget::PullRequest { id } => {
                Preview::PullRequest(self.pull_request(repo, *id, url).await?)
            }
            LinkTarget::Commit { hash } => Preview::Commit(self.commit(repo, hash, url).await?),
            LinkTarget::Branch { name } => Preview::Branch(self.branch(repo, name, url).await?),
            LinkTarget::Issue { id } => Preview::Issue(self.issue(repo, *id, url).await?),
            LinkTarget::Pipeline { build_number } => {
                Preview::Pipeline(self.pipeline(repo, *build_number, url).await?)
            }
            LinkTarget::File {
                revision,
                path,
                lines,
            } => {
                let content = self
                    .bytes(&["repositories", repo.as_str(), "src", revision, path], &[])
                    .await?;
                Preview::File(FilePreview {
                    place: place(repo, url),
                    revision: revision.clone(),
                    path: path.clone(),
                    lines: *lines,
                    snippet: snippet(&content, *lines),
                })
            }
        })
    }

    async fn pull_request(
        &self,
        repo: &RepositoryName,
        id: u64,
        url: &str,
    ) -> Result<PullRequestPreview, PreviewError> {
        #[derive(Deserialize)]
        struct Answer {
            id: u64,
            title: Option<String>,
            state: Option<String>,
            #[serde(default)]
            draft: bool,
            updated_on: Option<String>,
            author: Option<Account>,
            source: Option<Endpoint>,
            destination: Option<Endpoint>,
            #[serde(default)]
            participants: Vec<Participant>,
        }
        #[derive(Deserialize)]
        struct Endpoint {
            branch: Option<Named>,
            commit: Option<Hashed>,
        }
        #[derive(Deserialize)]
        struct Participant {
            role: Option<String>,
            #[serde(default)]
            approved: bool,
            user: Option<Account>,
        }
        let answer: Answer = self
            .json(
                &[
                    "repositories",
                    repo.as_str(),
                    "pullrequests",
                    &id.to_string(),
                ],
                &[("fields", FIELDS_PULL_REQUEST)],
            )
            .await?;
        let reviewers: Vec<&Participant> = answer
            .participants
            .iter()
            .filter(|p| p.role.as_deref() == Some("REVIEWER"))
            .collect();
        let head = answer
            .source
            .as_ref()
            .and_then(|s| s.commit.as_ref())
            .map(|c| c.hash.clone());
        let build = match head {
            Some(hash) => self.statuses(repo, &hash).await?,
            None => None,
        };
        Ok(PullRequestPreview {
            place: place(repo, url),
            id: answer.id,
            title: answer.title.unwrap_or_default(),
            state: answer.state.unwrap_or_else(|| "OPEN".into()),
            draft: answer.draft,
            author: answer.author.and_then(Account::name),
            source_branch: answer
                .source
                .and_then(|s| s.branch)
                .map(|branch| branch.name),
            destination_branch: answer
                .destination
                .and_then(|d| d.branch)
                .map(|branch| branch.name),
            approvals: reviewers.iter().filter(|p| p.approved).count(),
            reviewers: reviewers.len(),
            approved_by: answer
                .participants
                .iter()
                .filter(|p| p.approved)
                .filter_map(|p| p.user.clone().and_then(Account::name))
                .collect(),
            build,
            updated_on: time(answer.updated_on),
        })
    }

    /// The build statuses of `hash`, counted; `None` when there are none.
    async fn statuses(
        &self,
        repo: &RepositoryName,
        hash: &str,
    ) -> Result<Option<BuildSummary>, PreviewError> {
        #[derive(Deserialize)]
        struct Page {
            #[serde(default)]
            values: Vec<Status>,
        }
        #[derive(Deserialize)]
        struct Status {
            state: Option<String>,
        }
        let page: Page = match self
            .json(
                &["repositories", repo.as_str(), "commit", hash, "statuses"],
                &[("pagelen", STATUS_PAGELEN), ("fields", FIELDS_STATUSES)],
            )
            .await
        {
            Ok(page) => page,
            // The card is still worth showing without its build.
            Err(PreviewError::BudgetSpent | PreviewError::Unavailable(_)) => return Ok(None),
            Err(error) => return Err(error),
        };
        let mut build = BuildSummary::default();
        for status in page.values {
            build.count(status.state.as_deref().unwrap_or(""));
        }
        Ok((build.total() > 0).then_some(build))
    }

    async fn commit(
        &self,
        repo: &RepositoryName,
        hash: &str,
        url: &str,
    ) -> Result<CommitPreview, PreviewError> {
        let answer: CommitAnswer = self
            .json(
                &["repositories", repo.as_str(), "commit", hash],
                &[("fields", FIELDS_COMMIT)],
            )
            .await?;
        let full = answer.hash.clone().unwrap_or_else(|| hash.to_string());
        let build = self.statuses(repo, &full).await?;
        Ok(CommitPreview {
            place: place(repo, url),
            hash: full,
            summary: first_line(answer.message.as_deref().unwrap_or("")),
            author: answer.author.and_then(Author::name),
            date: time(answer.date),
            build,
        })
    }

    async fn branch(
        &self,
        repo: &RepositoryName,
        name: &str,
        url: &str,
    ) -> Result<BranchPreview, PreviewError> {
        #[derive(Deserialize)]
        struct Answer {
            name: Option<String>,
            target: Option<CommitAnswer>,
        }
        let answer: Answer = self
            .json(
                &["repositories", repo.as_str(), "refs", "branches", name],
                &[("fields", FIELDS_BRANCH)],
            )
            .await?;
        let head = answer.target;
        Ok(BranchPreview {
            place: place(repo, url),
            name: answer.name.unwrap_or_else(|| name.to_string()),
            head: head.as_ref().and_then(|h| h.hash.clone()),
            head_summary: head
                .as_ref()
                .and_then(|h| h.message.as_deref())
                .map(first_line),
            head_date: head.as_ref().and_then(|h| time(h.date.clone())),
            head_author: head.and_then(|h| h.author).and_then(Author::name),
        })
    }

    async fn issue(
        &self,
        repo: &RepositoryName,
        id: u64,
        url: &str,
    ) -> Result<IssuePreview, PreviewError> {
        #[derive(Deserialize)]
        struct Answer {
            id: u64,
            title: Option<String>,
            state: Option<String>,
            kind: Option<String>,
            priority: Option<String>,
            updated_on: Option<String>,
            assignee: Option<Account>,
            reporter: Option<Account>,
        }
        let answer: Answer = self
            .json(
                &["repositories", repo.as_str(), "issues", &id.to_string()],
                &[("fields", FIELDS_ISSUE)],
            )
            .await?;
        Ok(IssuePreview {
            place: place(repo, url),
            id: answer.id,
            title: answer.title.unwrap_or_default(),
            state: answer.state.unwrap_or_else(|| "new".into()),
            kind: answer.kind,
            priority: answer.priority,
            assignee: answer.assignee.and_then(Account::name),
            reporter: answer.reporter.and_then(Account::name),
            updated_on: time(answer.updated_on),
        })
    }

    /// A pipeline by build number: `GET …/pipelines/{n}` (Bitbucket takes the build
    /// number where the API description says `pipeline_uuid`). Should it not, the
    /// documented list (`…/pipelines?sort=-created_on`, the newest 100) is searched for the
    /// number: one more request, and no preview for an older pipeline.
    async fn pipeline(
        &self,
        repo: &RepositoryName,
        build_number: u64,
        url: &str,
    ) -> Result<PipelinePreview, PreviewError> {
        #[derive(Deserialize)]
        struct Answer {
            build_number: Option<u64>,
            state: Option<State>,
            target: Option<Target>,
            creator: Option<Account>,
            created_on: Option<String>,
            completed_on: Option<String>,
        }
        #[derive(Deserialize)]
        struct State {
            name: Option<String>,
            stage: Option<Named>,
            result: Option<Named>,
        }
        #[derive(Deserialize)]
        struct Target {
            ref_name: Option<String>,
            source: Option<String>,
            pullrequest: Option<Numbered>,
        }
        #[derive(Deserialize)]
        struct Numbered {
            id: u64,
        }
        #[derive(Deserialize)]
        struct Listed {
            #[serde(default)]
            values: Vec<Answer>,
        }
        let by_number = self
            .json::<Answer>(
                &[
                    "repositories",
                    repo.as_str(),
                    "pipelines",
                    &build_number.to_string(),
                ],
                &[("fields", FIELDS_PIPELINE)],
            )
            .await;
        let answer = match by_number {
            Err(PreviewError::NoAccess) => self
                .json::<Listed>(
                    &["repositories", repo.as_str(), "pipelines"],
                    &[
                        ("sort", "-created_on"),
                        ("pagelen", PIPELINES_SEARCHED),
                        ("fields", FIELDS_PIPELINES),
                    ],
                )
                .await?
                .values
                .into_iter()
                .find(|pipeline| pipeline.build_number == Some(build_number))
                .ok_or(PreviewError::NoAccess)?,
            other => other?,
        };
        let created_on = time(answer.created_on);
        let completed_on = time(answer.completed_on);
        let state = answer.state;
        let target = answer.target;
        Ok(PipelinePreview {
            place: place(repo, url),
            build_number: answer.build_number.unwrap_or(build_number),
            state: state
                .as_ref()
                .and_then(|s| s.name.clone())
                .unwrap_or_else(|| "PENDING".into()),
            detail: state.and_then(|s| s.result.or(s.stage)).map(|n| n.name),
            branch: target
                .as_ref()
                .and_then(|t| t.source.clone().or_else(|| t.ref_name.clone())),
            pull_request: target.and_then(|t| t.pullrequest).map(|p| p.id),
            creator: answer.creator.and_then(Account::name),
            duration_secs: match (created_on, completed_on) {
                (Some(start), Some(end)) if end >= start => {
                    Some(end.duration_since(start).as_secs().unsigned_abs())
                }
                _ => None,
            },
            created_on,
        })
    }
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

#[derive(Deserialize)]
struct Hashed {
    hash: String,
}

/// An account; deleted ones arrive as `null` (the `Option` around it).
#[derive(Deserialize, Clone)]
struct Account {
    display_name: Option<String>,
}

impl Account {
    fn name(self) -> Option<String> {
        self.display_name.filter(|n| !n.trim().is_empty())
    }
}

#[derive(Deserialize)]
struct CommitAnswer {
    hash: Option<String>,
    date: Option<String>,
    message: Option<String>,
    author: Option<Author>,
}

/// A commit's author: the linked account's name, else the raw `Name <email>` without
/// the address.
#[derive(Deserialize)]
struct Author {
    raw: Option<String>,
    user: Option<Account>,
}

impl Author {
    fn name(self) -> Option<String> {
        self.user.and_then(Account::name).or_else(|| {
            let raw = self.raw?;
            let name = raw.split('<').next().unwrap_or("").trim().to_string();
            (!name.is_empty()).then_some(name)
        })
    }
}

fn place(repository: &RepositoryName, url: &str) -> Place {
    Place {
        repository: repository.as_str().to_string(),
        url: url.to_string(),
    }
}

/// An API date; an unparsable one is `None`.
fn time(text: Option<String>) -> Option<Timestamp> {
    text?.parse().ok()
}
