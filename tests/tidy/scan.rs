//! A small reader of our own Rust sources, enough for the tidy rules and no more: it lexes a
//! file into tokens (comments dropped, literals kept as single tokens, so a needle written in a
//! string or a comment is never code), marks the tokens of `#[cfg(test)] mod NAME { ... }`
//! blocks (brace-matched, so code after a test module is still code), expands every `use`
//! tree (`use a::{b, c::{d, e}}`) into whole paths, and resolves those and the qualified paths
//! written in code (`std::fs::read`, `crate::store::Store`) into crate paths (`crate::...`,
//! with `super::`, `self::`, child modules and imported names followed) or external ones
//! (`std::fs::read`).
//!
//! It must never need the compiler: it knows nothing of macros' expansions, `#[path]`, `include!`
//! or name resolution through glob imports; the rules built on it say so where it matters.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ident,
    Punct,
    /// A string, byte string, char or number literal; `text` holds a string's raw contents.
    Literal,
    Lifetime,
}

#[derive(Debug, Clone)]
pub struct Token {
    pub kind: Kind,
    pub text: String,
    /// 1-based.
    pub line: usize,
    /// Inside a `#[cfg(test)] mod` block, or in a file that is only compiled for tests.
    pub in_test: bool,
}

impl Token {
    pub fn is(&self, text: &str) -> bool {
        self.kind != Kind::Literal && self.text == text
    }
}

fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_ident_continue(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// Splits `text` into tokens. Comments vanish, literals become one token each.
pub fn lex(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut i = 0;
    let push = |tokens: &mut Vec<Token>, kind, text: String, line| {
        tokens.push(Token {
            kind,
            text,
            line,
            in_test: false,
        })
    };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if chars[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if is_ident_start(c) {
            let start = i;
            while i < chars.len() && is_ident_continue(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let here = chars.get(i).copied();
            let raw_prefix = matches!(word.as_str(), "r" | "br" | "cr");
            let plain_prefix = matches!(word.as_str(), "b" | "c");
            if raw_prefix && (here == Some('"') || here == Some('#')) {
                // r"..", r#".."#; `r#ident` is a raw identifier.
                let mut hashes = 0;
                let mut j = i;
                while chars.get(j) == Some(&'#') {
                    hashes += 1;
                    j += 1;
                }
                if chars.get(j) == Some(&'"') {
                    let (contents, end, lines) = raw_string(&chars, j + 1, hashes);
                    push(&mut tokens, Kind::Literal, contents, line);
                    line += lines;
                    i = end;
                } else if word == "r" && hashes == 1 {
                    let start = j;
                    let mut k = j;
                    while k < chars.len() && is_ident_continue(chars[k]) {
                        k += 1;
                    }
                    push(
                        &mut tokens,
                        Kind::Ident,
                        chars[start..k].iter().collect(),
                        line,
                    );
                    i = k;
                } else {
                    push(&mut tokens, Kind::Ident, word, line);
                }
            } else if plain_prefix && here == Some('"') {
                let (contents, end, lines) = quoted(&chars, i + 1, '"');
                push(&mut tokens, Kind::Literal, contents, line);
                line += lines;
                i = end;
            } else if word == "b" && here == Some('\'') {
                let (contents, end, lines) = quoted(&chars, i + 1, '\'');
                push(&mut tokens, Kind::Literal, contents, line);
                line += lines;
                i = end;
            } else {
                push(&mut tokens, Kind::Ident, word, line);
            }
        } else if c == '"' {
            let (contents, end, lines) = quoted(&chars, i + 1, '"');
            push(&mut tokens, Kind::Literal, contents, line);
            line += lines;
            i = end;
        } else if c == '\'' {
            // A char literal ('a', '\n', '\u{1F600}', '\'') or a lifetime ('a, 'static).
            if next == Some('\\') || chars.get(i + 2) == Some(&'\'') {
                let (contents, end, lines) = quoted(&chars, i + 1, '\'');
                push(&mut tokens, Kind::Literal, contents, line);
                line += lines;
                i = end;
            } else {
                let start = i + 1;
                let mut k = start;
                while k < chars.len() && is_ident_continue(chars[k]) {
                    k += 1;
                }
                push(
                    &mut tokens,
                    Kind::Lifetime,
                    chars[start..k].iter().collect(),
                    line,
                );
                i = k.max(i + 1);
            }
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len()
                && (is_ident_continue(chars[i])
                    || (chars[i] == '.'
                        && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())
                        && !chars[start..i].contains(&'.')))
            {
                i += 1;
            }
            push(
                &mut tokens,
                Kind::Literal,
                chars[start..i].iter().collect(),
                line,
            );
        } else if c == ':' && next == Some(':') {
            push(&mut tokens, Kind::Punct, "::".to_string(), line);
            i += 2;
        } else {
            push(&mut tokens, Kind::Punct, c.to_string(), line);
            i += 1;
        }
    }
    tokens
}

/// Reads a literal closed by `close`, honouring backslash escapes. Returns the contents, the
/// index after the closing quote and the number of newlines inside.
fn quoted(chars: &[char], mut i: usize, close: char) -> (String, usize, usize) {
    let start = i;
    let mut lines = 0;
    while i < chars.len() && chars[i] != close {
        if chars[i] == '\\' {
            if chars.get(i + 1) == Some(&'\n') {
                lines += 1;
            }
            i += 2;
            continue;
        }
        if chars[i] == '\n' {
            lines += 1;
        }
        i += 1;
    }
    let end = i.min(chars.len());
    (chars[start..end].iter().collect(), end + 1, lines)
}

fn raw_string(chars: &[char], mut i: usize, hashes: usize) -> (String, usize, usize) {
    let start = i;
    let mut lines = 0;
    while i < chars.len() {
        if chars[i] == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#')) {
            let contents = chars[start..i].iter().collect();
            return (contents, i + 1 + hashes, lines);
        }
        if chars[i] == '\n' {
            lines += 1;
        }
        i += 1;
    }
    (chars[start..].iter().collect(), chars.len(), lines)
}

