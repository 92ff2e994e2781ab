//! Pure: the tag lane (read with the branch heads, only for repositories whose
//! subscribers want tags). The tag list against the remembered tags gives tags created
//! and deleted; a tag moved to another commit counts as created again.
//!
//! Owns the tag cursor: `None` until the first read, which records the present and emits
//! nothing (also when a subscriber turns `tags` on later). Must never do I/O, read the
//! clock (`now` is passed in) or spawn.

use std::collections::BTreeMap;

use jiff::Timestamp;

use super::branches::commit_actor;
use super::{RepoCursor, activity, actor};
use crate::bitbucket::activity::{Activity, ActivityKind, Actor};
use crate::bitbucket::model::{Links, Tag};

/// Tag name to the commit it points at.
fn tag_targets(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| Some((t.name.clone(), t.target.as_ref()?.hash.clone())))
        .collect()
}

/// Who made a tag: its tagger (annotated tags), else the tagged commit's author.
fn tagger(tag: &Tag) -> Option<Actor> {
    if let Some(tagger) = &tag.tagger {
        if let Some(found) = actor(&tagger.user) {
            return Some(found);
        }
        if let Some(raw) = tagger.raw.as_deref() {
            let name = raw.split('<').next().unwrap_or(raw).trim();
            return Some(Actor {
                display_name: name.to_string(),
                uuid: None,
            });
        }
    }
    tag.target.as_ref().and_then(commit_actor)
}

/// Diffs the tag list against the cursor and records it. `complete` says whether `tags`
/// is the whole list; only then does a missing tag count as deleted.
pub fn tags(
    cursor: &mut RepoCursor,
    repo: &str,
    tags: &[Tag],
    complete: bool,
    now: Timestamp,
) -> Vec<Activity> {
    let present = tag_targets(tags);
    let Some(known) = cursor.tags.as_mut() else {
        cursor.tags = Some(present);
        return Vec::new();
    };
    let mut activities = Vec::new();
    for tag in tags {
        let Some(target) = &tag.target else {
            continue;
        };
        if known.get(&tag.name) == Some(&target.hash) {
            continue;
        }
        let link = Links::html(&tag.links).or_else(|| Links::html(&target.links));
        activities.push(activity(
            format!("{repo}:tag:{}:created:{}", tag.name, target.hash),
            repo,
            tag.date.or(target.date).unwrap_or(now),
            tagger(tag),
            link,
            ActivityKind::TagCreated {
                tag: tag.name.clone(),
                commit: target.hash.clone(),
            },
        ));
    }
    if complete {
        for (name, previous) in known.iter() {
            if !present.contains_key(name) {
                activities.push(activity(
                    format!("{repo}:tag:{name}:deleted:{previous}"),
                    repo,
                    now,
                    None,
                    None,
                    ActivityKind::TagDeleted {
                        tag: name.clone(),
                        previous_commit: previous.clone(),
                    },
                ));
            }
        }
        *known = present;
    } else {
        known.extend(present);
    }
    activities
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::bitbucket::diff::test_support::*;

    fn tag_list(values: Value) -> Vec<Tag> {
        serde_json::from_value(values).expect("tags")
    }

    #[test]
    fn the_first_read_is_history_then_tags_are_created_moved_and_deleted() {
        let mut cursor = baselined();
        let listed = tag_list(json!([
            {"name": "v1.0", "target": {"hash": "a1"}},
            {"name": "v0.9", "target": {"hash": "a0"}}
        ]));
        assert!(tags(&mut cursor, REPO, &listed, true, at(1)).is_empty());
        // The same list again, as after a restart: nothing.
        assert!(tags(&mut cursor, REPO, &listed, true, at(2)).is_empty());

        let listed = tag_list(json!([
            {"name": "v1.1", "date": time(3), "message": "Release 1.1\n",
             "tagger": {"raw": "Ada Lovelace <ada@x>"}, "target": {"hash": "b1"},
             "links": {"html": {"href": "https://bb/acme/api/src/v1.1"}}},
            {"name": "v1.0", "target": {"hash": "a2", "author": {"user": {"display_name": "Bob", "uuid": "{bob}"}}}}
        ]));
        let partial = tags(&mut cursor.clone(), REPO, &listed, false, at(4));
        assert_eq!(
            kinds(&partial),
            vec!["tag:v1.1:created:b1", "tag:v1.0:created:a2"],
            "an incomplete list deletes nothing"
        );
        let found = tags(&mut cursor, REPO, &listed, true, at(4));
        assert_eq!(
            kinds(&found),
            vec![
                "tag:v1.1:created:b1",
                "tag:v1.0:created:a2",
                "tag:v0.9:deleted:a0"
            ]
        );
        assert_eq!(found[0].occurred_at, at(3));
        assert_eq!(
            found[0].actor.as_ref().map(|a| a.display_name.as_str()),
            Some("Ada Lovelace")
        );
        assert_eq!(
            found[0].link.as_deref(),
            Some("https://bb/acme/api/src/v1.1")
        );
        assert_eq!(
            found[1].actor.as_ref().map(|a| a.display_name.as_str()),
            Some("Bob")
        );
        assert!(tags(&mut cursor, REPO, &listed, true, at(5)).is_empty());
    }

    #[test]
    fn a_cursor_stored_before_tags_existed_still_loads() {
        let mut stored = serde_json::to_value(baselined()).expect("serializes");
        let object = stored.as_object_mut().expect("object");
        object.remove("tags");
        object.remove("builds");
        object.remove("deployments");
        let loaded: RepoCursor = serde_json::from_value(stored).expect("loads");
        assert_eq!(loaded, baselined());
        assert!(loaded.tags.is_none());
    }
}
