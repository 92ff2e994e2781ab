//! Subscriptions: what a channel asked to hear about a repository (or a whole Bitbucket
//! workspace), with which features and filters, and whether an activity matches.
//!
//! Pure. The feature words (`pullrequests`, `commits:release/*`, `+branch:main`,
//! `-author:dependabot*`, ...) are parsed here, once, for the command parser and the
//! help; [`Subscription::matches`] is the one place that decides what a channel sees, and
//! [`poll_wants`] the one place that decides which optional lanes (tags, builds,
//! deployments) a repository's subscriptions make the poller read.

use std::collections::BTreeSet;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::access::{Coverage, Refusal};
use super::glob::{Glob, GlobError};
use crate::bitbucket::{Activity, ActivityKind, BuildHeads, BuildRef, PollWants, Target};

/// Which branches' pushes a channel hears about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BranchScope {
    /// The repository's main branch only.
    Main,
    Matching(Glob),
}

/// Which pipeline results a channel hears about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PipelineScope {
    /// Failed and fixed, on the main branch (Bitbucket's own default).
    FailedAndFixedOnMain,
    /// Every state change on every branch.
    All,
}

/// Which build results (commit statuses from other CI systems) a channel hears about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildScope {
    /// Failed and fixed on the main branch, and failed on a pull request's head.
    FailedAndFixedOnMain,
    /// Every build state change on every branch and pull request.
    All,
}

/// The features a subscription has on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Features {
    pub pull_requests: bool,
    pub commits: Option<BranchScope>,
    pub pipelines: Option<PipelineScope>,
    pub issues: bool,
    pub comments: bool,
    pub reviews: bool,
    pub deployments: bool,
    /// Stored subscriptions from before builds existed load without it.
    #[serde(default)]
    pub builds: Option<BuildScope>,
    /// Stored subscriptions from before tags existed load without it.
    #[serde(default)]
    pub tags: bool,
}

impl Features {
    /// What a new subscription gets: pull requests and main-branch commits.
    pub fn defaults() -> Self {
        Features {
            pull_requests: true,
            commits: Some(BranchScope::Main),
            pipelines: None,
            issues: false,
            comments: false,
            reviews: false,
            deployments: false,
            builds: None,
            tags: false,
        }
    }

    pub fn none() -> Self {
        Features {
            pull_requests: false,
            commits: None,
            pipelines: None,
            issues: false,
            comments: false,
            reviews: false,
            deployments: false,
            builds: None,
            tags: false,
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Features::none()
    }

    /// Turns `feature` on (`on`) or off.
    pub fn set(&mut self, feature: &FeatureWord, on: bool) {
        match feature {
            FeatureWord::PullRequests => self.pull_requests = on,
            FeatureWord::Commits(scope) => self.commits = on.then(|| scope.clone()),
            FeatureWord::Pipelines(scope) => self.pipelines = on.then_some(*scope),
            FeatureWord::Issues => self.issues = on,
            FeatureWord::Comments => self.comments = on,
            FeatureWord::Reviews => self.reviews = on,
            FeatureWord::Deployments => self.deployments = on,
            FeatureWord::Builds(scope) => self.builds = on.then_some(*scope),
            FeatureWord::Tags => self.tags = on,
        }
    }

    /// The feature words that are on, as a person would type them.
    pub fn words(&self) -> Vec<String> {
        let mut words = Vec::new();
        if self.pull_requests {
            words.push("pullrequests".to_string());
        }
        match &self.commits {
            Some(BranchScope::Main) => words.push("commits".into()),
            Some(BranchScope::Matching(glob)) => words.push(format!("commits:{glob}")),
            None => {}
        }
        match self.pipelines {
            Some(PipelineScope::FailedAndFixedOnMain) => words.push("pipelines".into()),
            Some(PipelineScope::All) => words.push("pipelines:all".into()),
            None => {}
        }
        match self.builds {
            Some(BuildScope::FailedAndFixedOnMain) => words.push("builds".into()),
            Some(BuildScope::All) => words.push("builds:all".into()),
            None => {}
        }
        for (on, word) in [
            (self.tags, "tags"),
            (self.issues, "issues"),
            (self.comments, "comments"),
            (self.reviews, "reviews"),
            (self.deployments, "deployments"),
        ] {
            if on {
                words.push(word.into());
            }
        }
        words
    }
}

/// Narrowing that applies to every feature.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filters {
    /// `+branch:<glob>`: the pull request's target branch, the pushed or built branch.
    pub branch: Option<Glob>,
    /// `-author:<name>`: leave out what these people (or bots) do.
    pub exclude_authors: BTreeSet<Glob>,
}

