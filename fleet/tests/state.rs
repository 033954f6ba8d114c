//! The two state stores keep the same promises: the Redis one (against the real Redis on
//! localhost, under a key prefix of its own) and the in-memory one of standalone mode.

use std::time::Duration;

use rapid_fleet::state::{Admission, Claim, MemoryState, Quota, QuotaLimit, RedisState, StateStore};
use rapid_proto::{RequestKind, RequestRecord, SCHEMA_VERSION};

const REDIS: &str = "redis://127.0.0.1:6379/0";

/// Both stores, and the Redis key prefix to clean up.
async fn stores(test: &str) -> (Vec<(&'static str, StateStore)>, String) {
    let prefix = format!("state-test-{test}-{}-{}", std::process::id(), rapid_fleet::state::now_ms());
    let ttl = Duration::from_secs(60);
    let redis = RedisState::connect(REDIS, &prefix, ttl)
        .await
        .expect("Redis on 127.0.0.1:6379 (bash deploy/test-services.sh starts it)");
    (vec![("redis", StateStore::Redis(redis)), ("memory", StateStore::Memory(MemoryState::new(ttl)))], prefix)
}

async fn delete_keys(prefix: &str) {
    let mut connection = redis::Client::open(REDIS).unwrap().get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}:*")).query_async(&mut connection).await.unwrap();
    if !keys.is_empty() {
        let () = redis::cmd("DEL").arg(keys).query_async(&mut connection).await.unwrap();
    }
}

fn request(tenant: &str, jobs: usize) -> RequestRecord {
    let id = format!("{tenant}-{}", rapid_fleet::state::now_ms());
    RequestRecord {
        v: SCHEMA_VERSION,
        job_ids: (0..jobs).map(|i| format!("{id}-{i:03}")).collect(),
        id,
        tenant: tenant.into(),
        kind: RequestKind::Generation,
        prompts: vec!["a hat".into()],
        callback_url: None,
        created_ms: 0,
    }
}

#[tokio::test]
async fn quotas_admit_up_to_the_limit_and_ended_jobs_leave_flight_once() {
    let (stores, prefix) = stores("quota").await;
    for (name, store) in stores {
        let quota = Quota { requests_per_minute: Some(10), images_in_flight: Some(4), images_per_day: None };
        assert_eq!(store.admit("acme", 3, &quota).await.unwrap(), Admission::Admitted, "{name}");
        assert_eq!(
            store.admit("acme", 2, &quota).await.unwrap(),
            Admission::Refused(QuotaLimit::ImagesInFlight),
            "{name}"
        );
        assert_eq!(store.admit("globex", 4, &quota).await.unwrap(), Admission::Admitted, "{name}: per tenant");

        let request = request("acme", 3);
        store.finish_job(&request, &request.job_ids[0]).await.unwrap();
        store.finish_job(&request, &request.job_ids[0]).await.unwrap(); // a redelivery
        let usage = store.usage("acme").await.unwrap();
        assert_eq!((usage.images_in_flight, usage.requests_this_minute, usage.images_today), (2, 1, 3), "{name}");
        assert_eq!(store.admit("acme", 2, &quota).await.unwrap(), Admission::Admitted, "{name}");
    }
    delete_keys(&prefix).await;
}

#[tokio::test]
async fn a_key_is_claimed_once_until_released() {
    let (stores, prefix) = stores("claim").await;
    for (name, store) in stores {
        let ttl = Duration::from_secs(30);
        assert_eq!(store.claim("k", b"first", ttl).await.unwrap(), Claim::Claimed, "{name}");
        assert_eq!(store.claim("k", b"second", ttl).await.unwrap(), Claim::Held(b"first".to_vec()), "{name}");
        store.update_claim("k", b"answer", ttl).await.unwrap();
        assert_eq!(store.claim("k", b"third", ttl).await.unwrap(), Claim::Held(b"answer".to_vec()), "{name}");
        store.release_claim("k").await.unwrap();
        assert_eq!(store.claim("k", b"fourth", ttl).await.unwrap(), Claim::Claimed, "{name}");
        store.release_claim("k").await.unwrap();
    }
    delete_keys(&prefix).await;
}
