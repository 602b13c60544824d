//! No module of any crate of the workspace imports, directly or through others, a module that
//! imports it back: dependencies point one way (front-ends → facade → sources → core), so a
//! reader can follow them from the bottom up.
//!
//! The check reads every `crates/*/src/**/*.rs` as text: comments and literals are dropped,
//! inline modules (`mod tests { … }`) are tracked, and every path that starts with `crate::`,
//! `super::` or `self::` (also inside `use … ::{…}` groups) is an edge from the file's module
//! to the deepest module file it names. The crate root is left out: it declares the modules
//! and re-exports the facade. A cycle fails the test and is printed.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

type Module = Vec<String>;

/// The source with comments, string and char literals removed (lifetimes kept).
fn strip(src: &str) -> String {
    let b: Vec<char> = src.chars().collect();
    let (mut out, mut i) = (String::new(), 0);
    let at = |i: usize, s: &str| s.chars().enumerate().all(|(k, c)| b.get(i + k) == Some(&c));
    while i < b.len() {
        let ident_before = i > 0 && (b[i - 1].is_alphanumeric() || b[i - 1] == '_');
        if at(i, "//") {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if at(i, "/*") {
            let mut depth = 0;
            loop {
                if at(i, "/*") {
                    depth += 1;
                    i += 2;
                } else if at(i, "*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else if i >= b.len() {
                    break;
                } else {
                    i += 1;
                }
            }
        } else if b[i] == 'r' && !ident_before && matches!(b.get(i + 1), Some('"' | '#')) {
            let hashes = b[i + 1..].iter().take_while(|&&c| c == '#').count();
            if b.get(i + 1 + hashes) != Some(&'"') {
                out.push(b[i]);
                i += 1;
                continue;
            }
            let end: String = std::iter::once('"')
                .chain("#".repeat(hashes).chars())
                .collect();
            i += 2 + hashes;
            while i < b.len() && !at(i, &end) {
                i += 1;
            }
            i += end.len();
            out.push_str("\"\"");
        } else if b[i] == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                i += if b[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == '\'' && b.get(i + 1) == Some(&'\\') {
            i += 2;
            while i < b.len() && b[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else if b[i] == '\'' && b.get(i + 2) == Some(&'\'') {
            i += 3;
            out.push_str("' '");
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Identifiers, `::` and single punctuation characters.
fn tokens(src: &str) -> Vec<String> {
    let b: Vec<char> = src.chars().collect();
    let (mut out, mut i) = (Vec::new(), 0);
    while i < b.len() {
        let c = b[i];
        if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                i += 1;
            }
            out.push(b[start..i].iter().collect());
        } else if c == ':' && b.get(i + 1) == Some(&':') {
            out.push("::".into());
            i += 2;
        } else {
            if !c.is_whitespace() {
                out.push(c.to_string());
            }
            i += 1;
        }
    }
    out
}

fn is_ident(t: &str) -> bool {
    t.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// Parses the path whose first segment is at `toks[*i]` (after a `::`), appending every full
/// path it names to `out` (a `{…}` group names one path per item).
fn path(toks: &[String], i: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let mut segs = prefix;
    loop {
        match toks.get(*i).map(String::as_str) {
            Some("{") => {
                *i += 1;
                while let Some(t) = toks.get(*i) {
                    match t.as_str() {
                        "}" => {
                            *i += 1;
                            return;
                        }
                        "," => *i += 1,
                        t if is_ident(t) => path(toks, i, segs.clone(), out),
                        _ => *i += 1,
                    }
                }
                return;
            }
            Some(t) if is_ident(t) => {
                segs.push(t.to_string());
                *i += 1;
                if toks.get(*i).map(String::as_str) == Some("::") {
                    *i += 1;
                } else {
                    break;
                }
            }
            _ => break,
        }
    }
    out.push(segs);
}

/// The modules a file's code names, as paths from the crate root.
fn named_paths(file_module: &Module, src: &str) -> Vec<Module> {
    let toks = tokens(&strip(src));
    let (mut depth, mut inline, mut out) = (0usize, Vec::<(String, usize)>::new(), Vec::new());
    let mut i = 0;
    while i < toks.len() {
        let t = toks[i].as_str();
        let next = toks.get(i + 1).map(String::as_str);
        if t == "mod"
            && next.is_some_and(is_ident)
            && toks.get(i + 2).map(String::as_str) == Some("{")
        {
            depth += 1;
            inline.push((toks[i + 1].clone(), depth));
            i += 3;
        } else if t == "{" {
            depth += 1;
            i += 1;
        } else if t == "}" {
            if inline.last().is_some_and(|(_, d)| *d == depth) {
                inline.pop();
            }
            depth = depth.saturating_sub(1);
            i += 1;
        } else if matches!(t, "crate" | "super" | "self") && next == Some("::") {
            let here: Module = file_module
                .iter()
                .cloned()
                .chain(inline.iter().map(|(m, _)| m.clone()))
                .collect();
            let mut base = match t {
                "crate" => Vec::new(),
                "self" => here,
                _ => here[..here.len().saturating_sub(1)].to_vec(),
            };
            i += 2;
            while toks.get(i).map(String::as_str) == Some("super") {
                base.pop();
                i += 2;
            }
            path(&toks, &mut i, base, &mut out);
        } else {
            i += 1;
        }
    }
    out
}

/// Every `.rs` file under `dir`, with the module path it defines.
fn module_files(src: &Path, dir: &Path, out: &mut BTreeMap<Module, PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            module_files(src, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let mut module: Module = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(
                module.last().map(String::as_str),
                Some("lib" | "main" | "mod")
            ) {
                module.pop();
            }
            out.insert(module, path);
        }
    }
}

/// The import graph of one crate: file module → the file modules it names.
fn graph(src: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut files = BTreeMap::new();
    module_files(src, src, &mut files);
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, file) in &files {
        let text = fs::read_to_string(file).unwrap();
        for named in named_paths(module, &text) {
            let target = (1..=named.len())
                .rev()
                .map(|n| named[..n].to_vec())
                .find(|prefix| files.contains_key(prefix));
            if let Some(target) = target.filter(|t| t != module && !t.is_empty()) {
                edges.entry(module.clone()).or_default().insert(target);
            }
        }
    }
    edges
}

/// One cycle of `edges`, if there is one, as the modules along it.
fn find_cycle(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Option<Vec<Module>> {
    fn visit(
        m: &Module,
        edges: &BTreeMap<Module, BTreeSet<Module>>,
        done: &mut BTreeSet<Module>,
        stack: &mut Vec<Module>,
    ) -> Option<Vec<Module>> {
        if let Some(at) = stack.iter().position(|s| s == m) {
            return Some(stack[at..].iter().cloned().chain([m.clone()]).collect());
        }
        if done.contains(m) {
            return None;
        }
        stack.push(m.clone());
        for next in edges.get(m).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, done, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(m.clone());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|m| visit(m, edges, &mut done, &mut Vec::new()))
}

fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn no_crate_has_a_module_import_cycle() {
    let mut cycles = Vec::new();
    let mut crates = 0;
    for entry in fs::read_dir(crates_dir()).unwrap() {
        let src = entry.unwrap().path().join("src");
        if !src.is_dir() {
            continue;
        }
        crates += 1;
        if let Some(cycle) = find_cycle(&graph(&src)) {
            let names: Vec<String> = cycle.iter().map(|m| m.join("::")).collect();
            cycles.push(format!("{}: {}", src.display(), names.join(" -> ")));
        }
    }
    assert!(crates >= 6, "read {crates} crates only");
    assert!(
        cycles.is_empty(),
        "module import cycles:\n{}",
        cycles.join("\n")
    );
}

/// The checker sees the imports it must: a cycle through a `use` group, through `super::`
/// from an inline test module, and none through comments or strings.
#[test]
fn the_checker_finds_cycles_and_only_cycles() {
    let module = |p: &str| -> Module { p.split("::").map(String::from).collect() };
    let src = r#"
        use crate::{b::{Thing, c}, d};
        // crate::e::Commented
        const S: &str = "crate::e::Quoted";
        fn f<'a>(x: &'a str) -> char { 'x' }
        mod tests { use super::super::g; }
    "#;
    let named = named_paths(&module("a"), src);
    assert_eq!(
        named,
        [module("b::Thing"), module("b::c"), module("d"), module("g")]
    );
    let mut edges = BTreeMap::new();
    edges.insert(module("a"), BTreeSet::from([module("b")]));
    edges.insert(module("b"), BTreeSet::from([module("c")]));
    assert!(find_cycle(&edges).is_none());
    edges.insert(module("c"), BTreeSet::from([module("a")]));
    assert_eq!(
        find_cycle(&edges).unwrap(),
        [module("a"), module("b"), module("c"), module("a")]
    );
}
