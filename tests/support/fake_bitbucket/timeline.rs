//! The fake Bitbucket's scriptable timeline: each call changes the fake world the way a
//! person on Bitbucket would (push; open a pull request, draft or with reviewers; add a
//! reviewer, approve, request changes, comment, mark ready, queue, merge, decline,
//! supersede; run, pause, resume and finish a pipeline; file, edit and comment on an
//! issue; turn an account into a team or app user, or delete it) and writes the feed
//! entries Bitbucket would. It never touches HTTP; the server only reads what the
//! timeline wrote.

use jiff::{SignedDuration, Timestamp};
use serde_json::json;

use super::payloads::{
    AccountState, CHANGES_REQUEST_KEY, condensed, time, update_entry, user, uuid_of,
};
use super::{
    FakeBitbucket, FakeCommit, FakeIssue, FakeIssueChange, FakeIssueComment, FakeParticipant,
    FakePipeline, FakePullRequest, FakeRepo, PipelineState, PipelineTarget, World,
};

impl FakeBitbucket {
    /// The fake's clock: its epoch plus tokio time since start, strictly increasing.
    fn now(&self, world: &mut World) -> Timestamp {
        let elapsed = SignedDuration::try_from(self.inner.started.elapsed()).expect("elapsed fits");
        let candidate = self.inner.epoch + elapsed;
        let next = candidate.max(world.last_time + SignedDuration::from_micros(1));
        world.last_time = next;
        next
    }

    pub(super) fn with_repo<T>(
        &self,
        repo: &str,
        f: impl FnOnce(&mut FakeRepo, Timestamp, &mut u64) -> T,
    ) -> T {
        let mut world = self.inner.lock();
        let now = self.now(&mut world);
        let World {
            repos, next_hash, ..
        } = &mut *world;
        let entry = repos
            .get_mut(repo)
            .unwrap_or_else(|| panic!("fake bitbucket: no repository {repo}"));
        f(entry, now, next_hash)
    }

    /// Creates `repo` (`workspace/slug`) with a `main` branch of one commit.
    pub fn add_repository(&self, repo: &str) {
        {
            let mut world = self.inner.lock();
            world.repos.insert(
                repo.to_string(),
                FakeRepo {
                    has_issues: true,
                    next_id: 1,
                    ..FakeRepo::default()
                },
            );
        }
        self.push(repo, "main", &["Initial commit"]);
    }

    /// Creates a private `repo` (see [`Self::add_repository`]).
    pub fn add_private_repository(&self, repo: &str) {
        self.add_repository(repo);
        self.set_private(repo, true);
    }

    /// Makes a repository private (only readers may bring it into a channel).
    pub fn set_private(&self, repo: &str, private: bool) {
        self.with_repo(repo, |r, _, _| r.private = private);
    }

    /// Commits `messages` on `branch` (created from `main` if new); returns the new head.
    pub fn push(&self, repo: &str, branch: &str, messages: &[&str]) -> String {
        self.with_repo(repo, |r, now, next_hash| {
            let mut head = r
                .branches
                .get(branch)
                .or_else(|| r.branches.get("main"))
                .cloned();
            for message in messages {
                let hash = commit_hash(*next_hash);
                *next_hash += 1;
                r.commits.insert(
                    hash.clone(),
                    FakeCommit {
                        hash: hash.clone(),
                        parents: head.iter().cloned().collect(),
                        message: message.to_string(),
                        author: "Ada Lovelace <ada@example.com>".into(),
                        date: now,
                    },
                );
                head = Some(hash);
            }
            let head = head.expect("a push has at least one commit");
            r.branches.insert(branch.to_string(), head.clone());
            r.updated_on = Some(now);
            head
        })
    }

    pub fn delete_branch(&self, repo: &str, branch: &str) {
        self.with_repo(repo, |r, now, _| {
            r.branches.remove(branch);
            r.updated_on = Some(now);
        });
    }

    /// Opens a pull request from `source` to `main`; returns its id.
    pub fn open_pull_request(&self, repo: &str, source: &str, title: &str, author: &str) -> u64 {
        self.open(repo, source, title, author, false, &[])
    }

