//! RabbitMQ topology, declared idempotently by whoever connects first:
//! - `{p}.{topic}` — durable, `x-max-priority` 9, persistent messages;
//! - `{p}.jobs.{interactive|batch}.{tenant}` — a tenant's lanes: durable FIFO queues where new
//!   jobs wait for the dispatcher, declared by the first publisher or dispatcher that names them;
//! - `{p}.{topic}.retry.{ms}` — one durable queue per back-off delay: messages wait there for
//!   `x-message-ttl` and are then dead-lettered back into `{p}.{topic}` (a per-queue TTL, because
//!   RabbitMQ only expires per-message TTLs at the head of a queue);
//! - `{p}.{topic}.dead` — messages that cannot be processed, with the reason in the
//!   `x-rapid-reason` header.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::BasicGetMessage;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use super::{Lane, QueueError, Topic};

const MAX_PRIORITY: i32 = 9;

/// How long one attempt to reach the broker may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A handle on the broker that outlives its connection: when RabbitMQ restarts or the network
/// drops, the next operation connects again (declaring the topology again) instead of failing
/// for good. Operations during the outage fail with the broker's error; callers back off and
/// retry (the worker's and the callback sender's loops, the dispatcher), and `/readyz` reports
/// not-ready meanwhile.
#[derive(Clone)]
pub struct AmqpQueue {
    shared: Arc<Shared>,
}

struct Shared {
    url: String,
    prefix: String,
    /// The live connection, `None` until the first connect; replaced when found dead.
    link: tokio::sync::Mutex<Option<Link>>,
    /// Lanes declared on the current connection: a lane is declared once, on its first publish.
    declared_lanes: std::sync::Mutex<HashSet<String>>,
    lane_published: tokio::sync::Notify,
}

/// One connection with its publishing channel (publisher confirms on).
#[derive(Clone)]
struct Link {
    connection: Arc<Connection>,
    publisher: Channel,
}

impl Link {
    fn is_alive(&self) -> bool {
        self.connection.status().connected() && self.publisher.status().connected()
    }
}

