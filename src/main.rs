use clap::Parser;
use surveyor::cli::{self, Cli, Command};

fn main() -> std::process::ExitCode {
    // Exec'd by a container runtime as the `surveyor` CNI plugin.
    if std::env::var_os("CNI_COMMAND").is_some() {
        return surveyor::cni::main();
    }
    let cli = Cli::parse();
    let default_log = match cli.command {
        Command::Agent(_) | Command::Controller(_) => "info",
        _ => "warn",
    };
    cli::init_logging(default_log);
    let result = match cli.command {
        Command::Discover(args) => cli::discover::run(args),
        Command::Agent(args) => cli::agent::run(args),
        Command::Resolve(args) => cli::resolve::run(args),
        Command::Controller(args) => cli::controller::run(args),
        Command::Topology(args) => cli::topology::run(args),
        Command::InstallCni(args) => cli::install::run(args),
        Command::Uninstall(args) => cli::uninstall::run(args),
        Command::Crds => surveyor::crd::crds_yaml()
            .map(|yaml| print!("{yaml}"))
            .map_err(Into::into),
        Command::Version => {
            println!("surveyor {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("surveyor: {}", cli::report(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