impl Filters {
    pub fn words(&self) -> Vec<String> {
        let mut words: Vec<String> = self
            .branch
            .iter()
            .map(|glob| format!("+branch:{glob}"))
            .collect();
        words.extend(
            self.exclude_authors
                .iter()
                .map(|glob| format!("-author:{glob}")),
        );
        words
    }
}

impl PartialOrd for Glob {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Glob {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

/// Why a subscription is not delivering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    /// Slack's error, such as `channel_not_found`, or an access refusal's code
    /// ([`super::access::Refusal::code`]).
    pub reason: String,
    pub since: Timestamp,
    /// The person who subscribed was told.
    pub notified: bool,
    #[serde(default)]
    pub kind: PauseKind,
}

/// What paused a subscription, and so what ends the pause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseKind {
    /// Slack refused to post in the channel; subscribing again resumes it.
    #[default]
    Channel,
    /// The subscriber may not (or no longer) bring this private repository into the
    /// channel; the hourly access check resumes it when access is back.
    Access,
}

/// A channel's subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub team_id: String,
    pub channel_id: String,
    pub target: Target,
    pub features: Features,
    pub filters: Filters,
    /// The repository's main branch when it was checked (`None` for a workspace).
    pub main_branch: Option<String>,
    pub created_by: String,
    pub created_at: Timestamp,
    pub paused: Option<Pause>,
    /// Whether a repository target is private (`None`: not checked yet).
    #[serde(default)]
    pub private: Option<bool>,
    /// Which repositories of a workspace target deliver.
    #[serde(default)]
    pub coverage: Coverage,
}

/// One word of `/bitbucket subscribe ...` after the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeatureWord {
    PullRequests,
    Commits(BranchScope),
    Pipelines(PipelineScope),
    Issues,
    Comments,
    Reviews,
    Deployments,
    Builds(BuildScope),
    Tags,
}

/// A parsed word: a feature, or a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscribeWord {
    Feature(FeatureWord),
    Branch(Glob),
    ExcludeAuthor(Glob),
}

