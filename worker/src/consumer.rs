//! The worker's loop: take a job, run it off the async runtime, store the image, write the state,
//! and only then acknowledge. At-least-once delivery with idempotent effects: object keys are
//! deterministic per job and a job already in a final state is skipped, so a redelivered job
//! (its worker died) overwrites its own objects and counts once.

use std::future::Future;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rapid_engine::pipeline::Progress;
use rapid_proto::{Event, EventKind, Job, JobRecord, JobStatus, RequestFinished, RequestRecord, SCHEMA_VERSION};
use sha2::Digest;
use tracing::Instrument;

use crate::queue::{priority_level, Delivery, Queue, QueueError, Topic};
use crate::runner::{Engines, JobError, RenderedImage};
use crate::state::{now_ms, StateError, StateStore};
use crate::storage::{image_key, Object, ObjectStore};

/// How a worker treats failures, shutdown and progress.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    pub prefetch: u16,
    pub max_attempts: u32,
    pub retry_backoff: Duration,
    pub shutdown_grace: Duration,
    pub progress_interval: Duration,
}

impl From<&crate::config::WorkerConfig> for ConsumerOptions {
    fn from(config: &crate::config::WorkerConfig) -> Self {
        Self {
            prefetch: config.prefetch,
            max_attempts: config.max_attempts.max(1),
            retry_backoff: Duration::from_millis(config.retry_backoff_ms),
            shutdown_grace: Duration::from_secs(config.shutdown_grace_secs),
            progress_interval: Duration::from_millis(config.progress_interval_ms.max(10)),
        }
    }
}

/// Errors that stop the loop: the broker or Redis went away. Job failures never do.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    State(#[from] StateError),
}

#[derive(Clone)]
pub struct JobConsumer {
    pub queue: Queue,
    pub state: StateStore,
    pub store: ObjectStore,
    pub engines: Arc<Mutex<Engines>>,
    pub options: ConsumerOptions,
}

/// What became of one delivery.
enum Outcome {
    Done,
    /// Shutdown interrupted the job; it goes back to the queue for another worker.
    Requeue,
}

