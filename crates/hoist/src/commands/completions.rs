//! Shell completions and man pages, both made from the clap definitions in
//! `cli.rs`, so they always match the flags the binary takes.

use std::io::Write;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs, ManpagesArgs};

pub(crate) fn exec(args: &CompletionsArgs) -> anyhow::Result<()> {
    // Into memory first: clap_complete panics when its writer fails, and
    // stdout may be a closed pipe.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "hoist", &mut script);
    std::io::stdout().lock().write_all(&script).context("cannot write the completion script to stdout")
}

/// `hoist.1` and `hoist-COMMAND.1` for every visible command. A hidden
/// command of the binary rather than a separate tool: it reuses the very
/// `Command` the binary parses with, and release.sh runs the binary it ships.
pub(crate) fn manpages(args: &ManpagesArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir).with_context(|| format!("cannot create `{}`", args.dir.display()))?;
    let mut hoist = Cli::command().disable_help_subcommand(true);
    hoist.build(); // names each command `hoist-COMMAND`, as its page is called
    let commands = hoist.get_subcommands().filter(|c| !c.is_hide_set()).cloned().collect::<Vec<_>>();
    // Every page's footer names hoist and its version, not the command's.
    let source = format!("hoist {}", env!("CARGO_PKG_VERSION"));
    for command in std::iter::once(hoist).chain(commands) {
        clap_mangen::Man::new(command)
            .source(source.clone())
            .generate_to(&args.dir)
            .with_context(|| format!("cannot write man pages into `{}`", args.dir.display()))?;
    }
    Ok(())
}
