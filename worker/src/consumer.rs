//! The worker's loop: take a job, run it off the async runtime, store the image, write the state,
//! and only then acknowledge. At-least-once delivery with idempotent effects: object keys are
//! deterministic per job and a job already in a final state is skipped, so a redelivered job
//! (its worker died) overwrites its own objects and counts once.

use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rapid_engine::pipeline::{Generated, Progress};
use rapid_proto::{EventKind, Job, JobRecord, JobStatus, RequestRecord};
use sha2::Digest;
use tokio::task::JoinSet;
use tracing::Instrument;

use rapid_fleet::jobs::{event, final_event, notify_if_request_done, queued_record, BackendError};
use rapid_fleet::queue::{priority_level, Consumer, Delivery, Message, Queue, QueueError, Resubscribe, Topic};
use rapid_fleet::state::{now_ms, StateError, StateStore};
use rapid_fleet::storage::{image_key, Object, ObjectStore};
use rapid_fleet::telemetry;

use crate::metrics::{JobOutcome, WorkerMetrics};
use crate::runner::{batch_key, group_by_key, render, Engines, JobError, RenderedImage};

/// How a worker treats failures, shutdown and progress.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    pub prefetch: u16,
    pub max_attempts: u32,
    pub retry_backoff: Duration,
    pub shutdown_grace: Duration,
    pub progress_interval: Duration,
    /// Most jobs denoised together (one U-Net call per step for all); 1 turns batching off.
    pub max_batch: usize,
    /// How long to wait for more waiting jobs once one arrived, to fill a batch.
    pub batch_window: Duration,
    /// The watchdog's limit on a running group without progress; `None` = no watchdog.
    pub stall_timeout: Option<Duration>,
    /// Groups whose marking, encoding, upload and acknowledgement may still run while the engine
    /// starts on the next; 0 finishes each group before taking the next.
    pub overlap_finishing: usize,
}

impl From<&crate::config::WorkerConfig> for ConsumerOptions {
    fn from(config: &crate::config::WorkerConfig) -> Self {
        Self {
            prefetch: config.prefetch,
            max_attempts: config.max_attempts.max(1),
            retry_backoff: Duration::from_millis(config.retry_backoff_ms),
            shutdown_grace: Duration::from_secs(config.shutdown_grace_secs),
            progress_interval: Duration::from_millis(config.progress_interval_ms.max(10)),
            max_batch: config.max_batch.get(),
            batch_window: Duration::from_millis(config.batch_window_ms),
            stall_timeout: (config.stall_timeout_secs > 0).then(|| Duration::from_secs(config.stall_timeout_secs)),
            overlap_finishing: config.overlap_finishing,
        }
    }
}

#[derive(Clone)]
pub struct JobConsumer {
    pub queue: Queue,
    pub state: StateStore,
    pub store: ObjectStore,
    pub engines: Arc<Mutex<Engines>>,
    pub options: ConsumerOptions,
    pub metrics: Arc<WorkerMetrics>,
}

/// Why [`JobConsumer::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Shutdown was asked for; the jobs in hand finished or went back to the queue.
    Shutdown,
    /// The watchdog found the engine hung. Its jobs went back to the queue as a failed attempt,
    /// but the engine thread cannot be stopped and still holds the models: the process must exit
    /// (without waiting for that thread) and be restarted by its supervisor.
    Stalled,
}

/// The watchdog fired during a group: no later group may start on this worker.
struct Stalled;

/// What became of one delivery.
enum Outcome {
    Done,
    /// Shutdown interrupted the job; it goes back to the queue for another worker.
    Requeue,
}

/// A job whose state says it may run, with what finishing it needs.
struct Admitted {
    delivery: Delivery,
    job: Job,
    request: RequestRecord,
    record: JobRecord,
}