    /// Opens a draft pull request (`state: DRAFT`, `draft: true`); returns its id.
    pub fn open_draft_pull_request(
        &self,
        repo: &str,
        source: &str,
        title: &str,
        author: &str,
    ) -> u64 {
        self.open(repo, source, title, author, true, &[])
    }

    /// Opens a pull request with `reviewers` asked from the start; returns its id.
    pub fn open_pull_request_with_reviewers(
        &self,
        repo: &str,
        source: &str,
        title: &str,
        author: &str,
        reviewers: &[&str],
    ) -> u64 {
        self.open(repo, source, title, author, false, reviewers)
    }

    fn open(
        &self,
        repo: &str,
        source: &str,
        title: &str,
        author: &str,
        draft: bool,
        reviewers: &[&str],
    ) -> u64 {
        self.with_repo(repo, |r, now, _| {
            let id = r.next_id;
            r.next_id += 1;
            let pr = FakePullRequest {
                id,
                title: title.into(),
                state: if draft { "DRAFT" } else { "OPEN" }.into(),
                draft,
                source: source.into(),
                destination: "main".into(),
                head: r.branches.get(source).cloned().unwrap_or_default(),
                author: author.into(),
                reviewers: reviewers.iter().map(|name| name.to_string()).collect(),
                participants: reviewers
                    .iter()
                    .map(|name| (name.to_string(), FakeParticipant::reviewer()))
                    .collect(),
                closed_by: None,
                reason: String::new(),
                created_on: now,
                updated_on: now,
            };
            let entry = update_entry(repo, r, &pr, now, author);
            r.pull_requests.insert(id, pr);
            r.feed.push((now, entry));
            id
        })
    }

    /// Changes a pull request and writes the feed's update entry by `author` (the pull
    /// request's author when `None`).
    fn update_pull_request(
        &self,
        repo: &str,
        id: u64,
        author: Option<&str>,
        change: impl FnOnce(&mut FakePullRequest),
    ) {
        self.with_repo(repo, |r, now, _| {
            let mut pr = r.pull_requests.remove(&id).expect("pull request");
            change(&mut pr);
            pr.updated_on = now;
            let author = author.map_or_else(|| pr.author.clone(), str::to_string);
            let entry = update_entry(repo, r, &pr, now, &author);
            r.pull_requests.insert(id, pr);
            r.feed.push((now, entry));
        });
    }

    /// Pushes to a pull request's source branch (the feed gets an update entry).
    pub fn push_to_pull_request(&self, repo: &str, id: u64, message: &str) -> String {
        let source = self.with_repo(repo, |r, _, _| r.pull_requests[&id].source.clone());
        let head = self.push(repo, &source, &[message]);
        self.update_pull_request(repo, id, None, |pr| pr.head = head.clone());
        head
    }

    /// A draft becomes ready for review (DRAFT → OPEN): an update entry by `who`, same head.
    pub fn mark_ready(&self, repo: &str, id: u64, who: &str) {
        self.update_pull_request(repo, id, Some(who), |pr| {
            assert_eq!(
                pr.state, "DRAFT",
                "fake bitbucket: only a draft becomes ready"
            );
            pr.state = "OPEN".into();
            pr.draft = false;
        });
    }

    /// Puts a pull request in the merge queue (QUEUED).
    pub fn queue_pull_request(&self, repo: &str, id: u64) {
        self.update_pull_request(repo, id, None, |pr| pr.state = "QUEUED".into());
    }

    /// `who` asks `reviewer` to review: the reviewer joins `reviewers` and `participants`,
    /// and the feed gets an update entry by `who` (state as the pull request's, same head,
    /// no reviewer list, as in the API description's example).
    pub fn add_reviewer(&self, repo: &str, id: u64, reviewer: &str, by: &str) {
        self.update_pull_request(repo, id, Some(by), |pr| {
            if !pr.reviewers.iter().any(|name| name == reviewer) {
                pr.reviewers.push(reviewer.into());
            }
            pr.participants
                .entry(reviewer.into())
                .or_insert_with(FakeParticipant::reviewer)
                .role = "REVIEWER";
        });
    }

