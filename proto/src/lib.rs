//! Wire types shared by the scheduler and the workers: JSON on the wire, with a schema version
//! field `v` on every message.
//!
//! Decoding checks the version before the body, so a message from a newer scheduler is rejected
//! with a reason the dead-letter queue can carry ("unsupported version 2"), not misread as a
//! malformed one or silently half-understood.

use serde::{Deserialize, Serialize};

mod names;

pub use names::{ImageFormat, RequestKind, Sampler, UnknownName};

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// Who is waiting: interactive work is served before batch work already queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Interactive,
    Batch,
}

/// One prompt with one seed: the unit a worker takes from the queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    pub v: u32,
    pub id: String,
    pub request_id: String,
    pub tenant: String,
    pub model: String,
    pub prompt: String,
    pub negative_prompt: String,
    pub seed: u64,
    pub width: u32,
    pub height: u32,
    pub steps: u32,
    pub guidance_scale: f32,
    pub sampler: Sampler,
    /// Karras sigma spacing for `euler` and `dpmpp-2m`; absent = the model's scheduler config.
    /// Left out of the JSON when absent, so a job that does not ask for it reads exactly as jobs
    /// did before the field existed (older workers keep taking them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub karras_sigmas: Option<bool>,
    pub upscale: bool,
    pub format: ImageFormat,
    pub priority: Priority,
    /// Unix milliseconds after which the result is no longer wanted.
    pub deadline_ms: Option<u64>,
    /// 0 on the first delivery; incremented on each retry.
    pub attempt: u32,
}

/// Something that happened to a job: the request's event log (`GET /v1/requests/{id}/events`),
/// written by workers (and by the scheduler when a cancel ends queued jobs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub v: u32,
    pub job_id: String,
    pub request_id: String,
    /// Unix milliseconds.
    pub at_ms: u64,
    pub kind: EventKind,
    /// Milliseconds per pipeline stage (tokenize, text_encoder, unet_total, ...), on success.
    #[serde(default)]
    pub timings_ms: Vec<(String, f64)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// A worker started attempt `attempt` (1 on the first run).
    Started {
        attempt: u32,
    },
    /// Denoising progress (sampled, not every step).
    Step {
        step: u32,
        total: u32,
    },
    Succeeded {
        images: Vec<ImageRef>,
        entities: Vec<EntityLink>,
    },
    /// `retryable`: the job goes back to the queue (retry or shutdown); otherwise it has ended.
    Failed {
        reason: String,
        retryable: bool,
    },
    Cancelled,
}

/// An image stored by a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRef {
    pub key: String,
    pub bytes: u64,
    pub width: u32,
    pub height: u32,
}

/// Where a job stands; Redis holds one per job (`JobRecord`), the scheduler aggregates them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    /// A job in an end state never changes again (a redelivery of it is skipped or overwrites the
    /// same objects).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// One job's state as stored in Redis (or in memory in standalone mode): written by workers, read
/// by the scheduler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRecord {
    pub v: u32,
    pub id: String,
    pub request_id: String,
    pub prompt: String,
    pub seed: u64,
    pub status: JobStatus,
    /// Denoising steps done so far and in all (U-Net calls, so PNDM shows one more than `steps`).
    pub step: u32,
    pub total_steps: u32,
    /// Deliveries that started running this job (1 on the first run).
    pub attempts: u32,
    /// The last error, kept after a successful retry so operators can see what went wrong.
    pub error: Option<String>,
    pub images: Vec<ImageRef>,
    /// Milliseconds per pipeline stage of the run that succeeded.
    #[serde(default)]
    pub timings_ms: Vec<(String, f64)>,
    /// Knowledge-graph entities the engine linked in the prompts (models with `knowledge/`).
    #[serde(default)]
    pub entities: Vec<EntityLink>,
    /// How many jobs shared the U-Net calls of the run that succeeded (cross-request batching;
    /// 1 = it ran alone).
    #[serde(default)]
    pub batch_size: Option<u32>,
    /// When the latest attempt started running (Unix ms).
    pub started_ms: Option<u64>,
    pub updated_ms: u64,
}

/// An entity linked in a prompt (paper §3.1.1): which prompt, the entity, the words that named it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityLink {
    /// `prompt` or `negative_prompt`.
    pub role: String,
    pub entity: String,
    pub text: String,
}

/// What the scheduler accepted: written once when the request is accepted, before any job is
/// published, so a worker never sees a job whose request is unknown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestRecord {
    pub v: u32,
    pub id: String,
    pub tenant: String,
    pub kind: RequestKind,
    pub prompts: Vec<String>,
    pub job_ids: Vec<String>,
    pub callback_url: Option<String>,
    pub created_ms: u64,
}

/// Sent by the worker that finished a request's last job; the scheduler POSTs the callback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestFinished {
    pub v: u32,
    pub request_id: String,
    pub tenant: String,
    pub callback_url: String,
    /// 0 on the first delivery; incremented on each retry.
    pub attempt: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("message is not JSON with a numeric `v` field: {0}")]
    NoVersion(serde_json::Error),
    #[error("unsupported schema version {found}; this build reads version {SCHEMA_VERSION}")]
    UnsupportedVersion { found: u32 },
    #[error("malformed version-{SCHEMA_VERSION} message: {0}")]
    Malformed(serde_json::Error),
}

