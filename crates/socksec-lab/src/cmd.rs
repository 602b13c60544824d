//! Running external programs (apt, ip, swanctl, qemu...) with errors that say what failed.

use std::ffi::OsStr;
use std::process::{Command, Output, Stdio};

use crate::error::{Context, Result, bail};

/// Builds a command from a program and its arguments.
pub fn command<I, S>(program: &str, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(program);
    cmd.args(args);
    cmd
}

/// A printable form of a command line, for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs the command to completion and returns its output, whatever the exit status.
pub fn output(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{}`", describe(cmd)))
}

/// Runs the command and returns its stdout; fails with its stderr when it exits non-zero.
pub fn stdout(cmd: &mut Command) -> Result<String> {
    let out = output(cmd)?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}{}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs the command, discarding stdout; fails with its stderr when it exits non-zero.
pub fn run(cmd: &mut Command) -> Result<()> {
    stdout(cmd).map(drop)
}

/// Shorthand: run `program args...`, return stdout.
pub fn sh<I, S>(program: &str, args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    stdout(&mut command(program, args))
}

/// Runs the command with `input` on stdin; returns stdout, failing like [`stdout`].
pub fn with_input(cmd: &mut Command, input: &str) -> Result<String> {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run `{}`", describe(cmd)))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}\ninput:\n{input}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
