//! What a link preview shows, as plain data: one [`Preview`] per kind of link, read by
//! `preview_reads.rs` and drawn by `notify::unfurl`.
//!
//! Pure, plain data with no Bitbucket JSON shapes: names and states are Bitbucket's words
//! as text, times are [`Timestamp`]s. Never holds a token; never decides how it looks.

use jiff::Timestamp;

use super::links::LineRange;
use super::open_pulls::BuildState;

/// One preview: what a card shows about the object a link points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preview {
    PullRequest(PullRequestPreview),
    Commit(CommitPreview),
    Branch(BranchPreview),
    Repository(RepositoryPreview),
    Issue(IssuePreview),
    Pipeline(PipelinePreview),
    File(FilePreview),
}

/// Where the object lives and how to open it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// `workspace/slug`.
    pub repository: String,
    /// The link as shared (the card's title opens it).
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequestPreview {
    pub place: Place,
    pub id: u64,
    pub title: String,
    /// OPEN, DRAFT, QUEUED, MERGED, DECLINED or SUPERSEDED.
    pub state: String,
    pub draft: bool,
    pub author: Option<String>,
    pub source_branch: Option<String>,
    pub destination_branch: Option<String>,
    /// Reviewers who approved, of `reviewers` (participants in the REVIEWER role).
    pub approvals: usize,
    pub reviewers: usize,
    /// Names of everyone who approved (reviewers or not).
    pub approved_by: Vec<String>,
    pub build: Option<BuildSummary>,
    pub updated_on: Option<Timestamp>,
}

/// The commit statuses of one commit, counted by state (INPROGRESS, SUCCESSFUL,
/// FAILED, STOPPED).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildSummary {
    pub successful: usize,
    pub failed: usize,
    pub in_progress: usize,
    pub stopped: usize,
}

impl BuildSummary {
    pub fn total(&self) -> usize {
        self.successful + self.failed + self.in_progress + self.stopped
    }

    /// Where the builds stand together: a failure wins, then a running build, then a
    /// stopped one; `None` when none reported.
    pub fn state(&self) -> Option<BuildState> {
        if self.failed > 0 {
            Some(BuildState::Failed)
        } else if self.in_progress > 0 {
            Some(BuildState::Running)
        } else if self.stopped > 0 {
            Some(BuildState::Stopped)
        } else if self.successful > 0 {
            Some(BuildState::Passed)
        } else {
            None
        }
    }