/// The index of the token closing the group opened at `open` (`{`, `(` or `[`).
pub fn matching(tokens: &[Token], open: usize) -> usize {
    let mut depth = 0usize;
    for (index, token) in tokens.iter().enumerate().skip(open) {
        if token.kind != Kind::Punct {
            continue;
        }
        match token.text.as_str() {
            "{" | "(" | "[" => depth += 1,
            "}" | ")" | "]" => {
                depth -= 1;
                if depth == 0 {
                    return index;
                }
            }
            _ => {}
        }
    }
    tokens.len().saturating_sub(1)
}

fn seq(tokens: &[Token], at: usize, texts: &[&str]) -> bool {
    texts
        .iter()
        .enumerate()
        .all(|(k, text)| tokens.get(at + k).is_some_and(|token| token.is(text)))
}

/// Skips `#[...]` attributes and a `pub`/`pub(...)` starting at `at`.
fn skip_attributes_and_visibility(tokens: &[Token], mut at: usize) -> usize {
    loop {
        if seq(tokens, at, &["#", "["]) {
            at = matching(tokens, at + 1) + 1;
        } else if tokens.get(at).is_some_and(|t| t.is("pub")) {
            at += 1;
            if tokens.get(at).is_some_and(|t| t.is("(")) {
                at = matching(tokens, at) + 1;
            }
        } else {
            return at;
        }
    }
}

/// Marks the tokens of every `#[cfg(test)] mod NAME { ... }` as test code and returns the
/// names of `#[cfg(test)] mod NAME;` declarations (files that are test code as a whole).
pub fn mark_test_modules(tokens: &mut [Token]) -> Vec<String> {
    let mut test_files = Vec::new();
    let mut at = 0;
    while at < tokens.len() {
        if seq(tokens, at, &["#", "[", "cfg", "(", "test", ")", "]"]) {
            let item = skip_attributes_and_visibility(tokens, at + 7);
            if tokens.get(item).is_some_and(|t| t.is("mod"))
                && tokens.get(item + 1).is_some_and(|t| t.kind == Kind::Ident)
            {
                if tokens.get(item + 2).is_some_and(|t| t.is("{")) {
                    let close = matching(tokens, item + 2);
                    for token in &mut tokens[at..=close] {
                        token.in_test = true;
                    }
                    at = close + 1;
                    continue;
                }
                if tokens.get(item + 2).is_some_and(|t| t.is(";")) {
                    test_files.push(tokens[item + 1].text.clone());
                }
            }
        }
        at += 1;
    }
    test_files
}

