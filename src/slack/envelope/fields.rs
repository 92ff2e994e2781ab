//! Reading a Slack payload's fields by dotted path, with errors that name the field.
//!
//! Pure, and private to [`super`]: the typed payloads are built with it, nothing else
//! sees JSON. A `null` counts as absent (Slack sends `"enterprise": null`). Never
//! panics: a missing required field or a field of the wrong type is a [`FieldError`]
//! carrying the field's whole path from the payload's root, such as
//! `event.links[0].url`.

use serde_json::Value;

/// A field a typed payload needs that is not there, or not of the right type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}` {problem}")]
pub struct FieldError {
    /// The path from the payload's root, such as `view.state.values`.
    pub field: String,
    pub problem: FieldProblem,
}

/// A payload of a known type that does not fit it, and the field that does not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{type_name}` payload: {error}")]
pub struct PayloadError {
    /// The event's or interaction's `type`.
    pub type_name: String,
    pub error: FieldError,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldProblem {
    Missing,
    /// Present, but not what Slack documents (`expected` reads "a string" and the like).
    WrongType {
        expected: &'static str,
    },
}

impl std::fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldProblem::Missing => f.write_str("is missing"),
            FieldProblem::WrongType { expected } => write!(f, "is not {expected}"),
        }
    }
}

/// A JSON object (or the payload's root) and where it sits in the payload.
#[derive(Debug, Clone)]
pub(super) struct Fields<'a> {
    value: &'a Value,
    /// The path of `value` from the payload's root; empty at the root.
    at: String,
}

impl<'a> Fields<'a> {
    pub(super) fn root(value: &'a Value) -> Self {
        Self {
            value,
            at: String::new(),
        }
    }

    /// The full name of `path` below this object, for errors and nested readers.
    fn name(&self, path: &str) -> String {
        if path.is_empty() {
            return if self.at.is_empty() {
                "payload".to_string()
            } else {
                self.at.clone()
            };
        }
        if self.at.is_empty() {
            path.to_string()
        } else {
            format!("{}.{path}", self.at)
        }
    }

    fn error(&self, path: &str, problem: FieldProblem) -> FieldError {
        FieldError {
            field: self.name(path),
            problem,
        }
    }

