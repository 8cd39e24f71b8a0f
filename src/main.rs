use clap::Parser;
use surveyor::cli::{self, Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    cli::init_logging("warn");
    let result = match cli.command {
        Command::Discover(args) => cli::discover::run(args),
        Command::Version => {
            println!("surveyor {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("surveyor: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
