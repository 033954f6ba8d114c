//! Run with: `cargo run --release -p rapid-scheduler -- standalone --submit examples/fashion-design.json`
//!
//! The scheduler binary: `serve` (the fleet's HTTP API), `standalone` (the whole fleet in one
//! process) and `hash-key` (what goes into `tenants[].api_key_sha256`). `anyhow` lives here only.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use rapid_fleet::telemetry;
use rapid_scheduler::config::SchedulerFile;
use rapid_scheduler::standalone::Submission;

#[derive(Parser)]
#[command(name = "rapid-scheduler", version, about = "Rapid Diffusion request scheduler")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API against RabbitMQ, Redis and S3.
    Serve {
        /// The fleet configuration (CONFIG.md); `RAPID__…` variables override its keys.
        #[arg(long, env = "RAPID_CONFIG", default_value = "deploy/config.example.toml")]
        config: PathBuf,
        /// Overrides `scheduler.listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Everything in one process: API, in-process workers, in-memory queue and state, local folder.
    Standalone {
        #[arg(long, env = "RAPID_CONFIG", default_value = "deploy/standalone.toml")]
        config: PathBuf,
        /// Overrides `scheduler.listen` (port 0 picks a free port).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Submit this JSON body once the API is up, wait for it, print the image paths.
        #[arg(long)]
        submit: Option<PathBuf>,
        /// Where `--submit` posts to.
        #[arg(long, default_value = "/v1/fashion/designs")]
        endpoint: String,
        /// Bearer key for `--submit` (the bundled standalone config's demo tenant has `demo-key`).
        #[arg(long, env = "RAPID_API_KEY", default_value = "demo-key")]
        api_key: String,
        /// Keep serving after the submitted request is done (always, without `--submit`).
        #[arg(long)]
        serve: bool,
    },
    /// Print the SHA-256 of an API key, for `tenants[].api_key_sha256`.
    HashKey { key: String },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::HashKey { key } => {
            println!("{}", rapid_scheduler::api::auth::hash_key(&key));
            Ok(())
        }
        Command::Serve { config, listen } => {
            let file: SchedulerFile = rapid_fleet::config::load(&config)?;
            let _telemetry = telemetry::init(&file.telemetry, "rapid-scheduler", "info")?;
            let listen = listen.unwrap_or(file.scheduler.listen);
            tokio_runtime()?.block_on(rapid_scheduler::serve::run(file, listen))
        }
        Command::Standalone { config, listen, submit, endpoint, api_key, serve } => {
            let file: SchedulerFile = rapid_fleet::config::load(&config)?;
            // Quiet by default: the command prints the image paths and little else.
            let _telemetry = telemetry::init(&file.telemetry, "rapid-scheduler", "warn")?;
            let listen = listen.unwrap_or(file.scheduler.listen);
            let submission = submit.map(|file| Submission { file, endpoint, api_key });
            let keep_serving = serve || submission.is_none();
            let runtime = tokio_runtime()?;
            let result = runtime.block_on(rapid_scheduler::standalone::run(file, listen, submission, keep_serving));
            // An engine thread the watchdog found hung would keep a plain drop waiting for ever.
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            result
        }
    }
}

fn tokio_runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}
