//! One Slack message per activity: title linked to Bitbucket, who did it, branches, state,
//! a short excerpt for comments, capped commit lists, pipeline, build and deployment
//! results with duration, tags, and a plain-text fallback. Also how it threads.
//!
//! Pure. All user text (titles, names, comments, branch names) is escaped so it can
//! neither mention `@channel` nor forge a link, and every section stays inside Slack's
//! 3,000-character limit.

use crate::bitbucket::{
    Activity, ActivityKind, Actor, BuildRef, CommentRef, DeploymentRef, PipelineRef, PullRequestRef,
};
use crate::message::{MAX_SECTION_CHARS, Message, code, escape, truncate};

/// A rendered activity and how it threads.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Notification {
    pub message: Message,
    /// Activities with the same key share a thread (a pull request's).
    pub thread_key: Option<String>,
    /// A state change: the thread's parent is replaced by this, and the reply is also
    /// broadcast to the channel.
    pub parent_update: Option<Message>,
}

fn link(url: Option<&str>, text: &str) -> String {
    match url {
        Some(url) if !url.contains(['<', '>', '|', ' ']) => format!("<{url}|{}>", escape(text)),
        _ => escape(text),
    }
}

/// How a person is named: a Slack mention when linked, else their escaped name.
fn person(actor: Option<&Actor>, mention: &dyn Fn(&str) -> Option<String>) -> String {
    match actor {
        Some(actor) => actor
            .uuid
            .as_deref()
            .and_then(mention)
            .map(|user| format!("<@{user}>"))
            .unwrap_or_else(|| format!("*{}*", escape(&actor.display_name))),
        None => "Someone".into(),
    }
}

fn pr_title(pull_request: &PullRequestRef) -> String {
    link(
        pull_request.link.as_deref(),
        &format!(
            "#{} {}",
            pull_request.id,
            truncate(&pull_request.title, 200)
        ),
    )
}

fn branches(pull_request: &PullRequestRef) -> String {
    match (
        &pull_request.source_branch,
        &pull_request.destination_branch,
    ) {
        (Some(source), Some(destination)) => format!("{} → {}", code(source), code(destination)),
        (None, Some(destination)) => format!("into {}", code(destination)),
        _ => String::new(),
    }
}

fn duration(seconds: Option<u64>) -> String {
    match seconds {
        Some(s) if s >= 60 => format!(" in {}m {}s", s / 60, s % 60),
        Some(s) => format!(" in {s}s"),
        None => String::new(),
    }
}

