//! RabbitMQ topology, declared idempotently by whoever connects first, every queue durable and of
//! the configured type (`amqp.queue_type`: classic, or quorum, replicated over a cluster):
//! - `{p}.{topic}` — persistent messages, `x-max-priority` 9 on classic queues (quorum queues
//!   before RabbitMQ 4.0 have no priorities; the dispatcher's lanes still serve interactive first);
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
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
    BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use super::{Lane, Message, QueueError, Topic};
use crate::config::{AmqpConfig, QueueType};
use crate::telemetry::TRACEPARENT;

const MAX_PRIORITY: i32 = 9;

/// Publisher confirms awaited together when a request's jobs are published.
const CONFIRM_WINDOW: usize = 256;

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
    urls: Vec<String>,
    prefix: String,
    queue_type: QueueType,
    /// The live connection, `None` until the first connect; replaced when found dead.
    link: tokio::sync::Mutex<Option<Link>>,
    /// Which of `urls` the next connection tries first: the one after the last that answered.
    next_url: std::sync::atomic::AtomicUsize,
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
    pub async fn connect(config: &AmqpConfig) -> Result<Self, QueueError> {
        let queue = Self {
            shared: Arc::new(Shared {
                urls: config.url.0.clone(),
                prefix: config.queue_prefix.clone(),
                queue_type: config.queue_type,
                link: tokio::sync::Mutex::new(None),
                next_url: Default::default(),
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
        let link = self.open_any().await?;
        if current.is_some() {
            tracing::info!("reconnected to RabbitMQ");
        }
        self.lanes_declared().clear();
        *current = Some(link.clone());
        Ok(link)
    }

    /// Tries each configured node in turn, from the one after the last that answered (so a
    /// cluster's clients move on from a node that went away); the last error if none answers.
    async fn open_any(&self) -> Result<Link, QueueError> {
        let urls = &self.shared.urls;
        let first = self.shared.next_url.load(std::sync::atomic::Ordering::Relaxed);
        let mut failure = None;
        for index in (first..first + urls.len()).map(|i| i % urls.len()) {
            match tokio::time::timeout(CONNECT_TIMEOUT, self.open(&urls[index])).await {
                Ok(Ok(link)) => {
                    self.shared.next_url.store(index + 1, std::sync::atomic::Ordering::Relaxed);
                    return Ok(link);
                }
                Ok(Err(error)) => failure = Some(error),
                Err(_) => failure = Some(QueueError::Timeout { seconds: CONNECT_TIMEOUT.as_secs() }),
            }
        }
        Err(failure.expect("amqp.url holds at least one URL"))
    }

    async fn open(&self, url: &str) -> Result<Link, QueueError> {
        let connection = Connection::connect(url, ConnectionProperties::default()).await?;
        let publisher = connection.create_channel().await?;
        publisher.confirm_select(ConfirmSelectOptions::default()).await?;
        for topic in [Topic::Jobs, Topic::Callbacks] {
            declare_on(&publisher, &self.main(topic), self.arguments(true)).await?;
            declare_on(&publisher, &self.dead(topic), self.arguments(false)).await?;
        }
        Ok(Link { connection: Arc::new(connection), publisher })
    }

    /// Queue arguments of the configured type; `priority` asks for message priorities, which
    /// only classic queues have.
    fn arguments(&self, priority: bool) -> FieldTable {
        let mut arguments = FieldTable::default();
        match self.shared.queue_type {
            QueueType::Classic if priority => {
                arguments.insert("x-max-priority".into(), AMQPValue::LongInt(MAX_PRIORITY));
            }
            QueueType::Classic => {}
            QueueType::Quorum => {
                arguments.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from("quorum")));
            }
        }
        arguments
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
            self.declare(name, self.arguments(false)).await?;
            self.lanes_declared().insert(name.to_owned());
        }
        Ok(())
    }

    /// Publishes `bodies` into `lane` in order. On failure, the error comes with how many bodies,
    /// from the first, the broker confirmed.
    pub(super) async fn publish_all_to_lane(
        &self,
        lane: &Lane,
        bodies: &[Vec<u8>],
        traceparent: Option<&str>,
    ) -> Result<(), (usize, QueueError)> {
        let name = self.lane(lane);
        self.declare_lane(&name).await.map_err(|e| (0, e))?;
        let properties = with_traceparent(BasicProperties::default(), traceparent);
        let messages: Vec<_> = bodies.iter().map(|body| (body.as_slice(), properties.clone())).collect();
        self.send_all(&name, &messages).await?;
        self.shared.lane_published.notify_one();
        Ok(())
    }

    /// Publishes every message into a topic's queue in order, confirms awaited in windows.
    pub(super) async fn publish_all(&self, topic: Topic, messages: &[Message]) -> Result<(), (usize, QueueError)> {
        let messages: Vec<_> =
            messages.iter().map(|message| (message.body.as_slice(), properties_of(message))).collect();
        self.send_all(&self.main(topic), &messages).await
    }

    /// Persistent publishes with up to `CONFIRM_WINDOW` publisher confirms in flight: one wait for
    /// the broker's disk per window instead of one per message. On failure, how many messages, from
    /// the first, were confirmed.
    async fn send_all(&self, queue: &str, messages: &[(&[u8], BasicProperties)]) -> Result<(), (usize, QueueError)> {
        let publisher = self.link().await.map_err(|e| (0, e))?.publisher;
        let mut confirmed = 0;
        for window in messages.chunks(CONFIRM_WINDOW) {
            let mut pending = Vec::with_capacity(window.len());
            for (body, properties) in window {
                let properties = persistent(properties.clone());
                let publish = publisher.basic_publish("", queue, BasicPublishOptions::default(), body, properties);
                pending.push(publish.await.map_err(|e| (confirmed, e.into()))?);
            }
            for confirm in pending {
                if confirm.await.map_err(|e| (confirmed, e.into()))?.is_nack() {
                    return Err((confirmed, QueueError::Nacked { queue: queue.to_owned() }));
                }
                confirmed += 1;
            }
        }
        Ok(())
    }

    pub(super) fn lane_published(&self) -> &tokio::sync::Notify {
        &self.shared.lane_published
    }

    /// Declares the lane rather than looking passively: a passive look at a lane nobody has
    /// declared yet would close the publishing channel.
    pub(super) async fn lane_depth(&self, lane: &Lane) -> Result<u32, QueueError> {
        self.declare(&self.lane(lane), self.arguments(false)).await
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
        let properties = persistent(properties);
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
        message: &Message,
        delay: Duration,
    ) -> Result<(), QueueError> {
        let millis = delay.as_millis().clamp(1, i32::MAX as u128) as i32;
        let retry = format!("{}.retry.{millis}", self.main(topic));
        let mut arguments = self.arguments(false);
        arguments.insert("x-message-ttl".into(), AMQPValue::LongInt(millis));
        arguments.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(LongString::from("")));
        arguments.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(LongString::from(self.main(topic))));
        self.declare(&retry, arguments).await?;
        self.send(&retry, &message.body, properties_of(message)).await
    }

    /// The dead letter carries the reason, and the trace of the work that gave up on it (the job's
    /// span in a worker), so that it leads back to its request.
    pub(super) async fn dead_letter(&self, topic: Topic, body: &[u8], reason: &str) -> Result<(), QueueError> {
        let mut headers = FieldTable::default();
        headers.insert("x-rapid-reason".into(), AMQPValue::LongString(LongString::from(reason)));
        if let Some(traceparent) = crate::telemetry::traceparent(&tracing::Span::current()) {
            headers.insert(TRACEPARENT.into(), AMQPValue::LongString(LongString::from(traceparent)));
        }
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
        // A passive declare only looks; the arguments are not compared.
        let queue =
            self.link().await?.publisher.queue_declare(&self.main(topic), options, FieldTable::default()).await?;
        Ok(queue.message_count())
    }
}

