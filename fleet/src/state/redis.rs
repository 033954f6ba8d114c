//! Redis layout (every key under the configured prefix `p`):
//! - `p:request:{id}` — the request record (JSON);
//! - `p:job:{id}` — one job record (JSON);
//! - `p:done:{request}` — the set of job ids in a final state;
//! - `p:cancel:{request}` — present when the request was cancelled;
//! - `p:events:{request}` — the request's event log (a list of JSON events, capped);
//! - `p:usage:{tenant}:minute:{n}`, `p:usage:{tenant}:day:{n}`, `p:usage:{tenant}:inflight` — the
//!   tenant's quota counters (requests in minute n, images accepted on day n, images in flight);
//! - `p:claim:{key}` — a value claimed with [`StateStore::claim`](super::StateStore::claim)
//!   (the scheduler's idempotency records), with its own expiry.
//!
//! JSON strings rather than hashes: records are written whole by one writer at a time and read
//! whole, and proto's version field then guards them like any other message.

use std::time::Duration;

use ::redis::aio::ConnectionManager;
use ::redis::AsyncCommands;
use rapid_proto::{Event, JobRecord, RequestRecord};
use serde::de::DeserializeOwned;

use super::quota::{self, Admission, Quota, QuotaLimit, Usage};
use super::{ttl_secs, Claim, StateError, MAX_EVENTS};

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
        // One script: of two workers finishing the last two jobs at once, exactly one sees its own
        // addition complete the set, and a redelivered job leaves flight only once.
        let (added, finished): (u32, usize) = ::redis::Script::new(FINISH_JOB)
            .key(&done)
            .key(self.usage_key(&request.tenant, "inflight"))
            .arg(job_id)
            .invoke_async(&mut self.connection.clone())
            .await?;
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

    fn usage_key(&self, tenant: &str, counter: &str) -> String {
        format!("{}:usage:{tenant}:{counter}", self.prefix)
    }

    fn usage_keys(&self, tenant: &str, now_ms: u64) -> [String; 3] {
        let (minute, day) = quota::windows(now_ms);
        [
            self.usage_key(tenant, &format!("minute:{minute}")),
            self.usage_key(tenant, &format!("day:{day}")),
            self.usage_key(tenant, "inflight"),
        ]
    }

    pub(super) async fn admit(
        &self,
        tenant: &str,
        images: u32,
        limits: &Quota,
        now_ms: u64,
    ) -> Result<Admission, StateError> {
        let [minute, day, inflight] = self.usage_keys(tenant, now_ms);
        let limit = |l: Option<u32>| l.map_or(-1, i64::from);
        let refused: u8 = ::redis::Script::new(ADMIT)
            .key(minute)
            .key(day)
            .key(inflight)
            .arg(images)
            .arg(limit(limits.requests_per_minute))
            .arg(limit(limits.images_in_flight))
            .arg(limit(limits.images_per_day))
            // A window's counter outlives its window a little, for `usage` near the boundary.
            .arg(120)
            .arg(quota::DAY_SECS + 3600)
            .invoke_async(&mut self.connection.clone())
            .await?;
        Ok(match refused {
            0 => Admission::Admitted,
            1 => Admission::Refused(QuotaLimit::RequestsPerMinute),
            2 => Admission::Refused(QuotaLimit::ImagesInFlight),
            _ => Admission::Refused(QuotaLimit::ImagesPerDay),
        })
    }

    pub(super) async fn usage(&self, tenant: &str, now_ms: u64) -> Result<Usage, StateError> {
        let keys = self.usage_keys(tenant, now_ms);
        let counts: Vec<Option<i64>> = self.connection.clone().mget(&keys[..]).await?;
        let count = |i: usize| counts.get(i).copied().flatten().unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32;
        Ok(Usage { requests_this_minute: count(0), images_today: count(1), images_in_flight: count(2) })
    }

    pub(super) async fn claim(&self, key: &str, value: &[u8], ttl: Duration) -> Result<Claim, StateError> {
        let key = self.key("claim", key);
        // SET NX and GET are two commands: a holder's key can expire between them, and then the
        // claim is simply tried again.
        for _ in 0..3 {
            let set: Option<String> = ::redis::cmd("SET")
                .arg(&key)
                .arg(value)
                .arg("NX")
                .arg("EX")
                .arg(ttl_secs(ttl))
                .query_async(&mut self.connection.clone())
                .await?;
            if set.is_some() {
                return Ok(Claim::Claimed);
            }
            let held: Option<Vec<u8>> = self.connection.clone().get(&key).await?;
            if let Some(held) = held {
                return Ok(Claim::Held(held));
            }
        }
        Err(StateError::Corrupt { key, message: "expires as fast as it is claimed".into() })
    }

    pub(super) async fn update_claim(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StateError> {
        let () = self.connection.clone().set_ex(self.key("claim", key), value, ttl_secs(ttl) as u64).await?;
        Ok(())
    }

    pub(super) async fn release_claim(&self, key: &str) -> Result<(), StateError> {
        let () = self.connection.clone().del(self.key("claim", key)).await?;
        Ok(())
    }

    pub(super) async fn ping(&self) -> Result<(), StateError> {
        let _: String = ::redis::cmd("PING").query_async(&mut self.connection.clone()).await?;
        Ok(())
    }
}

/// KEYS: the request's done set, the tenant's in-flight counter. ARGV: the job id.
/// Returns {added, size of the done set}.
const FINISH_JOB: &str = r"
local added = redis.call('SADD', KEYS[1], ARGV[1])
if added == 1 and redis.call('DECR', KEYS[2]) < 0 then
  redis.call('SET', KEYS[2], 0)
end
return {added, redis.call('SCARD', KEYS[1])}
";

/// KEYS: the tenant's minute, day and in-flight counters. ARGV: images; the limits on requests per
/// minute, images in flight and images per day (-1: none); the minute's and the day's TTL.
/// Returns 0 (admitted and counted) or the refusing limit: 1, 2, 3 in ARGV's order. The same
/// rule as `quota::first_broken`, which the memory store runs.
const ADMIT: &str = r"
local minute = tonumber(redis.call('GET', KEYS[1]) or '0')
local day = tonumber(redis.call('GET', KEYS[2]) or '0')
local inflight = math.max(0, tonumber(redis.call('GET', KEYS[3]) or '0'))
local images = tonumber(ARGV[1])
local function over(limit, count, more)
  limit = tonumber(limit)
  return limit >= 0 and count + more > limit
end
if over(ARGV[2], minute, 1) then return 1 end
if over(ARGV[3], inflight, images) then return 2 end
if over(ARGV[4], day, images) then return 3 end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('INCRBY', KEYS[2], images)
redis.call('EXPIRE', KEYS[2], ARGV[6])
redis.call('INCRBY', KEYS[3], images)
return 0
";

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StateError> {
    rapid_proto::decode(bytes).map_err(|e| StateError::Corrupt { key: key.to_owned(), message: e.to_string() })
}