/// Whether the identifier at `at` is the middle of a path already read (`.field`, the
/// `new` of `Vec::<u8>::new`) rather than the start of one (`::std::fs`, `std::fs`).
fn continues_a_path(tokens: &[Token], at: usize) -> bool {
    let previous = |back: usize| at.checked_sub(back).and_then(|k| tokens.get(k));
    match previous(1) {
        Some(token) if token.is(".") => true,
        Some(token) if token.is("::") => {
            previous(2).is_some_and(|t| t.kind == Kind::Ident || t.is(">"))
        }
        _ => false,
    }
}

/// One `use` leaf, before resolution.
#[derive(Debug, Clone)]
pub struct UseLeaf {
    pub segments: Vec<String>,
    /// The name it brings into scope (`as` alias or last segment); `None` for a glob.
    pub name: Option<String>,
    pub line: usize,
}

/// Expands the use tree starting at `at` (just after `use`). Returns the index of its `;`.
pub fn parse_use(tokens: &[Token], at: usize, out: &mut Vec<UseLeaf>) -> usize {
    let mut at = at;
    if tokens.get(at).is_some_and(|t| t.is("::")) {
        at += 1;
    }
    parse_tree(tokens, &mut at, Vec::new(), out);
    while at < tokens.len() && !tokens[at].is(";") {
        at += 1;
    }
    at
}

fn parse_tree(tokens: &[Token], at: &mut usize, mut prefix: Vec<String>, out: &mut Vec<UseLeaf>) {
    loop {
        let Some(token) = tokens.get(*at) else { return };
        if token.is("{") {
            *at += 1;
            loop {
                match tokens.get(*at) {
                    None => return,
                    Some(t) if t.is("}") => {
                        *at += 1;
                        return;
                    }
                    Some(t) if t.is(",") => *at += 1,
                    Some(_) => {
                        let before = *at;
                        parse_tree(tokens, at, prefix.clone(), out);
                        if *at == before {
                            *at += 1;
                        }
                    }
                }
            }
        }
        if token.is("*") {
            *at += 1;
            out.push(UseLeaf {
                segments: prefix,
                name: None,
                line: token.line,
            });
            return;
        }
        if token.kind != Kind::Ident {
            return;
        }
        *at += 1;
        if tokens.get(*at).is_some_and(|t| t.is("::")) {
            *at += 1;
            prefix.push(token.text.clone());
            continue;
        }
        let mut segments = prefix;
        if token.text != "self" || segments.is_empty() {
            segments.push(token.text.clone());
        }
        let mut name = segments.last().cloned();
        if tokens.get(*at).is_some_and(|t| t.is("as")) {
            name = tokens.get(*at + 1).map(|t| t.text.clone());
            *at += 2;
        }
        out.push(UseLeaf {
            segments,
            name,
            line: token.line,
        });
        return;
    }
}

/// Where a resolved path points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An item of this crate: module path plus item, without `crate`.
    Crate(Vec<String>),
    /// An item of another crate (`std`, `tokio`, ...): the whole path.
    Extern(Vec<String>),
}

/// A path found in a file, resolved.
#[derive(Debug, Clone)]
pub struct PathRef {
    pub target: Target,
    pub line: usize,
    pub in_test: bool,
    /// As written, for messages.
    pub written: String,
}

impl PathRef {
    pub fn crate_path(&self) -> Option<&[String]> {
        match &self.target {
            Target::Crate(path) => Some(path),
            Target::Extern(_) => None,
        }
    }

    pub fn extern_path(&self) -> Option<&[String]> {
        match &self.target {
            Target::Extern(path) => Some(path),
            Target::Crate(_) => None,
        }
    }

    /// Its full spelling: `crate::a::b` or `std::fs`.
    pub fn full(&self) -> String {
        match &self.target {
            Target::Crate(path) => format!("crate::{}", path.join("::")),
            Target::Extern(path) => path.join("::"),
        }
    }
}

/// One source file under `src/`.
#[derive(Debug)]
pub struct SourceFile {
    /// Relative to `src/`, with `/` separators.
    pub path: String,
    /// Its module path in the crate (`["upgrade", "campaign"]`); `["main"]` for `main.rs`.
    pub module: Vec<String>,
    pub text: String,
    pub tokens: Vec<Token>,
    /// `#[cfg(test)] mod NAME;` declarations.
    pub test_children: Vec<String>,
    /// Names re-exported by `pub use` (any `pub`), by module path: name → resolved target.
    pub exports: BTreeMap<Vec<String>, BTreeMap<String, Target>>,
    /// Every resolved `use` leaf and qualified path in code.
    pub paths: Vec<PathRef>,
}

