//! One module per subcommand; each turns its flags into one library call.

mod completions;
mod copy;
mod inspect;
mod login;
mod pull;
pub(crate) mod push;
mod serve;

use crate::cli::{Cli, Command};

pub(crate) async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Push(args) => push::exec(args, &cli.global).await,
        Command::Inspect(args) => inspect::exec(&args),
        Command::Completions(args) => completions::exec(&args),
        Command::Manpages(args) => completions::manpages(&args),
        Command::Pull(args) => pull::exec(args, &cli.global).await,
        Command::Login(args) => login::login(args).await,
        Command::Logout(args) => login::logout(&args).await,
        Command::Copy(args) => copy::exec(args, &cli.global).await,
        Command::Serve(args) => serve::exec(args).await,
    }
}
