//! An in-process queue for standalone mode: per topic, a priority heap (FIFO within a priority)
//! and a notifier. Dead letters are kept and logged; delayed messages are re-published by a timer.
//! Deliveries taken but not yet acknowledged or requeued are counted, so a test can tell a job that
//! was settled from one that was dropped.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use super::{Lane, Topic};

/// Waiting messages of one topic: highest priority first, then oldest (lowest sequence) first.
type Waiting = BinaryHeap<(u8, Reverse<u64>, Vec<u8>)>;

#[derive(Clone, Default)]
pub struct MemoryQueue {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    topics: Mutex<HashMap<Topic, Waiting>>,
    lanes: Mutex<HashMap<Lane, VecDeque<Vec<u8>>>>,
    dead: Mutex<Vec<(Topic, Vec<u8>, String)>>,
    unacknowledged: Mutex<HashMap<Topic, u32>>,
    sequence: std::sync::atomic::AtomicU64,
    arrived: Notify,
    lane_published: Notify,
}

impl MemoryQueue {
    fn topics(&self) -> MutexGuard<'_, HashMap<Topic, Waiting>> {
        self.inner.topics.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn publish(&self, topic: Topic, body: Vec<u8>, priority: u8) {
        let sequence = self.inner.sequence.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.topics().entry(topic).or_default().push((priority, Reverse(sequence), body));
        self.inner.arrived.notify_waiters();
    }

    fn lanes(&self) -> MutexGuard<'_, HashMap<Lane, VecDeque<Vec<u8>>>> {
        self.inner.lanes.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn publish_all_to_lane(&self, lane: &Lane, bodies: &[Vec<u8>]) {
        self.lanes().entry(lane.clone()).or_default().extend(bodies.iter().cloned());
        self.inner.lane_published.notify_one();
    }

    pub(super) fn lane_published(&self) -> &Notify {
        &self.inner.lane_published
    }

    pub(super) fn lane_depth(&self, lane: &Lane) -> u32 {
        self.lanes().get(lane).map_or(0, |waiting| waiting.len() as u32)
    }

    /// The oldest job of `lane`, taken out, and how many stay behind it.
    pub(super) fn take_from_lane(&self, lane: &Lane) -> Option<(Vec<u8>, u32)> {
        let mut lanes = self.lanes();
        let waiting = lanes.get_mut(lane)?;
        waiting.pop_front().map(|body| (body, waiting.len() as u32))
    }

    pub(super) fn publish_delayed(&self, topic: Topic, body: Vec<u8>, priority: u8, delay: Duration) {
        let queue = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.publish(topic, body, priority);
        });
    }

    pub(super) fn dead_letter(&self, topic: Topic, body: Vec<u8>, reason: &str) {
        self.inner.dead.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((
            topic,
            body,
            reason.to_owned(),
        ));
    }

    /// Dead-lettered messages so far, with their reasons.
    pub fn dead_letters(&self) -> Vec<(Topic, Vec<u8>, String)> {
        self.inner.dead.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Deliveries of `topic` handed out and neither acknowledged nor requeued yet.
    pub fn unacknowledged(&self, topic: Topic) -> u32 {
        self.unacknowledged_counts().get(&topic).copied().unwrap_or(0)
    }

    fn unacknowledged_counts(&self) -> MutexGuard<'_, HashMap<Topic, u32>> {
        self.inner.unacknowledged.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn depth(&self, topic: Topic) -> u32 {
        self.topics().get(&topic).map_or(0, |heap| heap.len() as u32)
    }

    pub(super) fn consume(&self, topic: Topic) -> MemoryConsumer {
        MemoryConsumer { queue: self.clone(), topic, stopped: false }
    }

    fn pop(&self, topic: Topic) -> Option<(u8, Vec<u8>)> {
        let popped = self.topics().get_mut(&topic).and_then(BinaryHeap::pop);
        popped.map(|(priority, _, body)| {
            *self.unacknowledged_counts().entry(topic).or_default() += 1;
            (priority, body)
        })
    }

    fn settled(&self, topic: Topic) {
        if let Some(count) = self.unacknowledged_counts().get_mut(&topic) {
            *count = count.saturating_sub(1);
        }
    }
}

pub struct MemoryConsumer {
    queue: MemoryQueue,
    topic: Topic,
    stopped: bool,
}

impl MemoryConsumer {
    pub(super) async fn next(&mut self) -> Option<MemoryDelivery> {
        loop {
            if self.stopped {
                return None;
            }
            // Register interest before looking, so a publish between the look and the wait is not missed.
            let arrived = self.queue.inner.arrived.notified();
            if let Some((priority, body)) = self.queue.pop(self.topic) {
                return Some(MemoryDelivery { queue: self.queue.clone(), topic: self.topic, priority, body });
            }
            arrived.await;
        }
    }

    pub(super) fn stop(&mut self) {
        self.stopped = true;
    }
}

pub struct MemoryDelivery {
    queue: MemoryQueue,
    topic: Topic,
    priority: u8,
    pub(super) body: Vec<u8>,
}

impl MemoryDelivery {
    pub(super) fn ack(self) {
        self.queue.settled(self.topic);
    }

    pub(super) fn requeue(self) {
        self.queue.settled(self.topic);
        self.queue.publish(self.topic, self.body, self.priority);
    }
}