/// The module path a file under `src/` defines.
pub fn module_of(path: &str) -> Vec<String> {
    let stem = path.strip_suffix(".rs").unwrap_or(path);
    let stem = stem.strip_suffix("/mod").unwrap_or(stem);
    if stem == "lib" {
        return Vec::new();
    }
    stem.split('/').map(str::to_string).collect()
}

/// The crates a path may start with besides our own.
pub fn extern_crates(cargo_toml: &str) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = ["std", "core", "alloc", "proc_macro", "test"]
        .into_iter()
        .map(str::to_string)
        .collect();
    let mut in_dependencies = false;
    for line in cargo_toml.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_dependencies = line.ends_with("dependencies]");
            continue;
        }
        if !in_dependencies {
            continue;
        }
        if let Some((name, _)) = line.split_once('=') {
            let name = name.trim().replace('-', "_");
            if !name.is_empty() && !name.starts_with('#') {
                names.insert(name);
            }
        }
    }
    names
}

/// The name under which `main.rs` reaches the library.
pub const LIBRARY_CRATE: &str = "bitbucket_slack";

struct Resolver<'a> {
    externs: &'a BTreeSet<String>,
    top_level: &'a BTreeSet<String>,
    children: &'a BTreeMap<Vec<String>, BTreeSet<String>>,
    aliases: &'a BTreeMap<Vec<String>, BTreeMap<String, Target>>,
    in_main: bool,
}

impl Resolver<'_> {
    /// Resolves `segments` written in module `module`. `None` when it cannot be placed yet.
    fn resolve(&self, module: &[String], segments: &[String], in_use: bool) -> Option<Target> {
        let first = segments.first()?.as_str();
        let rest = &segments[1..];
        let crate_root: Vec<String> = if self.in_main {
            vec!["main".to_string()]
        } else {
            Vec::new()
        };
        match first {
            "crate" => Some(Target::Crate([crate_root, rest.to_vec()].concat())),
            "self" | "Self" => Some(Target::Crate([module, rest].concat())),
            "super" => {
                let mut base = module.to_vec();
                let mut rest = segments;
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop();
                    rest = &rest[1..];
                }
                Some(Target::Crate([base.as_slice(), rest].concat()))
            }
            _ if self.in_main && first == LIBRARY_CRATE => Some(Target::Crate(rest.to_vec())),
            _ if self
                .children
                .get(module)
                .is_some_and(|names| names.contains(first))
                || (module.is_empty() && self.top_level.contains(first)) =>
            {
                Some(Target::Crate([module, segments].concat()))
            }
            _ => {
                // A name imported by `use` here or in an enclosing module of the same file.
                for depth in (0..=module.len()).rev() {
                    if let Some(target) = self
                        .aliases
                        .get(&module[..depth])
                        .and_then(|names| names.get(first))
                    {
                        return Some(match target {
                            Target::Crate(path) => Target::Crate([path, rest].concat()),
                            Target::Extern(path) => Target::Extern([path, rest].concat()),
                        });
                    }
                }
                if self.externs.contains(first) {
                    Some(Target::Extern(segments.to_vec()))
                } else if in_use {
                    None
                } else {
                    // A type, variant or primitive of this module's scope (`Self`, `u64::MAX`,
                    // `Command::Help`): an item of this module as far as layering goes.
                    Some(Target::Crate([module, segments].concat()))
                }
            }
        }
    }
}

/// A `use` leaf or a code path, with the module it was written in.
struct Pending {
    module: Vec<String>,
    segments: Vec<String>,
    name: Option<String>,
    line: usize,
    in_test: bool,
    in_use: bool,
    /// A leaf of a `pub use`: a name other modules can reach.
    exported: bool,
}

/// Whether the `use` at `at` is preceded by `pub` or `pub(...)`.
fn is_pub_use(tokens: &[Token], at: usize) -> bool {
    let before = |back: usize| at.checked_sub(back).and_then(|k| tokens.get(k));
    before(1).is_some_and(|t| t.is("pub"))
        || (before(1).is_some_and(|t| t.is(")"))
            && (2..=5).any(|back| {
                before(back).is_some_and(|t| t.is("("))
                    && before(back + 1).is_some_and(|t| t.is("pub"))
            }))
}