    /// Counts one status by its `state`; unknown states count as nothing.
    pub fn count(&mut self, state: &str) {
        match state {
            "SUCCESSFUL" => self.successful += 1,
            "FAILED" => self.failed += 1,
            "INPROGRESS" => self.in_progress += 1,
            "STOPPED" => self.stopped += 1,
            _ => {}
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitPreview {
    pub place: Place,
    pub hash: String,
    /// The message's first line.
    pub summary: String,
    pub author: Option<String>,
    pub date: Option<Timestamp>,
    pub build: Option<BuildSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchPreview {
    pub place: Place,
    pub name: String,
    pub head: Option<String>,
    /// The head commit's message, first line.
    pub head_summary: Option<String>,
    pub head_author: Option<String>,
    pub head_date: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryPreview {
    pub place: Place,
    pub description: Option<String>,
    pub language: Option<String>,
    pub is_private: bool,
    pub main_branch: Option<String>,
    pub updated_on: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuePreview {
    pub place: Place,
    pub id: u64,
    pub title: String,
    /// submitted, new, open, resolved, on hold, invalid, duplicate, wontfix or closed.
    pub state: String,
    /// bug, enhancement, proposal or task.
    pub kind: Option<String>,
    /// trivial, minor, major, critical or blocker.
    pub priority: Option<String>,
    pub assignee: Option<String>,
    pub reporter: Option<String>,
    pub updated_on: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelinePreview {
    pub place: Place,
    pub build_number: u64,
    /// PENDING, IN_PROGRESS or COMPLETED.
    pub state: String,
    /// The stage while in progress (RUNNING, PAUSED, HALTED) or the result when completed
    /// (SUCCESSFUL, FAILED, ERROR, STOPPED, EXPIRED).
    pub detail: Option<String>,
    pub branch: Option<String>,
    pub pull_request: Option<u64>,
    pub creator: Option<String>,
    pub created_on: Option<Timestamp>,
    pub duration_secs: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePreview {
    pub place: Place,
    pub revision: String,
    pub path: String,
    pub lines: Option<LineRange>,
    /// The lines shown (at most [`SNIPPET_MAX_LINES`] lines and [`SNIPPET_MAX_CHARS`]
    /// characters), `None` for a file that is not text.
    pub snippet: Option<String>,
}

/// The most lines of a file a preview shows.
pub const SNIPPET_MAX_LINES: usize = 15;
/// The most characters of a file a preview shows.
pub const SNIPPET_MAX_CHARS: usize = 1500;

/// The lines of `content` a file preview shows: the range (or the file's start), within
/// [`SNIPPET_MAX_LINES`] and [`SNIPPET_MAX_CHARS`]; `None` when `content` is not UTF-8
/// text (or holds NUL bytes) or the range starts past its end.
pub fn snippet(content: &[u8], lines: Option<LineRange>) -> Option<String> {
    if content.contains(&0) {
        return None;
    }
    let text = std::str::from_utf8(content).ok()?;
    let (start, end) = match lines {
        Some(range) => (range.start as usize, range.end as usize),
        None => (1, SNIPPET_MAX_LINES),
    };
    let end = end.min(start + SNIPPET_MAX_LINES - 1);
    let chosen: Vec<&str> = text
        .lines()
        .skip(start.saturating_sub(1))
        .take(end + 1 - start)
        .collect();
    if chosen.is_empty() && lines.is_some() {
        return None;
    }
    let mut shown = String::new();
    for line in chosen {
        let next = if shown.is_empty() {
            line.to_string()
        } else {
            format!("\n{line}")
        };
        if shown.chars().count() + next.chars().count() > SNIPPET_MAX_CHARS {
            let room = SNIPPET_MAX_CHARS.saturating_sub(shown.chars().count());
            shown.extend(next.chars().take(room));
            break;
        }
        shown.push_str(&next);
    }
    Some(shown)
}

/// A commit message's first line.
pub fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or("").trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_keep_the_range_within_the_limits() {
        let file: String = (1..=40).map(|n| format!("line {n}\n")).collect();
        let range = |start, end| Some(LineRange { start, end });
        assert_eq!(
            snippet(file.as_bytes(), range(2, 3)).as_deref(),
            Some("line 2\nline 3")
        );
        let long = snippet(file.as_bytes(), range(1, 40)).expect("text");
        assert_eq!(long.lines().count(), SNIPPET_MAX_LINES);
        assert_eq!(
            snippet(file.as_bytes(), None)
                .expect("text")
                .lines()
                .count(),
            SNIPPET_MAX_LINES
        );
        assert_eq!(snippet(file.as_bytes(), range(50, 60)), None);
        assert_eq!(snippet(b"\x00\x01binary", None), None);
        assert_eq!(snippet(&[0xff, 0xfe], None), None);
        let wide = "x".repeat(1000) + "\n" + &"y".repeat(1000);
        assert_eq!(
            snippet(wide.as_bytes(), None)
                .expect("text")
                .chars()
                .count(),
            SNIPPET_MAX_CHARS
        );
    }

    #[test]
    fn build_summaries_count_the_api_states() {
        let mut build = BuildSummary::default();
        for state in ["SUCCESSFUL", "FAILED", "INPROGRESS", "STOPPED", "WHATEVER"] {
            build.count(state);
        }
        assert_eq!(build.total(), 4);
        assert_eq!(first_line("Fix it\n\nBecause"), "Fix it");
    }
}
