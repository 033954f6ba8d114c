//! `rapid-scheduler serve`: the HTTP API against RabbitMQ, Redis and S3, plus the callback sender.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rapid_fleet::queue::{AmqpQueue, Dispatcher, Lane, Queue};
use rapid_fleet::shutdown;
use rapid_fleet::state::{RedisState, StateStore};
use rapid_fleet::storage::{ObjectStore, S3Store};
use tokio::sync::watch;

use crate::api::backpressure::Backlog;
use crate::api::{app, auth::ApiKeys, AppState};
use crate::callbacks::CallbackSender;
use crate::config::SchedulerFile;
use crate::metrics::Metrics;
use crate::policy::PromptPolicy;
use crate::prompts::PromptGenerator;

pub fn app_state(
    file: &SchedulerFile,
    state: StateStore,
    queue: Queue,
    store: ObjectStore,
    presign_expiry: Duration,
) -> AppState {
    AppState {
        config: Arc::new(file.scheduler.clone()),
        keys: ApiKeys::new(&file.tenants),
        state,
        queue,
        store,
        prompts: Arc::new(PromptGenerator::bundled()),
        policy: Arc::new(PromptPolicy::new(&file.scheduler.blocked_terms)),
        quotas: Arc::new(file.tenants.iter().map(|t| (t.name.clone(), t.limits)).collect()),
        lanes: Arc::new(Lane::all(file.tenants.iter().map(|t| t.name.as_str()))),
        backlog: Arc::new(Backlog::new(file.scheduler.max_waiting_jobs)),
        metrics: Arc::new(Metrics::default()),
        presign_expiry,
    }
}

pub async fn run(file: SchedulerFile, listen: SocketAddr) -> Result<()> {
    let amqp = file.amqp.as_ref().context("`serve` needs an [amqp] section (or use `standalone`)")?;
    let redis = file.redis.as_ref().context("`serve` needs a [redis] section (or use `standalone`)")?;
    let s3 = file.s3.as_ref().context("`serve` needs an [s3] section (or use `standalone`)")?;
    let queue = Queue::Amqp(AmqpQueue::connect(amqp).await?);
    let ttl = Duration::from_secs(redis.finished_ttl_secs);
    let state = StateStore::Redis(RedisState::connect(&redis.url, &redis.key_prefix, ttl).await?);
    let store = ObjectStore::S3(S3Store::connect(s3).await?);
    let app_state = app_state(&file, state, queue, store, Duration::from_secs(s3.presign_expiry_secs));

    let (stop, stopped) = watch::channel(false);
    let dispatcher = dispatcher(&file, app_state.queue.clone());
    let dispatching = tokio::spawn(dispatcher.run(shutdown::stopped(stopped.clone())));
    let sender = CallbackSender::new(app_state.clone());
    let rx = stopped.clone();
    let callbacks = tokio::spawn(async move { sender.run(shutdown::stopped(rx)).await });

    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(address = %listener.local_addr()?, "scheduler listening");
    let rx = stopped.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app(app_state)).with_graceful_shutdown(shutdown::stopped(rx)).await
    });
    shutdown::signal().await;
    tracing::info!("shutting down");
    stop.send_replace(true);
    server.await??;
    callbacks.await?;
    dispatching.await?;
    Ok(())
}

/// The dispatcher over every configured tenant's lanes, with their weights.
pub fn dispatcher(file: &SchedulerFile, queue: Queue) -> Dispatcher {
    let tenants: Vec<_> = file.tenants.iter().map(|t| (t.name.clone(), t.weight.get())).collect();
    Dispatcher::new(queue, &tenants, file.scheduler.dispatch_ready_jobs)
}