impl SourceFile {
    /// Reads one file. `path` is relative to `src/`.
    pub fn parse(
        path: &str,
        text: &str,
        externs: &BTreeSet<String>,
        top_level: &BTreeSet<String>,
    ) -> SourceFile {
        let mut tokens = lex(text);
        let test_children = mark_test_modules(&mut tokens);
        let in_main = path == "main.rs";
        let module = if in_main {
            vec!["main".to_string()]
        } else {
            module_of(path)
        };

        // One walk: module nesting, `mod` declarations, `use` trees and qualified paths.
        let mut children: BTreeMap<Vec<String>, BTreeSet<String>> = BTreeMap::new();
        let mut pending = Vec::new();
        let mut stack: Vec<(Vec<String>, usize)> = vec![(module.clone(), 0)];
        let mut depth = 0usize;
        let mut at = 0;
        while at < tokens.len() {
            let current = stack.last().map(|(m, _)| m.clone()).unwrap_or_default();
            let token = &tokens[at];
            if token.is("{") {
                depth += 1;
            } else if token.is("}") {
                depth = depth.saturating_sub(1);
                while stack.len() > 1 && stack.last().is_some_and(|(_, d)| *d > depth) {
                    stack.pop();
                }
            } else if token.is("mod") && tokens.get(at + 1).is_some_and(|t| t.kind == Kind::Ident) {
                let name = tokens[at + 1].text.clone();
                children
                    .entry(current.clone())
                    .or_default()
                    .insert(name.clone());
                if tokens.get(at + 2).is_some_and(|t| t.is("{")) {
                    depth += 1;
                    stack.push(([current.as_slice(), &[name]].concat(), depth));
                    at += 3;
                    continue;
                }
            } else if token.is("use") {
                let in_test = token.in_test;
                let exported = is_pub_use(&tokens, at);
                let mut leaves = Vec::new();
                let end = parse_use(&tokens, at + 1, &mut leaves);
                for leaf in leaves {
                    pending.push(Pending {
                        module: current.clone(),
                        segments: leaf.segments,
                        name: leaf.name,
                        line: leaf.line,
                        in_test,
                        in_use: true,
                        exported,
                    });
                }
                at = end + 1;
                continue;
            } else if token.kind == Kind::Ident
                && tokens.get(at + 1).is_some_and(|t| t.is("::"))
                && tokens
                    .get(at + 2)
                    .is_some_and(|t| t.kind == Kind::Ident || t.is("{") || t.is("*"))
                && !continues_a_path(&tokens, at)
            {
                let mut segments = vec![token.text.clone()];
                let mut k = at + 1;
                while tokens.get(k).is_some_and(|t| t.is("::"))
                    && tokens.get(k + 1).is_some_and(|t| t.kind == Kind::Ident)
                {
                    segments.push(tokens[k + 1].text.clone());
                    k += 2;
                }
                pending.push(Pending {
                    module: current.clone(),
                    segments,
                    name: None,
                    line: token.line,
                    in_test: token.in_test,
                    in_use: false,
                    exported: false,
                });
                at = k;
                continue;
            }
            at += 1;
        }

        // Resolve `use` leaves first (they may refer to one another), then code paths.
        let mut aliases: BTreeMap<Vec<String>, BTreeMap<String, Target>> = BTreeMap::new();
        let mut exports: BTreeMap<Vec<String>, BTreeMap<String, Target>> = BTreeMap::new();
        let mut resolved: Vec<Option<Target>> = vec![None; pending.len()];
        for _round in 0..4 {
            for (index, item) in pending.iter().enumerate() {
                if !item.in_use || resolved[index].is_some() {
                    continue;
                }
                let resolver = Resolver {
                    externs,
                    top_level,
                    children: &children,
                    aliases: &aliases,
                    in_main,
                };
                if let Some(target) = resolver.resolve(&item.module, &item.segments, true) {
                    if let Some(name) = item.name.as_ref().filter(|name| *name != "_") {
                        aliases
                            .entry(item.module.clone())
                            .or_default()
                            .insert(name.clone(), target.clone());
                        if item.exported {
                            exports
                                .entry(item.module.clone())
                                .or_default()
                                .insert(name.clone(), target.clone());
                        }
                    }
                    resolved[index] = Some(target);
                }
            }
        }
        let resolver = Resolver {
            externs,
            top_level,
            children: &children,
            aliases: &aliases,
            in_main,
        };
        let mut paths = Vec::new();
        for (index, item) in pending.iter().enumerate() {
            let target = match resolved[index].take() {
                Some(target) => Some(target),
                // A use leaf nothing placed: a local item (`use Kind::*`) or a crate we do
                // not know; it is treated as an item of this module.
                None if item.in_use => Some(Target::Crate(
                    [item.module.as_slice(), &item.segments].concat(),
                )),
                None => resolver.resolve(&item.module, &item.segments, false),
            };
            if let Some(target) = target {
                paths.push(PathRef {
                    target,
                    line: item.line,
                    in_test: item.in_test,
                    written: item.segments.join("::"),
                });
            }
        }

        SourceFile {
            path: path.to_string(),
            module,
            text: text.to_string(),
            tokens,
            test_children,
            exports,
            paths,
        }
    }