/// The features, for help and `/bitbucket subscriptions features`.
pub const FEATURE_HELP: &[(&str, &str)] = &[
    (
        "pullrequests",
        "pull requests opened, updated with new commits, merged or declined (on by default)",
    ),
    ("commits", "pushes to the main branch (on by default)"),
    (
        "commits:<pattern>",
        "pushes to matching branches, e.g. `commits:release/*` or `commits:*`",
    ),
    (
        "pipelines",
        "pipelines that failed, or were fixed, on the main branch",
    ),
    ("pipelines:all", "every pipeline result on every branch"),
    (
        "builds",
        "builds from other CI systems (commit statuses) that failed or were fixed on the \
         main branch, and failed builds of a pull request's head",
    ),
    (
        "builds:all",
        "every build result from other CI systems, on every branch and pull request",
    ),
    ("tags", "tags created and deleted"),
    ("issues", "issues created, updated or commented"),
    ("comments", "comments on pull requests"),
    (
        "reviews",
        "approvals, withdrawn approvals and change requests",
    ),
    (
        "deployments",
        "deployments started, succeeded, failed or stopped, per environment",
    ),
    (
        "+branch:<pattern>",
        "only pull requests into, pushes to, pipelines and builds on matching branches \
         (tags and deployments are not filtered)",
    ),
    (
        "-author:<name>",
        "leave out what this person or bot does, e.g. `-author:dependabot*` (may repeat)",
    ),
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WordError {
    #[error("`{0}` is not a feature")]
    UnknownFeature(String),
    #[error("bad pattern in `{word}`: {error}")]
    BadPattern { word: String, error: GlobError },
}

/// Parses one feature or filter word.
pub fn parse_word(word: &str) -> Result<SubscribeWord, WordError> {
    let pattern = |text: &str| {
        Glob::new(text).map_err(|error| WordError::BadPattern {
            word: word.to_string(),
            error,
        })
    };
    if let Some(glob) = word.strip_prefix("+branch:") {
        return Ok(SubscribeWord::Branch(pattern(glob)?));
    }
    if let Some(name) = word.strip_prefix("-author:") {
        return Ok(SubscribeWord::ExcludeAuthor(pattern(name)?));
    }
    let lower = word.to_lowercase();
    let feature = match lower.as_str() {
        "pullrequests" | "pulls" | "prs" => FeatureWord::PullRequests,
        "commits" => FeatureWord::Commits(BranchScope::Main),
        "pipelines" => FeatureWord::Pipelines(PipelineScope::FailedAndFixedOnMain),
        "pipelines:all" => FeatureWord::Pipelines(PipelineScope::All),
        "issues" => FeatureWord::Issues,
        "comments" => FeatureWord::Comments,
        "reviews" => FeatureWord::Reviews,
        "deployments" => FeatureWord::Deployments,
        "builds" => FeatureWord::Builds(BuildScope::FailedAndFixedOnMain),
        "builds:all" => FeatureWord::Builds(BuildScope::All),
        "tags" => FeatureWord::Tags,
        _ => match word.split_once(':') {
            Some((head, glob)) if head.eq_ignore_ascii_case("commits") => {
                FeatureWord::Commits(BranchScope::Matching(pattern(glob)?))
            }
            _ => return Err(WordError::UnknownFeature(word.to_string())),
        },
    };
    Ok(SubscribeWord::Feature(feature))
}

impl Subscription {
    fn main_branch(&self) -> &str {
        self.main_branch.as_deref().unwrap_or("main")
    }

    fn is_main(&self, branch: &str) -> bool {
        match &self.main_branch {
            Some(main) => branch == main,
            None => branch == "main" || branch == "master",
        }
    }

    fn branch_allowed(&self, branch: Option<&str>) -> bool {
        match (&self.filters.branch, branch) {
            (None, _) => true,
            (Some(glob), Some(branch)) => glob.matches(branch),
            (Some(_), None) => false,
        }
    }

    fn author_excluded(&self, activity: &Activity) -> bool {
        let Some(actor) = &activity.actor else {
            return false;
        };
        self.filters
            .exclude_authors
            .iter()
            .any(|glob| glob.matches_ignoring_case(&actor.display_name))
    }

    /// Whether this subscription wants `activity`. Paused subscriptions want nothing.
    pub fn matches(&self, activity: &Activity) -> bool {
        if self.paused.is_some()
            || !self.target.covers(&activity.repository)
            || !self.coverage.covers(&activity.repository)
        {
            return false;
        }
        if self.author_excluded(activity) {
            return false;
        }
        let features = &self.features;
        match &activity.kind {
            ActivityKind::PullRequestCreated { pull_request }
            | ActivityKind::PullRequestDraftCreated { pull_request }
            | ActivityKind::PullRequestReadyForReview { pull_request }
            | ActivityKind::PullRequestUpdated { pull_request, .. }
            | ActivityKind::PullRequestMerged { pull_request }
            | ActivityKind::PullRequestDeclined { pull_request, .. } => {
                features.pull_requests
                    && self.branch_allowed(pull_request.destination_branch.as_deref())
            }
            ActivityKind::PullRequestApproved { pull_request }
            | ActivityKind::PullRequestUnapproved { pull_request }
            | ActivityKind::PullRequestChangesRequested { pull_request }
            | ActivityKind::PullRequestReviewRequested { pull_request, .. } => {
                features.reviews && self.branch_allowed(pull_request.destination_branch.as_deref())
            }
            ActivityKind::PullRequestCommented { pull_request, .. } => {
                features.comments && self.branch_allowed(pull_request.destination_branch.as_deref())
            }
            ActivityKind::Push { branch, .. }
            | ActivityKind::BranchCreated { branch, .. }
            | ActivityKind::BranchDeleted { branch, .. } => {
                self.commits_cover(branch) && self.branch_allowed(Some(branch))
            }
            ActivityKind::PipelineStarted { pipeline }
            | ActivityKind::PipelineSucceeded { pipeline }
            | ActivityKind::PipelineFailed { pipeline }
            | ActivityKind::PipelineStopped { pipeline }
            | ActivityKind::PipelineFixed { pipeline } => {
                self.pipeline_wanted(&activity.kind, pipeline.branch.as_deref())
                    && self.branch_allowed(pipeline.branch.as_deref())
            }
            ActivityKind::IssueCreated { .. } | ActivityKind::IssueUpdated { .. } => {
                features.issues
            }
            ActivityKind::IssueCommented { .. } => features.issues || features.comments,
            // Tags and deployments are on no branch: `+branch:` does not filter them.
            ActivityKind::TagCreated { .. } | ActivityKind::TagDeleted { .. } => features.tags,
            ActivityKind::BuildStarted { build }
            | ActivityKind::BuildSucceeded { build }
            | ActivityKind::BuildFailed { build }
            | ActivityKind::BuildStopped { build }
            | ActivityKind::BuildFixed { build } => {
                let branch = match &build.pull_request {
                    Some(pull_request) => pull_request.destination_branch.as_deref(),
                    None => build.branch.as_deref(),
                };
                self.build_wanted(&activity.kind, build) && self.branch_allowed(branch)
            }
            ActivityKind::DeploymentStarted { .. }
            | ActivityKind::DeploymentSucceeded { .. }
            | ActivityKind::DeploymentFailed { .. }
            | ActivityKind::DeploymentStopped { .. } => features.deployments,
        }
    }

    fn build_wanted(&self, kind: &ActivityKind, build: &BuildRef) -> bool {
        match self.features.builds {
            None => false,
            Some(BuildScope::All) => true,
            Some(BuildScope::FailedAndFixedOnMain) => {
                let on_main = build.pull_request.is_none()
                    && build.branch.as_deref().is_some_and(|b| self.is_main(b));
                match kind {
                    ActivityKind::BuildFailed { .. } => on_main || build.pull_request.is_some(),
                    ActivityKind::BuildFixed { .. } => on_main,
                    _ => false,
                }
            }
        }
    }

    /// What this subscription makes the poller read for `repository` beyond the lanes
    /// every watched repository has; nothing when it is paused or does not cover it.
    pub fn poll_wants(&self, repository: &str) -> PollWants {
        if self.paused.is_some()
            || !self.target.covers(repository)
            || !self.coverage.covers(repository)
        {
            return PollWants::default();
        }
        let main_branches = match &self.main_branch {
            Some(main) => [main.clone()].into_iter().collect(),
            None => ["main".to_string(), "master".to_string()]
                .into_iter()
                .collect(),
        };
        PollWants {
            tags: self.features.tags,
            builds: self.features.builds.map(|scope| match scope {
                BuildScope::FailedAndFixedOnMain => BuildHeads::MainBranches(main_branches),
                BuildScope::All => BuildHeads::AllBranches,
            }),
            deployments: self.features.deployments,
        }
    }

    fn commits_cover(&self, branch: &str) -> bool {
        match &self.features.commits {
            None => false,
            Some(BranchScope::Main) => self.is_main(branch),
            Some(BranchScope::Matching(glob)) => glob.matches(branch),
        }
    }

    fn pipeline_wanted(&self, kind: &ActivityKind, branch: Option<&str>) -> bool {
        match self.features.pipelines {
            None => false,
            Some(PipelineScope::All) => true,
            Some(PipelineScope::FailedAndFixedOnMain) => {
                matches!(
                    kind,
                    ActivityKind::PipelineFailed { .. } | ActivityKind::PipelineFixed { .. }
                ) && branch.is_some_and(|branch| self.is_main(branch))
            }
        }
    }

    /// One line for `/bitbucket subscriptions`.
    pub fn describe(&self) -> String {
        let mut words = self.features.words();
        words.extend(self.filters.words());
        let state = match &self.paused {
            None => String::new(),
            Some(pause) => match (pause.kind, Refusal::from_code(&pause.reason)) {
                (PauseKind::Access, Some(refusal)) => format!(
                    " — *paused*: {}. {}",
                    refusal.explain(&self.created_by),
                    refusal.what_to_do()
                ),
                _ => format!(" — *paused* (`{}`)", pause.reason),
            },
        };
        let left_out = match &self.coverage {
            Coverage::Only {
                left_out, reason, ..
            } if !left_out.is_empty() => format!(
                " — {} private {} left out{}",
                left_out.len(),
                if left_out.len() == 1 {
                    "repository"
                } else {
                    "repositories"
                },
                reason
                    .map(|refusal| format!(": {}", refusal.explain(&self.created_by)))
                    .unwrap_or_default()
            ),
            _ => String::new(),
        };
        let main = match (&self.target, &self.main_branch) {
            (Target::Repository(_), Some(_)) => format!(
                " (main branch {})",
                crate::message::code(&crate::message::truncate(self.main_branch(), 80))
            ),
            _ => String::new(),
        };
        format!(
            "`{}`{main}: {}{state}{left_out}",
            self.target.as_str(),
            words.join(" ")
        )
    }
}

/// The repositories `subscriptions` deliver from: a repository target itself, a
/// workspace target's repositories among `watched` that its coverage includes. Sorted,
/// once each.
pub fn covered_repositories<'a>(
    subscriptions: impl IntoIterator<Item = &'a Subscription>,
    watched: &[String],
) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for subscription in subscriptions {
        match &subscription.target {
            Target::Repository(name) => {
                if subscription.coverage.covers(name) {
                    found.insert(name.clone());
                }
            }
            Target::Workspace(_) => found.extend(
                watched
                    .iter()
                    .filter(|name| {
                        subscription.target.covers(name) && subscription.coverage.covers(name)
                    })
                    .cloned(),
            ),
        }
    }
    found
}

