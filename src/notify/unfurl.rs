//! Link-preview cards: one compact Block Kit card per [`Preview`] (title linking to the
//! object, state, author, approvals, build, branches, "updated 3 h ago"), as the value
//! `chat.unfurl` takes for one URL, and the words of the offer to connect an account.
//!
//! Pure: the preview and `now` in, JSON out. Every text that came from Bitbucket is
//! escaped (`&`, `<`, `>`) and cut to Block Kit's limits; the link is made safe for
//! mrkdwn's `<url|text>`. Must never do I/O, read the clock or decide who may see a card.

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::bitbucket::open_pulls::BuildState;
use crate::bitbucket::preview::{
    BranchPreview, BuildSummary, CommitPreview, FilePreview, IssuePreview, PipelinePreview, Place,
    Preview, PullRequestPreview, RepositoryPreview,
};
use crate::message::{Button, Message, escape, truncate};

/// The longest title shown.
const MAX_TITLE_CHARS: usize = 150;
/// The longest description or commit summary shown.
const MAX_TEXT_CHARS: usize = 300;
/// The longest name (person, branch) shown.
const MAX_NAME_CHARS: usize = 80;
/// Block Kit's limit on a context block's elements.
const MAX_CONTEXT_ELEMENTS: usize = 10;

/// The card for `preview` as `chat.unfurl` takes it for one URL (`{"blocks": [...]}`).
pub fn card(preview: &Preview, now: Timestamp) -> Value {
    let (headline, facts) = match preview {
        Preview::PullRequest(pr) => pull_request(pr, now),
        Preview::Commit(commit) => self::commit(commit, now),
        Preview::Branch(branch) => self::branch(branch, now),
        Preview::Repository(repository) => self::repository(repository, now),
        Preview::Issue(issue) => self::issue(issue, now),
        Preview::Pipeline(pipeline) => self::pipeline(pipeline, now),
        Preview::File(file) => return self::file(file),
    };
    blocks(headline, facts)
}

fn blocks(headline: String, facts: Vec<String>) -> Value {
    let mut blocks = vec![json!({
        "type": "section",
        "text": {"type": "mrkdwn", "text": truncate(&headline, crate::message::MAX_SECTION_CHARS)}
    })];
    let facts: Vec<Value> = facts
        .into_iter()
        .filter(|fact| !fact.is_empty())
        .take(MAX_CONTEXT_ELEMENTS)
        .map(|fact| json!({"type": "mrkdwn", "text": fact}))
        .collect();
    if !facts.is_empty() {
        blocks.push(json!({"type": "context", "elements": facts}));
    }
    json!({ "blocks": blocks })
}

fn pull_request(pr: &PullRequestPreview, now: Timestamp) -> (String, Vec<String>) {
    let title = format!(
        "*{}*\n{}",
        link(&pr.place, &format!("#{} {}", pr.id, pr.title)),
        branches_line(
            &pr.place,
            pr.source_branch.as_deref(),
            pr.destination_branch.as_deref()
        ),
    );
    let state = if pr.draft && pr.state == "OPEN" {
        "Draft"
    } else {
        pull_request_state(&pr.state)
    };
    let mut facts = vec![format!("*{state}*")];
    facts.extend(pr.author.as_deref().map(|a| format!("by {}", name(a))));
    if pr.reviewers > 0 {
        facts.push(format!(
            "Approvals: {} of {} reviewer{}",
            pr.approvals,
            pr.reviewers,
            plural(pr.reviewers)
        ));
    } else if !pr.approved_by.is_empty() {
        facts.push(format!("Approvals: {}", pr.approved_by.len()));
    }
    facts.extend(pr.build.as_ref().map(build));
    facts.extend(pr.updated_on.map(|t| format!("updated {}", ago(t, now))));
    (title, facts)
}

fn pull_request_state(state: &str) -> &'static str {
    match state {
        "OPEN" => "Open",
        "DRAFT" => "Draft",
        "QUEUED" => "Queued to merge",
        "MERGED" => "Merged",
        "DECLINED" => "Declined",
        "SUPERSEDED" => "Superseded",
        _ => "Unknown state",
    }
}

fn commit(commit: &CommitPreview, now: Timestamp) -> (String, Vec<String>) {
    let short: String = commit.hash.chars().take(12).collect();
    let title = format!(
        "*{}*\n`{}` in {}",
        link(&commit.place, &commit_title(&commit.summary)),
        escape(&short),
        escape(&commit.place.repository)
    );
    let mut facts = Vec::new();
    facts.extend(commit.author.as_deref().map(|a| format!("by {}", name(a))));
    facts.extend(commit.build.as_ref().map(build));
    facts.extend(commit.date.map(|t| format!("committed {}", ago(t, now))));
    (title, facts)
}

fn commit_title(summary: &str) -> String {
    if summary.is_empty() {
        "(no commit message)".into()
    } else {
        summary.to_string()
    }
}

