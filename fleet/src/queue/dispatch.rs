//! The dispatcher: moves jobs from the tenants' lanes into `jobs`, where the workers take them,
//! keeping no more than `ready_jobs` waiting there. Interactive lanes are served before batch
//! lanes, and within a class the tenants by [`FairShare`]. Because `jobs` stays short, a tenant
//! who submits after another tenant's large batch waits behind a few jobs, not behind the batch.
//!
//! A job is acknowledged in its lane only after `jobs` has confirmed it, so a dispatcher that dies
//! between the two leaves the job in both places, never in neither; workers skip a job whose
//! record is already final, which makes the second copy harmless. Several schedulers may each run
//! a dispatcher: `jobs` can then hold up to `ready_jobs` per dispatcher.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use rapid_proto::Priority;

use super::amqp::AmqpLaneReader;
use super::{priority_level, FairShare, Lane, MemoryQueue, Message, Queue, QueueError, Resubscribe, Topic};

/// Most jobs moved in one round, so a large `ready_jobs` does not hold thousands in hand.
const MOVES_PER_ROUND: u32 = 256;
/// How often a full `jobs` queue is looked at again: about a job's time on a fast worker.
const FULL_POLL: Duration = Duration::from_millis(20);
/// Idle polling backs off from the first to the second: lanes are looked at often while work
/// arrives, rarely on a quiet fleet. A publish into a lane by this process wakes the dispatcher
/// at once; one by another scheduler replica waits for the poll.
const IDLE_POLL: (Duration, Duration) = (Duration::from_millis(10), Duration::from_millis(250));

pub struct Dispatcher {
    queue: Queue,
    lanes: Vec<Lane>,
    fair: FairShare,
    ready_jobs: u32,
}

/// What one round of filling `jobs` found.
#[derive(Debug, PartialEq, Eq)]
enum Fill {
    /// `jobs` already holds `ready_jobs`.
    Full,
    /// Moved this many (maybe zero: every lane was empty).
    Moved(u32),
}

impl Dispatcher {
    /// `tenants`: each tenant's name and weight; `ready_jobs`: how many jobs may wait in `jobs`
    /// (at least 1). Enough to keep every worker's batch full, few enough that fair share matters.
    pub fn new(queue: Queue, tenants: &[(String, u32)], ready_jobs: u32) -> Self {
        Self {
            lanes: Lane::all(tenants.iter().map(|(name, _)| name.as_str())),
            fair: FairShare::new(tenants.iter().map(|(name, weight)| (name.as_str(), *weight))),
            queue,
            ready_jobs: ready_jobs.max(1),
        }
    }