/// What all of `subscriptions` together make the poller read for `repository`.
pub fn poll_wants(subscriptions: &[Subscription], repository: &str) -> PollWants {
    let mut wants = PollWants::default();
    for subscription in subscriptions {
        wants.merge(subscription.poll_wants(repository));
    }
    wants
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bitbucket::{Actor, CommitRef, PipelineRef, PullRequestRef};

    pub(crate) fn pull_request(destination: &str) -> PullRequestRef {
        PullRequestRef {
            id: 7,
            title: "Add retries".into(),
            link: Some("https://bitbucket.org/acme/api/pull-requests/7".into()),
            author: Some(Actor {
                display_name: "Ada Lovelace".into(),
                uuid: Some("{ada}".into()),
            }),
            source_branch: Some("feature/retries".into()),
            destination_branch: Some(destination.into()),
            reviewers: Vec::new(),
        }
    }

    pub(crate) fn activity(kind: ActivityKind, actor: &str) -> Activity {
        Activity {
            id: format!("acme/api:{}", kind.name()),
            repository: "acme/api".into(),
            occurred_at: Timestamp::from_second(1_800_000_000).expect("valid"),
            actor: Some(Actor {
                display_name: actor.into(),
                uuid: Some(format!("{{{actor}}}")),
            }),
            link: Some("https://bitbucket.org/acme/api".into()),
            kind,
        }
    }

    fn push(branch: &str) -> ActivityKind {
        ActivityKind::Push {
            branch: branch.into(),
            previous_head: "aaa".into(),
            head: "bbb".into(),
            commits: vec![CommitRef {
                hash: "bbb".into(),
                summary: "Fix".into(),
                author: "Ada".into(),
                link: None,
            }],
            truncated: false,
        }
    }

    fn pipeline_failed(branch: &str) -> ActivityKind {
        ActivityKind::PipelineFailed {
            pipeline: PipelineRef {
                uuid: "{p}".into(),
                build_number: 12,
                branch: Some(branch.into()),
                commit: Some("bbb".into()),
                duration_secs: Some(90),
                pull_request: None,
                result: None,
                pull_request_author: None,
            },
        }
    }

    #[test]
    fn covered_repositories_are_targets_and_what_workspace_coverage_includes() {
        let watched: Vec<String> = ["acme/api", "acme/vault", "acme/web", "other/api"]
            .into_iter()
            .map(String::from)
            .collect();
        let repository = subscription(&[]);
        let mut whole = subscription(&[]);
        whole.target = Target::Workspace("acme".into());
        let mut only = whole.clone();
        only.target = Target::Workspace("other".into());
        only.coverage = Coverage::Only {
            repositories: BTreeSet::new(),
            left_out: BTreeSet::new(),
            reason: None,
        };
        let names = |subscriptions: &[&Subscription]| {
            covered_repositories(subscriptions.iter().copied(), &watched)
                .into_iter()
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&[&repository]), vec!["acme/api"]);
        assert_eq!(
            names(&[&repository, &whole]),
            vec!["acme/api", "acme/vault", "acme/web"]
        );
        assert!(names(&[&only]).is_empty(), "coverage lists none of other/*");
    }

    fn subscription(words: &[&str]) -> Subscription {
        let mut features = Features::defaults();
        let mut filters = Filters::default();
        for word in words {
            match parse_word(word).expect("valid word") {
                SubscribeWord::Feature(feature) => features.set(&feature, true),
                SubscribeWord::Branch(glob) => filters.branch = Some(glob),
                SubscribeWord::ExcludeAuthor(glob) => {
                    filters.exclude_authors.insert(glob);
                }
            }
        }
        Subscription {
            team_id: "T1".into(),
            channel_id: "C1".into(),
            target: Target::Repository("acme/api".into()),
            features,
            filters,
            main_branch: Some("main".into()),
            created_by: "U1".into(),
            created_at: Timestamp::UNIX_EPOCH,
            paused: None,
            private: None,
            coverage: Default::default(),
        }
    }

    fn check(words: &[&str], kind: ActivityKind, actor: &str, expected: bool) {
        let activity = activity(kind.clone(), actor);
        assert_eq!(
            subscription(words).matches(&activity),
            expected,
            "{words:?} vs {} by {actor}",
            kind.name()
        );
    }

    #[test]
    fn words_parse_and_print_back() {
        assert_eq!(
            parse_word("bogus"),
            Err(WordError::UnknownFeature("bogus".into()))
        );
        assert!(matches!(
            parse_word("commits:rel[ease"),
            Err(WordError::BadPattern { .. })
        ));
        let sub = subscription(&["pipelines:all", "comments", "+branch:main", "-author:bot*"]);
        assert_eq!(
            sub.describe(),
            "`acme/api` (main branch `main`): pullrequests commits pipelines:all comments +branch:main -author:bot*"
        );
    }

    #[test]
    fn defaults_are_pull_requests_and_main_branch_commits() {
        let created = ActivityKind::PullRequestCreated {
            pull_request: pull_request("main"),
        };
        check(&[], created.clone(), "Ada", true);
        check(&[], push("main"), "Ada", true);
        check(&[], push("feature/x"), "Ada", false);
        check(
            &[],
            ActivityKind::PullRequestApproved {
                pull_request: pull_request("main"),
            },
            "Ada",
            false,
        );
        check(&[], pipeline_failed("main"), "Ada", false);
        check(
            &["reviews"],
            ActivityKind::PullRequestApproved {
                pull_request: pull_request("main"),
            },
            "Ada",
            true,
        );
    }

    #[test]
    fn branch_and_author_filters() {
        let into_develop = ActivityKind::PullRequestCreated {
            pull_request: pull_request("develop"),
        };
        check(&["+branch:main"], into_develop.clone(), "Ada", false);
        check(&["+branch:dev*"], into_develop, "Ada", true);
        check(&["commits:release/*"], push("release/2.0"), "Ada", true);
        check(&["commits:release/*"], push("main"), "Ada", false);
        check(
            &["commits:*", "+branch:hotfix/*"],
            push("feature/a"),
            "Ada",
            false,
        );
        let created = ActivityKind::PullRequestCreated {
            pull_request: pull_request("main"),
        };
        check(
            &["-author:dependabot*"],
            created.clone(),
            "Dependabot[bot]",
            false,
        );
        check(
            &["-author:dependabot*", "-author:renovate*"],
            created.clone(),
            "renovate-bot",
            false,
        );
        check(&["-author:dependabot*"], created, "Ada", true);
    }

    #[test]
    fn pipelines_default_to_failed_and_fixed_on_main() {
        check(&["pipelines"], pipeline_failed("main"), "Ada", true);
        check(&["pipelines"], pipeline_failed("feature/x"), "Ada", false);
        let succeeded = ActivityKind::PipelineSucceeded {
            pipeline: PipelineRef {
                uuid: "{p}".into(),
                build_number: 13,
                branch: Some("main".into()),
                commit: None,
                duration_secs: None,
                pull_request: None,
                result: None,
                pull_request_author: None,
            },
        };
        check(&["pipelines"], succeeded.clone(), "Ada", false);
        check(&["pipelines:all"], succeeded, "Ada", true);
        check(
            &["pipelines:all"],
            pipeline_failed("feature/x"),
            "Ada",
            true,
        );
    }

    #[test]
    fn workspace_targets_cover_every_repository_of_the_workspace() {
        let mut sub = subscription(&[]);
        sub.target = Target::Workspace("acme".into());
        sub.main_branch = None;
        let mut other = activity(push("main"), "Ada");
        other.repository = "acme/new-repo".into();
        assert!(sub.matches(&other));
        other.repository = "globex/api".into();
        assert!(!sub.matches(&other));
    }

    #[test]
    fn paused_subscriptions_match_nothing() {
        let mut sub = subscription(&[]);
        sub.paused = Some(Pause {
            reason: "channel_not_found".into(),
            since: Timestamp::UNIX_EPOCH,
            notified: true,
            kind: PauseKind::Channel,
        });
        assert!(!sub.matches(&activity(push("main"), "Ada")));
    }

    #[test]
    fn a_hostile_main_branch_name_is_escaped_in_replies() {
        let mut sub = subscription(&[]);
        sub.main_branch = Some("m`ain <!channel> & <https://evil|x>".into());
        let line = sub.describe();
        assert!(
            line.contains("(main branch `m'ain &lt;!channel&gt; &amp; &lt;https://evil|x&gt;`)"),
            "{line}"
        );
    }

    fn build(kind: &str, branch: &str, pull_request: Option<&str>) -> ActivityKind {
        let build = BuildRef {
            key: "jenkins".into(),
            name: Some("Jenkins #4".into()),
            commit: "bbb".into(),
            branch: Some(branch.into()),
            url: Some("https://ci.example/4".into()),
            pull_request: pull_request.map(pull_request_into),
        };
        match kind {
            "failed" => ActivityKind::BuildFailed { build },
            "fixed" => ActivityKind::BuildFixed { build },
            "succeeded" => ActivityKind::BuildSucceeded { build },
            "started" => ActivityKind::BuildStarted { build },
            _ => ActivityKind::BuildStopped { build },
        }
    }

    fn pull_request_into(destination: &str) -> PullRequestRef {
        pull_request(destination)
    }

    #[test]
    fn builds_default_to_failed_and_fixed_on_main_and_failed_pull_requests() {
        check(&[], build("failed", "main", None), "Ada", false);
        check(&["builds"], build("failed", "main", None), "Ada", true);
        check(&["builds"], build("fixed", "main", None), "Ada", true);
        check(&["builds"], build("succeeded", "main", None), "Ada", false);
        check(
            &["builds"],
            build("failed", "feature/x", None),
            "Ada",
            false,
        );
        check(
            &["builds"],
            build("failed", "feature/retries", Some("main")),
            "Ada",
            true,
        );
        check(
            &["builds"],
            build("fixed", "feature/retries", Some("main")),
            "Ada",
            false,
        );
        check(
            &["builds", "+branch:release/*"],
            build("failed", "feature/retries", Some("main")),
            "Ada",
            false,
        );
        check(
            &["builds:all"],
            build("started", "feature/x", None),
            "Ada",
            true,
        );
        check(&["builds:all"], build("stopped", "main", None), "Ada", true);
        check(
            &["pipelines:all"],
            build("failed", "main", None),
            "Ada",
            false,
        );
    }

    #[test]
    fn tags_and_deployments_are_their_own_words_and_ignore_branch_filters() {
        let tag = ActivityKind::TagCreated {
            tag: "v1.0".into(),
            commit: "abc".into(),
        };
        check(&[], tag.clone(), "Ada", false);
        check(&["tags", "+branch:main"], tag, "Ada", true);
        let deployed = ActivityKind::DeploymentSucceeded {
            deployment: crate::bitbucket::DeploymentRef {
                uuid: "{d}".into(),
                environment: "Production".into(),
                release: Some("#7".into()),
                commit: None,
                url: None,
                duration_secs: Some(30),
            },
        };
        check(&[], deployed.clone(), "Ada", false);
        check(&["deployments", "+branch:main"], deployed, "Ada", true);
        let sub = subscription(&["builds:all", "tags", "deployments"]);
        assert_eq!(
            sub.describe(),
            "`acme/api` (main branch `main`): pullrequests commits builds:all tags deployments"
        );
    }

    #[test]
    fn wants_follow_the_subscriptions_that_cover_a_repository() {
        assert_eq!(
            poll_wants(&[subscription(&[])], "acme/api"),
            PollWants::default()
        );
        let builds = subscription(&["builds"]);
        let wants = poll_wants(std::slice::from_ref(&builds), "acme/api");
        assert!(wants.builds_of_branch("main") && !wants.builds_of_branch("dev"));
        assert!(!wants.tags && !wants.deployments);
        assert_eq!(
            poll_wants(std::slice::from_ref(&builds), "acme/web"),
            PollWants::default()
        );
        let mut workspace = subscription(&["builds", "tags"]);
        workspace.target = Target::Workspace("acme".into());
        workspace.main_branch = None;
        let wants = poll_wants(&[builds, workspace.clone()], "acme/web");
        assert!(wants.tags && wants.builds_of_branch("master"));
        workspace.paused = Some(Pause {
            reason: "channel_not_found".into(),
            since: Timestamp::UNIX_EPOCH,
            notified: true,
            kind: PauseKind::Channel,
        });
        assert_eq!(poll_wants(&[workspace], "acme/web"), PollWants::default());
        let every = poll_wants(&[subscription(&["builds:all", "deployments"])], "acme/api");
        assert!(every.builds_of_branch("anything") && every.deployments);
    }

    #[test]
    fn a_subscription_stored_before_builds_and_tags_still_loads() {
        let mut stored = serde_json::to_value(subscription(&["pipelines"])).expect("JSON");
        let features = stored["features"].as_object_mut().expect("features");
        features.remove("builds");
        features.remove("tags");
        let loaded: Subscription = serde_json::from_value(stored).expect("loads");
        assert_eq!(loaded, subscription(&["pipelines"]));
    }
}
