//! The layers of `kopf-cli/src`, as Kopf's `.importlinter` "layers" contract states its
//! own: a module may use (`crate::...`) the modules of lower layers, never those of
//! higher ones, so the picture of the engine stays true as it grows.
//!
//! Every `kopf-cli/src/**/*.rs` is read; comments are skipped (a doc link is no import).
//! Modules of one layer may not use each other, except for the pairs in [`SIBLINGS`].
//! Inside a module, its files (other than `mod.rs`, which declares them) may not use each
//! other in a circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, top to bottom; each names the top-level modules of `kopf-cli/src`
/// (`main` is the binary's `main.rs`, which reaches the library as `kopf_cli::`).
const LAYERS: &[(&str, &[&str])] = &[
    ("the binary's edges", &["main", "cli", "commands"]),
    ("embedding", &["embedded"]),
    ("the operator", &["operator"]),
    (
        "the operator's parts",
        &["peering", "admission", "reactor", "engines"],
    ),
    ("what the parts share", &["contexts"]),
    // Kopf's `actions`: one way to invoke a handler and apply its outcome.
    ("actions", &["actions"]),
    (
        "meaning and storage",
        &["intents", "persistence", "clients", "plugin"],
    ),
    ("inputs", &["options", "signals", "settings"]),
    ("observability", &["observability"]),
    ("plain data", &["structs"]),
];

/// Uses allowed between modules of one layer: `(user, used)`, one direction only.
const SIBLINGS: &[(&str, &str)] = &[
    // The edges: the command line names the subcommands' arguments.
    ("main", "cli"),
    ("main", "commands"),
    ("cli", "commands"),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, modules)| modules.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// The code without comments (line, doc and block comments); string literals are kept
