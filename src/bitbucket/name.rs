//! Bitbucket's names, checked once: [`WorkspaceId`], [`RepositoryName`] (`workspace/slug`),
//! and the one place that turns names into URL path segments ([`push_segments`]).
//!
//! Owns Bitbucket's naming rules, so the command parser, the store, the poller and the
//! clients agree on what a name is and no user input can change a request's path. Must
//! never touch the network.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use url::Url;

/// The longest workspace id or repository slug Bitbucket Cloud gives out.
pub const MAX_NAME_LENGTH: usize = 62;

/// What a target should look like, for messages that refuse one.
pub const EXPECTED_FORM: &str = "`workspace/repository` (such as `acme/api`) or a workspace id (such as `acme`): \
lower-case letters, digits, `-` and `_` (and `.` in a repository), at most 62 characters each";

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("it is empty")]
    Empty,
    #[error("it has more than one `/`")]
    TooManySlashes,
    #[error("a part is empty")]
    EmptyPart,
    #[error("`.` and `..` are not names")]
    DotsOnly,
    #[error("it contains whitespace or a control character")]
    Whitespace,
    #[error("{} is not allowed in a name", describe_char(*.0))]
    Character(char),
    #[error("a part is longer than {MAX_NAME_LENGTH} characters")]
    TooLong,
}

/// A refused name, with the text as typed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a Bitbucket name: {reason}")]
pub struct InvalidRepositoryName {
    pub text: String,
    pub reason: NameError,
}

/// A character as a message may show it: plain when harmless, else its code point.
fn describe_char(c: char) -> String {
    if c.is_ascii_graphic() && !matches!(c, '`' | '<' | '>' | '&' | '*' | '_' | '~') {
        format!("`{c}`")
    } else {
        format!("U+{:04X}", u32::from(c))
    }
}

fn check_part(part: &str, dots_allowed: bool) -> Result<(), NameError> {
    if part.is_empty() {
        return Err(NameError::EmptyPart);
    }
    if part.chars().count() > MAX_NAME_LENGTH {
        return Err(NameError::TooLong);
    }
    if part.chars().all(|c| c == '.') {
        return Err(NameError::DotsOnly);
    }
    for c in part.chars() {
        match c {
            'a'..='z' | '0'..='9' | '-' | '_' => {}
            '.' if dots_allowed => {}
            c if c.is_whitespace() || c.is_control() => return Err(NameError::Whitespace),
            c => return Err(NameError::Character(c)),
        }
    }
    Ok(())
}

/// Lower-cases and checks the outer whitespace only: inner whitespace is refused later.
fn normalized(text: &str) -> Result<String, NameError> {
    let trimmed = text.trim_matches(|c: char| c == ' ' || c == '\t');
    if trimmed.is_empty() {
        return Err(NameError::Empty);
    }
    Ok(trimmed.to_lowercase())
}

/// A workspace id, such as `acme`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkspaceId(String);

impl WorkspaceId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for WorkspaceId {
    type Err = InvalidRepositoryName;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let refuse = |reason| InvalidRepositoryName {
            text: text.to_string(),
            reason,
        };
        let name = normalized(text).map_err(refuse)?;
        if name.contains('/') {
            return Err(refuse(NameError::TooManySlashes));
        }
        check_part(&name, false).map_err(refuse)?;
        Ok(Self(name))
    }
}

impl fmt::Display for WorkspaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A repository's full name: `workspace/slug`, lower case.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RepositoryName(String);

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

impl FromStr for RepositoryName {
    type Err = InvalidRepositoryName;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let refuse = |reason| InvalidRepositoryName {
            text: text.to_string(),
            reason,
        };
        let name = normalized(text).map_err(refuse)?;
        let Some((workspace, slug)) = name.split_once('/') else {
            return Err(refuse(NameError::EmptyPart));
        };
        if slug.contains('/') {
            return Err(refuse(NameError::TooManySlashes));
        }
        check_part(workspace, false).map_err(refuse)?;
        check_part(slug, true).map_err(refuse)?;
        Ok(Self(name))
    }
}

impl fmt::Display for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a subscription covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Target {
    Repository(String),
    /// Every repository of a Bitbucket workspace, including ones created later.
    Workspace(String),
}

impl Target {
    pub fn as_str(&self) -> &str {
        match self {
            Target::Repository(name) | Target::Workspace(name) => name,
        }
    }

    pub fn covers(&self, repository: &str) -> bool {
        match self {
            Target::Repository(name) => name == repository,
            Target::Workspace(workspace) => repository
                .split_once('/')
                .is_some_and(|(owner, _)| owner == workspace),
        }
    }
}

/// Parses `workspace/repo` or `workspace` with Bitbucket's naming rules.
pub fn parse_target(text: &str) -> Result<Target, InvalidRepositoryName> {
    if text.contains('/') {
        return text
            .parse::<RepositoryName>()
            .map(|name| Target::Repository(name.as_str().to_string()));
    }
    text.parse::<WorkspaceId>()
        .map(|workspace| Target::Workspace(workspace.as_str().to_string()))
}

/// A path segment the clients refused to send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused to build a request path from `{0}`")]
pub struct InvalidSegment(pub String);

