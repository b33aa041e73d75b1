//! `tether generate` (hidden): man pages and shell completions from the command-line
//! definition itself, so the package never ships pages that disagree with `--help`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap_complete::Shell;

/// Arguments of `tether generate`.
#[derive(clap::Args)]
pub struct GenerateArgs {
    /// Directory that gets `man/` (section 1 pages) and `completions/` (bash, zsh, fish).
    #[arg(long)]
    out: PathBuf,
}

pub fn main(args: GenerateArgs, cmd: clap::Command) -> anyhow::Result<ExitCode> {
    let man = args.out.join("man");
    let completions = args.out.join("completions");
    for d in [&man, &completions] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    clap_mangen::generate_to(cmd.clone(), &man)
        .with_context(|| format!("writing man pages into {}", man.display()))?;
    let mut cmd = cmd;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let path = clap_complete::generate_to(shell, &mut cmd, "tether", &completions)
            .with_context(|| {
                format!("writing {shell} completions into {}", completions.display())
            })?;
        println!("wrote {}", path.display());
    }
    println!("wrote man pages into {}", man.display());
    Ok(ExitCode::SUCCESS)
}
