//! The binary crate's layers, read from its source: which top-level module (`api`, `state`,
//! `worker`, …) names which through `crate::` paths. Arrows only point down: no module reaches
//! back up to one that uses it, and the front ends sit above the operations they share.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Modules that must never name the ones listed: the HTTP front ends and the wiring above
/// them are out of reach of what they call.
const NEVER: &[(&str, &[&str])] = &[
    ("operations", &["api", "console", "consumers", "app"]),
    (
        "state",
        &["api", "console", "consumers", "operations", "app"],
    ),
    (
        "sources",
        &["api", "console", "consumers", "operations", "state", "app"],
    ),
    ("consumers", &["api", "console", "app"]),
    ("api", &["console", "app"]),
    ("console", &["app"]),
    ("worker", &["api", "console", "operations", "state", "app"]),
    ("error", &["api", "console", "operations", "state", "app"]),
];

#[test]
fn operations_never_import_api_or_console_and_no_module_imports_one_above_it() {
    let graph = module_graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    for module in ["api", "console", "operations", "state", "app", "error"] {
        assert!(graph.contains_key(module), "no module `{module}` found");
    }
    for (module, forbidden) in NEVER {
        let uses = &graph[*module];
        for above in *forbidden {
            assert!(
                !uses.contains(*above),
                "`{module}` imports `{above}`, a layer above it (it uses {uses:?})"
            );
        }
    }
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "modules import each other in a circle: {}",
            cycle.join(" -> ")
        );
    }
}

#[test]
fn the_reader_finds_grouped_and_inline_paths_and_ignores_comments() {
    let text = "use crate::{api::x, state::{AppState, Shared}};\n\
                // crate::console::nothing\n\
                /// see crate::app\n\
                fn f() { crate::bus::Bus::local(); }\n";
    let names: BTreeSet<String> = crate_names(text).into_iter().collect();
    assert_eq!(
        names,
        BTreeSet::from(["api".into(), "state".into(), "bus".into()])
    );
}

/// Each top-level module (a file `x.rs` or a folder `x/`) and the top-level modules it names.
fn module_graph(src: &Path) -> Graph {
    let mut graph = Graph::new();
    for file in rust_files(src) {
        let relative = file.strip_prefix(src).expect("under src");
        let first = relative
            .components()
            .next()
            .expect("a path")
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if first == "lib" || first == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("readable source");
        let uses = graph.entry(first.clone()).or_default();
        uses.extend(crate_names(&text).into_iter().filter(|n| *n != first));
    }
    graph
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("readable folder") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The first segment of every `crate::` path, grouped imports (`crate::{a::x, b}`) included;
/// comments are skipped.
fn crate_names(text: &str) -> Vec<String> {
    let code: String = text
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut names = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut end = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    end = i;
                    break;
                }
            }
            let mut depth = 0;
            let mut item = String::new();
            for c in group[..end].chars().chain([',']) {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        names.extend(first_segment(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
        } else {
            names.extend(first_segment(rest));
        }
    }
    names
}

fn first_segment(path: &str) -> Option<String> {
    let name: String = path
        .trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty() && name != "self").then_some(name)
}

/// A circle of imports, if there is one (depth-first search).
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}