    pub fn approve(&self, repo: &str, id: u64, who: &str) {
        self.with_repo(repo, |r, now, _| {
            let pr = r.pull_requests.get_mut(&id).expect("pull request");
            pr.participate(who, now, true, Some("approved"));
            let entry = json!({
                "approval": {"date": time(now), "user": user(who), "pullrequest": condensed(repo, pr)},
                "pull_request": condensed(repo, pr)
            });
            r.feed.push((now, entry));
        });
    }

    /// Withdraws an approval: Bitbucket drops the approval entry from the feed.
    pub fn unapprove(&self, repo: &str, id: u64, who: &str) {
        self.with_repo(repo, |r, now, _| {
            let pr = r.pull_requests.get_mut(&id).expect("pull request");
            pr.participate(who, now, false, None);
            let uuid = uuid_of(who);
            r.feed.retain(|(_, entry)| {
                !(entry["approval"]["user"]["uuid"] == uuid.as_str()
                    && entry["pull_request"]["id"] == id)
            });
        });
    }

    pub fn request_changes(&self, repo: &str, id: u64, who: &str) {
        self.with_repo(repo, |r, now, _| {
            let pr = r.pull_requests.get_mut(&id).expect("pull request");
            pr.participate(who, now, false, Some("changes_requested"));
            let entry = json!({
                CHANGES_REQUEST_KEY: {"date": time(now), "user": user(who), "pullrequest": condensed(repo, pr)},
                "pull_request": condensed(repo, pr)
            });
            r.feed.push((now, entry));
        });
    }

    /// Comments on a pull request (inline when `inline` names a file and line).
    pub fn comment(
        &self,
        repo: &str,
        id: u64,
        who: &str,
        text: &str,
        inline: Option<(&str, u64)>,
    ) -> u64 {
        self.with_repo(repo, |r, now, _| {
            let comment_id = 1000 + r.next_id;
            r.next_id += 1;
            let pr = r.pull_requests.get_mut(&id).expect("pull request");
            let approved = pr.participants.get(who).is_some_and(|p| p.approved);
            let state = pr.participants.get(who).and_then(|p| p.state);
            if who != pr.author {
                pr.participate(who, now, approved, state);
            }
            pr.updated_on = now;
            let mut comment = json!({
                "type": "pullrequest_comment",
                "id": comment_id,
                "content": {"raw": text, "markup": "markdown", "html": format!("<p>{text}</p>"), "type": "rendered"},
                "user": user(who),
                "created_on": time(now),
                "updated_on": time(now),
                "deleted": false,
                "pending": false,
                "links": {"html": {"href": format!("https://bitbucket.org/{repo}/pull-requests/{id}/_/diff#comment-{comment_id}")}},
                "pullrequest": condensed(repo, pr)
            });
            if let Some((path, line)) = inline {
                comment["inline"] = json!({"path": path, "from": null, "to": line});
            }
            r.feed.push((now, json!({"comment": comment, "pull_request": condensed(repo, pr)})));
            comment_id
        })
    }

    /// Merges a pull request: a merge commit on `main`, the feed's MERGED update.
    pub fn merge(&self, repo: &str, id: u64, who: &str) {
        let title = self.with_repo(repo, |r, _, _| r.pull_requests[&id].title.clone());
        self.push(repo, "main", &[&format!("Merged in feature ({title})")]);
        self.close(repo, id, who, "MERGED", "");
    }

    pub fn decline(&self, repo: &str, id: u64, who: &str, reason: &str) {
        self.close(repo, id, who, "DECLINED", reason);
    }

    /// A newer pull request replaces this one (SUPERSEDED, closed by `who`).
    pub fn supersede(&self, repo: &str, id: u64, who: &str) {
        self.close(repo, id, who, "SUPERSEDED", "");
    }