impl JobConsumer {
    /// Consumes until `shutdown` resolves, then stops taking work, lets the job in hand finish
    /// within the grace period (or requeues it), and returns.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<(), ConsumerError> {
        let mut consumer = self.queue.consume(Topic::Jobs, self.options.prefetch).await?;
        tokio::pin!(shutdown);
        loop {
            let delivery = tokio::select! {
                delivery = consumer.next() => delivery,
                () = &mut shutdown => break,
            };
            let Some(delivery) = delivery else {
                tracing::warn!("the broker closed the job stream");
                break;
            };
            let delivery = delivery?;
            let abort = Arc::new(AtomicBool::new(false));
            let handling = self.handle(delivery, Arc::clone(&abort));
            tokio::pin!(handling);
            tokio::select! {
                result = &mut handling => result?,
                () = &mut shutdown => {
                    tracing::info!(grace_s = self.options.shutdown_grace.as_secs(), "shutting down: finishing the job in hand");
                    consumer.stop().await?;
                    if tokio::time::timeout(self.options.shutdown_grace, &mut handling).await.is_err() {
                        tracing::warn!("grace period over: stopping the job and requeueing it");
                        abort.store(true, Ordering::Relaxed);
                        handling.await?;
                    }
                    break;
                }
            }
        }
        consumer.stop().await.ok();
        Ok(())
    }

    async fn handle(&self, delivery: Delivery, abort: Arc<AtomicBool>) -> Result<(), ConsumerError> {
        let job: Job = match rapid_proto::decode(delivery.body()) {
            Ok(job) => job,
            Err(e) => {
                self.queue.dead_letter(Topic::Jobs, delivery.body(), &e.to_string()).await?;
                delivery.ack().await?;
                return Ok(());
            }
        };
        let span = tracing::info_span!("job", job = %job.id, request = %job.request_id, attempt = job.attempt);
        match self.process(&job, delivery.redelivered(), &abort).instrument(span).await {
            Ok(Outcome::Done) => delivery.ack().await?,
            Ok(Outcome::Requeue) => delivery.requeue().await?,
            // A record this build cannot read will not become readable on a retry; the job goes
            // to the dead-letter queue with the reason instead of stopping the worker.
            Err(ConsumerError::State(e @ StateError::Corrupt { .. })) => {
                self.queue.dead_letter(Topic::Jobs, delivery.body(), &e.to_string()).await?;
                delivery.ack().await?;
            }
            // Broker or Redis unreachable: stop; the unacknowledged job returns to the queue.
            Err(e) => return Err(e),
        }
        Ok(())
    }

    async fn process(&self, job: &Job, redelivered: bool, abort: &Arc<AtomicBool>) -> Result<Outcome, ConsumerError> {
        let Some(request) = self.state.request(&job.request_id).await? else {
            let reason =
                format!("request {} is unknown to the state store (expired or never accepted)", job.request_id);
            self.queue.dead_letter(Topic::Jobs, &rapid_proto::encode(job), &reason).await?;
            return Ok(Outcome::Done);
        };
        let previous = self.state.job(&job.id).await?;
        if let Some(previous) = previous.as_ref().filter(|r| r.status.is_final()) {
            tracing::info!(status = ?previous.status, "already final; skipping the duplicate delivery");
            return Ok(Outcome::Done);
        }
        let mut record = previous.unwrap_or_else(|| queued_record(job));
        if self.state.is_cancelled(&job.request_id).await? {
            return self.finish(&request, record, JobStatus::Cancelled).await;
        }
        if job.deadline_ms.is_some_and(|deadline| now_ms() > deadline) {
            record.error = Some("the request's deadline passed before a worker could start it".into());
            return self.finish(&request, record, JobStatus::Failed).await;
        }
        if redelivered {
            tracing::warn!("redelivered: the previous worker stopped before acknowledging");
        }
        record.status = JobStatus::Running;
        record.attempts += 1;
        record.step = 0;
        record.started_ms = Some(now_ms());
        record.updated_ms = now_ms();
        self.state.put_job(&record).await?;
        self.state.append_event(&event(&record, EventKind::Started { attempt: record.attempts })).await?;

        let result = match self.render(job, &mut record, abort).await? {
            Ok(image) => self.upload(job, &image).await.map(|images| (image, images)),
            Err(e) => Err(e),
        };
        match result {
            Ok((image, images)) => {
                // Progress is sampled; the record of a finished job shows every step done.
                record.step = record.total_steps;
                record.images = images;
                record.timings_ms = image.timings_ms;
                record.entities = image.entities;
                self.finish(&request, record, JobStatus::Succeeded).await
            }
            Err(JobError::Stopped) if abort.load(Ordering::Relaxed) => {
                record.status = JobStatus::Queued;
                record.step = 0;
                record.updated_ms = now_ms();
                self.state.put_job(&record).await?;
                let reason = "the worker shut down before the job finished; requeued".to_owned();
                self.state.append_event(&event(&record, EventKind::Failed { reason, retryable: true })).await?;
                Ok(Outcome::Requeue)
            }
            Err(JobError::Stopped) => self.finish(&request, record, JobStatus::Cancelled).await,
            Err(JobError::Permanent(reason)) => {
                self.queue.dead_letter(Topic::Jobs, &rapid_proto::encode(job), &reason).await?;
                record.error = Some(reason);
                self.finish(&request, record, JobStatus::Failed).await
            }
            Err(JobError::Retryable(reason)) => self.retry_or_give_up(&request, job, record, reason).await,
        }
    }

    /// Runs the engine on a blocking thread while this task reports progress and watches the
    /// request's cancel flag.
    async fn render(
        &self,
        job: &Job,
        record: &mut JobRecord,
        abort: &Arc<AtomicBool>,
    ) -> Result<Result<RenderedImage, JobError>, ConsumerError> {
        let cancelled = Arc::new(AtomicBool::new(false));
        let (progress_tx, progress_rx) = tokio::sync::watch::channel(None::<Progress>);
        let engines = Arc::clone(&self.engines);
        let (job_owned, stop_flags) = (job.clone(), (Arc::clone(&cancelled), Arc::clone(abort)));
        let mut engine = tokio::task::spawn_blocking(move || {
            let mut engines = engines.lock().unwrap_or_else(PoisonError::into_inner);
            engines.run(&job_owned, &mut |progress| {
                progress_tx.send_replace(Some(progress));
                if stop_flags.0.load(Ordering::Relaxed) || stop_flags.1.load(Ordering::Relaxed) {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
        });
        let mut ticker = tokio::time::interval(self.options.progress_interval);
        loop {
            tokio::select! {
                result = &mut engine => {
                    return Ok(result.unwrap_or_else(|e| Err(JobError::Retryable(format!("the engine thread panicked: {e}")))));
                }
                _ = ticker.tick() => {
                    if self.state.is_cancelled(&job.request_id).await? {
                        cancelled.store(true, Ordering::Relaxed);
                    }
                    let latest = *progress_rx.borrow();
                    if let Some(progress) = latest.filter(|p| p.step as u32 != record.step) {
                        record.step = progress.step as u32;
                        record.total_steps = progress.total as u32;
                        record.updated_ms = now_ms();
                        self.state.put_job(record).await?;
                        let step = EventKind::Step { step: record.step, total: record.total_steps };
                        self.state.append_event(&event(record, step)).await?;
                    }
                }
            }
        }
    }

    async fn upload(&self, job: &Job, image: &RenderedImage) -> Result<Vec<rapid_proto::ImageRef>, JobError> {
        let key = image_key(&job.tenant, &job.request_id, &job.id, 0, image.format.extension());
        let metadata = [
            ("model", image.model.clone()),
            ("seed", job.seed.to_string()),
            ("prompt-sha256", hex::encode(sha2::Sha256::digest(job.prompt.as_bytes()))),
            ("ai-generated", "true".to_owned()),
            ("job-id", job.id.clone()),
        ];
        let object = Object { key: &key, bytes: &image.bytes, content_type: image.content_type(), metadata: &metadata };
        self.store.put(object).await.map_err(|e| JobError::Retryable(e.to_string()))?;
        Ok(vec![rapid_proto::ImageRef {
            key,
            bytes: image.bytes.len() as u64,
            width: image.width,
            height: image.height,
        }])
    }

    async fn retry_or_give_up(
        &self,
        request: &RequestRecord,
        job: &Job,
        mut record: JobRecord,
        reason: String,
    ) -> Result<Outcome, ConsumerError> {
        record.error = Some(reason.clone());
        let next_attempt = job.attempt + 1;
        if next_attempt >= self.options.max_attempts {
            let reason = format!("gave up after {next_attempt} attempts; last error: {reason}");
            self.queue.dead_letter(Topic::Jobs, &rapid_proto::encode(job), &reason).await?;
            record.error = Some(reason);
            return self.finish(request, record, JobStatus::Failed).await;
        }
        let delay = self.options.retry_backoff * 2u32.saturating_pow(job.attempt);
        tracing::warn!(%reason, retry_in_ms = delay.as_millis() as u64, "job failed; retrying");
        record.status = JobStatus::Queued;
        record.step = 0;
        record.updated_ms = now_ms();
        self.state.put_job(&record).await?;
        self.state.append_event(&event(&record, EventKind::Failed { reason, retryable: true })).await?;
        let retry = Job { attempt: next_attempt, ..job.clone() };
        self.queue
            .publish_delayed(Topic::Jobs, &rapid_proto::encode(&retry), priority_level(job.priority), delay)
            .await?;
        Ok(Outcome::Done)
    }

    /// Writes a final state, and when it completes the request, asks for its callback.
    async fn finish(
        &self,
        request: &RequestRecord,
        mut record: JobRecord,
        status: JobStatus,
    ) -> Result<Outcome, ConsumerError> {
        record.status = status;
        record.updated_ms = now_ms();
        self.state.put_job(&record).await?;
        self.state.append_event(&final_event(&record)).await?;
        tracing::info!(?status, "job finished");
        notify_if_request_done(&self.state, &self.queue, request, &record.id).await?;
        Ok(Outcome::Done)
    }
}

/// Records a job's end; when it was the request's last, queues the client's callback (if any).
/// Shared by workers (a job ran) and the scheduler (a cancel ended queued jobs).
pub async fn notify_if_request_done(
    state: &StateStore,
    queue: &Queue,
    request: &RequestRecord,
    job_id: &str,
) -> Result<(), ConsumerError> {
    if state.finish_job(request, job_id).await? {
        tracing::info!(request = %request.id, "request finished");
        if let Some(callback_url) = &request.callback_url {
            let message = RequestFinished {
                v: SCHEMA_VERSION,
                request_id: request.id.clone(),
                tenant: request.tenant.clone(),
                callback_url: callback_url.clone(),
                attempt: 0,
            };
            queue.publish(Topic::Callbacks, &rapid_proto::encode(&message), 5).await?;
        }
    }
    Ok(())
}

/// An event about the job `record` describes, stamped now.
pub fn event(record: &JobRecord, kind: EventKind) -> Event {
    Event {
        v: SCHEMA_VERSION,
        job_id: record.id.clone(),
        request_id: record.request_id.clone(),
        at_ms: now_ms(),
        kind,
        timings_ms: Vec::new(),
    }
}

/// The event that ends a job, from its final record.
pub fn final_event(record: &JobRecord) -> Event {
    let kind = match record.status {
        JobStatus::Succeeded => {
            EventKind::Succeeded { images: record.images.clone(), entities: record.entities.clone() }
        }
        JobStatus::Cancelled => EventKind::Cancelled,
        _ => EventKind::Failed { reason: record.error.clone().unwrap_or_default(), retryable: false },
    };
    Event { timings_ms: record.timings_ms.clone(), ..event(record, kind) }
}

/// The record a job has before any worker touched it.
pub fn queued_record(job: &Job) -> JobRecord {
    JobRecord {
        v: SCHEMA_VERSION,
        id: job.id.clone(),
        request_id: job.request_id.clone(),
        prompt: job.prompt.clone(),
        seed: job.seed,
        status: JobStatus::Queued,
        step: 0,
        total_steps: 0,
        attempts: 0,
        error: None,
        images: Vec::new(),
        timings_ms: Vec::new(),
        entities: Vec::new(),
        started_ms: None,
        updated_ms: now_ms(),
    }
}
