//! The pause between subscriptions of a consumer whose broker (or state store) failed: the
//! worker's and the callback sender's loops consume again after it instead of exiting, so a fleet
//! heals by itself when RabbitMQ comes back.

use std::time::{Duration, Instant};

/// The first pause; each failure in a row doubles it, up to `LONGEST`.
const FIRST: Duration = Duration::from_millis(250);
const LONGEST: Duration = Duration::from_secs(10);
/// A subscription that lasted this long was healthy: the next failure starts from `FIRST` again.
const HEALTHY: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Resubscribe {
    next: Duration,
    since: Instant,
}

impl Default for Resubscribe {
    fn default() -> Self {
        Self { next: FIRST, since: Instant::now() }
    }
}

impl Resubscribe {
    /// A subscription starts now.
    pub fn subscribing(&mut self) {
        self.since = Instant::now();
    }

    /// The subscription failed: how long to wait before the next.
    pub fn failed(&mut self) -> Duration {
        if self.since.elapsed() > HEALTHY {
            self.next = FIRST;
        }
        let pause = self.next;
        self.next = (self.next * 2).min(LONGEST);
        pause
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_longest() {
        let mut resubscribe = Resubscribe::default();
        let pauses: Vec<_> = (0..8)
            .map(|_| {
                resubscribe.subscribing();
                resubscribe.failed().as_millis()
            })
            .collect();
        assert_eq!(pauses, [250, 500, 1000, 2000, 4000, 8000, 10_000, 10_000]);
    }

    #[test]
    fn a_healthy_subscription_starts_the_pauses_over() {
        let mut resubscribe = Resubscribe::default();
        resubscribe.failed();
        resubscribe.failed();
        resubscribe.since = Instant::now() - HEALTHY - Duration::from_secs(1);
        assert_eq!(resubscribe.failed(), FIRST);
    }
}
