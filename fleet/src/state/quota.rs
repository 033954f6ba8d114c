//! Per-tenant quotas, counted where the fleet's state lives so every scheduler replica sees the
//! same counts: requests in the current minute, images accepted today (UTC), images in flight
//! (accepted and not yet ended). Admission checks all three and counts the request in one atomic
//! step; a job's end (whoever records it) takes its image out of flight.

use serde::{Deserialize, Serialize};

/// A tenant's limits; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    pub requests_per_minute: Option<u32>,
    pub images_in_flight: Option<u32>,
    pub images_per_day: Option<u32>,
}

/// Which limit a request ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaLimit {
    RequestsPerMinute,
    ImagesInFlight,
    ImagesPerDay,
}

impl QuotaLimit {
    /// The limit's name in the configuration (`tenants[].limits.<name>`).
    pub fn name(self) -> &'static str {
        match self {
            Self::RequestsPerMinute => "requests_per_minute",
            Self::ImagesInFlight => "images_in_flight",
            Self::ImagesPerDay => "images_per_day",
        }
    }

    /// The configured value of this limit in `quota`.
    pub fn of(self, quota: &Quota) -> Option<u32> {
        match self {
            Self::RequestsPerMinute => quota.requests_per_minute,
            Self::ImagesInFlight => quota.images_in_flight,
            Self::ImagesPerDay => quota.images_per_day,
        }
    }

    /// When a request turned away by this limit may succeed, counted from `now_ms`: the next
    /// minute or UTC day for the windows; for images in flight, a guess, since it depends on how
    /// fast the fleet ends the tenant's work.
    pub fn retry_after_secs(self, now_ms: u64) -> u64 {
        let now = now_ms / 1000;
        match self {
            Self::RequestsPerMinute => 60 - now % 60,
            Self::ImagesPerDay => DAY_SECS - now % DAY_SECS,
            Self::ImagesInFlight => 10,
        }
    }
}

pub const DAY_SECS: u64 = 86_400;

/// What [`StateStore::admit`](super::StateStore::admit) decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Counted: the request may be enqueued.
    Admitted,
    /// Over this limit; nothing was counted.
    Refused(QuotaLimit),
}

/// A tenant's counters, as `GET /v1/usage` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub requests_this_minute: u32,
    pub images_in_flight: u32,
    pub images_today: u32,
}

/// The windows `now_ms` falls in: (minute, day) since the Unix epoch.
pub fn windows(now_ms: u64) -> (u64, u64) {
    let secs = now_ms / 1000;
    (secs / 60, secs / DAY_SECS)
}

/// The first limit that admitting `images` more would break, given the current counts.
pub fn first_broken(quota: &Quota, usage: &Usage, images: u32) -> Option<QuotaLimit> {
    let over = |limit: Option<u32>, count: u32, more: u32| {
        limit.is_some_and(|l| u64::from(count) + u64::from(more) > u64::from(l))
    };
    if over(quota.requests_per_minute, usage.requests_this_minute, 1) {
        Some(QuotaLimit::RequestsPerMinute)
    } else if over(quota.images_in_flight, usage.images_in_flight, images) {
        Some(QuotaLimit::ImagesInFlight)
    } else if over(quota.images_per_day, usage.images_today, images) {
        Some(QuotaLimit::ImagesPerDay)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_limit_a_request_would_break_is_named() {
        let quota = Quota { requests_per_minute: Some(2), images_in_flight: Some(10), images_per_day: Some(12) };
        let usage = |r, f, d| Usage { requests_this_minute: r, images_in_flight: f, images_today: d };
        assert_eq!(first_broken(&quota, &usage(1, 0, 0), 10), None, "limits are inclusive");
        assert_eq!(first_broken(&quota, &usage(2, 0, 0), 1), Some(QuotaLimit::RequestsPerMinute));
        assert_eq!(first_broken(&quota, &usage(0, 5, 5), 6), Some(QuotaLimit::ImagesInFlight));
        assert_eq!(first_broken(&quota, &usage(0, 0, 8), 5), Some(QuotaLimit::ImagesPerDay));
        assert_eq!(first_broken(&Quota::default(), &usage(u32::MAX, u32::MAX, u32::MAX), 400), None);
    }

    #[test]
    fn windows_retry_at_their_next_boundary() {
        let at = 1_700_000_082_500; // 42.5 s into a minute
        assert_eq!(QuotaLimit::RequestsPerMinute.retry_after_secs(at), 18);
        let day_start = 1_700_006_400_000; // a UTC midnight
        assert_eq!(QuotaLimit::ImagesPerDay.retry_after_secs(day_start + 1000), DAY_SECS - 1);
        assert_eq!(windows(day_start), (day_start / 60_000, day_start / 86_400_000));
    }
}
