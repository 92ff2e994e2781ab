//! The fake Bitbucket's scriptable timeline: each call changes the fake world the way a
//! person on Bitbucket would (push, open, approve, comment on and merge a pull request,
//! run a pipeline, file an issue) and writes the feed entries Bitbucket would. It never
//! touches HTTP; the server only reads what the timeline wrote.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use serde_json::json;

use super::payloads::{condensed, time, update_entry, user, uuid_of};
use super::{FakeBitbucket, FakeCommit, FakeIssue, FakePipeline, FakePullRequest, FakeRepo, World};

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
                let hash = format!("{:040x}", next_hash.wrapping_mul(0x9e37_79b9_7f4a_7c15));
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
        self.with_repo(repo, |r, now, _| {
            let id = r.next_id;
            r.next_id += 1;
            let pr = FakePullRequest {
                id,
                title: title.into(),
                state: "OPEN".into(),
                source: source.into(),
                destination: "main".into(),
                head: r.branches.get(source).cloned().unwrap_or_default(),
                author: author.into(),
                participants: BTreeMap::new(),
                updated_on: now,
            };
            let entry = update_entry(repo, &pr, now, None);
            r.pull_requests.insert(id, pr);
            r.feed.push((now, entry));
            id
        })
    }

    /// Pushes to a pull request's source branch (the feed gets an update entry).
    pub fn push_to_pull_request(&self, repo: &str, id: u64, message: &str) -> String {
        let source = self.with_repo(repo, |r, _, _| r.pull_requests[&id].source.clone());
        let head = self.push(repo, &source, &[message]);
        self.with_repo(repo, |r, now, _| {
            let pr = r.pull_requests.get_mut(&id).expect("pull request");
            pr.head = head.clone();
            pr.updated_on = now;
            let entry = update_entry(repo, pr, now, None);
            r.feed.push((now, entry));
        });
        head
    }

    pub fn approve(&self, repo: &str, id: u64, who: &str) {
        self.with_repo(repo, |r, now, _| {
            let pr = r.pull_requests.get_mut(&id).expect("pull request");
            pr.participants.insert(who.into(), (true, Some("approved".into())));
            pr.updated_on = now;
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
            pr.participants.insert(who.into(), (false, None));
            pr.updated_on = now;
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
            pr.participants
                .insert(who.into(), (false, Some("changes_requested".into())));
            pr.updated_on = now;
            let entry = json!({
                "changes_request": {"date": time(now), "user": user(who), "pullrequest": condensed(repo, pr)},
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

    fn close(&self, repo: &str, id: u64, who: &str, state: &str, reason: &str) {
        self.with_repo(repo, |r, now, _| {
            let pr = r.pull_requests.get_mut(&id).expect("pull request");
            pr.state = state.into();
            pr.updated_on = now;
            let entry = update_entry(repo, pr, now, Some((who, reason)));
            r.feed.push((now, entry));
        });
    }

    /// Starts a pipeline on `branch`'s head; returns its uuid.
    pub fn start_pipeline(&self, repo: &str, branch: &str) -> String {
        self.with_repo(repo, |r, now, _| {
            let build_number = r.pipelines.len() as u64 + 1;
            let uuid = format!("{{pipeline-{build_number}-0000-4000-8000-000000000000}}");
            r.pipelines.push(FakePipeline {
                uuid: uuid.clone(),
                build_number,
                branch: branch.into(),
                commit: r.branches.get(branch).cloned().unwrap_or_default(),
                state: "IN_PROGRESS".into(),
                result: None,
                created_on: now,
                completed_on: None,
            });
            uuid
        })
    }

    /// Completes a pipeline with `result`: SUCCESSFUL, FAILED or STOPPED.
    pub fn finish_pipeline(&self, repo: &str, uuid: &str, result: &str) {
        self.with_repo(repo, |r, now, _| {
            let pipeline = r
                .pipelines
                .iter_mut()
                .find(|p| p.uuid == uuid)
                .expect("pipeline");
            pipeline.state = "COMPLETED".into();
            pipeline.result = Some(result.into());
            pipeline.completed_on = Some(now);
        });
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
                },
            );
            id
        })
    }

    pub fn update_issue(&self, repo: &str, id: u64, state: &str) {
        self.with_repo(repo, |r, now, _| {
            let issue = r.issues.get_mut(&id).expect("issue");
            issue.state = state.into();
            issue.updated_on = now;
        });
    }

    pub fn comment_issue(&self, repo: &str, id: u64, who: &str, text: &str) {
        self.with_repo(repo, |r, now, _| {
            let comment_id = 5000 + r.next_id;
            r.next_id += 1;
            let issue = r.issues.get_mut(&id).expect("issue");
            issue
                .comments
                .push((comment_id, text.into(), who.into(), now));
            issue.updated_on = now;
        });
    }
}
