//! Run with: `cargo run --release -p rapid-worker -- generate --model tests/fixtures/models/tiny-sd-clip --prompt "a red silk dress" --out out/dress.png`
//!
//! The worker binary. `generate` runs the engine once from the command line; the fleet's queue
//! consumer will live beside it. Errors become one line on stderr and a non-zero exit here, and
//! only here (`anyhow` at the edge, typed errors inside).

mod generate;

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
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RAPID_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if !error.use_stderr() => error.exit(), // --help and --version
        Err(error) => {
            // clap's own rendering adds a usage block; the contract is one line naming the flag.
            let rendered = error.to_string();
            let first = rendered.lines().next().unwrap_or_default().trim_start_matches("error: ");
            eprintln!("error: {first} (see `rapid-worker generate --help`)");
            return std::process::ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Generate(args) => generate::run(*args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
