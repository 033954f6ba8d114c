//! An in-process queue for standalone mode: per topic, a priority heap (FIFO within a priority)
//! and a notifier. Dead letters are kept and logged; delayed messages are re-published by a timer.
//! Deliveries taken but not yet acknowledged or requeued are counted, so a test can tell a job that
//! was settled from one that was dropped.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use super::{Lane, Message, Topic};

/// Waiting messages of one topic: highest priority first, then oldest (lowest sequence) first.
/// The sequence is unique, so the body and trace context are never compared.
type Waiting = BinaryHeap<(u8, Reverse<u64>, Vec<u8>, Option<String>)>;

/// A job waiting in a lane, with the trace context it continues.
type LaneEntry = (Vec<u8>, Option<String>);

#[derive(Clone, Default)]
pub struct MemoryQueue {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    topics: Mutex<HashMap<Topic, Waiting>>,
    lanes: Mutex<HashMap<Lane, VecDeque<LaneEntry>>>,
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
        self.publish_message(topic, Message { body, priority, traceparent: None });
    }

    pub(super) fn publish_message(&self, topic: Topic, message: Message) {
        let sequence = self.inner.sequence.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Message { body, priority, traceparent } = message;
        self.topics().entry(topic).or_default().push((priority, Reverse(sequence), body, traceparent));
        self.inner.arrived.notify_waiters();
    }

    fn lanes(&self) -> MutexGuard<'_, HashMap<Lane, VecDeque<LaneEntry>>> {
        self.inner.lanes.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn publish_all_to_lane(&self, lane: &Lane, bodies: &[Vec<u8>], traceparent: Option<&str>) {
        let entries = bodies.iter().map(|body| (body.clone(), traceparent.map(str::to_owned)));
        self.lanes().entry(lane.clone()).or_default().extend(entries);
        self.inner.lane_published.notify_one();
    }

    pub(super) fn lane_published(&self) -> &Notify {
        &self.inner.lane_published
    }

    pub(super) fn lane_depth(&self, lane: &Lane) -> u32 {
        self.lanes().get(lane).map_or(0, |waiting| waiting.len() as u32)
    }

    /// The oldest job of `lane` (with its trace context), taken out, and how many stay behind it.
    pub(super) fn take_from_lane(&self, lane: &Lane) -> Option<(LaneEntry, u32)> {
        let mut lanes = self.lanes();
        let waiting = lanes.get_mut(lane)?;
        waiting.pop_front().map(|entry| (entry, waiting.len() as u32))
    }

    pub(super) fn publish_delayed(&self, topic: Topic, message: Message, delay: Duration) {
        let queue = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.publish_message(topic, message);
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

    fn pop(&self, topic: Topic) -> Option<Message> {
        let popped = self.topics().get_mut(&topic).and_then(BinaryHeap::pop);
        popped.map(|(priority, _, body, traceparent)| {
            *self.unacknowledged_counts().entry(topic).or_default() += 1;
            Message { body, priority, traceparent }
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
            if let Some(Message { body, priority, traceparent }) = self.queue.pop(self.topic) {
                return Some(MemoryDelivery {
                    queue: self.queue.clone(),
                    topic: self.topic,
                    priority,
                    body,
                    traceparent,
                });
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
    pub(super) traceparent: Option<String>,
}

impl MemoryDelivery {
    pub(super) fn ack(self) {
        self.queue.settled(self.topic);
    }

    pub(super) fn requeue(self) {
        self.queue.settled(self.topic);
        let message = Message { body: self.body, priority: self.priority, traceparent: self.traceparent };
        self.queue.publish_message(self.topic, message);
    }
}