    /// Runs until `stop` resolves; broker errors are logged and retried, so a broker that comes
    /// back finds the dispatcher still there.
    pub async fn run(mut self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut idle = IDLE_POLL.0;
        let mut reader = None;
        let mut resubscribe = Resubscribe::default();
        loop {
            // A round is never cut short by `stop`: it ends within `ready_jobs` moves, and a move
            // cut between its publish and its ack would leave a second copy behind.
            let pause = match self.round(&mut reader).await {
                Ok(Fill::Full) => FULL_POLL,
                Ok(Fill::Moved(0)) => {
                    let pause = idle;
                    idle = (idle * 2).min(IDLE_POLL.1);
                    pause
                }
                Ok(Fill::Moved(_)) => {
                    idle = IDLE_POLL.0;
                    Duration::ZERO
                }
                Err(error) => {
                    let pause = resubscribe.failed();
                    tracing::warn!(%error, retry_in_ms = pause.as_millis() as u64, "dispatcher: the broker failed; trying again after a pause");
                    reader = None;
                    resubscribe.subscribing();
                    pause
                }
            };
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(pause) => {}
                () = self.queue.lane_published().notified() => idle = IDLE_POLL.0,
            }
        }
    }

    async fn round(&mut self, reader: &mut Option<LaneReader>) -> Result<Fill, QueueError> {
        let reader = match reader {
            Some(reader) => reader,
            None => reader.insert(LaneReader::open(&self.queue, &self.lanes).await?),
        };
        let ready = self.queue.depth(Topic::Jobs).await?;
        if ready >= self.ready_jobs {
            return Ok(Fill::Full);
        }
        // Take a round's jobs first, then publish them with their confirms awaited together, then
        // acknowledge them in their lanes: one wait for the broker's disk per round, not per job.
        let room = (self.ready_jobs - ready).min(MOVES_PER_ROUND);
        let mut messages = Vec::new();
        let mut taken = Vec::new();
        let mut empty = HashSet::new();
        while messages.len() < room as usize {
            let Some(lane) = self.next_lane(&empty) else { break };
            match reader.take(lane, &self.lanes[lane]).await? {
                Some((body, traceparent, remaining, receipt)) => {
                    let class = self.lanes[lane].class;
                    self.fair.served(class, &self.lanes[lane].tenant);
                    messages.push(Message { body, priority: priority_level(class), traceparent });
                    taken.push(receipt);
                    if remaining == 0 {
                        empty.insert(lane);
                    }
                }
                None => {
                    empty.insert(lane);
                }
            }
        }
        let published = self.queue.publish_all(Topic::Jobs, &messages).await;
        let queued = published.as_ref().map_or_else(|partial| partial.queued, |()| messages.len());
        let mut receipts = taken.into_iter();
        for receipt in receipts.by_ref().take(queued) {
            receipt.ack().await?;
        }
        if let Err(partial) = published {
            // Not in `jobs`: back to the head of their lanes for the next round.
            for receipt in receipts {
                receipt.requeue().await.ok();
            }
            return Err(partial.error);
        }
        let moved = queued as u32;
        Ok(Fill::Moved(moved))
    }

    /// The lane to take from next: interactive before batch, then by fair share; `empty` lanes
    /// (found so in this round) are skipped.
    fn next_lane(&self, empty: &HashSet<usize>) -> Option<usize> {
        [Priority::Interactive, Priority::Batch].into_iter().find_map(|class| {
            let waiting: Vec<(usize, &str)> = (0..self.lanes.len())
                .filter(|i| self.lanes[*i].class == class && !empty.contains(i))
                .map(|i| (i, self.lanes[i].tenant.as_str()))
                .collect();
            let tenants: Vec<&str> = waiting.iter().map(|(_, tenant)| *tenant).collect();
            let chosen = self.fair.pick(class, &tenants)?;
            waiting.iter().find(|(_, tenant)| *tenant == chosen).map(|(i, _)| *i)
        })
    }
}

/// Where the dispatcher takes jobs out of lanes: a channel of its own on RabbitMQ.
enum LaneReader {
    Amqp(AmqpLaneReader),
    Memory(MemoryQueue),
}

/// A job's body and trace context, the jobs left behind it in its lane, and its receipt.
type TakenJob = (Vec<u8>, Option<String>, u32, Taken);

/// A job taken out of its lane, to be acknowledged once it is safely in `jobs`.
enum Taken {
    Amqp(Box<lapin::message::BasicGetMessage>),
    Memory,
}

impl LaneReader {
    async fn open(queue: &Queue, lanes: &[Lane]) -> Result<Self, QueueError> {
        match queue {
            Queue::Amqp(q) => Ok(Self::Amqp(q.lane_reader(lanes).await?)),
            Queue::Memory(q) => Ok(Self::Memory(q.clone())),
        }
    }

    /// The oldest job of a lane with its trace context, the number left behind it, and its
    /// acknowledgement. `index`: the lane's place in the list the reader was opened with.
    async fn take(&self, index: usize, lane: &Lane) -> Result<Option<TakenJob>, QueueError> {
        match self {
            Self::Amqp(reader) => Ok(reader.take(index).await?.map(|message| {
                let body = message.delivery.data.clone();
                let traceparent = super::amqp::traceparent_of(&message.delivery.properties);
                (body, traceparent, message.message_count, Taken::Amqp(Box::new(message)))
            })),
            Self::Memory(q) => {
                Ok(q.take_from_lane(lane).map(|((body, traceparent), left)| (body, traceparent, left, Taken::Memory)))
            }
        }
    }
}

impl Taken {
    async fn ack(self) -> Result<(), QueueError> {
        match self {
            Self::Amqp(message) => AmqpLaneReader::ack(*message).await,
            Self::Memory => Ok(()),
        }
    }

    async fn requeue(self) -> Result<(), QueueError> {
        match self {
            Self::Amqp(message) => AmqpLaneReader::requeue(*message).await,
            Self::Memory => Ok(()),
        }
    }
}