impl AmqpQueue {
    /// Connects once, so a wrong URL or a broker that is down fails at start-up.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, QueueError> {
        let queue = Self {
            shared: Arc::new(Shared {
                url: url.to_owned(),
                prefix: prefix.to_owned(),
                link: tokio::sync::Mutex::new(None),
                declared_lanes: Default::default(),
                lane_published: Default::default(),
            }),
        };
        queue.link().await?;
        Ok(queue)
    }

    /// The live link, connecting again when the last one died.
    async fn link(&self) -> Result<Link, QueueError> {
        let mut current = self.shared.link.lock().await;
        if let Some(link) = current.as_ref().filter(|link| link.is_alive()) {
            return Ok(link.clone());
        }
        let link = tokio::time::timeout(CONNECT_TIMEOUT, self.open())
            .await
            .map_err(|_| QueueError::Timeout { seconds: CONNECT_TIMEOUT.as_secs() })??;
        if current.is_some() {
            tracing::info!("reconnected to RabbitMQ");
        }
        self.lanes_declared().clear();
        *current = Some(link.clone());
        Ok(link)
    }

    async fn open(&self) -> Result<Link, QueueError> {
        let connection = Connection::connect(&self.shared.url, ConnectionProperties::default()).await?;
        let publisher = connection.create_channel().await?;
        publisher.confirm_select(ConfirmSelectOptions::default()).await?;
        for topic in [Topic::Jobs, Topic::Callbacks] {
            declare_on(&publisher, &self.main(topic), main_arguments()).await?;
            declare_on(&publisher, &self.dead(topic), FieldTable::default()).await?;
        }
        Ok(Link { connection: Arc::new(connection), publisher })
    }

    fn lanes_declared(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.shared.declared_lanes.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn main(&self, topic: Topic) -> String {
        format!("{}.{}", self.shared.prefix, topic.name())
    }

    fn dead(&self, topic: Topic) -> String {
        format!("{}.dead", self.main(topic))
    }

    fn lane(&self, lane: &Lane) -> String {
        format!("{}.{}", self.shared.prefix, lane.name())
    }

    /// Declares (idempotently) and returns the messages waiting.
    async fn declare(&self, name: &str, arguments: FieldTable) -> Result<u32, QueueError> {
        declare_on(&self.link().await?.publisher, name, arguments).await
    }

    async fn declare_lane(&self, name: &str) -> Result<(), QueueError> {
        if !self.lanes_declared().contains(name) {
            self.declare(name, FieldTable::default()).await?;
            self.lanes_declared().insert(name.to_owned());
        }
        Ok(())
    }

    pub(super) async fn publish_to_lane(&self, lane: &Lane, body: &[u8]) -> Result<(), QueueError> {
        let name = self.lane(lane);
        self.declare_lane(&name).await?;
        self.send(&name, body, BasicProperties::default()).await?;
        self.shared.lane_published.notify_one();
        Ok(())
    }

    pub(super) fn lane_published(&self) -> &tokio::sync::Notify {
        &self.shared.lane_published
    }

    /// Declares the lane rather than looking passively: a passive look at a lane nobody has
    /// declared yet would close the publishing channel.
    pub(super) async fn lane_depth(&self, lane: &Lane) -> Result<u32, QueueError> {
        self.declare(&self.lane(lane), FieldTable::default()).await
    }

    /// A channel of its own for taking jobs out of lanes, with every lane declared.
    pub(super) async fn lane_reader(&self, lanes: &[Lane]) -> Result<AmqpLaneReader, QueueError> {
        let mut names = Vec::with_capacity(lanes.len());
        for lane in lanes {
            let name = self.lane(lane);
            self.declare_lane(&name).await?;
            names.push(name);
        }
        Ok(AmqpLaneReader { channel: self.link().await?.connection.create_channel().await?, names })
    }

    async fn send(&self, queue: &str, body: &[u8], properties: BasicProperties) -> Result<(), QueueError> {
        let properties = properties.with_delivery_mode(2).with_content_type(ShortString::from("application/json"));
        let publisher = self.link().await?.publisher;
        let confirm =
            publisher.basic_publish("", queue, BasicPublishOptions::default(), body, properties).await?.await?;
        if confirm.is_nack() {
            return Err(QueueError::Nacked { queue: queue.to_owned() });
        }
        Ok(())
    }

    pub(super) async fn publish(&self, topic: Topic, body: &[u8], priority: u8) -> Result<(), QueueError> {
        self.send(&self.main(topic), body, BasicProperties::default().with_priority(priority)).await
    }

    pub(super) async fn publish_delayed(
        &self,
        topic: Topic,
        body: &[u8],
        priority: u8,
        delay: Duration,
    ) -> Result<(), QueueError> {
        let millis = delay.as_millis().clamp(1, i32::MAX as u128) as i32;
        let retry = format!("{}.retry.{millis}", self.main(topic));
        let mut arguments = FieldTable::default();
        arguments.insert("x-message-ttl".into(), AMQPValue::LongInt(millis));
        arguments.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(LongString::from("")));
        arguments.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(LongString::from(self.main(topic))));
        self.declare(&retry, arguments).await?;
        self.send(&retry, body, BasicProperties::default().with_priority(priority)).await
    }

    pub(super) async fn dead_letter(&self, topic: Topic, body: &[u8], reason: &str) -> Result<(), QueueError> {
        let mut headers = FieldTable::default();
        headers.insert("x-rapid-reason".into(), AMQPValue::LongString(LongString::from(reason)));
        self.send(&self.dead(topic), body, BasicProperties::default().with_headers(headers)).await
    }

    pub(super) async fn consume(&self, topic: Topic, prefetch: u16) -> Result<AmqpConsumer, QueueError> {
        let channel = self.link().await?.connection.create_channel().await?;
        channel.basic_qos(prefetch, BasicQosOptions::default()).await?;
        let consumer =
            channel.basic_consume(&self.main(topic), "", BasicConsumeOptions::default(), FieldTable::default()).await?;
        Ok(AmqpConsumer { channel, consumer })
    }

    pub(super) async fn depth(&self, topic: Topic) -> Result<u32, QueueError> {
        let options = QueueDeclareOptions { passive: true, durable: true, ..Default::default() };
        let queue = self.link().await?.publisher.queue_declare(&self.main(topic), options, main_arguments()).await?;
        Ok(queue.message_count())
    }
}

async fn declare_on(channel: &Channel, name: &str, arguments: FieldTable) -> Result<u32, QueueError> {
    let options = QueueDeclareOptions { durable: true, ..Default::default() };
    Ok(channel.queue_declare(name, options, arguments).await?.message_count())
}

fn main_arguments() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-priority".into(), AMQPValue::LongInt(MAX_PRIORITY));
    arguments
}

/// Takes jobs out of the lanes, one `basic.get` at a time, each acknowledged only once the
/// dispatcher has it confirmed in `jobs`.
pub struct AmqpLaneReader {
    channel: Channel,
    /// The queue name of each lane, in the order the dispatcher listed them.
    names: Vec<String>,
}

impl AmqpLaneReader {
    pub(super) async fn take(&self, lane: usize) -> Result<Option<BasicGetMessage>, QueueError> {
        Ok(self.channel.basic_get(&self.names[lane], BasicGetOptions { no_ack: false }).await?)
    }

    pub(super) async fn ack(message: BasicGetMessage) -> Result<(), QueueError> {
        Ok(message.delivery.ack(BasicAckOptions::default()).await?)
    }
}

pub struct AmqpConsumer {
    channel: Channel,
    consumer: lapin::Consumer,
}

impl AmqpConsumer {
    pub(super) async fn next(&mut self) -> Option<Result<lapin::message::Delivery, QueueError>> {
        self.consumer.next().await.map(|r| r.map_err(QueueError::from))
    }

    pub(super) async fn stop(&mut self) -> Result<(), QueueError> {
        self.channel.basic_cancel(self.consumer.tag().as_str(), BasicCancelOptions::default()).await?;
        Ok(())
    }
}
