//! The house rules of the source tree that a reader relies on (issue 13), checked on the
//! sources themselves:
//! - inside each crate, no top-level module imports one that (directly or through others)
//!   imports it back, so each can be read knowing only those below it;
//! - in `fs-node`, no type name is defined twice, so no import needs an alias.
//!
//! References are read from the text: `crate::name` paths and `crate::{a, b}` groups, outside
//! comments and outside the `#[cfg(test)]` part of a file (tests may reach anywhere).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates' source roots, relative to the workspace root.
const CRATES: [&str; 6] = [
    "protocol/src",
    "fs-node/src",
    "cache-server/src",
    "cache-client/src",
    "cache-client/cli/src",
    "tests/src",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// Files a parent declares only for tests (`#[cfg(test)] mod name;`): not product code.
fn test_only_files(files: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(file).expect("read source");
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for pair in lines.windows(2) {
            let Some(decl) =
                pair[1].strip_prefix("mod ").or_else(|| pair[1].strip_prefix("pub mod "))
            else {
                continue;
            };
            let Some(name) = decl.strip_suffix(';') else { continue };
            if pair[0] != "#[cfg(test)]" {
                continue;
            }
            let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            let dir = file.parent().expect("parent");
            // `lib.rs`/`main.rs`/`mod.rs` declare children beside them; `a.rs` in `a/`.
            let base = if matches!(stem, "lib" | "main" | "mod") {
                dir.to_path_buf()
            } else {
                dir.join(stem)
            };
            out.insert(base.join(format!("{name}.rs")));
            out.insert(base.join(name).join("mod.rs"));
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The product part of a file: before its `#[cfg(test)]`, without comment lines.
fn product_text(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

fn ident_at(s: &str) -> Option<&str> {
    let end = s.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(s.len());
    (end > 0).then(|| &s[..end])
}

/// The top-level modules a file's product text names through `crate::`.
fn crate_refs(text: &str) -> BTreeSet<String> {
    let mut refs = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            // Only the first name of each item of the group is a module of the crate root.
            for item in group.split(',') {
                if let Some(name) = ident_at(item.trim()) {
                    refs.insert(name.to_string());
                }
            }
        } else if let Some(name) = ident_at(rest) {
            refs.insert(name.to_string());
        }
    }
    refs
}

/// The top-level module a file belongs to (`None` for the crate root and binaries).
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    match first.as_str() {
        "lib.rs" | "main.rs" | "bin" => None,
        _ => Some(first.trim_end_matches(".rs").to_string()),
    }
}

/// Module → the other top-level modules it imports.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let test_only = test_only_files(&files);
    files.retain(|f| !test_only.contains(f));
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(module) = top_module(src, file) else { continue };
        let text = std::fs::read_to_string(file).expect("read source");
        let refs = crate_refs(&product_text(&text));
        graph.entry(module.clone()).or_default().extend(refs.into_iter().filter(|r| *r != module));
    }
    // Names that are not modules (re-exported items used as `crate::Item`) are no edges.
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for targets in graph.values_mut() {
        targets.retain(|t| modules.contains(t));
    }
    graph
}

/// One cycle of the graph, if it has any (depth-first, three colours).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, done, path) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(node, graph, &mut done, &mut Vec::new()))
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let root = workspace();
    let mut loops = Vec::new();
    for src in CRATES {
        let graph = module_graph(&root.join(src));
        assert!(graph.len() >= 3, "{src}: found only {} modules; is the path right?", graph.len());
        if let Some(cycle) = find_cycle(&graph) {
            loops.push(format!("{src}: {}", cycle.join(" -> ")));
        }
    }
    assert!(loops.is_empty(), "import loops inside a crate:\n{}", loops.join("\n"));
}

#[test]
fn the_cycle_finder_sees_a_loop_through_three_modules() {
    let edges = [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")];
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, to) in edges {
        graph.entry(from.into()).or_default().insert(to.into());
        graph.entry(to.into()).or_default();
    }
    let cycle = find_cycle(&graph).expect("a -> b -> c -> a is a cycle");
    assert_eq!(cycle, ["a", "b", "c", "a"]);
    graph.get_mut("c").expect("c").remove("a");
    assert_eq!(find_cycle(&graph), None);
    let refs = crate_refs("use crate::x::Y;\nuse crate::{a::B, c};\nlet z = crate::d::e();");
    assert_eq!(refs.into_iter().collect::<Vec<_>>(), ["a", "c", "d", "x"]);
}

/// Type names defined in a file's product text: structs, enums and traits at any depth, and
/// type aliases at the top level (an indented `type` is an associated type).
fn defined_types(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indented = trimmed.len() != line.len();
        let mut words = trimmed.split_whitespace().peekable();
        while let Some(w) = words.peek() {
            if *w == "pub" || w.starts_with("pub(") {
                words.next();
            } else {
                break;
            }
        }
        let (Some(kind), Some(name)) = (words.next(), words.next()) else { continue };
        let counts = matches!(kind, "struct" | "enum" | "trait") || (kind == "type" && !indented);
        if let Some(name) = ident_at(name).filter(|_| counts) {
            names.push(name.to_string());
        }
    }
    names
}

#[test]
fn no_type_name_is_defined_twice_in_fs_node() {
    let src = workspace().join("fs-node/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let test_only = test_only_files(&files);
    files.retain(|f| !test_only.contains(f));
    assert!(
        test_only.contains(&src.join("replication/model.rs")),
        "the model check is declared for tests only; the scan of declarations missed it"
    );
    let mut homes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in &files {
        let text = product_text(&std::fs::read_to_string(file).expect("read source"));
        for name in defined_types(&text) {
            let rel = file.strip_prefix(&src).expect("under src").display().to_string();
            homes.entry(name).or_default().push(rel);
        }
    }
    assert!(homes.len() > 50, "found only {} type names", homes.len());
    let twice: Vec<String> = homes
        .iter()
        .filter(|(_, files)| files.len() > 1)
        .map(|(name, files)| format!("{name}: {}", files.join(", ")))
        .collect();
    assert!(
        twice.is_empty(),
        "type names defined more than once in fs-node:\n{}",
        twice.join("\n")
    );
    let sample = "pub struct A;\nenum B {}\n    type C = u8;\npub(crate) trait D {}\ntype E = ();";
    assert_eq!(defined_types(sample), ["A", "B", "D", "E"]);
}
