//! Looking up a subscription target (`workspace/repository`, or a whole workspace) with
//! the daemon's credential: does it exist, may we read it, is it private, which branch
//! is its main one.
//!
//! Owns the two requests and their JSON; answers only with [`RepositorySummary`].

use serde::Deserialize;

use super::Target;
use super::client::{BitbucketClient, BitbucketError};
use super::{LookupError, RepositoryLookup, RepositorySummary, WorkspaceRepository};

#[derive(Deserialize)]
struct Repository {
    full_name: String,
    /// Missing means private: nothing is shown more widely than Bitbucket said.
    #[serde(default = "private")]
    is_private: bool,
    mainbranch: Option<Branch>,
}

fn private() -> bool {
    true
}

#[derive(Deserialize)]
struct Branch {
    name: String,
}

fn lookup_error(error: BitbucketError) -> LookupError {
    match error {
        BitbucketError::NotFound { .. } => LookupError::NotFound,
        BitbucketError::Forbidden { .. } => LookupError::Forbidden,
        BitbucketError::InvalidPath { cause } => LookupError::Invalid(cause),
        other => LookupError::Unavailable(other.to_string()),
    }
}

impl BitbucketClient {
    pub async fn lookup_target(&self, target: &Target) -> Result<RepositorySummary, LookupError> {
        match target {
            Target::Repository(name) => {
                let fields = [("fields", "full_name,is_private,mainbranch.name")];
                let repository: Repository = self
                    .get_json(&["repositories", name], &fields)
                    .await
                    .map_err(lookup_error)?;
                Ok(RepositorySummary {
                    full_name: repository.full_name,
                    is_private: repository.is_private,
                    main_branch: repository.mainbranch.map(|branch| branch.name),
                })
            }
            Target::Workspace(workspace) => {
                let query = [("fields", "values.full_name"), ("pagelen", "1")];
                let _: serde::de::IgnoredAny = self
                    .get_json(&["repositories", workspace], &query)
                    .await
                    .map_err(lookup_error)?;
                Ok(RepositorySummary {
                    full_name: workspace.clone(),
                    is_private: false,
                    main_branch: None,
                })
            }
        }
    }
}

impl RepositoryLookup for BitbucketClient {
    fn lookup<'a>(
        &'a self,
        target: &'a Target,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<RepositorySummary, LookupError>> + Send + 'a>,
    > {
        Box::pin(self.lookup_target(target))
    }

    fn workspace_repositories<'a>(
        &'a self,
        workspace: &'a str,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<Vec<WorkspaceRepository>, LookupError>>
                + Send
                + 'a,
        >,
    > {
        // Ten pages of 100: a thousand repositories, the most the budget can watch anyway.
        Box::pin(async move {
            BitbucketClient::workspace_repositories(self, workspace, 10)
                .await
                .map_err(lookup_error)
        })
    }
}
