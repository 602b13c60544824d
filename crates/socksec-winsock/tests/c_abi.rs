//! The C ABI as C code sees it: `tests/c/query_test.c` is compiled with gcc against the
//! shipped header and linked against the shipped library, once with the shared library (with
//! an rpath) and once with the static library, and run.
//!
//! The library is built with `cargo build --release -p socksec-winsock` (a no-op after
//! `make build`). The C program checks the decision table with real descriptors; as root it
//! moves itself into a private network namespace and also checks real answers. Without root
//! (or without gcc) the test fails when `CI=true` and otherwise prints a visible
//! `SKIPPED:` notice.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The exit status by which the C program says that it skipped its privileged checks.
const SKIPPED_STATUS: i32 = 77;

/// Whether this run is CI, where nothing may be skipped.
fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Fails in CI, else prints a notice straight to stderr (not captured by the test harness).
fn skip(test: &str, why: &str) {
    assert!(!ci(), "{test}: cannot run in CI: {why}");
    let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {why}");
}

/// The crate's directory.
fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The cargo target directory this test binary was built into (`<target>/debug/deps/..`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .expect("target directory above the test binary")
}

/// The built artefacts, or why they could not be built.
struct Artefacts {
    shared: PathBuf,
    static_: PathBuf,
}

/// Builds the release library and both C programs, once per test process.
fn artefacts() -> &'static Result<Artefacts, String> {
    static BUILT: OnceLock<Result<Artefacts, String>> = OnceLock::new();
    BUILT.get_or_init(build)
}

/// Runs a command, returning its stderr on failure.
fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

fn build() -> Result<Artefacts, String> {
    if Command::new("gcc").arg("--version").output().is_err() {
        return Err("gcc is not installed".into());
    }
    let target = target_dir();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = crate_dir().join("Cargo.toml");
    run(Command::new(cargo)
        .args([
            "build",
            "--release",
            "-p",
            "socksec-winsock",
            "--manifest-path",
        ])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &target))
    .map_err(|e| format!("building the library: {e}"))?;

    let lib_dir = target.join("release");
    let include = crate_dir().join("include");
    let source = crate_dir().join("tests/c/query_test.c");
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("c-abi");
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let gcc = |output: &Path| {
        let mut cmd = Command::new("gcc");
        cmd.args([
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-O1",
            "-g",
        ])
        .arg("-I")
        .arg(&include)
        .arg(&source)
        .arg("-o")
        .arg(output);
        cmd
    };

    let shared = out_dir.join("query_test_shared");
    run(gcc(&shared)
        .arg("-L")
        .arg(&lib_dir)
        .arg("-lsocksec_winsock")
        .arg(format!("-Wl,-rpath,{}", lib_dir.display())))?;

    let static_ = out_dir.join("query_test_static");
    run(gcc(&static_)
        .arg(lib_dir.join("libsocksec_winsock.a"))
        .args([
            "-lgcc_s",
            "-lutil",
            "-lrt",
            "-lpthread",
            "-lm",
            "-ldl",
            "-lc",
        ]))?;

    Ok(Artefacts { shared, static_ })
}

/// Runs one C program and judges its exit status.
fn run_c_program(test: &str, program: impl FnOnce(&Artefacts) -> &Path, label: &str) {
    let artefacts = match artefacts() {
        Ok(a) => a,
        Err(why) if why.starts_with("gcc is not installed") => return skip(test, why),
        Err(why) => panic!("{test}: {why}"),
    };
    let out = Command::new(program(artefacts))
        .arg(label)
        .output()
        .expect("run the C program");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    print!("{stdout}");
    match out.status.code() {
        Some(0) => {}
        Some(SKIPPED_STATUS) => skip(
            test,
            "the privileged checks need root (a private network namespace); \
             the unprivileged ones passed",
        ),
        _ => panic!(
            "{test}: the C program failed ({}):\n{}\n{stderr}",
            out.status,
            stdout
                .lines()
                .filter(|l| l.contains("FAIL"))
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

#[test]
fn c_program_against_the_shared_library() {
    run_c_program(
        "c_program_against_the_shared_library",
        |a| &a.shared,
        "shared",
    );
}

#[test]
fn c_program_against_the_static_library() {
    run_c_program(
        "c_program_against_the_static_library",
        |a| &a.static_,
        "static",
    );
}
