//! What a shared `bitbucket.org` link points at: a pull request, commit, branch,
//! repository, issue, pipeline or file (with a line range), as a [`BitbucketLink`].
//!
//! Pure: text in, value out. Owns the rules for which links are previewed: `http(s)` on
//! `bitbucket.org` or `www.bitbucket.org` (no user, no port), workspace and repository
//! names by `name.rs`'s rules, and the path shapes Bitbucket's web pages use. Anything
//! else is `None`: other hosts, unknown paths, `.` and `..` segments (raw or
//! percent-encoded), encoded slashes or backslashes, control characters, malformed
//! percent-encoding. Must never do I/O, log, or build a request path itself (the readers
//! pass every part through `push_segments`).

use super::name::RepositoryName;

/// The longest link looked at (Slack's URLs are far shorter).
const MAX_URL_CHARS: usize = 2000;
/// The highest line number of a file link's range.
const MAX_LINE: u32 = 10_000_000;

/// A link to something in one repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitbucketLink {
    pub repository: RepositoryName,
    pub target: LinkTarget,
}

/// What in the repository the link shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkTarget {
    Repository,
    PullRequest {
        id: u64,
    },
    /// A commit hash (or unique prefix) as the link wrote it, lower case.
    Commit {
        hash: String,
    },
    /// A branch name, possibly with `/`.
    Branch {
        name: String,
    },
    Issue {
        id: u64,
    },
    /// A pipeline by its build number.
    Pipeline {
        build_number: u64,
    },
    /// A file at a revision (a commit hash or a branch name), with an optional line range.
    File {
        revision: String,
        path: String,
        lines: Option<LineRange>,
    },
}

/// Lines `start..=end` (1-based) of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineRange {
    pub start: u32,
    pub end: u32,
}

impl LinkTarget {
    /// A bounded word for logs and metrics (never a name from the link).
    pub fn kind(&self) -> &'static str {
        match self {
            LinkTarget::Repository => "repository",
            LinkTarget::PullRequest { .. } => "pull_request",
            LinkTarget::Commit { .. } => "commit",
            LinkTarget::Branch { .. } => "branch",
            LinkTarget::Issue { .. } => "issue",
            LinkTarget::Pipeline { .. } => "pipeline",
            LinkTarget::File { .. } => "file",
        }
    }
}

/// The link `url` points at, or `None` when it is not one we preview.
pub fn parse(url: &str) -> Option<BitbucketLink> {
    if url.chars().count() > MAX_URL_CHARS
        || url
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
    {
        return None;
    }
    let rest = strip_prefix_ignore_case(url, "https://")
        .or_else(|| strip_prefix_ignore_case(url, "http://"))?;
    let (rest, fragment) = match rest.split_once('#') {
        Some((rest, fragment)) => (rest, Some(fragment)),
        None => (rest, None),
    };
    let rest = rest.split_once('?').map_or(rest, |(rest, _query)| rest);
    let (host, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash + 1..]),
        None => (rest, ""),
    };
    let host = host.to_ascii_lowercase();
    if host != "bitbucket.org" && host != "www.bitbucket.org" {
        return None;
    }
    let path = path.strip_suffix('/').unwrap_or(path);
    let raw: Vec<&str> = path.split('/').collect();
    let mut segments = Vec::with_capacity(raw.len());
    for segment in &raw {
        segments.push(decode_segment(segment)?);
    }
    let [workspace, slug, tail @ ..] = segments.as_slice() else {
        return None;
    };
    // Names never need escaping: an escaped one is refused rather than decoded.
    if raw[0] != workspace || raw[1] != slug {
        return None;
    }
    let repository: RepositoryName = format!("{workspace}/{slug}").parse().ok()?;
    let tail: Vec<&str> = tail.iter().map(String::as_str).collect();
    let target = target(&tail, fragment)?;
    Some(BitbucketLink { repository, target })
}

fn target(tail: &[&str], fragment: Option<&str>) -> Option<LinkTarget> {
    Some(match tail {
        [] | ["src"] => LinkTarget::Repository,
        ["pull-requests", id, ..] => LinkTarget::PullRequest { id: number(id)? },
        ["commits", hash] => LinkTarget::Commit {
            hash: commit_hash(hash)?,
        },
        ["branch", name @ ..] if !name.is_empty() => LinkTarget::Branch {
            name: name.join("/"),
        },
        ["issues", id] | ["issues", id, _] => LinkTarget::Issue { id: number(id)? },
        ["pipelines", "results", build, ..] => LinkTarget::Pipeline {
            build_number: number(build)?,
        },
        ["src", _revision] => LinkTarget::Repository,
        ["src", revision, path @ ..] => LinkTarget::File {
            revision: revision.to_string(),
            path: path.join("/"),
            lines: match fragment {
                Some(fragment) => line_range(fragment),
                None => None,
            },
        },
        _ => return None,
    })
}

