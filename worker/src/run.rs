//! `rapid-worker run`: the fleet worker. Consumes jobs from RabbitMQ, writes state to Redis,
//! uploads to S3, until SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use rapid_engine::runtime::tensorrt::BuildTarget;
use rapid_engine::runtime::Runtime;
use rapid_fleet::config;
use rapid_fleet::queue::{AmqpQueue, Queue};
use rapid_fleet::state::{RedisState, StateStore};
use rapid_fleet::storage::{ObjectStore, S3Store};
use rapid_worker::config::WorkerFile;
use rapid_worker::consumer::{ConsumerOptions, JobConsumer, Stop};
use rapid_worker::engine_share;
use rapid_worker::health;
use rapid_worker::metrics::WorkerMetrics;
use rapid_worker::runner::Engines;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The fleet configuration file (see CONFIG.md); `RAPID__…` variables override its keys.
    #[arg(long, env = "RAPID_CONFIG", default_value = "deploy/config.example.toml")]
    config: PathBuf,
}

pub fn run(args: RunArgs) -> Result<()> {
    let file: WorkerFile = config::load(&args.config)?;
    let _telemetry = rapid_fleet::telemetry::init(&file.telemetry, "rapid-worker", "info")?;
    let options = file.worker.runtime_options()?;
    let runtime = Runtime::new(&options)?;
    // The engine runs on blocking threads; the async side only does I/O.
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let metrics = Arc::new(WorkerMetrics::default());
    if let Some(listen) = file.worker.listen {
        // Up before the models load: `/livez` answers through a long load, `/readyz` does not.
        let listener = tokio
            .block_on(tokio::net::TcpListener::bind(listen))
            .with_context(|| format!("worker.listen: cannot listen on {listen}; pick a free port"))?;
        tracing::info!(%listen, "serving /livez, /readyz and /metrics");
        tokio.spawn(health::serve(listener, Arc::clone(&metrics)));
    }
    // Engines other replicas of this GPU kind built come first, so that loading finds them. The
    // store connected for that is the one the consumer uploads images to.
    let shared_cache = file.worker.tensorrt.shared_cache()?;
    let early_store = match shared_cache {
        Some(_) => Some(tokio.block_on(S3Store::connect(&file.s3)).map(ObjectStore::S3)?),
        None => None,
    };
    let has_gpu = match (shared_cache, &early_store) {
        (Some(cache), Some(store)) => share_engines(&tokio, store, cache, Direction::Pull),
        _ => false,
    };
    // Models load (and warm up) before the first connection: a broken model directory stops the
    // worker here, and the broker sees no consumer until the first job can run at full speed.
    let engines = Engines::start(&runtime, &file.worker)?;
    tracing::info!(models = ?engines.models().collect::<Vec<_>>(), providers = %options.providers, "models ready");
    if let (true, Some(cache), Some(store)) = (has_gpu, shared_cache, &early_store) {
        share_engines(&tokio, store, cache, Direction::Push);
    }

    let stop = tokio.block_on(async {
        let queue = Queue::Amqp(AmqpQueue::connect(&file.amqp).await?);
        let ttl = Duration::from_secs(file.redis.finished_ttl_secs);
        let state = StateStore::Redis(RedisState::connect(&file.redis.url, &file.redis.key_prefix, ttl).await?);
        let store = match early_store {
            Some(store) => store,
            None => ObjectStore::S3(S3Store::connect(&file.s3).await?),
        };
        let consumer = JobConsumer {
            queue,
            state,
            store,
            engines: Arc::new(Mutex::new(engines)),
            options: ConsumerOptions::from(&file.worker),
            metrics,
        };
        tracing::info!("waiting for jobs");
        anyhow::Ok(consumer.run(rapid_fleet::shutdown::signal()).await)
    })?;
    match stop {
        Stop::Shutdown => {
            tracing::info!("stopped");
            Ok(())
        }
        Stop::Stalled => {
            // The hung engine thread would keep the runtime's shutdown waiting for ever.
            tokio.shutdown_background();
            anyhow::bail!(
                "the watchdog found the engine hung (worker.stall_timeout_secs); its jobs were handed back to \
                 the queue. Exiting so that the supervisor restarts this worker"
            )
        }
    }
}

enum Direction {
    Pull,
    Push,
}

/// Pulls or pushes this GPU kind's TensorRT engines; `false` (logged) where there is no GPU kind
/// to share for. A store that fails costs a warning: the worker builds what it lacks, as it would
/// without sharing.
fn share_engines(
    tokio: &tokio::runtime::Runtime,
    store: &ObjectStore,
    cache: &std::path::Path,
    direction: Direction,
) -> bool {
    let Some(target) = BuildTarget::of_this_machine() else {
        tracing::warn!("tensorrt.share_engines: no NVIDIA GPU or TensorRT library found; nothing to share");
        return false;
    };
    let gpu = target.gpu_slug();
    let (what, moved) = match direction {
        Direction::Pull => ("pulled", tokio.block_on(engine_share::pull(store, cache, &gpu))),
        Direction::Push => ("pushed", tokio.block_on(engine_share::push(store, cache, &gpu))),
    };
    match moved {
        Ok(moved) => tracing::info!(gpu = %gpu, files = moved.files, bytes = moved.bytes, "TensorRT engines {what}"),
        Err(error) => {
            tracing::warn!(gpu = %gpu, %error, "TensorRT engines could not be {what}; building what is missing")
        }
    }
    true
}