/// Appends `segments` to `url`'s path, each `/`-separated part as its own percent-encoded
/// segment. Refuses empty parts, `.` and `..` (which a URL library would resolve, moving
/// the request elsewhere) and control characters, so a name can only ever add segments
/// under the path it was given.
pub fn push_segments(url: &mut Url, segments: &[&str]) -> Result<(), InvalidSegment> {
    let mut parts = Vec::new();
    for segment in segments {
        for part in segment.split('/') {
            let dots_only = part.chars().all(|c| c == '.');
            if dots_only || part.chars().any(char::is_control) {
                return Err(InvalidSegment(segment.to_string()));
            }
            parts.push(part);
        }
    }
    let base = url.as_str().to_string();
    let mut path = url.path_segments_mut().map_err(|()| InvalidSegment(base))?;
    path.pop_if_empty();
    for part in parts {
        path.push(part);
    }
    Ok(())
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
        let dotted: RepositoryName = "acme/site.io".parse().expect("dots in a slug");
        assert_eq!(dotted.slug(), "site.io");
        let workspace: WorkspaceId = "Acme_Labs".parse().expect("valid");
        assert_eq!(workspace.as_str(), "acme_labs");
    }

    /// Every one of these is refused by both parsers (or by the one it is meant for).
    pub(crate) const BAD_TARGETS: &[&str] = &[
        "",
        " ",
        ".",
        "..",
        "...",
        "acme/.",
        "acme/..",
        "./api",
        "../api",
        "../../etc/passwd",
        "acme/../x",
        "acme//api",
        "acme/",
        "/api",
        "/",
        "acme/api/x",
        "acme/api/",
        "acme/a b",
        "ac me",
        "acme/api\t2",
        "acme/api\n",
        "acme\u{0}/api",
        "acme/api\u{7f}",
        "%2e%2e",
        "acme/%2e%2e",
        "acme/%2E",
        "acme%2fapi",
        "acme/api?x=1",
        "acme/api#frag",
        "acme\\api",
        "acme/api;x",
        "ac.me/api",
        "acme/ap\u{e9}",
        "\u{2024}\u{2024}",
        "acme/\u{ff0e}\u{ff0e}",
        "acme:api",
        "acme/@api",
        "~acme",
    ];

    #[test]
    fn bad_names_are_refused_with_a_reason() {
        let long = "a".repeat(MAX_NAME_LENGTH + 1);
        let long_slug = format!("acme/{long}");
        for bad in BAD_TARGETS
            .iter()
            .copied()
            .chain([long.as_str(), long_slug.as_str()])
        {
            let as_repository = bad.parse::<RepositoryName>();
            let as_workspace = bad.parse::<WorkspaceId>();
            assert!(as_repository.is_err(), "{bad:?} as a repository");
            assert!(as_workspace.is_err(), "{bad:?} as a workspace");
        }
        assert_eq!(
            "acme/..".parse::<RepositoryName>().map_err(|e| e.reason),
            Err(NameError::DotsOnly)
        );
        assert_eq!(
            "acme/a/b".parse::<RepositoryName>().map_err(|e| e.reason),
            Err(NameError::TooManySlashes)
        );
        assert_eq!(
            long.parse::<WorkspaceId>().map_err(|e| e.reason),
            Err(NameError::TooLong)
        );
        assert_eq!(
            "acme/a\u{0}"
                .parse::<RepositoryName>()
                .map_err(|e| e.reason),
            Err(NameError::Whitespace)
        );
    }

    #[test]
    fn segments_stay_under_the_base_path() {
        let base = Url::parse("https://api.bitbucket.org/2.0/").expect("url");
        let mut url = base.clone();
        push_segments(&mut url, &["repositories", "acme/api", "pullrequests"]).expect("fine");
        assert_eq!(
            url.as_str(),
            "https://api.bitbucket.org/2.0/repositories/acme/api/pullrequests"
        );
        for hostile in [
            "..",
            ".",
            "acme/..",
            "../..",
            "acme//..",
            "a\u{0}",
            "acme/api\r\nX: y",
        ] {
            let mut url = base.clone();
            assert!(
                push_segments(&mut url, &["repositories", hostile]).is_err(),
                "{hostile:?}"
            );
        }
        // Whatever else a segment holds is percent-encoded inside its own segment.
        for odd in ["%2e%2e", "a?b", "a#b", "a b", "a\\b", "%2f"] {
            let mut url = base.clone();
            push_segments(&mut url, &["repositories", odd, "x"]).expect("encoded");
            let path = url.path().to_string();
            assert!(path.starts_with("/2.0/repositories/"), "{path}");
            assert_eq!(url.path_segments().expect("segments").count(), 4, "{path}");
            assert!(url.query().is_none() && url.fragment().is_none(), "{url}");
        }
    }

    #[test]
    fn targets_parse_with_bitbucket_rules() {
        assert_eq!(
            parse_target("Acme/API"),
            Ok(Target::Repository("acme/api".into()))
        );
        assert_eq!(parse_target("acme"), Ok(Target::Workspace("acme".into())));
        assert!(parse_target("acme/").is_err());
        assert!(parse_target("a b").is_err());
        assert!(parse_target("..").is_err());
    }
}