/// A positive decimal number without sign or leading zero tricks beyond `u64`.
fn number(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 12 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|n| *n > 0)
}

/// 7 to 40 hex digits.
fn commit_hash(text: &str) -> Option<String> {
    let hex = (7..=40).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit());
    hex.then(|| text.to_ascii_lowercase())
}

/// `lines-10` or `lines-10:20` (Bitbucket's fragment); anything else is no range.
fn line_range(fragment: &str) -> Option<LineRange> {
    let lines = fragment.strip_prefix("lines-")?;
    let (start, end) = match lines.split_once(':') {
        Some((start, end)) => (start, end),
        None => (lines, lines),
    };
    let line = |text: &str| number(text).and_then(|n| u32::try_from(n).ok());
    let (start, end) = (line(start)?, line(end)?);
    (start <= end && end <= MAX_LINE).then_some(LineRange { start, end })
}

/// One path segment, percent-decoded. `None` for an empty segment, one of only dots
/// (raw or decoded), bad escapes, non-UTF-8, or a decoded `/`, `\` or control character.
fn decode_segment(segment: &str) -> Option<String> {
    if segment.is_empty() {
        return None;
    }
    let bytes = segment.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    let decoded = String::from_utf8(decoded).ok()?;
    let refused = decoded.chars().all(|c| c == '.')
        || decoded
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control());
    (!refused).then_some(decoded)
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(repository: &str, target: LinkTarget) -> Option<BitbucketLink> {
        Some(BitbucketLink {
            repository: repository.parse().expect("a valid name"),
            target,
        })
    }

    fn file(revision: &str, path: &str, lines: Option<(u32, u32)>) -> LinkTarget {
        LinkTarget::File {
            revision: revision.into(),
            path: path.into(),
            lines: lines.map(|(start, end)| LineRange { start, end }),
        }
    }

    #[test]
    fn every_kind_of_link_parses_to_its_target() {
        let pr = |id| LinkTarget::PullRequest { id };
        let cases: Vec<(&str, Option<BitbucketLink>)> = vec![
            (
                "https://bitbucket.org/acme/api/pull-requests/7",
                link("acme/api", pr(7)),
            ),
            (
                "https://bitbucket.org/acme/api/pull-requests/7/",
                link("acme/api", pr(7)),
            ),
            (
                "https://bitbucket.org/acme/api/pull-requests/7/diff",
                link("acme/api", pr(7)),
            ),
            (
                "https://bitbucket.org/acme/api/pull-requests/7/commits",
                link("acme/api", pr(7)),
            ),
            (
                "https://bitbucket.org/acme/api/pull-requests/7/overview#comment-123",
                link("acme/api", pr(7)),
            ),
            (
                "https://www.bitbucket.org/Acme/API/pull-requests/12?w=1",
                link("acme/api", pr(12)),
            ),
            (
                "http://bitbucket.org/acme/api/pull-requests/7",
                link("acme/api", pr(7)),
            ),
            (
                "HTTPS://BITBUCKET.ORG/acme/api/pull-requests/7",
                link("acme/api", pr(7)),
            ),
            (
                "https://bitbucket.org/acme/api/commits/0a1b2c3d4e5f",
                link(
                    "acme/api",
                    LinkTarget::Commit {
                        hash: "0a1b2c3d4e5f".into(),
                    },
                ),
            ),
            (
                "https://bitbucket.org/acme/api/commits/0A1B2C3",
                link(
                    "acme/api",
                    LinkTarget::Commit {
                        hash: "0a1b2c3".into(),
                    },
                ),
            ),
            (
                "https://bitbucket.org/acme/api/branch/main",
                link(
                    "acme/api",
                    LinkTarget::Branch {
                        name: "main".into(),
                    },
                ),
            ),
            (
                "https://bitbucket.org/acme/api/branch/feature/retries",
                link(
                    "acme/api",
                    LinkTarget::Branch {
                        name: "feature/retries".into(),
                    },
                ),
            ),
            (
                "https://bitbucket.org/acme/api/branch/fix%20it",
                link(
                    "acme/api",
                    LinkTarget::Branch {
                        name: "fix it".into(),
                    },
                ),
            ),
            (
                "https://bitbucket.org/acme/api",
                link("acme/api", LinkTarget::Repository),
            ),
            (
                "https://bitbucket.org/acme/api/",
                link("acme/api", LinkTarget::Repository),
            ),
            (
                "https://bitbucket.org/acme/api/src",
                link("acme/api", LinkTarget::Repository),
            ),
            (
                "https://bitbucket.org/acme/api/src/main",
                link("acme/api", LinkTarget::Repository),
            ),
            (
                "https://bitbucket.org/acme/api/src/main/",
                link("acme/api", LinkTarget::Repository),
            ),
            (
                "https://bitbucket.org/acme/api/issues/3",
                link("acme/api", LinkTarget::Issue { id: 3 }),
            ),
            (
                "https://bitbucket.org/acme/api/issues/3/crash-on-start",
                link("acme/api", LinkTarget::Issue { id: 3 }),
            ),
            (
                "https://bitbucket.org/acme/api/pipelines/results/42",
                link("acme/api", LinkTarget::Pipeline { build_number: 42 }),
            ),
            (
                "https://bitbucket.org/acme/api/pipelines/results/42/steps/%7Bstep%7D",
                link("acme/api", LinkTarget::Pipeline { build_number: 42 }),
            ),
            (
                "https://bitbucket.org/acme/api/src/main/src/lib.rs",
                link("acme/api", file("main", "src/lib.rs", None)),
            ),
            (
                "https://bitbucket.org/acme/api/src/0a1b2c3/src/lib.rs#lines-10:20",
                link("acme/api", file("0a1b2c3", "src/lib.rs", Some((10, 20)))),
            ),
            (
                "https://bitbucket.org/acme/api/src/main/README.md#lines-5",
                link("acme/api", file("main", "README.md", Some((5, 5)))),
            ),
            (
                "https://bitbucket.org/acme/api/src/main/README.md#lines-20:10",
                link("acme/api", file("main", "README.md", None)),
            ),
            (
                "https://bitbucket.org/acme/api/src/main/README.md#readme",
                link("acme/api", file("main", "README.md", None)),
            ),
        ];
        for (url, expected) in cases {
            assert_eq!(parse(url), expected, "{url}");
        }
    }

    #[test]
    fn other_hosts_unknown_paths_garbage_and_tricks_are_none() {
        let refused = [
            "",
            "garbage",
            "bitbucket.org/acme/api",
            "ftp://bitbucket.org/acme/api",
            "https://github.com/acme/api/pull/7",
            "https://bitbucket.org.evil.com/acme/api",
            "https://evil.com/bitbucket.org/acme/api",
            "https://user@bitbucket.org/acme/api",
            "https://bitbucket.org:8443/acme/api",
            "https://bitbucket.org/",
            "https://bitbucket.org/acme",
            "https://bitbucket.org/acme/api/wiki/Home",
            "https://bitbucket.org/acme/api/pull-requests/",
            "https://bitbucket.org/acme/api/pull-requests/abc",
            "https://bitbucket.org/acme/api/pull-requests/0",
            "https://bitbucket.org/acme/api/pull-requests/-1",
            "https://bitbucket.org/acme/api/pull-requests/99999999999999999999",
            "https://bitbucket.org/acme/api/commits/xyz",
            "https://bitbucket.org/acme/api/commits/abc",
            "https://bitbucket.org/acme/api/branch/",
            "https://bitbucket.org/acme/api/issues/3/slug/extra",
            "https://bitbucket.org/acme/api/pipelines/results/",
            "https://bitbucket.org/acme/api/../other/pull-requests/1",
            "https://bitbucket.org/acme/api/branch/..",
            "https://bitbucket.org/acme/api/branch/%2e%2e",
            "https://bitbucket.org/acme/api/src/main/%2e%2e/secret",
            "https://bitbucket.org/acme/api/src/main/a%2fb",
            "https://bitbucket.org/acme/api/src/main/a%5cb",
            "https://bitbucket.org/acme/api/src/main/a\\b",
            "https://bitbucket.org/acme/api/src/main/a%00b",
            "https://bitbucket.org/acme/api/src/main/a%zzb",
            "https://bitbucket.org/acme/api/src/main/a%ff",
            "https://bitbucket.org/acme//api",
            "https://bitbucket.org/ac%6De/api",
            "https://bitbucket.org/acme/api/pull-requests/7 ",
            "https://bitbucket.org/acme/a pi",
            "https://bitbucket.org/ac!me/api/pull-requests/1",
            "https://bitbucket.org/acme/ap~i/pull-requests/1",
        ];
        for url in refused {
            assert_eq!(parse(url), None, "{url}");
        }
        assert_eq!(
            parse(&format!(
                "https://bitbucket.org/acme/api/branch/{}",
                "a".repeat(3000)
            )),
            None
        );
    }

    #[test]
    fn kinds_are_bounded_words() {
        let kinds: Vec<&str> = [
            "https://bitbucket.org/acme/api",
            "https://bitbucket.org/acme/api/pull-requests/1",
            "https://bitbucket.org/acme/api/commits/abcdef0",
            "https://bitbucket.org/acme/api/branch/x",
            "https://bitbucket.org/acme/api/issues/1",
            "https://bitbucket.org/acme/api/pipelines/results/1",
            "https://bitbucket.org/acme/api/src/main/x.rs",
        ]
        .iter()
        .map(|url| parse(url).expect("a link").target.kind())
        .collect();
        assert_eq!(
            kinds,
            [
                "repository",
                "pull_request",
                "commit",
                "branch",
                "issue",
                "pipeline",
                "file"
            ]
        );
    }
}
