//! [`RepositoryName`]: a repository's full name, `workspace/slug`, checked once.
//!
//! Owns the one parser of repository names, so the store, the poller and (later) the
//! `/bitbucket subscribe` command agree on what a name is. Must never touch the network.

use std::fmt;
use std::str::FromStr;

/// A repository's full name: `workspace/slug`, lower case.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RepositoryName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a repository name such as `workspace/repository`")]
pub struct InvalidRepositoryName(pub String);

impl RepositoryName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn workspace(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }

    pub fn slug(&self) -> &str {
        self.0.split('/').nth(1).unwrap_or("")
    }
}

fn is_name_part(part: &str) -> bool {
    !part.is_empty()
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && part != "."
        && part != ".."
}

impl FromStr for RepositoryName {
    type Err = InvalidRepositoryName;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim().to_ascii_lowercase();
        match trimmed.split_once('/') {
            Some((workspace, slug)) if is_name_part(workspace) && is_name_part(slug) => {
                Ok(Self(trimmed))
            }
            _ => Err(InvalidRepositoryName(text.to_string())),
        }
    }
}

impl fmt::Display for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_workspace_slash_slug() {
        let name: RepositoryName = " Acme/API-server ".parse().expect("valid");
        assert_eq!(name.as_str(), "acme/api-server");
        assert_eq!(name.workspace(), "acme");
        assert_eq!(name.slug(), "api-server");
        for bad in [
            "acme",
            "acme/",
            "/api",
            "acme/api/x",
            "acme/a b",
            "../x",
            "acme/..",
        ] {
            assert!(bad.parse::<RepositoryName>().is_err(), "{bad}");
        }
    }
}
