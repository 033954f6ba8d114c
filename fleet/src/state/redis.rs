//! Redis layout (every key under the configured prefix `p`):
//! - `p:request:{id}` — the request record (JSON);
//! - `p:job:{id}` — one job record (JSON);
//! - `p:done:{request}` — the set of job ids in a final state;
//! - `p:cancel:{request}` — present when the request was cancelled;
//! - `p:events:{request}` — the request's event log (a list of JSON events, capped).
//!
//! JSON strings rather than hashes: records are written whole by one writer at a time and read
//! whole, and proto's version field then guards them like any other message.

use std::time::Duration;

use ::redis::aio::ConnectionManager;
use ::redis::AsyncCommands;
use rapid_proto::{Event, JobRecord, RequestRecord};
use serde::de::DeserializeOwned;

use super::{ttl_secs, StateError, MAX_EVENTS};

#[derive(Clone)]
pub struct RedisState {
    connection: ConnectionManager,
    prefix: String,
    finished_ttl: Duration,
}

impl RedisState {
    pub async fn connect(url: &str, prefix: &str, finished_ttl: Duration) -> Result<Self, StateError> {
        let client = ::redis::Client::open(url)?;
        let connection = ConnectionManager::new(client).await?;
        Ok(Self { connection, prefix: prefix.to_owned(), finished_ttl })
    }

    fn key(&self, kind: &str, id: &str) -> String {
        format!("{}:{kind}:{id}", self.prefix)
    }

    pub(super) async fn create_request(&self, request: &RequestRecord, jobs: &[JobRecord]) -> Result<(), StateError> {
        let mut pipe = ::redis::pipe();
        pipe.atomic();
        for job in jobs {
            pipe.set(self.key("job", &job.id), rapid_proto::encode(job)).ignore();
        }
        pipe.set(self.key("request", &request.id), rapid_proto::encode(request)).ignore();
        let () = pipe.query_async(&mut self.connection.clone()).await?;
        Ok(())
    }

    pub(super) async fn request(&self, id: &str) -> Result<Option<RequestRecord>, StateError> {
        let key = self.key("request", id);
        let raw: Option<Vec<u8>> = self.connection.clone().get(&key).await?;
        raw.map(|bytes| decode(&key, &bytes)).transpose()
    }

    pub(super) async fn jobs(&self, ids: &[String]) -> Result<Vec<Option<JobRecord>>, StateError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.key("job", id)).collect();
        let raw: Vec<Option<Vec<u8>>> = self.connection.clone().mget(&keys).await?;
        keys.iter().zip(raw).map(|(key, bytes)| bytes.map(|b| decode(key, &b)).transpose()).collect()
    }

    pub(super) async fn put_job(&self, job: &JobRecord) -> Result<(), StateError> {
        let () = self.connection.clone().set(self.key("job", &job.id), rapid_proto::encode(job)).await?;
        Ok(())
    }

    pub(super) async fn cancel(&self, request: &RequestRecord) -> Result<(), StateError> {
        let () = self.connection.clone().set(self.key("cancel", &request.id), 1).await?;
        Ok(())
    }

    pub(super) async fn is_cancelled(&self, request_id: &str) -> Result<bool, StateError> {
        Ok(self.connection.clone().exists(self.key("cancel", request_id)).await?)
    }

    pub(super) async fn finish_job(&self, request: &RequestRecord, job_id: &str) -> Result<bool, StateError> {
        let done = self.key("done", &request.id);
        // SADD and SCARD in one transaction: of two workers finishing the last two jobs at once,
        // exactly one sees its own addition complete the set.
        let (added, finished): (u32, usize) =
            ::redis::pipe().atomic().sadd(&done, job_id).scard(&done).query_async(&mut self.connection.clone()).await?;
        let last = added == 1 && finished >= request.job_ids.len();
        if last {
            let ttl = ttl_secs(self.finished_ttl);
            let mut pipe = ::redis::pipe();
            for id in &request.job_ids {
                pipe.expire(self.key("job", id), ttl).ignore();
            }
            for kind in ["request", "done", "cancel", "events"] {
                pipe.expire(self.key(kind, &request.id), ttl).ignore();
            }
            let () = pipe.query_async(&mut self.connection.clone()).await?;
        }
        Ok(last)
    }

    pub(super) async fn append_event(&self, event: &Event) -> Result<(), StateError> {
        let key = self.key("events", &event.request_id);
        let () = ::redis::pipe()
            .rpush(&key, rapid_proto::encode(event))
            .ignore()
            .ltrim(&key, -(MAX_EVENTS as isize), -1)
            .ignore()
            .query_async(&mut self.connection.clone())
            .await?;
        Ok(())
    }

    pub(super) async fn events(&self, request_id: &str) -> Result<Vec<Event>, StateError> {
        let key = self.key("events", request_id);
        let raw: Vec<Vec<u8>> = self.connection.clone().lrange(&key, 0, -1).await?;
        raw.iter().map(|bytes| decode(&key, bytes)).collect()
    }

    pub(super) async fn ping(&self) -> Result<(), StateError> {
        let _: String = ::redis::cmd("PING").query_async(&mut self.connection.clone()).await?;
        Ok(())
    }
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StateError> {
    rapid_proto::decode(bytes).map_err(|e| StateError::Corrupt { key: key.to_owned(), message: e.to_string() })
}
