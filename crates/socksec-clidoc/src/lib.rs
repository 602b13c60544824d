//! Man pages and shell completions generated from a binary's own clap definition, so that
//! they never drift from it. Each shipped binary calls [`generate_if_asked`] first thing in
//! `main`: with `SOCKSEC_GENERATE_DOCS=DIR` in its environment it writes its pages and
//! completions under `DIR` and exits instead of running (the Debian package's build,
//! `scripts/deb-build`, does this with the release binaries it packages).

#![forbid(unsafe_code)]

use std::fs::{self, File};
use std::io;
use std::path::Path;

use clap::Command;
use clap_complete::Shell;

/// The environment variable naming the directory to write into.
pub const ENV: &str = "SOCKSEC_GENERATE_DOCS";

/// What to generate for one binary.
#[derive(Debug, Clone, Copy)]
pub struct Docs {
    /// The manual section of its pages: `"1"` for commands, `"8"` for daemons.
    pub section: &'static str,
    /// Whether to write shell completions (bash, zsh, fish).
    pub completions: bool,
}

/// With `SOCKSEC_GENERATE_DOCS=DIR` set, writes the documentation of `command` under `DIR`
/// and returns `Some` with the outcome (the caller exits); else returns `None` without
/// building the command.
pub fn generate_if_asked(command: impl FnOnce() -> Command, docs: Docs) -> Option<io::Result<()>> {
    let dir = std::env::var_os(ENV)?;
    Some(generate(command(), docs, Path::new(&dir)))
}

/// The exit code of a binary that was asked for its documentation: 0 when it was written,
/// else 1 with the error on stderr.
pub fn exit(written: io::Result<()>) -> std::process::ExitCode {
    match written {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{ENV}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Writes `DIR/man/NAME.SECTION` and one page per visible subcommand (`NAME-SUB.SECTION`),
/// and, when asked, `DIR/completions/{NAME.bash, _NAME, NAME.fish}`.
pub fn generate(mut command: Command, docs: Docs, dir: &Path) -> io::Result<()> {
    command.build();
    let man = dir.join("man");
    fs::create_dir_all(&man)?;
    man_pages(&command, docs.section, &man)?;
    if docs.completions {
        let out = dir.join("completions");
        fs::create_dir_all(&out)?;
        let name = command.get_name().to_owned();
        for (shell, file) in [
            (Shell::Bash, format!("{name}.bash")),
            (Shell::Zsh, format!("_{name}")),
            (Shell::Fish, format!("{name}.fish")),
        ] {
            let mut f = File::create(out.join(file))?;
            clap_complete::generate(shell, &mut command, &name, &mut f);
        }
    }
    Ok(())
}

/// The page of `command` and, recursively, of its visible subcommands (a built command names
/// them `NAME-SUB`, and their synopsis `NAME SUB`).
fn man_pages(command: &Command, section: &'static str, dir: &Path) -> io::Result<()> {
    let name = command
        .get_display_name()
        .unwrap_or_else(|| command.get_name());
    let mut page = File::create(dir.join(format!("{name}.{section}")))?;
    clap_mangen::Man::new(command.clone())
        .section(section)
        .render(&mut page)?;
    for sub in command
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        man_pages(sub, section, dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_completions_for_every_subcommand() {
        let cmd = Command::new("demo")
            .about("a demo")
            .arg(
                clap::Arg::new("verbose")
                    .long("verbose")
                    .action(clap::ArgAction::SetTrue),
            )
            .subcommand(Command::new("ls").about("list things"))
            .subcommand(Command::new("secret").hide(true));
        let dir = std::env::temp_dir().join(format!("socksec-clidoc-{}", std::process::id()));
        generate(
            cmd,
            Docs {
                section: "1",
                completions: true,
            },
            &dir,
        )
        .unwrap();
        let page = fs::read_to_string(dir.join("man/demo.1")).unwrap();
        assert!(
            page.contains(".TH demo 1") && page.contains("verbose"),
            "{page}"
        );
        assert!(
            fs::read_to_string(dir.join("man/demo-ls.1"))
                .unwrap()
                .contains("list things")
        );
        assert!(!dir.join("man/demo-secret.1").exists());
        for f in ["demo.bash", "_demo", "demo.fish"] {
            let text = fs::read_to_string(dir.join("completions").join(f)).unwrap();
            assert!(text.contains("verbose"), "{f}: {text}");
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
