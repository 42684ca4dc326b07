//! `socer completions SHELL` and `socer man [--out DIR]`: the shell completion scripts and the
//! manual pages, generated from the command line's own definition so they never drift from it.
//!
//! They only write to stdout or into the folder given; they read nothing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell: bash, zsh, fish, elvish or powershell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write socer.1 and one page per subcommand (socer-site.1, …) into DIR instead of printing
    /// socer.1 on stdout.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Print the completion script of `cmd` for `args.shell`.
pub fn run(mut cmd: clap::Command, args: Args) -> anyhow::Result<ExitCode> {
    let name = cmd.get_name().to_string();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, name, &mut out);
    std::io::stdout().write_all(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// The manual page of `cmd` (roff).
pub fn page(cmd: clap::Command) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut out)?;
    Ok(out)
}

/// Write the page of a built `cmd` (`socer.1`) and one per visible subcommand, recursively
/// (`socer-site.1`: clap names a built subcommand `socer-site`); returns the files written.
pub fn write_pages(cmd: &clap::Command, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut written = vec![clap_mangen::Man::new(cmd.clone()).generate_to(dir)?];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() != "help" {
            written.extend(write_pages(sub, dir)?);
        }
    }
    Ok(written)
}

/// `socer man`: socer.1 on stdout, or every page into `--out DIR` (created if missing).
pub fn run_man(mut cmd: clap::Command, args: ManArgs) -> anyhow::Result<ExitCode> {
    cmd.build();
    match args.out {
        None => std::io::stdout().write_all(&page(cmd)?)?,
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
            for p in write_pages(&cmd, &dir)
                .map_err(|e| anyhow::anyhow!("cannot write into {}: {e}", dir.display()))?
            {
                println!("{}", p.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