#[derive(Deserialize)]
struct VersionOnly {
    v: u32,
}

/// Decodes a message, checking its version first.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, DecodeError> {
    let VersionOnly { v } = serde_json::from_slice(bytes).map_err(DecodeError::NoVersion)?;
    if v != SCHEMA_VERSION {
        return Err(DecodeError::UnsupportedVersion { found: v });
    }
    serde_json::from_slice(bytes).map_err(DecodeError::Malformed)
}

pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail: no maps with non-string keys, no custom impls.
    serde_json::to_vec(message).expect("wire types always serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job {
            v: SCHEMA_VERSION,
            id: "job-1".into(),
            request_id: "req-1".into(),
            tenant: "acme".into(),
            model: "tiny-sd-clip".into(),
            prompt: "一件红色的丝绸连衣裙".into(),
            negative_prompt: String::new(),
            seed: 42,
            width: 256,
            height: 256,
            steps: 50,
            guidance_scale: 7.5,
            sampler: Sampler::Pndm,
            karras_sigmas: None,
            upscale: true,
            format: ImageFormat::Png,
            priority: Priority::Interactive,
            deadline_ms: None,
            attempt: 0,
        }
    }

    #[test]
    fn job_round_trips() {
        assert_eq!(decode::<Job>(&encode(&job())).unwrap(), job());
        let karras = Job { sampler: Sampler::DpmSolverMultistep, karras_sigmas: Some(true), ..job() };
        assert_eq!(decode::<Job>(&encode(&karras)).unwrap(), karras);
    }

    #[test]
    fn a_job_without_sampler_options_has_the_wire_form_older_workers_read() {
        let json: serde_json::Value = serde_json::from_slice(&encode(&job())).unwrap();
        assert!(json.get("karras_sigmas").is_none(), "{json}");
        // And a job written before the field existed reads as "the model's config".
        assert_eq!(decode::<Job>(json.to_string().as_bytes()).unwrap().karras_sigmas, None);
    }

    #[test]
    fn event_round_trips() {
        let event = Event {
            v: SCHEMA_VERSION,
            job_id: "job-1".into(),
            request_id: "req-1".into(),
            at_ms: 5,
            kind: EventKind::Succeeded {
                images: vec![ImageRef { key: "acme/req-1/job-1-0.png".into(), bytes: 1234, width: 1024, height: 1024 }],
                entities: vec![EntityLink { role: "prompt".into(), entity: "silk".into(), text: "silk".into() }],
            },
            timings_ms: vec![("unet_total".into(), 1500.0)],
        };
        assert_eq!(decode::<Event>(&encode(&event)).unwrap(), event);
        let json = String::from_utf8(encode(&event)).unwrap();
        assert!(json.contains(r#""type":"succeeded""#), "{json}");
    }

    #[test]
    fn state_records_round_trip() {
        let record = JobRecord {
            v: SCHEMA_VERSION,
            id: "req-1-000".into(),
            request_id: "req-1".into(),
            prompt: "一件红色的丝绸连衣裙".into(),
            seed: 42,
            status: JobStatus::Succeeded,
            step: 51,
            total_steps: 51,
            attempts: 2,
            error: Some("S3 put failed".into()),
            images: vec![ImageRef { key: "acme/req-1/req-1-000-0.png".into(), bytes: 10, width: 256, height: 256 }],
            timings_ms: vec![("vae".into(), 12.5)],
            entities: vec![EntityLink { role: "prompt".into(), entity: "silk".into(), text: "丝绸".into() }],
            batch_size: Some(3),
            started_ms: Some(1),
            updated_ms: 2,
        };
        assert_eq!(decode::<JobRecord>(&encode(&record)).unwrap(), record);
        let request = RequestRecord {
            v: SCHEMA_VERSION,
            id: "req-1".into(),
            tenant: "acme".into(),
            kind: RequestKind::FashionDesign,
            prompts: vec!["the photo of a coat".into()],
            job_ids: vec!["req-1-000".into()],
            callback_url: Some("https://example.com/hook".into()),
            created_ms: 3,
        };
        assert_eq!(decode::<RequestRecord>(&encode(&request)).unwrap(), request);
        let finished = RequestFinished {
            v: SCHEMA_VERSION,
            request_id: "req-1".into(),
            tenant: "acme".into(),
            callback_url: "https://example.com/hook".into(),
            attempt: 1,
        };
        assert_eq!(decode::<RequestFinished>(&encode(&finished)).unwrap(), finished);
        assert!(JobStatus::Cancelled.is_final() && !JobStatus::Running.is_final());
    }

    #[test]
    fn unknown_version_is_named() {
        let mut value = serde_json::to_value(job()).unwrap();
        value["v"] = 2.into();
        let error = decode::<Job>(value.to_string().as_bytes()).unwrap_err();
        assert!(matches!(error, DecodeError::UnsupportedVersion { found: 2 }), "{error}");
    }

    #[test]
    fn garbage_and_missing_fields_are_rejected() {
        assert!(matches!(decode::<Job>(b"not json"), Err(DecodeError::NoVersion(_))));
        let error = decode::<Job>(br#"{"v":1,"id":"x"}"#).unwrap_err();
        assert!(matches!(&error, DecodeError::Malformed(_)) && error.to_string().contains("missing field"), "{error}");
    }
}
