//! `rapid-worker run`: the fleet worker. Consumes jobs from RabbitMQ, writes state to Redis,
//! uploads to S3, until SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use rapid_engine::runtime::Runtime;
use rapid_fleet::config;
use rapid_fleet::queue::{AmqpQueue, Queue};
use rapid_fleet::state::{RedisState, StateStore};
use rapid_fleet::storage::{ObjectStore, S3Store};
use rapid_worker::config::WorkerFile;
use rapid_worker::consumer::{ConsumerOptions, JobConsumer};
use rapid_worker::runner::Engines;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The fleet configuration file (see CONFIG.md); `RAPID__…` variables override its keys.
    #[arg(long, env = "RAPID_CONFIG", default_value = "deploy/config.example.toml")]
    config: PathBuf,
}

pub fn run(args: RunArgs) -> Result<()> {
    let file: WorkerFile = config::load(&args.config)?;
    let options = file.worker.runtime_options()?;
    let runtime = Runtime::new(&options)?;
    // Models load (and warm up) before the first connection: a broken model directory stops the
    // worker here, and the broker sees no consumer until the first job can run at full speed.
    let engines = Engines::start(&runtime, &file.worker)?;
    tracing::info!(models = ?engines.models().collect::<Vec<_>>(), providers = %options.providers, "models ready");

    // The engine runs on blocking threads; the async side only does I/O.
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    tokio.block_on(async {
        let queue = Queue::Amqp(AmqpQueue::connect(&file.amqp).await?);
        let ttl = Duration::from_secs(file.redis.finished_ttl_secs);
        let state = StateStore::Redis(RedisState::connect(&file.redis.url, &file.redis.key_prefix, ttl).await?);
        let store = ObjectStore::S3(S3Store::connect(&file.s3).await?);
        let consumer = JobConsumer {
            queue,
            state,
            store,
            engines: Arc::new(Mutex::new(engines)),
            options: ConsumerOptions::from(&file.worker),
        };
        tracing::info!("waiting for jobs");
        consumer.run(rapid_fleet::shutdown::signal()).await;
        tracing::info!("stopped");
        anyhow::Ok(())
    })
}