fn properties_of(message: &Message) -> BasicProperties {
    with_traceparent(BasicProperties::default().with_priority(message.priority), message.traceparent.as_deref())
}

fn with_traceparent(properties: BasicProperties, traceparent: Option<&str>) -> BasicProperties {
    let Some(traceparent) = traceparent else { return properties };
    let mut headers = FieldTable::default();
    headers.insert(TRACEPARENT.into(), AMQPValue::LongString(LongString::from(traceparent)));
    properties.with_headers(headers)
}

/// The `traceparent` header of a received message, if it has one.
pub(super) fn traceparent_of(properties: &BasicProperties) -> Option<String> {
    match properties.headers().as_ref()?.inner().get(TRACEPARENT)? {
        AMQPValue::LongString(value) => Some(value.to_string()),
        _ => None,
    }
}

/// Persistent (delivery mode 2): written to disk before the broker confirms it.
fn persistent(properties: BasicProperties) -> BasicProperties {
    properties.with_delivery_mode(2).with_content_type(ShortString::from("application/json"))
}

async fn declare_on(channel: &Channel, name: &str, arguments: FieldTable) -> Result<u32, QueueError> {
    let options = QueueDeclareOptions { durable: true, ..Default::default() };
    match channel.queue_declare(name, options, arguments).await {
        Ok(queue) => Ok(queue.message_count()),
        Err(source) => Err(QueueError::Declare { queue: name.to_owned(), source }),
    }
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

    pub(super) async fn requeue(message: BasicGetMessage) -> Result<(), QueueError> {
        Ok(message.delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }).await?)
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