    /// Closes a pull request: its object names `who` in `closed_by`; the feed's update
    /// entry has `who` as its author and no `closed_by`.
    fn close(&self, repo: &str, id: u64, who: &str, state: &str, reason: &str) {
        self.update_pull_request(repo, id, Some(who), |pr| {
            pr.state = state.into();
            pr.draft = false;
            pr.reason = reason.into();
            pr.closed_by = Some(who.into());
        });
    }

    /// Turns the account of `name` into `kind`: `team` or `app_user` (no `nickname`; a team
    /// has no `account_id` either), or back to `user`, everywhere it is served.
    pub fn set_account_kind(&self, name: &str, kind: &str) {
        let kind = match kind {
            "team" => Some("team"),
            "app_user" => Some("app_user"),
            "user" => None,
            other => panic!("fake bitbucket: no account kind {other}"),
        };
        let mut world = self.inner.lock();
        match kind {
            Some(kind) => world
                .accounts
                .insert(uuid_of(name), AccountState::Kind(kind)),
            None => world.accounts.remove(&uuid_of(name)),
        };
    }

    /// Deletes the account of `name`: from now on every object naming it serves `null`
    /// (`user: null`, `author: null`, ...) and lists such as `reviewers` leave it out.
    pub fn delete_account(&self, name: &str) {
        self.inner
            .lock()
            .accounts
            .insert(uuid_of(name), AccountState::Deleted);
    }

    /// Starts a pipeline on `branch`'s head (IN_PROGRESS, stage RUNNING); returns its uuid.
    pub fn start_pipeline(&self, repo: &str, branch: &str) -> String {
        self.add_pipeline(repo, PipelineTarget::Branch(branch.into()), running())
    }

    /// Queues a pipeline on `branch`'s head (PENDING); returns its uuid.
    pub fn pending_pipeline(&self, repo: &str, branch: &str) -> String {
        self.add_pipeline(
            repo,
            PipelineTarget::Branch(branch.into()),
            PipelineState::Pending,
        )
    }

    /// Starts a pull-request pipeline on pull request `id`'s source head (a
    /// `pipeline_pullrequest_target`: `source`, `destination`, no `ref_name`); returns its uuid.
    pub fn start_pull_request_pipeline(&self, repo: &str, id: u64) -> String {
        let target = self.with_repo(repo, |r, _, _| {
            let pr = &r.pull_requests[&id];
            PipelineTarget::PullRequest {
                id,
                source: pr.source.clone(),
                destination: pr.destination.clone(),
            }
        });
        self.add_pipeline(repo, target, running())
    }

    fn add_pipeline(&self, repo: &str, target: PipelineTarget, state: PipelineState) -> String {
        self.with_repo(repo, |r, now, _| {
            let build_number = r.pipelines.len() as u64 + 1;
            let uuid = format!("{{pipeline-{build_number}-0000-4000-8000-000000000000}}");
            let commit = match &target {
                PipelineTarget::Branch(branch) => r.branches.get(branch).cloned(),
                PipelineTarget::PullRequest { id, .. } => {
                    r.pull_requests.get(id).map(|pr| pr.head.clone())
                }
            };
            r.pipelines.push(FakePipeline {
                uuid: uuid.clone(),
                build_number,
                target,
                commit: commit.unwrap_or_default(),
                state,
                created_on: now,
                completed_on: None,
            });
            uuid
        })
    }

    fn set_pipeline_state(&self, repo: &str, uuid: &str, state: PipelineState) {
        self.with_repo(repo, |r, now, _| {
            let pipeline = r
                .pipelines
                .iter_mut()
                .find(|p| p.uuid == uuid)
                .expect("pipeline");
            if matches!(state, PipelineState::Completed { .. }) {
                pipeline.completed_on = Some(now);
            }
            pipeline.state = state;
        });
    }

    /// Pauses a running pipeline: IN_PROGRESS with stage PAUSED, or HALTED when `halted`.
    pub fn pause_pipeline(&self, repo: &str, uuid: &str, halted: bool) {
        let stage = if halted { "HALTED" } else { "PAUSED" };
        self.set_pipeline_state(
            repo,
            uuid,
            PipelineState::InProgress {
                stage: stage.into(),
            },
        );
    }

