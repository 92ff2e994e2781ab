//! The fake Bitbucket's `fields=` (partial responses), applied the way Bitbucket Cloud
//! applies it to every JSON answer of the 2.0 API. Pure: takes a full answer and the
//! parameter, returns what Bitbucket would send; it never reads the fake world and never
//! fails (unknown paths are ignored, as Bitbucket ignores them).
//!
//! The parameter is a comma-separated list of dotted paths. A plain path (`values.id`) is a
//! whitelist entry: once the list holds one, every key no entry keeps is dropped, at every
//! depth, and the objects leading to a kept key stay. `+path` keeps a path on top of the
//! default representation (it matters for fields Bitbucket hides by default, such as a pull
//! request's `reviewers` on a collection); `-path` removes a path. A list of only `+`/`-`
//! entries starts from the default representation. `*` matches every key at its level.
//! Arrays are transparent: a segment applies to each element. When several entries cover
//! the same key, the last one in the list decides (`-*,+foo` keeps only `foo`).

use serde_json::{Map, Value};

/// One entry of a `fields=` list.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    keep: bool,
    path: Vec<String>,
}

/// The parsed `fields=` parameter.
#[derive(Debug, Clone)]
struct Selection {
    entries: Vec<Entry>,
    /// True when the list holds a plain (whitelist) entry: unnamed keys are dropped.
    whitelist: bool,
}

impl Selection {
    fn parse(fields: &str) -> Selection {
        let mut whitelist = false;
        let entries = fields
            .split(',')
            .filter(|raw| !raw.is_empty())
            .map(|raw| {
                let (keep, path) = match raw.as_bytes()[0] {
                    b'+' => (true, &raw[1..]),
                    b'-' => (false, &raw[1..]),
                    _ => {
                        whitelist = true;
                        (true, raw)
                    }
                };
                Entry {
                    keep,
                    path: path.split('.').map(str::to_string).collect(),
                }
            })
            .collect();
        Selection { entries, whitelist }
    }

    /// Whether `pattern` names `path` or one of its ancestors (so it covers `path`).
    fn covers(pattern: &[String], path: &[String]) -> bool {
        pattern.len() <= path.len() && segments_match(pattern, &path[..pattern.len()])
    }

    /// Whether a keeping entry reaches below `path` (so `path` stays as a way there).
    fn leads_below(&self, path: &[String]) -> bool {
        self.entries.iter().any(|entry| {
            entry.keep
                && entry.path.len() > path.len()
                && segments_match(&entry.path[..path.len()], path)
        })
    }

    /// Whether a keeping entry names `path` itself or something below it, segment by
    /// segment (what brings in a field hidden by default; an ancestor alone does not).
    fn names(&self, path: &[String]) -> bool {
        self.entries.iter().any(|entry| {
            entry.keep
                && entry.path.len() >= path.len()
                && segments_match(&entry.path[..path.len()], path)
        })
    }

    /// Keep (`Some(true)`), drop (`Some(false)`) or "only as a way to what is kept below"
    /// (`None`) for the key at `path`.
    fn decide(&self, path: &[String], hidden: &[Vec<String>]) -> Option<bool> {
        if hidden.iter().any(|h| h.as_slice() == path) && !self.names(path) {
            return Some(false);
        }
        let last = self
            .entries
            .iter()
            .rev()
            .find(|entry| Self::covers(&entry.path, path));
        match last {
            Some(entry) if entry.keep => Some(true),
            Some(_) => Some(false),
            None if self.leads_below(path) => None,
            None => Some(!self.whitelist),
        }
    }
}

fn segments_match(pattern: &[String], path: &[String]) -> bool {
    pattern.len() == path.len()
        && pattern
            .iter()
            .zip(path)
            .all(|(segment, key)| segment == "*" || segment == key)
}

/// What Bitbucket answers for `full` under `fields` (`None`: no parameter). `hidden` lists
/// the dotted paths the endpoint leaves out of its default representation
/// (`values.reviewers` on the pull-request collection): served only when an entry names them.
pub fn apply(full: Value, fields: Option<&str>, hidden: &[&str]) -> Value {
    let hidden: Vec<Vec<String>> = hidden
        .iter()
        .map(|h| h.split('.').map(str::to_string).collect())
        .collect();
    let selection = Selection::parse(fields.unwrap_or(""));
    let mut path = Vec::new();
    filter(full, &selection, &hidden, &mut path)
}

/// Filters the keys below `path` (arrays transparent).
fn filter(
    value: Value,
    selection: &Selection,
    hidden: &[Vec<String>],
    path: &mut Vec<String>,
) -> Value {
    match value {
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|item| filter(item, selection, hidden, path))
                .collect(),
        ),
        Value::Object(object) => {
            let mut kept = Map::new();
            for (key, child) in object {
                path.push(key.clone());
                if selection.decide(path, hidden) != Some(false) {
                    kept.insert(key, filter(child, selection, hidden, path));
                }
                path.pop();
            }
            Value::Object(kept)
        }
        scalar => scalar,
    }
}
