//! Standalone mode: the whole fleet in one process — the HTTP API, in-process workers, an
//! in-memory queue and state, and a local folder instead of S3. The same code paths as the fleet
//! (the same router, planner, job consumer and callback sender), only the three backends differ.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rapid_engine::runtime::Runtime;
use rapid_fleet::queue::{MemoryQueue, Queue};
use rapid_fleet::shutdown;
use rapid_fleet::state::{MemoryState, StateStore};
use rapid_fleet::storage::{LocalStore, ObjectStore};
use rapid_worker::consumer::{ConsumerOptions, JobConsumer, Stop};
use rapid_worker::runner::Engines;
use tokio::sync::watch;

use crate::api::app;
use crate::api::requests::{RequestStatus, RequestView};
use crate::api::submit::Accepted;
use crate::callbacks::CallbackSender;
use crate::config::SchedulerFile;

/// A request to submit to ourselves once the API is up.
pub struct Submission {
    pub file: PathBuf,
    pub endpoint: String,
    pub api_key: String,
}

pub async fn run(
    file: SchedulerFile,
    listen: SocketAddr,
    submission: Option<Submission>,
    keep_serving: bool,
) -> Result<()> {
    let standalone = file.standalone.clone().context("the configuration has no [standalone] section")?;
    let worker = file.worker.clone().context("standalone mode needs a [worker] section naming its models")?;
    let runtime = Runtime::new(&worker.runtime_options()?)?;

    let queue = Queue::Memory(MemoryQueue::default());
    let state = StateStore::Memory(MemoryState::new(Duration::from_secs(standalone.finished_ttl_secs)));
    let local = LocalStore::new(&standalone.output_dir);
    let app_state =
        crate::serve::app_state(&file, state.clone(), queue.clone(), ObjectStore::Local(local.clone()), Duration::ZERO);

    let (stop, stopped) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::<Result<()>>::new();
    for _ in 0..standalone.workers.max(1) {
        let engines = tokio::task::block_in_place(|| Engines::start(&runtime, &worker))?;
        let consumer = JobConsumer {
            queue: queue.clone(),
            state: state.clone(),
            store: ObjectStore::Local(local.clone()),
            engines: Arc::new(Mutex::new(engines)),
            options: ConsumerOptions::from(&worker),
            metrics: Arc::default(),
        };
        let rx = stopped.clone();
        tasks.spawn(async move {
            match consumer.run(shutdown::stopped(rx)).await {
                Stop::Shutdown => Ok(()),
                Stop::Stalled => anyhow::bail!(
                    "the watchdog found the engine hung (worker.stall_timeout_secs). The queue is in \
                     memory, so its jobs end with this process: run standalone again and resubmit"
                ),
            }
        });
    }
    let sender = CallbackSender::new(app_state.clone());
    let rx = stopped.clone();
    tasks.spawn(async move {
        sender.run(shutdown::stopped(rx)).await;
        Ok(())
    });
    let dispatcher = crate::serve::dispatcher(&file, queue.clone());
    let rx = stopped.clone();
    tasks.spawn(async move {
        dispatcher.run(shutdown::stopped(rx)).await;
        Ok(())
    });

    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let address = listener.local_addr()?;
    eprintln!(
        "standalone: API on http://{address} ({} in-process workers, images in {})",
        standalone.workers.max(1),
        standalone.output_dir.display()
    );
    let rx = stopped.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app(app_state)).with_graceful_shutdown(shutdown::stopped(rx)).await
    });

    let work = async {
        let outcome = match submission {
            Some(submission) => submit_and_wait(address, &submission, &local).await,
            None => Ok(()),
        };
        if keep_serving {
            eprintln!("standalone: serving until Ctrl-C or SIGTERM");
            shutdown::signal().await;
        }
        outcome
    };
    // The tasks run until told to stop, so one that ends first failed (a hung engine): stop now
    // rather than wait for a submission that nothing will run.
    let outcome = tokio::select! {
        outcome = work => outcome,
        Some(ended) = tasks.join_next() => Err(match ended {
            Ok(Err(error)) => error,
            Ok(Ok(())) => anyhow::anyhow!("a standalone task stopped before it was told to"),
            Err(error) => error.into(),
        }),
    };
    stop.send_replace(true);
    server.await??;
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    outcome
}

async fn submit_and_wait(address: SocketAddr, submission: &Submission, local: &LocalStore) -> Result<()> {
    let body = std::fs::read(&submission.file).with_context(|| format!("cannot read {}", submission.file.display()))?;
    let client = reqwest::Client::new();
    let base = format!("http://{address}");
    let response = client
        .post(format!("{base}{}", submission.endpoint))
        .bearer_auth(&submission.api_key)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("{} was refused: {} {}", submission.file.display(), response.status(), response.text().await?);
    }
    let accepted: Accepted = response.json().await?;
    eprintln!("standalone: request {} accepted, {} jobs:", accepted.request_id, accepted.jobs.len());
    for prompt in &accepted.prompts {
        eprintln!("  prompt: {prompt}");
    }
    let interactive = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut last_line: Option<String> = None;
    let view = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let view: RequestView = client
            .get(format!("{base}{}", accepted.status_url))
            .bearer_auth(&submission.api_key)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let p = &view.progress;
        let line = format!(
            "standalone: {}: {}/{} jobs, {}/{} steps",
            serde_json::to_string(&view.status)?.trim_matches('"'),
            p.jobs_finished,
            p.jobs_total,
            p.steps_done,
            p.steps_total
        );
        // Redraw one line on a terminal; print only changes into logs.
        if interactive {
            eprint!("\r{line}   ");
        } else if last_line.as_deref() != Some(line.as_str()) {
            eprintln!("{line}");
        }
        last_line = Some(line);
        if !matches!(view.status, RequestStatus::Queued | RequestStatus::Running) {
            if interactive {
                eprintln!();
            }
            break view;
        }
    };
    for job in &view.jobs {
        if let Some(error) = &job.error {
            eprintln!("standalone: job {} ({:?}): {error}", job.id, job.status);
        }
        for image in &job.images {
            println!("{}", relative(&local.path_of(&image.key)).display());
        }
    }
    if view.status != RequestStatus::Succeeded {
        bail!("request {} ended {:?}", view.request_id, view.status);
    }
    Ok(())
}

fn relative(path: &Path) -> PathBuf {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| path.to_path_buf())
}
