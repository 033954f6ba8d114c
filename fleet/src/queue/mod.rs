//! The work queues: RabbitMQ in the fleet, an in-process priority queue in standalone mode.
//!
//! Two topics: `jobs` (scheduler → workers) and `callbacks` (the worker that finishes a request →
//! the scheduler, which POSTs the client's callback). Each has a dead-letter queue for messages
//! that cannot be processed, carrying the reason; nothing is dropped. Interactive jobs carry a
//! higher message priority than batch jobs, so among waiting jobs they are delivered first.
//!
//! New jobs do not go to `jobs` directly: each waits in its tenant's [`Lane`] (one durable FIFO
//! queue per tenant and priority class) until the [`Dispatcher`] moves it on, keeping only a few
//! jobs ready in `jobs` and choosing among the tenants by their weights ([`FairShare`]). So a
//! tenant's 10,000-job batch queued first does not stand in front of another tenant's ten.

mod amqp;
mod dispatch;
mod fair;
mod memory;
mod resubscribe;

use std::time::Duration;

use rapid_proto::Priority;

pub use self::amqp::AmqpQueue;
pub use self::dispatch::Dispatcher;
pub use self::fair::FairShare;
pub use self::memory::MemoryQueue;
pub use self::resubscribe::Resubscribe;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("RabbitMQ: {0} (is RabbitMQ running and `amqp.url` right?)")]
    Amqp(#[from] lapin::Error),
    #[error("RabbitMQ refused to take a message on {queue} (negative publisher confirm); retry later")]
    Nacked { queue: String },
    #[error(
        "RabbitMQ refused to declare {queue}: {source} (a queue that exists with other arguments, such as a classic \
         queue when amqp.queue_type is quorum, must be drained and deleted first, or use another amqp.queue_prefix)"
    )]
    Declare { queue: String, source: lapin::Error },
    #[error("RabbitMQ closed the subscription (a broker restart or a deleted queue); consuming again")]
    StreamClosed,
    #[error("RabbitMQ did not answer within {seconds} s (is it running and `amqp.url` right?)")]
    Timeout { seconds: u64 },
}

/// A batch publish that failed part-way: the first `queued` messages are confirmed.
#[derive(Debug, thiserror::Error)]
#[error("{error} (after {queued} messages were queued)")]
pub struct PartialPublish {
    pub queued: usize,
    #[source]
    pub error: QueueError,
}

/// Which stream of messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    Jobs,
    Callbacks,
}

impl Topic {
    fn name(self) -> &'static str {
        match self {
            Self::Jobs => "jobs",
            Self::Callbacks => "callbacks",
        }
    }
}

/// Where one tenant's jobs of one priority class wait for the dispatcher: a FIFO queue, so the
/// jobs of a request leave it in the order they were published.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lane {
    pub tenant: String,
    pub class: Priority,
}

impl Lane {
    pub fn new(tenant: &str, class: Priority) -> Self {
        Self { tenant: tenant.to_owned(), class }
    }

    /// Both lanes of each tenant, interactive first.
    pub fn all<'a>(tenants: impl IntoIterator<Item = &'a str>) -> Vec<Lane> {
        let tenants: Vec<_> = tenants.into_iter().collect();
        [Priority::Interactive, Priority::Batch]
            .into_iter()
            .flat_map(|class| tenants.iter().map(move |tenant| Lane::new(tenant, class)))
            .collect()
    }

    /// The queue's name after the prefix: `jobs.{interactive|batch}.{tenant}`.
    fn name(&self) -> String {
        let class = match self.class {
            Priority::Interactive => "interactive",
            Priority::Batch => "batch",
        };
        format!("{}.{class}.{}", Topic::Jobs.name(), self.tenant)
    }
}

/// A message as it moves between queues: its body, its priority, and the W3C trace context of the
/// work it continues (`traceparent`). The context travels as an AMQP header, not in the body, so
/// the job schema stays as it is and a consumer that predates it ignores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub body: Vec<u8>,
    pub priority: u8,
    pub traceparent: Option<String>,
}

/// AMQP message priority (0–9): interactive work overtakes batch work already waiting.
pub fn priority_level(priority: Priority) -> u8 {
    match priority {
        Priority::Interactive => 9,
        Priority::Batch => 1,
    }
}

#[derive(Clone)]
pub enum Queue {
    Amqp(AmqpQueue),
    Memory(MemoryQueue),
}

impl Queue {
    /// Publishes durably: returns once the broker confirmed the message.
    pub async fn publish(&self, topic: Topic, body: &[u8], priority: u8) -> Result<(), QueueError> {
        match self {
            Self::Amqp(q) => q.publish(topic, body, priority).await,
            Self::Memory(q) => {
                q.publish(topic, body.to_vec(), priority);
                Ok(())
            }
        }
    }

    /// Publishes new jobs durably into their tenant's lane, in order, where they wait for the
    /// dispatcher; the broker's confirms are awaited in windows, not one by one. On failure, the
    /// error says how many jobs, from the first, are safely queued.
    /// All of them continue the trace `traceparent` names (the request that made them).
    pub async fn publish_all_to_lane(
        &self,
        lane: &Lane,
        bodies: &[Vec<u8>],
        traceparent: Option<&str>,
    ) -> Result<(), PartialPublish> {
        match self {
            Self::Amqp(q) => q
                .publish_all_to_lane(lane, bodies, traceparent)
                .await
                .map_err(|(queued, error)| PartialPublish { queued, error }),
            Self::Memory(q) => {
                q.publish_all_to_lane(lane, bodies, traceparent);
                Ok(())
            }
        }
    }