    /// The top-level module this file belongs to (`app`, `slack`, `config`, `main`, `lib`).
    pub fn top_level(&self) -> String {
        self.module
            .first()
            .cloned()
            .unwrap_or_else(|| "lib".to_string())
    }
}

/// Every file of the crate, read together so that test-only files and re-exports are known.
#[derive(Debug)]
pub struct Crate {
    pub files: Vec<SourceFile>,
}

impl Crate {
    /// `sources`: (path relative to `src/`, text). `externs`: crate names a path may start with.
    pub fn new(sources: Vec<(String, String)>, externs: &BTreeSet<String>) -> Crate {
        let top_level: BTreeSet<String> = sources
            .iter()
            .filter_map(|(path, _)| module_of(path).first().cloned())
            .filter(|name| name != "main")
            .collect();
        let mut files: Vec<SourceFile> = sources
            .iter()
            .map(|(path, text)| SourceFile::parse(path, text, externs, &top_level))
            .collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));

        // A file declared by `#[cfg(test)] mod NAME;` (and everything below it) is test code.
        let mut test_modules: Vec<Vec<String>> = Vec::new();
        for file in &files {
            for child in &file.test_children {
                test_modules.push([file.module.as_slice(), std::slice::from_ref(child)].concat());
            }
        }
        for file in &mut files {
            if test_modules
                .iter()
                .any(|module| file.module.starts_with(module))
            {
                for token in &mut file.tokens {
                    token.in_test = true;
                }
                for path in &mut file.paths {
                    path.in_test = true;
                }
            }
        }

        let mut krate = Crate { files };
        krate.follow_reexports();
        krate
    }

    /// Rewrites `crate::bitbucket::RepositoryName` into `crate::bitbucket::name::RepositoryName`
    /// when `bitbucket/mod.rs` re-exports it (`pub use`), so a path names the file that
    /// defines the item. Private imports are not followed: a function and an imported module
    /// may share a name.
    fn follow_reexports(&mut self) {
        let mut aliases: BTreeMap<Vec<String>, BTreeMap<String, Target>> = BTreeMap::new();
        for file in &self.files {
            for (module, names) in &file.exports {
                aliases
                    .entry(module.clone())
                    .or_default()
                    .extend(names.clone());
            }
        }
        for file in &mut self.files {
            for path in &mut file.paths {
                for _hop in 0..6 {
                    let Target::Crate(segments) = &path.target else {
                        break;
                    };
                    let hit = (0..segments.len()).rev().find_map(|split| {
                        aliases
                            .get(&segments[..split])
                            .and_then(|names| names.get(&segments[split]))
                            .map(|target| (split, target.clone()))
                    });
                    let Some((split, target)) = hit else { break };
                    let rest = segments[split + 1..].to_vec();
                    let next = match target {
                        Target::Crate(base) => Target::Crate([base, rest].concat()),
                        Target::Extern(base) => Target::Extern([base, rest].concat()),
                    };
                    if next == path.target {
                        break;
                    }
                    path.target = next;
                }
            }
        }
    }

    /// The file defining the module (or item) at crate path `path`: the longest module prefix
    /// that is a file.
    pub fn owner(&self, path: &[String]) -> Option<&SourceFile> {
        (0..=path.len()).rev().find_map(|len| {
            self.files
                .iter()
                .find(|file| file.path != "main.rs" && file.module == path[..len])
        })
    }
}
