//! Branch and author patterns: `*` matches any run of characters (slashes included),
//! `?` one character; everything else is literal. Pure.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest pattern accepted.
pub const MAX_GLOB_CHARS: usize = 200;

/// A validated pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Glob(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    #[error("an empty pattern")]
    Empty,
    #[error("`{0}` is longer than {MAX_GLOB_CHARS} characters")]
    TooLong(String),
    #[error("`{pattern}` contains `{character}`: patterns use only `*` and `?` as wildcards")]
    Unsupported { pattern: String, character: char },
}

impl Glob {
    pub fn new(pattern: &str) -> Result<Self, GlobError> {
        if pattern.is_empty() {
            return Err(GlobError::Empty);
        }
        if pattern.chars().count() > MAX_GLOB_CHARS {
            return Err(GlobError::TooLong(pattern.chars().take(40).collect()));
        }
        if let Some(character) = pattern.chars().find(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '[' | ']' | '{' | '}' | '\\')
        }) {
            return Err(GlobError::Unsupported {
                pattern: pattern.to_string(),
                character,
            });
        }
        Ok(Glob(pattern.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `text` matches the whole pattern.
    pub fn matches(&self, text: &str) -> bool {
        matches(
            &self.0.chars().collect::<Vec<_>>(),
            &text.chars().collect::<Vec<_>>(),
        )
    }

    /// Case-insensitive match (for people's names).
    pub fn matches_ignoring_case(&self, text: &str) -> bool {
        let pattern: Vec<char> = self.0.to_lowercase().chars().collect();
        let text: Vec<char> = text.to_lowercase().chars().collect();
        matches(&pattern, &text)
    }
}

/// Iterative wildcard matching with backtracking to the last `*`: linear in practice,
/// never exponential.
fn matches(pattern: &[char], text: &[char]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

impl TryFrom<String> for Glob {
    type Error = GlobError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Glob::new(&value)
    }
}

impl From<Glob> for String {
    fn from(glob: Glob) -> Self {
        glob.0
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pattern: &str, text: &str, expected: bool) {
        assert_eq!(
            Glob::new(pattern).expect("valid").matches(text),
            expected,
            "{pattern} ~ {text}"
        );
    }

    #[test]
    fn wildcards() {
        check("main", "main", true);
        check("main", "maint", false);
        check("release/*", "release/1.2", true);
        check("release/*", "release", false);
        check("*", "feature/a/b", true);
        check("feature/?", "feature/a", true);
        check("feature/?", "feature/ab", false);
        check("*-hotfix", "2024-hotfix", true);
        check("a*b*c", "axxbyyc", true);
        check("a*b*c", "axxbyy", false);
        check(&"*a".repeat(50), &"b".repeat(100), false);
    }

    #[test]
    fn bad_patterns_say_why() {
        assert_eq!(Glob::new(""), Err(GlobError::Empty));
        assert!(matches!(
            Glob::new("release/[0-9]"),
            Err(GlobError::Unsupported { character: '[', .. })
        ));
        assert!(matches!(
            Glob::new(&"x".repeat(201)),
            Err(GlobError::TooLong(_))
        ));
    }

    #[test]
    fn names_match_ignoring_case() {
        assert!(
            Glob::new("dependabot*")
                .expect("valid")
                .matches_ignoring_case("Dependabot[bot]")
        );
    }
}