fn quote(comment: &CommentRef) -> String {
    let excerpt = truncate(&comment.excerpt, 500);
    escape(&excerpt)
        .lines()
        .map(|line| format!("> {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn message(text: String, sections: Vec<String>) -> Message {
    Message {
        text: truncate(&strip_markup(&text), 300),
        sections: sections
            .into_iter()
            .filter(|section| !section.is_empty())
            .map(|section| truncate(&section, MAX_SECTION_CHARS))
            .collect(),
        buttons: Vec::new(),
    }
}

/// A plain-text fallback from mrkdwn: links become their text.
fn strip_markup(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('>') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let inner = &rest[start + 1..start + end];
        out.push_str(
            inner
                .split_once('|')
                .map(|(_, label)| label)
                .unwrap_or(inner),
        );
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    out.replace('*', "")
}

/// Renders `activity`. `mention` maps a Bitbucket account uuid to a linked Slack user.
pub fn render(activity: &Activity, mention: &dyn Fn(&str) -> Option<String>) -> Notification {
    let who = person(activity.actor.as_ref(), mention);
    let repo = code(&activity.repository);
    match &activity.kind {
        ActivityKind::PullRequestCreated { pull_request } => {
            let head = format!(
                "{who} opened pull request {} in {repo}",
                pr_title(pull_request)
            );
            pr_notification(
                activity,
                mention,
                pull_request,
                head,
                branches(pull_request),
                None,
            )
        }
        ActivityKind::PullRequestDraftCreated { pull_request } => {
            let head = format!(
                ":pencil2: {who} opened a draft pull request {} in {repo}",
                pr_title(pull_request)
            );
            pr_notification(
                activity,
                mention,
                pull_request,
                head,
                branches(pull_request),
                None,
            )
        }
        ActivityKind::PullRequestReadyForReview { pull_request } => {
            let text = format!(
                ":eyes: {who} marked {} ready for review",
                pr_title(pull_request)
            );
            pr_notification(
                activity,
                mention,
                pull_request,
                text,
                branches(pull_request),
                None,
            )
        }
        ActivityKind::PullRequestReviewRequested {
            pull_request,
            reviewer,
        } => {
            let reviewer = person(Some(reviewer), mention);
            let text = format!(
                ":mag: {who} asked {reviewer} to review {}",
                pr_title(pull_request)
            );
            pr_notification(activity, mention, pull_request, text, String::new(), None)
        }
        ActivityKind::PullRequestUpdated {
            pull_request, head, ..
        } => {
            let text = format!(
                "{who} pushed new commits to {} (now at {})",
                pr_title(pull_request),
                code(&head.chars().take(7).collect::<String>())
            );
            pr_notification(activity, mention, pull_request, text, String::new(), None)
        }
        ActivityKind::PullRequestApproved { pull_request } => {
            let text = format!(
                ":white_check_mark: {who} approved {}",
                pr_title(pull_request)
            );
            pr_notification(activity, mention, pull_request, text, String::new(), None)
        }
        ActivityKind::PullRequestUnapproved { pull_request } => {
            let text = format!(
                "{who} withdrew their approval of {}",
                pr_title(pull_request)
            );
            pr_notification(activity, mention, pull_request, text, String::new(), None)
        }
        ActivityKind::PullRequestChangesRequested { pull_request } => {
            let text = format!(
                ":warning: {who} requested changes on {}",
                pr_title(pull_request)
            );
            pr_notification(activity, mention, pull_request, text, String::new(), None)
        }
        ActivityKind::PullRequestCommented {
            pull_request,
            comment,
        } => {
            let place = comment
                .inline_path
                .as_deref()
                .map(|path| format!(" on {}", code(path)))
                .unwrap_or_default();
            let text = format!(
                ":speech_balloon: {who} {}{place}",
                link(comment.link.as_deref(), "commented")
            ) + &format!(" on {}", pr_title(pull_request));
            pr_notification(activity, mention, pull_request, text, quote(comment), None)
        }
        ActivityKind::PullRequestMerged { pull_request } => {
            let text = format!(
                ":large_purple_circle: {who} merged {}",
                pr_title(pull_request)
            );
            pr_notification(
                activity,
                mention,
                pull_request,
                text,
                branches(pull_request),
                Some("merged"),
            )
        }
        ActivityKind::PullRequestDeclined {
            pull_request,
            reason,
        } => {
            let text = format!(":no_entry: {who} declined {}", pr_title(pull_request));
            let detail = reason
                .as_deref()
                .map(|reason| format!("> {}", escape(&truncate(reason, 500))))
                .unwrap_or_default();
            pr_notification(
                activity,
                mention,
                pull_request,
                text,
                detail,
                Some("declined"),
            )
        }
        ActivityKind::Push {
            branch,
            commits,
            truncated,
            ..
        } => push(activity, &who, &repo, branch, commits, *truncated),
        ActivityKind::BranchCreated { branch, .. } => {
            plain(format!("{who} created branch {} in {repo}", code(branch)))
        }
        ActivityKind::BranchDeleted { branch, .. } => {
            plain(format!("{who} deleted branch {} in {repo}", code(branch)))
        }
        ActivityKind::PipelineStarted { pipeline } => {
            pipeline_message(activity, pipeline, ":arrow_forward:", "started")
        }
        ActivityKind::PipelineSucceeded { pipeline } => {
            pipeline_message(activity, pipeline, ":large_green_circle:", "succeeded")
        }
        ActivityKind::PipelineFailed { pipeline } => {
            let outcome = match pipeline.result.as_deref() {
                Some("EXPIRED") => "expired",
                Some("ERROR") => "failed with an error",
                _ => "failed",
            };
            pipeline_message(activity, pipeline, ":red_circle:", outcome)
        }
        ActivityKind::PipelineStopped { pipeline } => {
            pipeline_message(activity, pipeline, ":black_square_for_stop:", "was stopped")
        }
        ActivityKind::PipelineFixed { pipeline } => {
            pipeline_message(activity, pipeline, ":large_green_circle:", "is fixed")
        }
        ActivityKind::IssueCreated { issue } => plain(format!(
            "{who} opened issue {} in {repo}",
            link(
                issue.link.as_deref(),
                &format!("#{} {}", issue.id, truncate(&issue.title, 200))
            )
        )),
        ActivityKind::IssueUpdated { issue } => plain(format!(
            "{who} updated issue {} ({})",
            link(
                issue.link.as_deref(),
                &format!("#{} {}", issue.id, truncate(&issue.title, 200))
            ),
            escape(&issue.state)
        )),
        ActivityKind::IssueCommented { issue, comment } => {
            let head = format!(
                ":speech_balloon: {who} commented on issue {}",
                link(
                    issue.link.as_deref(),
                    &format!("#{} {}", issue.id, truncate(&issue.title, 200))
                )
            );
            Notification {
                message: message(head.clone(), vec![head, quote(comment)]),
                thread_key: None,
                parent_update: None,
            }
        }
        ActivityKind::TagCreated { tag, commit } => plain(format!(
            ":label: {who} created tag {} at {} in {repo}",
            link(activity.link.as_deref(), tag),
            code(&short(commit))
        )),
        ActivityKind::TagDeleted { tag, .. } => {
            plain(format!(":label: {who} deleted tag {} in {repo}", code(tag)))
        }
        ActivityKind::BuildStarted { build } => {
            build_message(activity, build, ":arrow_forward:", "started")
        }
        ActivityKind::BuildSucceeded { build } => {
            build_message(activity, build, ":large_green_circle:", "succeeded")
        }
        ActivityKind::BuildFailed { build } => {
            build_message(activity, build, ":red_circle:", "failed")
        }
        ActivityKind::BuildStopped { build } => {
            build_message(activity, build, ":black_square_for_stop:", "was stopped")
        }
        ActivityKind::BuildFixed { build } => {
            build_message(activity, build, ":large_green_circle:", "is fixed")
        }
        ActivityKind::DeploymentStarted { deployment } => {
            deployment_message(activity, deployment, ":rocket:", "started")
        }
        ActivityKind::DeploymentSucceeded { deployment } => {
            deployment_message(activity, deployment, ":large_green_circle:", "succeeded")
        }
        ActivityKind::DeploymentFailed { deployment } => {
            deployment_message(activity, deployment, ":red_circle:", "failed")
        }
        ActivityKind::DeploymentStopped { deployment } => deployment_message(
            activity,
            deployment,
            ":black_square_for_stop:",
            "was stopped",
        ),
    }
}

/// A commit hash as people read it: its first seven characters.
fn short(hash: &str) -> String {
    hash.chars().take(7).collect()
}

fn plain(text: String) -> Notification {
    Notification {
        message: message(text.clone(), vec![text]),
        thread_key: None,
        parent_update: None,
    }
}

fn pr_notification(
    activity: &Activity,
    mention: &dyn Fn(&str) -> Option<String>,
    pull_request: &PullRequestRef,
    headline: String,
    detail: String,
    state: Option<&str>,
) -> Notification {
    let parent_update = state.map(|state| {
        let author = pull_request
            .author
            .as_ref()
            .map(|author| format!(" by {}", person(Some(author), mention)))
            .unwrap_or_default();
        let summary = format!(
            "Pull request {}{author} in {}: *{state}*",
            pr_title(pull_request),
            code(&activity.repository)
        );
        message(summary.clone(), vec![summary, branches(pull_request)])
    });
    Notification {
        message: message(headline.clone(), vec![headline, detail]),
        thread_key: Some(format!("pr:{}:{}", activity.repository, pull_request.id)),
        parent_update,
    }
}

fn push(
    activity: &Activity,
    who: &str,
    repo: &str,
    branch: &str,
    commits: &[crate::bitbucket::CommitRef],
    truncated: bool,
) -> Notification {
    let count = commits.len();
    let noun = if count == 1 && !truncated {
        "commit"
    } else {
        "commits"
    };
    let amount = if truncated {
        format!("{count}+")
    } else {
        count.to_string()
    };
    let head = format!(
        "{who} pushed {} {noun} to {} in {repo}",
        link(activity.link.as_deref(), &amount),
        code(branch)
    );
    let mut lines: Vec<String> = commits
        .iter()
        .map(|commit| {
            format!(
                "{} {} — {}",
                link(
                    commit.link.as_deref(),
                    &commit.hash.chars().take(7).collect::<String>()
                ),
                escape(&truncate(&commit.summary, 120)),
                escape(&truncate(&commit.author, 60))
            )
        })
        .collect();
    if truncated {
        lines.push("_and more commits_".into());
    }
    Notification {
        message: message(head.clone(), vec![head, lines.join("\n")]),
        thread_key: None,
        parent_update: None,
    }
}

fn pipeline_message(
    activity: &Activity,
    pipeline: &PipelineRef,
    icon: &str,
    outcome: &str,
) -> Notification {
    let branch = match (pipeline.pull_request, pipeline.branch.as_deref()) {
        (Some(id), Some(branch)) => format!(" for pull request #{id} ({})", code(branch)),
        (Some(id), None) => format!(" for pull request #{id}"),
        (None, Some(branch)) => format!(" on {}", code(branch)),
        (None, None) => String::new(),
    };
    let text = format!(
        "{icon} {} {outcome}{branch} in {}{}",
        link(
            activity.link.as_deref(),
            &format!("Pipeline #{}", pipeline.build_number)
        ),
        code(&activity.repository),
        duration(pipeline.duration_secs)
    );
    plain(text)
}

/// A build another CI system reported: on a branch, or on a pull request's head.
fn build_message(activity: &Activity, build: &BuildRef, icon: &str, outcome: &str) -> Notification {
    let name = build.name.as_deref().unwrap_or(&build.key);
    let place = match (&build.pull_request, &build.branch) {
        (Some(pull_request), _) => format!(" on pull request {}", pr_title(pull_request)),
        (None, Some(branch)) => format!(" on {}", code(branch)),
        (None, None) => String::new(),
    };
    let head = format!(
        "{icon} Build {} {outcome}{place} in {}",
        link(build.url.as_deref(), &truncate(name, 200)),
        code(&activity.repository)
    );
    let mut detail = format!("{} at {}", code(&build.key), code(&short(&build.commit)));
    if let Some(pull_request) = &build.pull_request {
        let branches = branches(pull_request);
        if !branches.is_empty() {
            detail = format!("{branches} · {detail}");
        }
    }
    Notification {
        message: message(head.clone(), vec![head, detail]),
        thread_key: None,
        parent_update: None,
    }
}

/// A deployment of a release to an environment.
fn deployment_message(
    activity: &Activity,
    deployment: &DeploymentRef,
    icon: &str,
    outcome: &str,
) -> Notification {
    let what = match &deployment.release {
        Some(release) => format!("Deployment of {}", truncate(release, 200)),
        None => "Deployment".into(),
    };
    let commit = deployment
        .commit
        .as_deref()
        .map(|commit| format!(" ({})", code(&short(commit))))
        .unwrap_or_default();
    plain(format!(
        "{icon} {} to *{}* {outcome} in {}{commit}{}",
        link(deployment.url.as_deref(), &what),
        escape(&truncate(&deployment.environment, 200)),
        code(&activity.repository),
        duration(deployment.duration_secs)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::subscription::tests::{activity, pull_request};

    fn no_links(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn pull_request_opened() {
        let rendered = render(
            &activity(
                ActivityKind::PullRequestCreated {
                    pull_request: pull_request("main"),
                },
                "Ada Lovelace",
            ),
            &no_links,
        );
        assert_eq!(
            rendered.message.sections,
            vec![
                "*Ada Lovelace* opened pull request <https://bitbucket.org/acme/api/pull-requests/7|#7 Add retries> in `acme/api`",
                "`feature/retries` → `main`",
            ]
        );
        assert_eq!(
            rendered.message.text,
            "Ada Lovelace opened pull request #7 Add retries in `acme/api`"
        );
        assert_eq!(rendered.thread_key.as_deref(), Some("pr:acme/api:7"));
        assert!(rendered.parent_update.is_none());
    }

    #[test]
    fn a_title_can_neither_ping_nor_forge_a_link() {
        let mut pr = pull_request("main");
        pr.title = "<!channel> <https://evil.example|click> & co".into();
        let rendered = render(
            &activity(
                ActivityKind::PullRequestCreated { pull_request: pr },
                "Eve <x>",
            ),
            &no_links,
        );
        let text = rendered.message.sections.join("\n");
        assert!(!text.contains("<!channel>"), "{text}");
        assert!(!text.contains("<https://evil"), "{text}");
        assert!(
            text.contains("&lt;!channel&gt; &lt;https://evil.example|click&gt; &amp; co"),
            "{text}"
        );
        assert!(text.contains("*Eve &lt;x&gt;*"), "{text}");
    }

    #[test]
    fn linked_people_are_mentioned() {
        let mention = |uuid: &str| (uuid == "{Ada}").then(|| "U123".to_string());
        let rendered = render(
            &activity(
                ActivityKind::PullRequestApproved {
                    pull_request: pull_request("main"),
                },
                "Ada",
            ),
            &mention,
        );
        assert!(
            rendered.message.sections[0].starts_with(":white_check_mark: <@U123> approved"),
            "{:?}",
            rendered.message.sections
        );
        let other = render(
            &activity(
                ActivityKind::PullRequestApproved {
                    pull_request: pull_request("main"),
                },
                "Grace",
            ),
            &mention,
        );
        assert!(other.message.sections[0].contains("*Grace* approved"));
    }

    #[test]
    fn the_parent_update_mentions_a_linked_author() {
        let mention = |uuid: &str| (uuid == "{ada}").then(|| "U0ADA".to_string());
        let rendered = render(
            &activity(
                ActivityKind::PullRequestMerged {
                    pull_request: pull_request("main"),
                },
                "Grace",
            ),
            &mention,
        );
        let parent = rendered.parent_update.expect("a parent update");
        assert!(
            parent.sections[0].contains(" by <@U0ADA> in "),
            "{}",
            parent.sections[0]
        );
    }

    #[test]
    fn merged_updates_the_parent() {
        let rendered = render(
            &activity(
                ActivityKind::PullRequestMerged {
                    pull_request: pull_request("main"),
                },
                "Ada",
            ),
            &no_links,
        );
        let parent = rendered.parent_update.expect("a parent update");
        assert_eq!(
            parent.sections[0],
            "Pull request <https://bitbucket.org/acme/api/pull-requests/7|#7 Add retries> by *Ada Lovelace* in `acme/api`: *merged*"
        );
    }

    #[test]
    fn comments_are_quoted_and_capped() {
        let comment = CommentRef {
            id: 1,
            excerpt: format!("first line\n{}", "x".repeat(2000)),
            link: None,
            inline_path: Some("src/lib.rs".into()),
            inline_line: Some(3),
            parent_author: None,
            mentions: Vec::new(),
        };
        let rendered = render(
            &activity(
                ActivityKind::PullRequestCommented {
                    pull_request: pull_request("main"),
                    comment,
                },
                "Ada",
            ),
            &no_links,
        );
        assert!(
            rendered.message.sections[0].contains("commented on `src/lib.rs`"),
            "{}",
            rendered.message.sections[0]
        );
        assert!(rendered.message.sections[1].starts_with("> first line\n> xxx"));
        assert!(rendered.message.sections[1].ends_with('…'));
        for section in &rendered.message.sections {
            assert!(section.chars().count() <= MAX_SECTION_CHARS);
        }
    }

    #[test]
    fn pushes_list_capped_commits() {
        let commits = (0..10)
            .map(|n| crate::bitbucket::CommitRef {
                hash: format!("{n:07}abcdef"),
                summary: format!("Change {n}"),
                author: "Ada <ada@example.com>".into(),
                link: None,
            })
            .collect();
        let rendered = render(
            &activity(
                ActivityKind::Push {
                    branch: "main".into(),
                    previous_head: "a".into(),
                    head: "b".into(),
                    commits,
                    truncated: true,
                },
                "Ada",
            ),
            &no_links,
        );
        assert!(
            rendered.message.sections[0]
                .contains("pushed <https://bitbucket.org/acme/api|10+> commits to `main`"),
            "{}",
            rendered.message.sections[0]
        );
        assert!(rendered.message.sections[1].ends_with("_and more commits_"));
        assert_eq!(
            rendered.message.sections[1].lines().next(),
            Some("0000000 Change 0 — Ada &lt;ada@example.com&gt;")
        );
    }

    #[test]
    fn pipeline_results_show_duration() {
        let rendered = render(
            &activity(
                ActivityKind::PipelineFailed {
                    pipeline: PipelineRef {
                        uuid: "{p}".into(),
                        build_number: 12,
                        branch: Some("main".into()),
                        commit: None,
                        duration_secs: Some(95),
                        pull_request: None,
                        result: Some("FAILED".into()),
                        pull_request_author: None,
                    },
                },
                "Ada",
            ),
            &no_links,
        );
        assert_eq!(
            rendered.message.sections[0],
            ":red_circle: <https://bitbucket.org/acme/api|Pipeline #12> failed on `main` in `acme/api` in 1m 35s"
        );
    }
}