    /// Runs a paused or pending pipeline again (IN_PROGRESS, stage RUNNING).
    pub fn resume_pipeline(&self, repo: &str, uuid: &str) {
        self.set_pipeline_state(repo, uuid, running());
    }

    /// Completes a pipeline with `result`: SUCCESSFUL, FAILED, ERROR, STOPPED or EXPIRED.
    pub fn finish_pipeline(&self, repo: &str, uuid: &str, result: &str) {
        assert!(
            ["SUCCESSFUL", "FAILED", "ERROR", "STOPPED", "EXPIRED"].contains(&result),
            "fake bitbucket: no pipeline result {result}"
        );
        self.set_pipeline_state(
            repo,
            uuid,
            PipelineState::Completed {
                result: result.into(),
            },
        );
    }

    pub fn create_issue(&self, repo: &str, title: &str, reporter: &str) -> u64 {
        self.with_repo(repo, |r, now, _| {
            let id = r.issues.len() as u64 + 1;
            r.issues.insert(
                id,
                FakeIssue {
                    id,
                    title: title.into(),
                    state: "new".into(),
                    reporter: reporter.into(),
                    created_on: now,
                    updated_on: now,
                    comments: Vec::new(),
                    changes: Vec::new(),
                },
            );
            id
        })
    }

    /// Edits an issue's state: Bitbucket records a change (by the reporter) and adds a
    /// comment without text (`raw: null`, empty `html`) to the issue's comments.
    pub fn update_issue(&self, repo: &str, id: u64, state: &str) {
        self.with_repo(repo, |r, now, _| {
            let comment_id = 5000 + r.next_id;
            r.next_id += 1;
            let issue = r.issues.get_mut(&id).expect("issue");
            let old_state = std::mem::replace(&mut issue.state, state.into());
            let who = issue.reporter.clone();
            issue.changes.push(FakeIssueChange {
                id: comment_id,
                user: who.clone(),
                old_state,
                new_state: state.into(),
                created_on: now,
            });
            issue.comments.push(FakeIssueComment {
                id: comment_id,
                raw: None,
                user: who,
                created_on: now,
            });
            issue.updated_on = now;
        });
    }

    pub fn comment_issue(&self, repo: &str, id: u64, who: &str, text: &str) {
        self.with_repo(repo, |r, now, _| {
            let comment_id = 5000 + r.next_id;
            r.next_id += 1;
            let issue = r.issues.get_mut(&id).expect("issue");
            issue.comments.push(FakeIssueComment {
                id: comment_id,
                raw: Some(text.into()),
                user: who.into(),
                created_on: now,
            });
            issue.updated_on = now;
        });
    }
}

/// The `n`th commit's hash: 40 hex digits whose first 12 (the short hash Bitbucket serves
/// on pull requests) differ from every other commit's, as real hashes' do.
fn commit_hash(n: u64) -> String {
    let mixed = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    format!(
        "{mixed:016x}{:016x}{n:08x}",
        mixed.rotate_left(29) ^ 0x5bd1_e995_c2b2_ae35
    )
}

fn running() -> PipelineState {
    PipelineState::InProgress {
        stage: "RUNNING".into(),
    }
}

impl FakeParticipant {
    /// A reviewer who has done nothing yet.
    fn reviewer() -> FakeParticipant {
        FakeParticipant {
            role: "REVIEWER",
            approved: false,
            state: None,
            participated_on: None,
        }
    }
}

impl FakePullRequest {
    /// `who` approved, requested changes, withdrew or commented at `now`.
    pub(super) fn participate(
        &mut self,
        who: &str,
        now: Timestamp,
        approved: bool,
        state: Option<&'static str>,
    ) {
        let role = if self.reviewers.iter().any(|name| name == who) {
            "REVIEWER"
        } else {
            "PARTICIPANT"
        };
        self.participants.insert(
            who.into(),
            FakeParticipant {
                role,
                approved,
                state,
                participated_on: Some(now),
            },
        );
        self.updated_on = now;
    }
}