    /// The value at a dotted `path`, or None when any step is absent or `null`. A step
    /// through something that is not an object is an error.
    fn lookup(&self, path: &str) -> Result<Option<&'a Value>, FieldError> {
        let mut current = self.value;
        let mut walked = String::new();
        for step in path.split('.') {
            let Value::Object(map) = current else {
                return Err(self.error(
                    &walked,
                    FieldProblem::WrongType {
                        expected: "an object",
                    },
                ));
            };
            match map.get(step) {
                None | Some(Value::Null) => return Ok(None),
                Some(next) => current = next,
            }
            if !walked.is_empty() {
                walked.push('.');
            }
            walked.push_str(step);
        }
        Ok(Some(current))
    }

    fn required(&self, path: &str) -> Result<&'a Value, FieldError> {
        self.lookup(path)?
            .ok_or_else(|| self.error(path, FieldProblem::Missing))
    }

    /// A string that must be there.
    pub(super) fn text(&self, path: &str) -> Result<String, FieldError> {
        let value = self.required(path)?;
        as_text(value).ok_or_else(|| self.error(path, WRONG_STRING))
    }

    /// A string that may be absent (or `null`).
    pub(super) fn optional_text(&self, path: &str) -> Result<Option<String>, FieldError> {
        match self.lookup(path)? {
            None => Ok(None),
            Some(value) => as_text(value)
                .map(Some)
                .ok_or_else(|| self.error(path, WRONG_STRING)),
        }
    }

    /// A string that may be absent, `null` or empty; all three are None.
    pub(super) fn non_empty_text(&self, path: &str) -> Result<Option<String>, FieldError> {
        Ok(self.optional_text(path)?.filter(|text| !text.is_empty()))
    }

    /// A boolean; absent is false.
    pub(super) fn flag(&self, path: &str) -> Result<bool, FieldError> {
        match self.lookup(path)? {
            None => Ok(false),
            Some(Value::Bool(flag)) => Ok(*flag),
            Some(_) => Err(self.error(
                path,
                FieldProblem::WrongType {
                    expected: "a boolean",
                },
            )),
        }
    }

    /// An object that must be there.
    pub(super) fn object(&self, path: &str) -> Result<Fields<'a>, FieldError> {
        let value = self.required(path)?;
        self.as_object(path, value)
    }

    /// An object that may be absent (or `null`).
    pub(super) fn optional_object(&self, path: &str) -> Result<Option<Fields<'a>>, FieldError> {
        match self.lookup(path)? {
            None => Ok(None),
            Some(value) => self.as_object(path, value).map(Some),
        }
    }

    fn as_object(&self, path: &str, value: &'a Value) -> Result<Fields<'a>, FieldError> {
        match value {
            Value::Object(_) => Ok(Fields {
                value,
                at: self.name(path),
            }),
            _ => Err(self.error(
                path,
                FieldProblem::WrongType {
                    expected: "an object",
                },
            )),
        }
    }

    /// The objects of a list that must be there, each named by its index.
    pub(super) fn objects(&self, path: &str) -> Result<Vec<Fields<'a>>, FieldError> {
        let value = self.required(path)?;
        let Value::Array(items) = value else {
            return Err(self.error(path, FieldProblem::WrongType { expected: "a list" }));
        };
        items
            .iter()
            .enumerate()
            .map(|(index, item)| self.as_object(&format!("{path}[{index}]"), item))
            .collect()
    }

    /// A list of strings; absent is empty.
    pub(super) fn texts(&self, path: &str) -> Result<Vec<String>, FieldError> {
        let Some(value) = self.lookup(path)? else {
            return Ok(Vec::new());
        };
        let Value::Array(items) = value else {
            return Err(self.error(path, FieldProblem::WrongType { expected: "a list" }));
        };
        items
            .iter()
            .enumerate()
            .map(|(index, item)| {
                as_text(item).ok_or_else(|| self.error(&format!("{path}[{index}]"), WRONG_STRING))
            })
            .collect()
    }

    /// The objects of a list that may be absent (absent is empty).
    pub(super) fn optional_objects(&self, path: &str) -> Result<Vec<Fields<'a>>, FieldError> {
        match self.lookup(path)? {
            None => Ok(Vec::new()),
            Some(_) => self.objects(path),
        }
    }

    /// The members of an object that may be absent, each an object, in key order.
    pub(super) fn members(&self, path: &str) -> Result<Vec<(String, Fields<'a>)>, FieldError> {
        match self.optional_object(path)? {
            None => Ok(Vec::new()),
            Some(object) => object.entries(),
        }
    }

    /// This object's own members, each an object, in key order.
    pub(super) fn entries(&self) -> Result<Vec<(String, Fields<'a>)>, FieldError> {
        let Value::Object(map) = self.value else {
            return Err(self.error(
                "",
                FieldProblem::WrongType {
                    expected: "an object",
                },
            ));
        };
        map.iter()
            .map(|(key, value)| Ok((key.clone(), self.as_object(key, value)?)))
            .collect()
    }
}

const WRONG_STRING: FieldProblem = FieldProblem::WrongType {
    expected: "a string",
};

fn as_text(value: &Value) -> Option<String> {
    value.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_name_the_field_that_is_wrong() {
        let payload = json!({
            "event": {"type": "x", "links": [{"url": "u"}, {"url": 5}], "tokens": null},
            "team": "not an object",
            "empty": "",
        });
        let root = Fields::root(&payload);
        assert_eq!(root.text("event.type"), Ok("x".into()));
        assert_eq!(
            root.optional_text("event.tokens.bot"),
            Ok(None),
            "null is absent"
        );
        assert_eq!(root.non_empty_text("empty"), Ok(None));
        assert_eq!(
            root.text("event.user").map_err(|e| e.to_string()),
            Err("field `event.user` is missing".into())
        );
        assert_eq!(
            root.optional_text("team.id").map_err(|e| e.to_string()),
            Err("field `team` is not an object".into())
        );
        let links = root.objects("event.links").expect("a list of objects");
        assert_eq!(links[0].text("url"), Ok("u".into()));
        assert_eq!(
            links[1].text("url").map_err(|e| e.to_string()),
            Err("field `event.links[1].url` is not a string".into())
        );
        assert_eq!(root.texts("event.missing"), Ok(Vec::new()));
        assert_eq!(root.flag("event.missing"), Ok(false));
        assert!(root.members("event.missing").expect("absent").is_empty());
    }
}
