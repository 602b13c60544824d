//! Front-ends use only the facade: the I/O modules of `socksec` stay private, and every path
//! the front-ends (the CLI, `socksecd`, the C ABI, the bench, the lab, the fuzz targets) name
//! under `socksec::` starts with an item the crate root declares public.
//!
//! The compiler already refuses a path into a private module; this test keeps the modules
//! private: making one public again fails here, with the list of what the facade is.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// The public modules of the crate root: facades (re-exports and thin functions), no I/O of
/// their own. Adding one is a decision, not an accident.
const PUBLIC_MODULES: [&str; 4] = ["broker", "events", "model", "secure"];

/// The front-end crates, whose sources must name only the facade.
const FRONT_ENDS: [&str; 7] = [
    "socksec-cli",
    "socksec-osquery",
    "socksecd",
    "socksec-winsock",
    "socksec-bench",
    "socksec-lab",
    "socksec-fuzz",
];

fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crates/")
        .to_path_buf()
}

fn lib_rs() -> String {
    fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap()
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The names the crate root makes public: `pub mod`, `pub fn`, and what `pub use` brings in
/// (the last segment of each path, or its `as` name, also inside `{…}` groups).
fn public_names(lib: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut statements = Vec::new();
    let mut current: Option<String> = None;
    for raw in lib.lines() {
        let line = raw.trim();
        // Only items of the crate root start a statement (not those inside `pub mod model`).
        let at_root = !raw.starts_with(char::is_whitespace);
        if let Some(cur) = current.as_mut() {
            cur.push(' ');
            cur.push_str(line);
        } else if !at_root {
            continue;
        } else if line.starts_with("pub use ") {
            current = Some(line.to_string());
        } else if let Some(rest) = line
            .strip_prefix("pub mod ")
            .or_else(|| line.strip_prefix("pub fn "))
        {
            names.insert(rest.chars().take_while(|&c| is_ident(c)).collect());
        }
        if current.as_ref().is_some_and(|c| c.ends_with(';')) {
            statements.push(current.take().unwrap());
        }
    }
    for statement in statements {
        let body = statement
            .trim_start_matches("pub use ")
            .trim_end_matches(';');
        // The items of a group are the pieces between `{`, `,` and `}`; a plain path is one.
        let pieces: Vec<&str> = match body.find('{') {
            Some(open) => body[open + 1..].trim_end_matches('}').split(',').collect(),
            None => vec![body],
        };
        for piece in pieces.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
            let name = match piece.split_once(" as ") {
                Some((_, alias)) => alias.trim(),
                None => piece.rsplit("::").next().unwrap_or(piece),
            };
            names.insert(name.to_string());
        }
    }
    names
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn only_the_facade_modules_are_public() {
    let lib = lib_rs();
    let public: BTreeSet<&str> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|rest| rest.trim_end_matches(';').trim_end_matches(" {"))
        .collect();
    assert_eq!(
        public,
        BTreeSet::from(PUBLIC_MODULES),
        "the public modules of socksec are the facade's; the I/O modules stay private (`mod x;`)"
    );
    for line in lib.lines().map(str::trim) {
        assert!(
            !line.starts_with("pub(crate) mod") && !line.starts_with("pub(super) mod"),
            "declare private modules as `mod x;`: {line}"
        );
    }
}

#[test]
fn front_ends_name_only_the_facade() {
    let names = public_names(&lib_rs());
    for must in [
        "query",
        "prepare",
        "list",
        "sa_details",
        "events",
        "Cache",
        "model",
    ] {
        assert!(names.contains(must), "the facade lost `{must}`: {names:?}");
    }
    let mut bad = Vec::new();
    for krate in FRONT_ENDS {
        let mut files = Vec::new();
        for sub in ["src", "tests", "benches"] {
            rust_files(&crates_dir().join(krate).join(sub), &mut files);
        }
        assert!(!files.is_empty(), "no sources found for {krate}");
        for file in files {
            let text = fs::read_to_string(&file).unwrap();
            for (i, line) in text.lines().enumerate() {
                let mut rest = line;
                while let Some(at) = rest.find("socksec::") {
                    let before = rest[..at].chars().next_back();
                    let after = &rest[at + "socksec::".len()..];
                    rest = after;
                    if before.is_some_and(|c| is_ident(c) || c == ':') {
                        continue; // `socksec_core::`, `my_socksec::`, `x::socksec::`
                    }
                    // `socksec::a::b` names `a`; `socksec::{a, b::c}` names `a` and `b` (the
                    // items of a group on the same line).
                    let firsts: Vec<String> = match after.strip_prefix('{') {
                        Some(group) => group
                            .split('}')
                            .next()
                            .unwrap_or_default()
                            .split(',')
                            .map(|item| item.trim().chars().take_while(|&c| is_ident(c)).collect())
                            .filter(|item: &String| !item.is_empty() && item != "self")
                            .collect(),
                        None => vec![after.chars().take_while(|&c| is_ident(c)).collect()],
                    };
                    for first in firsts {
                        if !names.contains(&first) {
                            bad.push(format!("{}:{}: socksec::{first}", file.display(), i + 1));
                        }
                    }
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "front-ends name what the facade does not export:\n{}",
        bad.join("\n")
    );
}