impl JobConsumer {
    /// Consumes until `shutdown` resolves, then stops taking work, lets the jobs in hand finish
    /// within the grace period (or requeues them), and returns. When the broker or the state
    /// store fails (a RabbitMQ restart, a dropped connection), the jobs in hand go back to the
    /// queue with the dead channel, and the worker consumes again after a back-off, instead of
    /// exiting: it heals when the broker does.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Stop {
        tokio::pin!(shutdown);
        let mut resubscribe = Resubscribe::default();
        loop {
            resubscribe.subscribing();
            let result = self.consume(&mut shutdown).await;
            self.metrics.set_subscribed(false);
            let error = match result {
                Ok(stop) => return stop,
                Err(error) => error,
            };
            let pause = resubscribe.failed();
            tracing::warn!(%error, retry_in_ms = pause.as_millis() as u64, "jobs: the broker failed; subscribing again after a pause");
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = &mut shutdown => return Stop::Shutdown,
            }
        }
    }

    /// One subscription: until `shutdown`, the watchdog (`Ok`) or a backend failure (`Err`). Every
    /// job taken is settled (or its channel failed) before it returns.
    async fn consume<F: Future<Output = ()>>(&self, shutdown: &mut Pin<&mut F>) -> Result<Stop, BackendError> {
        // A batch is made of unacknowledged deliveries, so the broker must hand out at least that
        // many, for the group on the engine and for each group still finishing.
        let in_hand = self.options.max_batch.saturating_mul(1 + self.options.overlap_finishing);
        let prefetch = self.options.prefetch.max(u16::try_from(in_hand).unwrap_or(u16::MAX));
        let mut consumer = self.queue.consume(Topic::Jobs, prefetch).await?;
        self.metrics.set_subscribed(true);
        let mut finishing = Finishing::new(self.options.overlap_finishing * self.options.max_batch);
        let stop = self.take_jobs(&mut consumer, shutdown, &mut finishing).await;
        // The jobs still finishing need the channel to be acknowledged: wait for them first.
        let finished = finishing.drain().await;
        consumer.stop().await.ok();
        let stop = stop?;
        finished?;
        Ok(stop)
    }

    async fn take_jobs<F: Future<Output = ()>>(
        &self,
        consumer: &mut Consumer,
        shutdown: &mut Pin<&mut F>,
        finishing: &mut Finishing,
    ) -> Result<Stop, BackendError> {
        loop {
            let delivery = tokio::select! {
                delivery = consumer.next() => delivery,
                // A finishing job that failed on the broker or Redis ends the subscription now,
                // not when the next job happens to arrive: its delivery goes back with the channel.
                Some(failed) = finishing.next_failure() => return Err(failed),
                () = shutdown.as_mut() => break,
            };
            let Some(delivery) = delivery else {
                return Err(QueueError::StreamClosed.into());
            };
            let mut deliveries = vec![delivery?];
            // Take what is already waiting, for a short window only: a batch must never make a
            // lone job wait for company that is not coming.
            while deliveries.len() < self.options.max_batch {
                match tokio::time::timeout(self.options.batch_window, consumer.next()).await {
                    Ok(Some(delivery)) => deliveries.push(delivery?),
                    Ok(None) | Err(_) => break,
                }
            }
            let abort = Arc::new(AtomicBool::new(false));
            let handling = self.handle(deliveries, Arc::clone(&abort), finishing);
            tokio::pin!(handling);
            tokio::select! {
                result = &mut handling => {
                    if let ControlFlow::Break(Stalled) = result? {
                        // Whatever else was delivered goes back with the dead subscription.
                        return Ok(Stop::Stalled);
                    }
                }
                () = shutdown.as_mut() => {
                    tracing::info!(grace_s = self.options.shutdown_grace.as_secs(), "shutting down: finishing the jobs in hand");
                    consumer.stop().await?;
                    let handled = match tokio::time::timeout(self.options.shutdown_grace, &mut handling).await {
                        Ok(handled) => handled,
                        Err(_) => {
                            tracing::warn!("grace period over: stopping the jobs and requeueing them");
                            abort.store(true, Ordering::Relaxed);
                            handling.await
                        }
                    };
                    // A hang found during the grace period still means the process must not
                    // wait for its engine thread.
                    if let ControlFlow::Break(Stalled) = handled? {
                        return Ok(Stop::Stalled);
                    }
                    break;
                }
            }
        }
        Ok(Stop::Shutdown)
    }

    /// Decodes the deliveries, groups the jobs that can share U-Net calls, and runs each group.
    async fn handle(
        &self,
        deliveries: Vec<Delivery>,
        abort: Arc<AtomicBool>,
        finishing: &mut Finishing,
    ) -> Result<ControlFlow<Stalled>, BackendError> {
        let mut jobs = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            let job: Job = match rapid_proto::decode(delivery.body()) {
                Ok(job) => job,
                Err(e) => {
                    self.queue.dead_letter(Topic::Jobs, delivery.body(), &e.to_string()).await?;
                    self.metrics.job_ended(JobOutcome::DeadLettered);
                    delivery.ack().await?;
                    continue;
                }
            };
            jobs.push((delivery, job));
        }
        let mut flow = ControlFlow::Continue(());
        for group in group_by_key(jobs, |(_, job)| batch_key(job)) {
            if abort.load(Ordering::Relaxed) || flow.is_break() {
                // Shutdown ran out of grace, or the engine hung, before this group started: hand
                // it back untouched.
                for (delivery, _) in group {
                    delivery.requeue().await?;
                    self.metrics.job_ended(JobOutcome::Requeued);
                }
                continue;
            }
            flow = self.handle_group(group, &abort, finishing).await?;
        }
        Ok(flow)
    }

    /// Admits a group's jobs and runs them on the engine; their marking, upload and
    /// acknowledgement go to `finishing`, which may hold them while the next group starts.
    async fn handle_group(
        &self,
        group: Vec<(Delivery, Job)>,
        abort: &Arc<AtomicBool>,
        finishing: &mut Finishing,
    ) -> Result<ControlFlow<Stalled>, BackendError> {
        let mut admitted = Vec::with_capacity(group.len());
        for (delivery, job) in group {
            match self.admit(&job, delivery.redelivered()).instrument(job_span(&job, &delivery)).await {
                Ok(Some((request, record))) => admitted.push(Admitted { delivery, job, request, record }),
                Ok(None) => self.settle(delivery, Ok(Outcome::Done)).await?,
                Err(e) => self.settle(delivery, Err(e)).await?,
            }
        }
        if admitted.is_empty() {
            return Ok(ControlFlow::Continue(()));
        }
        let span = tracing::info_span!("batch", jobs = admitted.len());
        self.metrics.set_busy(true);
        let generated = self.generate(&mut admitted, abort).instrument(span).await;
        self.metrics.set_busy(false);
        let (results, flow) = generated?;
        for (job, result) in admitted.into_iter().zip(results) {
            finishing.spawn(self.clone().finish_job(job, result, Arc::clone(abort)));
        }
        finishing.make_room().await?;
        Ok(flow)
    }

    /// Marks and encodes a job's image (off the async runtime), stores it, writes the job's final
    /// state and settles its delivery.
    async fn finish_job(
        self,
        admitted: Admitted,
        generated: Result<Generated, JobError>,
        abort: Arc<AtomicBool>,
    ) -> Result<(), BackendError> {
        let Admitted { delivery, job, request, record } = admitted;
        let span = job_span(&job, &delivery);
        let rendered = match generated {
            Ok(generated) => {
                let job = job.clone();
                tokio::task::spawn_blocking(move || render(&job, &generated))
                    .await
                    .unwrap_or_else(|e| Err(JobError::Retryable(format!("marking the image panicked: {e}"))))
            }
            Err(e) => Err(e),
        };
        let outcome = self.complete(&job, &request, record, rendered, &abort).instrument(span).await;
        self.settle(delivery, outcome).await
    }

    /// Acknowledges or requeues a delivery by what became of its job.
    async fn settle(&self, delivery: Delivery, outcome: Result<Outcome, BackendError>) -> Result<(), BackendError> {
        match outcome {
            Ok(Outcome::Done) => delivery.ack().await?,
            Ok(Outcome::Requeue) => delivery.requeue().await?,
            // A record this build cannot read will not become readable on a retry; the job goes
            // to the dead-letter queue with the reason instead of stopping the worker.
            Err(BackendError::State(e @ StateError::Corrupt { .. })) => {
                self.queue.dead_letter(Topic::Jobs, delivery.body(), &e.to_string()).await?;
                self.metrics.job_ended(JobOutcome::DeadLettered);
                delivery.ack().await?;
            }
            // Broker or Redis unreachable: give up this subscription (`run` consumes again after a
            // pause); the unacknowledged job returns to the queue.
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Decides from the stored state whether the job runs, and if so marks it running and returns
    /// its request and record. `None`: nothing to run (duplicate, cancelled, expired, unknown
    /// request), and what that means is already written; the delivery can be acknowledged.
    async fn admit(&self, job: &Job, redelivered: bool) -> Result<Option<(RequestRecord, JobRecord)>, BackendError> {
        let Some(request) = self.state.request(&job.request_id).await? else {
            let reason =
                format!("request {} is unknown to the state store (expired or never accepted)", job.request_id);
            self.queue.dead_letter(Topic::Jobs, &rapid_proto::encode(job), &reason).await?;
            self.metrics.job_ended(JobOutcome::DeadLettered);
            return Ok(None);
        };
        let previous = self.state.job(&job.id).await?;
        if let Some(previous) = previous.as_ref().filter(|r| r.status.is_final()) {
            tracing::info!(status = ?previous.status, "already final; skipping the duplicate delivery");
            return Ok(None);
        }
        let mut record = previous.unwrap_or_else(|| queued_record(job));
        if self.state.is_cancelled(&job.request_id).await? {
            self.finish(&request, record, JobStatus::Cancelled, JobOutcome::Cancelled).await?;
            return Ok(None);
        }
        if job.deadline_ms.is_some_and(|deadline| now_ms() > deadline) {
            record.error = Some("the request's deadline passed before a worker could start it".into());
            self.finish(&request, record, JobStatus::Failed, JobOutcome::Failed).await?;
            return Ok(None);
        }
        if redelivered {
            tracing::warn!("redelivered: the previous worker stopped before acknowledging");
        }
        if record.attempts == 0 {
            let waited = now_ms().saturating_sub(request.created_ms);
            self.metrics.queue_wait(job.priority, Duration::from_millis(waited));
        }
        record.status = JobStatus::Running;
        record.attempts += 1;
        record.step = 0;
        record.started_ms = Some(now_ms());
        record.updated_ms = now_ms();
        self.state.put_job(&record).await?;
        self.state.append_event(&event(&record, EventKind::Started { attempt: record.attempts })).await?;
        Ok(Some((request, record)))
    }

    /// Stores the image of a job that ran and writes its final state, or retries, dead-letters or
    /// requeues it by how it failed.
    async fn complete(
        &self,
        job: &Job,
        request: &RequestRecord,
        mut record: JobRecord,
        rendered: Result<RenderedImage, JobError>,
        abort: &Arc<AtomicBool>,
    ) -> Result<Outcome, BackendError> {
        let result = match rendered {
            Ok(image) => {
                let started = Instant::now();
                let uploaded = self.upload(job, &image).await;
                self.metrics.stage_ms("upload", started.elapsed().as_secs_f64() * 1000.0);
                uploaded.map(|images| (image, images))
            }
            Err(e) => Err(e),
        };
        match result {
            Ok((image, images)) => {
                for (stage, ms) in &image.timings_ms {
                    // The per-step mean is not a stage of its own; the U-Net's stage is its total.
                    match stage.as_str() {
                        "unet_per_step" => {}
                        "unet_total" => self.metrics.stage_ms("unet", *ms),
                        stage => self.metrics.stage_ms(stage, *ms),
                    }
                }
                // Progress is sampled; the record of a finished job shows every step done.
                record.step = record.total_steps;
                record.images = images;
                record.timings_ms = image.timings_ms;
                record.entities = image.entities;
                record.batch_size = Some(image.batch_size as u32);
                self.finish(request, record, JobStatus::Succeeded, JobOutcome::Succeeded).await
            }
            Err(JobError::Stopped) if abort.load(Ordering::Relaxed) => {
                record.status = JobStatus::Queued;
                record.step = 0;
                record.updated_ms = now_ms();
                self.state.put_job(&record).await?;
                let reason = "the worker shut down before the job finished; requeued".to_owned();
                self.state.append_event(&event(&record, EventKind::Failed { reason, retryable: true })).await?;
                self.metrics.job_ended(JobOutcome::Requeued);
                Ok(Outcome::Requeue)
            }
            Err(JobError::Stopped) => self.finish(request, record, JobStatus::Cancelled, JobOutcome::Cancelled).await,
            Err(JobError::Permanent(reason)) => {
                self.queue.dead_letter(Topic::Jobs, &rapid_proto::encode(job), &reason).await?;
                record.error = Some(reason);
                self.finish(request, record, JobStatus::Failed, JobOutcome::DeadLettered).await
            }
            Err(JobError::Retryable(reason)) => self.retry_or_give_up(request, job, record, reason).await,
        }
    }

    /// Runs the engine on a blocking thread for a group of jobs while this task reports each
    /// job's progress, watches each request's cancel flag, and is the watchdog: a group without
    /// progress for `stall_timeout` ends as a retryable failure of each job, and `Break`.
    async fn generate(
        &self,
        admitted: &mut [Admitted],
        abort: &Arc<AtomicBool>,
    ) -> Result<(Vec<Result<Generated, JobError>>, ControlFlow<Stalled>), BackendError> {
        let count = admitted.len();
        let cancelled: Arc<Vec<AtomicBool>> = Arc::new((0..count).map(|_| AtomicBool::new(false)).collect());
        let (progress_tx, mut progress_rx) = tokio::sync::watch::channel(vec![None::<Progress>; count]);
        let engines = Arc::clone(&self.engines);
        let jobs: Vec<Job> = admitted.iter().map(|a| a.job.clone()).collect();
        let (cancelled_flags, abort_flag) = (Arc::clone(&cancelled), Arc::clone(abort));
        let mut engine = tokio::task::spawn_blocking(move || {
            #[cfg(feature = "failpoints")]
            let first_attempts: Vec<bool> = jobs.iter().map(|job| job.attempt == 0).collect();
            let mut engines = engines.lock().unwrap_or_else(PoisonError::into_inner);
            engines.generate_batch(&jobs, &mut |index, progress| {
                // `make faults` hangs a step here (`--features failpoints`); nothing otherwise.
                fail::fail_point!("worker-step", first_attempts[index], |_| ControlFlow::Continue(()));
                progress_tx.send_modify(|all| all[index] = Some(progress));
                if cancelled_flags[index].load(Ordering::Relaxed) || abort_flag.load(Ordering::Relaxed) {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
        });
        if count > 1 {
            tracing::info!(jobs = count, "denoising together");
        }
        let mut ticker = tokio::time::interval(self.options.progress_interval);
        let mut last_progress = Instant::now();
        loop {
            tokio::select! {
                // A group that finished wins over a tick due at the same moment, which could
                // otherwise take it for hung.
                biased;
                result = &mut engine => {
                    let results = result
                        .unwrap_or_else(|e| each_retryable(count, &format!("the engine thread panicked: {e}")));
                    return Ok((results, ControlFlow::Continue(())));
                }
                _ = ticker.tick() => {
                    let latest = {
                        let seen = progress_rx.borrow_and_update();
                        if seen.has_changed() {
                            last_progress = Instant::now();
                        }
                        seen.clone()
                    };
                    if let Some(limit) = self.options.stall_timeout.filter(|limit| last_progress.elapsed() > *limit) {
                        self.metrics.stalled();
                        // Should the thread ever wake, it stops at its next step.
                        abort.store(true, Ordering::Relaxed);
                        let reason = format!(
                            "the worker's engine made no progress for {} s (worker.stall_timeout_secs); \
                             the worker restarts",
                            limit.as_secs()
                        );
                        tracing::error!(jobs = count, %reason, "watchdog: the engine is hung");
                        return Ok((each_retryable(count, &reason), ControlFlow::Break(Stalled)));
                    }
                    let mut checked: Vec<(&str, bool)> = Vec::new();
                    for (index, job) in admitted.iter().enumerate() {
                        let request_id = job.job.request_id.as_str();
                        let is_cancelled = match checked.iter().find(|(id, _)| *id == request_id) {
                            Some(&(_, flag)) => flag,
                            None => {
                                let flag = self.state.is_cancelled(request_id).await?;
                                checked.push((request_id, flag));
                                flag
                            }
                        };
                        if is_cancelled {
                            cancelled[index].store(true, Ordering::Relaxed);
                        }
                    }
                    for (job, progress) in admitted.iter_mut().zip(latest) {
                        let record = &mut job.record;
                        if let Some(progress) = progress.filter(|p| p.step as u32 != record.step) {
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
    }

    async fn upload(&self, job: &Job, image: &RenderedImage) -> Result<Vec<rapid_proto::ImageRef>, JobError> {
        let key = image_key(&job.tenant, &job.request_id, &job.id, 0, image.format.extension());
        let mut metadata = vec![
            ("model", image.model.clone()),
            ("seed", job.seed.to_string()),
            ("prompt-sha256", hex::encode(sha2::Sha256::digest(job.prompt.as_bytes()))),
            ("ai-generated", "true".to_owned()),
            ("job-id", job.id.clone()),
        ];
        // The image names the trace of the request and job that made it.
        if let Some(traceparent) = telemetry::traceparent(&tracing::Span::current()) {
            metadata.push((telemetry::TRACEPARENT, traceparent));
        }
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
    ) -> Result<Outcome, BackendError> {
        record.error = Some(reason.clone());
        let next_attempt = job.attempt + 1;
        if next_attempt >= self.options.max_attempts {
            let reason = format!("gave up after {next_attempt} attempts; last error: {reason}");
            self.queue.dead_letter(Topic::Jobs, &rapid_proto::encode(job), &reason).await?;
            record.error = Some(reason);
            return self.finish(request, record, JobStatus::Failed, JobOutcome::DeadLettered).await;
        }
        let delay = self.options.retry_backoff * 2u32.saturating_pow(job.attempt);
        tracing::warn!(%reason, retry_in_ms = delay.as_millis() as u64, "job failed; retrying");
        record.status = JobStatus::Queued;
        record.step = 0;
        record.updated_ms = now_ms();
        self.state.put_job(&record).await?;
        self.state.append_event(&event(&record, EventKind::Failed { reason, retryable: true })).await?;
        let retry = Job { attempt: next_attempt, ..job.clone() };
        let retry = Message {
            body: rapid_proto::encode(&retry),
            priority: priority_level(job.priority),
            // The retry continues this attempt's trace.
            traceparent: telemetry::traceparent(&tracing::Span::current()),
        };
        self.queue.publish_delayed(Topic::Jobs, retry, delay).await?;
        self.metrics.job_ended(JobOutcome::Retried);
        Ok(Outcome::Done)
    }

    /// Writes a final state, and when it completes the request, asks for its callback; counts the
    /// run under `outcome` only once all that is written, so that no run is counted twice.
    async fn finish(
        &self,
        request: &RequestRecord,
        mut record: JobRecord,
        status: JobStatus,
        outcome: JobOutcome,
    ) -> Result<Outcome, BackendError> {
        record.status = status;
        record.updated_ms = now_ms();
        self.state.put_job(&record).await?;
        self.state.append_event(&final_event(&record)).await?;
        tracing::info!(?status, "job finished");
        notify_if_request_done(&self.state, &self.queue, request, &record.id).await?;
        self.metrics.job_ended(outcome);
        Ok(Outcome::Done)
    }
}

/// The same retryable failure for each of a group's `count` jobs (the engine thread died or hung).
fn each_retryable(count: usize, reason: &str) -> Vec<Result<Generated, JobError>> {
    (0..count).map(|_| Err(JobError::Retryable(reason.to_owned()))).collect()
}

/// The jobs whose images are being marked, stored and acknowledged while the engine runs the next
/// group: on a GPU worker that CPU work (423–556 ms a 1024-px image in the H100 runs) took as long
/// as the generation itself, so done in turn it halves the GPU's use.
struct Finishing {
    tasks: JoinSet<Result<(), BackendError>>,
    /// Most jobs left finishing when the engine takes the next group.
    limit: usize,
}

impl Finishing {
    fn new(limit: usize) -> Self {
        Self { tasks: JoinSet::new(), limit }
    }

    fn spawn(&mut self, job: impl Future<Output = Result<(), BackendError>> + Send + 'static) {
        self.tasks.spawn(job);
    }

    /// Waits until at most `limit` jobs are finishing. A backend failure of one ends the
    /// subscription, as it would have in turn.
    async fn make_room(&mut self) -> Result<(), BackendError> {
        while self.tasks.len() > self.limit {
            if let Some(done) = self.tasks.join_next().await {
                flatten(done)?;
            }
        }
        Ok(())
    }

    /// Resolves with the first backend failure among the finishing jobs; pending while they
    /// succeed or none is left.
    async fn next_failure(&mut self) -> Option<BackendError> {
        while let Some(done) = self.tasks.join_next().await {
            if let Err(e) = flatten(done) {
                return Some(e);
            }
        }
        std::future::pending().await
    }

    /// Waits for every job still finishing; the first backend failure, if any. None is abandoned:
    /// a task stopped half-way could have stored its image without settling its delivery.
    async fn drain(&mut self) -> Result<(), BackendError> {
        let mut first_error = Ok(());
        while let Some(done) = self.tasks.join_next().await {
            if let Err(e) = flatten(done) {
                if first_error.is_ok() {
                    first_error = Err(e);
                }
            }
        }
        first_error
    }
}

/// A finishing task's own result, or its panic as the panic it was.
fn flatten(done: Result<Result<(), BackendError>, tokio::task::JoinError>) -> Result<(), BackendError> {
    done.unwrap_or_else(|e| std::panic::resume_unwind(e.try_into_panic().expect("finishing tasks are never aborted")))
}

/// The span of one job's run, a child of the request's trace when its message carries one.
fn job_span(job: &Job, delivery: &Delivery) -> tracing::Span {
    let span = tracing::info_span!("job", job = %job.id, request = %job.request_id, attempt = job.attempt);
    if let Some(traceparent) = delivery.traceparent() {
        telemetry::continue_trace(&span, &traceparent);
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A finishing job that ends when its sender fires (or is dropped: a backend failure).
    fn held(finishing: &mut Finishing) -> tokio::sync::oneshot::Sender<()> {
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        finishing.spawn(async move { released.await.map_err(|_| BackendError::Queue(QueueError::StreamClosed)) });
        release
    }

    #[tokio::test]
    async fn the_engine_waits_only_while_more_jobs_than_the_limit_are_finishing() {
        let mut finishing = Finishing::new(1);
        let first = held(&mut finishing);
        tokio::time::timeout(Duration::from_secs(5), finishing.make_room())
            .await
            .expect("one job finishing is within the limit")
            .unwrap();
        let second = held(&mut finishing);
        let mut room = Box::pin(finishing.make_room());
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut room).await.is_err(),
            "two finishing jobs are over the limit of one"
        );
        first.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), room).await.expect("room once one finished").unwrap();
        drop(second);
        let error = finishing.drain().await.expect_err("a failed finishing job is reported");
        assert!(matches!(error, BackendError::Queue(QueueError::StreamClosed)), "{error}");
        assert!(finishing.tasks.is_empty(), "drain waits for every job");
    }

    #[tokio::test]
    async fn a_failure_among_the_finishing_jobs_is_seen_without_waiting_for_the_others() {
        let mut finishing = Finishing::new(4);
        let _slow = held(&mut finishing);
        let failing = held(&mut finishing);
        drop(failing);
        let failure = tokio::time::timeout(Duration::from_secs(5), finishing.next_failure())
            .await
            .expect("the failure is reported while another job still finishes");
        assert!(failure.is_some());
        assert_eq!(finishing.tasks.len(), 1, "the slow job is still finishing");
    }
}