    /// Notified after every publish into a lane by this process: the dispatcher's doorbell.
    fn lane_published(&self) -> &tokio::sync::Notify {
        match self {
            Self::Amqp(q) => q.lane_published(),
            Self::Memory(q) => q.lane_published(),
        }
    }

    /// Jobs waiting in a lane.
    pub async fn lane_depth(&self, lane: &Lane) -> Result<u32, QueueError> {
        match self {
            Self::Amqp(q) => q.lane_depth(lane).await,
            Self::Memory(q) => Ok(q.lane_depth(lane)),
        }
    }

    /// Publishes every message durably, in order, the broker's confirms awaited in windows; on
    /// failure, the error says how many, from the first, are safely queued.
    pub async fn publish_all(&self, topic: Topic, messages: &[Message]) -> Result<(), PartialPublish> {
        match self {
            Self::Amqp(q) => {
                q.publish_all(topic, messages).await.map_err(|(queued, error)| PartialPublish { queued, error })
            }
            Self::Memory(q) => {
                for message in messages {
                    q.publish_message(topic, message.clone());
                }
                Ok(())
            }
        }
    }

    /// Publishes the message so that it is delivered again after `delay` (retry with back-off).
    pub async fn publish_delayed(&self, topic: Topic, message: Message, delay: Duration) -> Result<(), QueueError> {
        match self {
            Self::Amqp(q) => q.publish_delayed(topic, &message, delay).await,
            Self::Memory(q) => {
                q.publish_delayed(topic, message, delay);
                Ok(())
            }
        }
    }

    /// Moves a message that cannot be processed to the topic's dead-letter queue, with the reason.
    pub async fn dead_letter(&self, topic: Topic, body: &[u8], reason: &str) -> Result<(), QueueError> {
        tracing::warn!(topic = topic.name(), reason, "dead-lettering a message");
        match self {
            Self::Amqp(q) => q.dead_letter(topic, body, reason).await,
            Self::Memory(q) => {
                q.dead_letter(topic, body.to_vec(), reason);
                Ok(())
            }
        }
    }

    /// Starts consuming with at most `prefetch` unacknowledged deliveries.
    pub async fn consume(&self, topic: Topic, prefetch: u16) -> Result<Consumer, QueueError> {
        match self {
            Self::Amqp(q) => Ok(Consumer::Amqp(Box::new(q.consume(topic, prefetch).await?))),
            Self::Memory(q) => Ok(Consumer::Memory(q.consume(topic))),
        }
    }

    /// Messages waiting in a topic's queue (for `/metrics` and tests).
    pub async fn depth(&self, topic: Topic) -> Result<u32, QueueError> {
        match self {
            Self::Amqp(q) => q.depth(topic).await,
            Self::Memory(q) => Ok(q.depth(topic)),
        }
    }
}

pub enum Consumer {
    // Boxed: one consumer per worker, and the lapin side is much larger than the in-memory one.
    Amqp(Box<amqp::AmqpConsumer>),
    Memory(memory::MemoryConsumer),
}

impl Consumer {
    /// The next delivery; `None` once the consumer was stopped or the connection closed.
    pub async fn next(&mut self) -> Option<Result<Delivery, QueueError>> {
        match self {
            Self::Amqp(c) => c.next().await.map(|r| r.map(|d| Delivery::Amqp(Box::new(d)))),
            Self::Memory(c) => c.next().await.map(|d| Ok(Delivery::Memory(d))),
        }
    }

    /// Stops taking new deliveries; those already delivered stay ours to ack or requeue.
    pub async fn stop(&mut self) -> Result<(), QueueError> {
        match self {
            Self::Amqp(c) => c.stop().await,
            Self::Memory(c) => {
                c.stop();
                Ok(())
            }
        }
    }
}

pub enum Delivery {
    Amqp(Box<lapin::message::Delivery>),
    Memory(memory::MemoryDelivery),
}

impl Delivery {
    pub fn body(&self) -> &[u8] {
        match self {
            Self::Amqp(d) => &d.data,
            Self::Memory(d) => &d.body,
        }
    }

    /// The trace context the message continues, if its publisher gave one.
    pub fn traceparent(&self) -> Option<String> {
        match self {
            Self::Amqp(d) => amqp::traceparent_of(&d.properties),
            Self::Memory(d) => d.traceparent.clone(),
        }
    }

    /// True when the broker delivered this message before (a worker died or requeued it).
    pub fn redelivered(&self) -> bool {
        match self {
            Self::Amqp(d) => d.redelivered,
            Self::Memory(_) => false,
        }
    }

    /// Done with it: only after its effects (upload, state) are durable.
    pub async fn ack(self) -> Result<(), QueueError> {
        match self {
            Self::Amqp(d) => Ok(d.ack(lapin::options::BasicAckOptions::default()).await?),
            Self::Memory(d) => {
                d.ack();
                Ok(())
            }
        }
    }

    /// Hands it back to the queue for another worker (shutdown before it finished).
    pub async fn requeue(self) -> Result<(), QueueError> {
        match self {
            Self::Amqp(d) => {
                Ok(d.nack(lapin::options::BasicNackOptions { requeue: true, ..Default::default() }).await?)
            }
            Self::Memory(d) => {
                d.requeue();
                Ok(())
            }
        }
    }
}
