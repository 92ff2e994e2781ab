//! Everything that speaks to Bitbucket Cloud. The only module that knows Bitbucket's JSON.

pub mod accounts;
pub mod activity;
pub mod budget;
pub mod client;
pub mod credential;
mod diff;
pub mod links;
mod lookup;
mod model;
pub mod name;
pub mod open_pulls;
pub mod poller;
pub mod preview;
pub mod preview_reads;
pub mod schedule;
pub mod sweep_coverage;

pub use activity::{
    Activity, ActivityKind, Actor, BuildHeads, BuildRef, CommentRef, CommitRef, DeploymentRef,
    IssueRef, PipelineRef, PollWants, PullRequestRef,
};
pub use client::{BitbucketClient, BitbucketError, ClientSettings};
pub use name::{InvalidRepositoryName, RepositoryName, Target};
pub use poller::{PollCommit, PollStore, Poller, PollerSettings, Progress};

/// What `/bitbucket subscribe` needs to know about its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositorySummary {
    pub full_name: String,
    pub is_private: bool,
    /// `None` for a workspace target.
    pub main_branch: Option<String>,
}

/// One repository of a workspace listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceRepository {
    pub full_name: String,
    pub is_private: bool,
}

/// Why a target cannot be subscribed to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("no such repository or workspace")]
    NotFound,
    #[error("the daemon's Bitbucket credential may not read it")]
    Forbidden,
    #[error("Bitbucket could not be asked: {0}")]
    Unavailable(String),
    /// The name would have changed the request's path; nothing was sent.
    #[error("{0}")]
    Invalid(String),
}

/// Looks up a subscription target with the daemon's own credential.
pub trait RepositoryLookup: Send + Sync {
    fn lookup<'a>(
        &'a self,
        target: &'a crate::bitbucket::Target,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<RepositorySummary, LookupError>> + Send + 'a>,
    >;

    /// A workspace's repositories with their privacy (for workspace-wide subscriptions).
    fn workspace_repositories<'a>(
        &'a self,
        workspace: &'a str,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<Vec<WorkspaceRepository>, LookupError>>
                + Send
                + 'a,
        >,
    >;
}