fn branch(branch: &BranchPreview, now: Timestamp) -> (String, Vec<String>) {
    let mut title = format!(
        "*{}*\nBranch in {}",
        link(&branch.place, &branch.name),
        escape(&branch.place.repository)
    );
    if let Some(summary) = &branch.head_summary {
        let short: String = branch
            .head
            .as_deref()
            .unwrap_or("")
            .chars()
            .take(12)
            .collect();
        title.push_str(&format!(
            "\nHead `{}`: {}",
            escape(&short),
            escape(&truncate(summary, MAX_TEXT_CHARS))
        ));
    }
    let mut facts = Vec::new();
    facts.extend(
        branch
            .head_author
            .as_deref()
            .map(|a| format!("by {}", name(a))),
    );
    facts.extend(branch.head_date.map(|t| format!("updated {}", ago(t, now))));
    (title, facts)
}

fn repository(repository: &RepositoryPreview, now: Timestamp) -> (String, Vec<String>) {
    let mut title = format!(
        "*{}*",
        link(&repository.place, &repository.place.repository)
    );
    if let Some(description) = &repository.description {
        title.push('\n');
        title.push_str(&escape(&truncate(description, MAX_TEXT_CHARS)));
    }
    let mut facts = vec![if repository.is_private {
        "Private".to_string()
    } else {
        "Public".to_string()
    }];
    facts.extend(repository.language.as_deref().map(name));
    facts.extend(
        repository
            .main_branch
            .as_deref()
            .map(|b| format!("main branch `{}`", name(b))),
    );
    facts.extend(
        repository
            .updated_on
            .map(|t| format!("updated {}", ago(t, now))),
    );
    (title, facts)
}

fn issue(issue: &IssuePreview, now: Timestamp) -> (String, Vec<String>) {
    let title = format!(
        "*{}*\nIssue in {}",
        link(&issue.place, &format!("#{} {}", issue.id, issue.title)),
        escape(&issue.place.repository)
    );
    let mut facts = vec![format!("*{}*", capitalized(&issue.state))];
    facts.extend(issue.kind.as_deref().map(capitalized));
    facts.extend(
        issue
            .priority
            .as_deref()
            .map(|p| format!("{} priority", capitalized(p))),
    );
    facts.extend(
        issue
            .reporter
            .as_deref()
            .map(|r| format!("reported by {}", name(r))),
    );
    facts.push(match issue.assignee.as_deref() {
        Some(assignee) => format!("assigned to {}", name(assignee)),
        None => "unassigned".into(),
    });
    facts.extend(issue.updated_on.map(|t| format!("updated {}", ago(t, now))));
    (title, facts)
}

fn pipeline(pipeline: &PipelinePreview, now: Timestamp) -> (String, Vec<String>) {
    let on = match (pipeline.pull_request, pipeline.branch.as_deref()) {
        (Some(id), Some(branch)) => format!(" on pull request #{id} (`{}`)", name(branch)),
        (Some(id), None) => format!(" on pull request #{id}"),
        (None, Some(branch)) => format!(" on `{}`", name(branch)),
        (None, None) => String::new(),
    };
    let title = format!(
        "*{}*\nIn {}{on}",
        link(
            &pipeline.place,
            &format!("Pipeline #{}", pipeline.build_number)
        ),
        escape(&pipeline.place.repository)
    );
    let mut facts = vec![format!("*{}*", pipeline_state(pipeline))];
    facts.extend(
        pipeline
            .creator
            .as_deref()
            .map(|c| format!("started by {}", name(c))),
    );
    facts.extend(
        pipeline
            .duration_secs
            .map(|s| format!("took {}", duration(s))),
    );
    facts.extend(
        pipeline
            .created_on
            .map(|t| format!("started {}", ago(t, now))),
    );
    (title, facts)
}

fn pipeline_state(pipeline: &PipelinePreview) -> String {
    match (pipeline.state.as_str(), pipeline.detail.as_deref()) {
        ("PENDING", _) => "Pending".into(),
        ("IN_PROGRESS", Some("PAUSED")) => "Paused".into(),
        ("IN_PROGRESS", Some("HALTED")) => "Halted".into(),
        ("IN_PROGRESS", _) => "Running".into(),
        ("COMPLETED", Some("SUCCESSFUL")) => "Successful".into(),
        ("COMPLETED", Some("FAILED")) => "Failed".into(),
        ("COMPLETED", Some("ERROR")) => "Error".into(),
        ("COMPLETED", Some("STOPPED")) => "Stopped".into(),
        ("COMPLETED", Some("EXPIRED")) => "Expired".into(),
        ("COMPLETED", _) => "Completed".into(),
        (other, _) => capitalized(&other.to_lowercase().replace('_', " ")),
    }
}