/// but cannot start a comment.
fn strip_comments(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut in_string = false;
    while i < bytes.len() {
        let c = bytes[i];
        if in_string {
            if c == b'\\' {
                i += 2;
                continue;
            }
            if c == b'"' {
                in_string = false;
            }
            i += 1;
            continue;
        }
        if c == b'"' {
            in_string = true;
            i += 1;
        } else if text[i..].starts_with("//") {
            i = text[i..].find('\n').map_or(bytes.len(), |n| i + n);
        } else if text[i..].starts_with("/*") {
            i = text[i..].find("*/").map_or(bytes.len(), |n| i + n + 2);
        } else {
            // Safe to slice: `i` only ever stops at ASCII bytes or char boundaries.
            let ch = text[i..].chars().next().expect("a char");
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// The top-level modules a file uses through `prefix` (`crate::` or `kopf_cli::`),
/// with the text of each use (for the failure message).
fn used_modules(code: &str, prefix: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut rest = code;
    let mut offset = 0;
    while let Some(at) = rest.find(prefix) {
        let start = offset + at;
        let before = code[..start].chars().next_back();
        let after = start + prefix.len();
        offset = after;
        rest = &code[after..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let tail = &code[after..];
        if let Some(group) = tail.strip_prefix('{') {
            // `crate::{a::b, c::{d, e}}`: the first name of each top-level item.
            let mut depth = 1;
            let mut item = String::new();
            for (n, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 || (depth == 1 && c == ',') {
                    push_first_name(&item, &mut found, &code[start..after + 1 + n + 1]);
                    item.clear();
                    if depth == 0 {
                        break;
                    }
                } else {
                    item.push(c);
                }
            }
        } else {
            let name: String = tail
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let text: String = code[start..]
                .chars()
                .take_while(|c| !matches!(c, ';' | '(' | ')' | ',' | '\n' | '{' | ' '))
                .collect();
            found.push((name, text));
        }
    }
    found
}

fn push_first_name(item: &str, found: &mut Vec<(String, String)>, text: &str) {
    let name: String = item
        .trim_start_matches(|c: char| c.is_whitespace() || c == '{')
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if !name.is_empty() {
        found.push((name, text.split_whitespace().collect::<Vec<_>>().join(" ")));
    }
}

/// `(file, module, used module, the use)` for every use of another module in `src`.
fn edges() -> Vec<(String, String, String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 20, "kopf-cli/src has {} files?", files.len());
    let mut edges = Vec::new();
    for path in files {
        let relative = path.strip_prefix(&src).expect("under src");
        let file = format!("kopf-cli/src/{}", relative.display());
        let first = relative
            .components()
            .next()
            .expect("a component")
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if first == "lib" {
            continue; // Declares the modules; uses none.
        }
        let text = std::fs::read_to_string(&path).expect("readable source");
        let code = strip_comments(&text);
        let prefix = if first == "main" { "kopf_cli::" } else { "crate::" };
        for (used, import) in used_modules(&code, prefix) {
            if used != first {
                edges.push((file.clone(), first.clone(), used, import));
            }
        }
    }
    edges
}

#[test]
fn every_module_has_a_layer() {
    let mut unknown = BTreeMap::new();
    for (file, module, used, _) in edges() {
        for name in [module, used] {
            if layer_of(&name).is_none() {
                unknown.entry(name).or_insert(file.clone());
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "modules without a layer in kopf-cli/tests/layers.rs (add them to LAYERS): {unknown:?}"
    );
}

#[test]
fn modules_use_only_lower_layers() {
    let mut violations = Vec::new();
    for (file, module, used, import) in edges() {
        let (Some(from), Some(to)) = (layer_of(&module), layer_of(&used)) else {
            continue; // Reported by `every_module_has_a_layer`.
        };
        let allowed = from < to || (from == to && SIBLINGS.contains(&(module.as_str(), used.as_str())));
        if !allowed {
            let what = if from == to {
                "a sibling in its layer"
            } else {
                "a higher layer"
            };
            violations.push(format!(
                "{file}: `{import}`: `{module}` ({}) uses `{used}` ({}), {what}",
                LAYERS[from].0, LAYERS[to].0
            ));
        }
    }
    assert!(
        violations.is_empty(),
        "imports against the layers (kopf-cli/tests/layers.rs):\n{}",
        violations.join("\n")
    );
}

#[test]
fn siblings_are_one_way() {
    for (a, b) in SIBLINGS {
        assert_eq!(layer_of(a), layer_of(b), "{a} and {b} are not in one layer");
        assert!(
            !SIBLINGS.contains(&(b, a)),
            "{a} and {b} may not use each other both ways"
        );
    }
}

/// `file -> sibling files it uses` for the files of every directory of `src` except
/// `mod.rs` (through `super::x` or `crate::<dir path>::x`, `x` being a sibling's name).
fn sibling_edges() -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for path in &files {
        let (Some(dir), Some(stem)) = (path.parent(), path.file_stem()) else {
            continue;
        };
        if dir == src || stem == "mod" {
            continue;
        }
        let module_path: Vec<String> = dir
            .strip_prefix(&src)
            .expect("under src")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let code = strip_comments(&std::fs::read_to_string(path).expect("readable source"));
        // Unit tests (at the end of a file, by the project's habit) may use any sibling.
        let code = code.split("#[cfg(test)]").next().unwrap_or_default();
        let through_crate = format!("crate::{}::", module_path.join("::"));
        for (name, _) in used_modules(code, "super::")
            .into_iter()
            .chain(used_modules(code, &through_crate))
        {
            let sibling = dir.join(format!("{name}.rs"));
            if name != stem.to_string_lossy() && files.contains(&sibling) {
                edges.entry(path.clone()).or_default().insert(sibling);
            }
        }
    }
    edges
}

#[test]
fn the_files_of_a_module_use_each_other_one_way() {
    let edges = sibling_edges();
    // A file that reaches itself again through the uses of its siblings is in a circle.
    let mut circles = Vec::new();
    for start in edges.keys() {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&PathBuf> = edges[start].iter().collect();
        while let Some(file) = todo.pop() {
            if file == start {
                circles.push(start.display().to_string());
                break;
            }
            if seen.insert(file) {
                todo.extend(edges.get(file).into_iter().flatten());
            }
        }
    }
    assert!(
        circles.is_empty(),
        "files in import circles with their siblings (move what they share into one of them): {circles:?}"
    );
}

#[test]
fn the_parser_sees_groups_and_paths() {
    let code = strip_comments(
        "use crate::{a::b, c::{d, e}};\n// crate::not_this\nfn f() { crate::g::h(); }\nlet s = \"// x\"; crate::i::j;",
    );
    let names: Vec<String> = used_modules(&code, "crate::")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["a", "c", "g", "i"]);
}
