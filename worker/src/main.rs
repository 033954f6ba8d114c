//! Run with: `cargo run --release -p rapid-worker -- generate --model tests/fixtures/models/tiny-sd-clip --prompt "a red silk dress" --out out/dress.png`
//!
//! The worker binary. `generate` runs the engine once from the command line; `run` is the fleet
//! worker (queue consumer). Errors become one line on stderr and a non-zero exit here, and
//! only here (`anyhow` at the edge, typed errors inside).

mod generate;
mod run;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "rapid-worker", version, about = "Rapid Diffusion worker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate one marked image from a prompt with a local model directory.
    Generate(Box<generate::GenerateArgs>),
    /// Run as a fleet worker: consume jobs from RabbitMQ until SIGTERM.
    Run(run::RunArgs),
}

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if !error.use_stderr() => error.exit(), // --help and --version
        Err(error) => {
            // clap's own rendering adds a usage block; the contract is one line naming the flag.
            let rendered = error.to_string();
            let first = rendered.lines().next().unwrap_or_default().trim_start_matches("error: ");
            eprintln!("error: {first} (see `rapid-worker --help`)");
            return std::process::ExitCode::from(2);
        }
    };
    // `generate` keeps stderr for errors and progress; `run` sets up its logs and traces from
    // its configuration's `[telemetry]`.
    if let Command::Generate(_) = cli.command {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("RAPID_LOG")
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_writer(std::io::stderr)
            .init();
    }
    // `make faults` builds with fault injection and configures it through `FAILPOINTS`.
    #[cfg(feature = "failpoints")]
    let _fail_scenario = {
        eprintln!("fault injection is compiled in; FAILPOINTS={:?}", std::env::var("FAILPOINTS").ok());
        fail::FailScenario::setup()
    };
    let result = match cli.command {
        Command::Generate(args) => generate::run(*args),
        Command::Run(args) => run::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