fn file(file: &FilePreview) -> Value {
    let lines = match file.lines {
        Some(range) if range.start == range.end => format!(", line {}", range.start),
        Some(range) => format!(", lines {}-{}", range.start, range.end),
        None => String::new(),
    };
    let headline = format!(
        "*{}*\n{} at `{}`{lines}",
        link(&file.place, &file.path),
        escape(&file.place.repository),
        name(&file.revision)
    );
    let mut blocks = vec![json!({
        "type": "section",
        "text": {"type": "mrkdwn", "text": truncate(&headline, crate::message::MAX_SECTION_CHARS)}
    })];
    match &file.snippet {
        Some(snippet) if !snippet.is_empty() => blocks.push(json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": format!("```{}```", escape(&snippet.replace("```", "`\u{200b}``")))}
        })),
        Some(_) => {}
        None => blocks.push(json!({
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": "Not a text file: no preview of its contents."}]
        })),
    }
    json!({ "blocks": blocks })
}

fn branches_line(place: &Place, source: Option<&str>, destination: Option<&str>) -> String {
    let repository = escape(&place.repository);
    match (source, destination) {
        (Some(source), Some(destination)) => {
            format!("{repository}: `{}` → `{}`", name(source), name(destination))
        }
        (Some(source), None) => format!("{repository}: `{}`", name(source)),
        _ => repository,
    }
}

fn build(build: &BuildSummary) -> String {
    let total = build.total();
    match build.state() {
        Some(BuildState::Failed) => format!("Build: :x: {} of {total} failed", build.failed),
        Some(BuildState::Running) => format!(
            "Build: :hourglass_flowing_sand: {} of {total} running",
            build.in_progress
        ),
        Some(BuildState::Stopped) => format!(
            "Build: :black_square_for_stop: {} of {total} stopped",
            build.stopped
        ),
        Some(BuildState::Passed) | None => format!("Build: :white_check_mark: {total} passed"),
    }
}

/// `<url|text>` with the text escaped and cut, and the URL unable to end the link early.
fn link(place: &Place, text: &str) -> String {
    let url = place
        .url
        .replace('|', "%7C")
        .replace('<', "%3C")
        .replace('>', "%3E");
    format!("<{url}|{}>", escape(&truncate(text, MAX_TITLE_CHARS)))
}

/// A name (person, branch, language) escaped and cut, with no backtick to break code.
fn name(text: &str) -> String {
    crate::message::escape_inline_code(text, MAX_NAME_CHARS)
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    let shown = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    };
    escape(&truncate(&shown, MAX_NAME_CHARS))
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// "just now", "5 min ago", "3 h ago", "2 days ago", else the date.
pub fn ago(then: Timestamp, now: Timestamp) -> String {
    let seconds = now.as_second() - then.as_second();
    match seconds {
        s if s < 60 => "just now".into(),
        s if s < 3600 => format!("{} min ago", s / 60),
        s if s < 86_400 => format!("{} h ago", s / 3600),
        s if s < 30 * 86_400 => {
            let days = s / 86_400;
            format!("{days} day{} ago", if days == 1 { "" } else { "s" })
        }
        _ => format!("on {}", then.strftime("%Y-%m-%d")),
    }
}

fn duration(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min {} s", s / 60, s % 60),
        s => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// The ephemeral offer to a person whose shared link was not previewed because it needs
/// their own Bitbucket account: to connect one, or (`stale`) to connect again.
pub fn connect_offer(stale: bool, button: Button) -> Message {
    let text = if stale {
        "Bitbucket no longer accepts your connected account, so links you share to private repositories are not previewed. Connect again to see previews (you will not be asked again today)."
    } else {
        "Links you share to private Bitbucket repositories are previewed only for people who connected their Bitbucket account and can read them. Connect yours to see previews (you will not be asked again today)."
    };
    Message::text(text).with_button(button)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).expect("valid")
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(ago(at(0), at(30)), "just now");
        assert_eq!(ago(at(0), at(5 * 60)), "5 min ago");
        assert_eq!(ago(at(0), at(3 * 3600 + 59)), "3 h ago");
        assert_eq!(ago(at(0), at(86_400)), "1 day ago");
        assert_eq!(ago(at(0), at(2 * 86_400)), "2 days ago");
        assert_eq!(ago(at(0), at(60 * 86_400)), "on 2023-11-14");
    }

    #[test]
    fn bitbucket_text_and_links_cannot_break_out_of_the_card() {
        let place = Place {
            repository: "acme/api".into(),
            url: "https://bitbucket.org/acme/api/pull-requests/1?x=|<!channel>".into(),
        };
        let card = card(
            &Preview::PullRequest(PullRequestPreview {
                place,
                id: 1,
                title: "<!channel> & <@U1>".into(),
                state: "OPEN".into(),
                draft: false,
                author: Some("<b>Eve</b>".into()),
                source_branch: Some("x`y".into()),
                destination_branch: Some("main".into()),
                approvals: 0,
                reviewers: 0,
                approved_by: Vec::new(),
                build: None,
                updated_on: None,
            }),
            at(0),
        );
        let text = card.to_string();
        assert!(!text.contains("<!channel>"), "{text}");
        assert!(!text.contains("<@U1>"), "{text}");
        assert!(!text.contains("<b>"), "{text}");
        assert!(
            text.contains("&lt;!channel&gt; &amp; &lt;@U1&gt;"),
            "{text}"
        );
        assert!(text.contains("%7C%3C!channel%3E|#1"), "{text}");
    }
}
