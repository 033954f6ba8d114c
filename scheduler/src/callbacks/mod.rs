//! Client callbacks: when a request ends, the worker that finished it queues a `RequestFinished`
//! message; this sender POSTs the request's final view to the client's `callback_url`, signed,
//! and retries with back-off through the queue (so a restart of the scheduler loses nothing),
//! dead-lettering after `callback_max_attempts`.
//!
//! Signature: `X-Rapid-Signature: sha256=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>` with
//! `X-Rapid-Timestamp: {unix seconds}`; the timestamp is signed so a captured call cannot be
//! replayed later under a fresh one.
//!
//! Callbacks go only to public addresses unless configured otherwise ([`destination`]), and
//! redirects are not followed: a receiver that answers 3xx could otherwise send the POST on to an
//! address the check never saw.

pub mod destination;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use hmac::{Hmac, Mac};
use rapid_fleet::queue::{Delivery, Message, QueueError, Resubscribe, Topic};
use rapid_proto::RequestFinished;
use serde::Serialize;
use sha2::Sha256;

use crate::api::requests::{view, RequestView};
use crate::api::AppState;
use crate::metrics::CallbackOutcome;

/// What the client receives.
#[derive(Serialize)]
struct CallbackBody<'a> {
    event: &'static str,
    request: &'a RequestView,
}

pub struct CallbackSender {
    pub app: AppState,
    pub client: reqwest::Client,
}

impl CallbackSender {
    pub fn new(app: AppState) -> Self {
        let timeout = Duration::from_millis(app.config.callback_timeout_ms);
        let mut client = reqwest::Client::builder().timeout(timeout).redirect(reqwest::redirect::Policy::none());
        if !app.config.callback_allow_private_addresses {
            client = client.dns_resolver(std::sync::Arc::new(destination::GuardedResolver));
        }
        let client = client.build().expect("a TLS backend is compiled in");
        Self { app, client }
    }

    /// Delivers callbacks until `shutdown`. When the broker fails, the callback in hand goes back
    /// to the queue and the sender subscribes again after a back-off.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut resubscribe = Resubscribe::default();
        loop {
            resubscribe.subscribing();
            let Err(error) = self.consume(&mut shutdown).await else { return };
            let pause = resubscribe.failed();
            tracing::warn!(%error, retry_in_ms = pause.as_millis() as u64, "callbacks: the broker failed; subscribing again after a pause");
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = &mut shutdown => return,
            }
        }
    }

    async fn consume<F: Future<Output = ()>>(&self, shutdown: &mut Pin<&mut F>) -> Result<(), QueueError> {
        let mut consumer = self.app.queue.consume(Topic::Callbacks, 4).await?;
        loop {
            let delivery = tokio::select! {
                delivery = consumer.next() => delivery,
                () = shutdown.as_mut() => break,
            };
            let Some(delivery) = delivery else { return Err(QueueError::StreamClosed) };
            self.handle(delivery?).await?;
        }
        consumer.stop().await.ok();
        Ok(())
    }

    async fn handle(&self, delivery: Delivery) -> Result<(), QueueError> {
        let queue = &self.app.queue;
        let message: RequestFinished = match rapid_proto::decode(delivery.body()) {
            Ok(message) => message,
            Err(e) => {
                queue.dead_letter(Topic::Callbacks, delivery.body(), &e.to_string()).await?;
                self.app.metrics.callback(CallbackOutcome::DeadLettered);
                return delivery.ack().await;
            }
        };
        match self.post(&message).await {
            Ok(()) => {
                tracing::info!(request = %message.request_id, "callback delivered");
                self.app.metrics.callback(CallbackOutcome::Delivered);
            }
            Err(reason) if message.attempt + 1 < self.app.config.callback_max_attempts => {
                let delay =
                    Duration::from_millis(self.app.config.callback_backoff_ms) * 2u32.saturating_pow(message.attempt);
                tracing::warn!(request = %message.request_id, %reason, retry_in_ms = delay.as_millis() as u64, "callback failed");
                let retry = RequestFinished { attempt: message.attempt + 1, ..message };
                let retry = Message { body: rapid_proto::encode(&retry), priority: 5, traceparent: None };
                queue.publish_delayed(Topic::Callbacks, retry, delay).await?;
                self.app.metrics.callback(CallbackOutcome::Retried);
            }
            Err(reason) => {
                let reason = format!("gave up after {} attempts: {reason}", message.attempt + 1);
                queue.dead_letter(Topic::Callbacks, delivery.body(), &reason).await?;
                self.app.metrics.callback(CallbackOutcome::DeadLettered);
            }
        }
        delivery.ack().await
    }

    async fn post(&self, message: &RequestFinished) -> Result<(), String> {
        // Names are checked by the client's resolver; an address in the URL never reaches it.
        let url = reqwest::Url::parse(&message.callback_url).map_err(|e| format!("not a URL: {e}"))?;
        let literal = url.host_str().and_then(destination::literal_ip);
        if !self.app.config.callback_allow_private_addresses && literal.is_some_and(destination::is_internal) {
            return Err(format!("{} is an internal address; callback refused", message.callback_url));
        }
        let request = self
            .app
            .state
            .request(&message.request_id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("request {} expired before its callback was sent", message.request_id))?;
        let view = view(&self.app, &request).await.map_err(|e| e.to_string())?;
        let body = serde_json::to_vec(&CallbackBody { event: "request.finished", request: &view })
            .map_err(|e| e.to_string())?;
        let timestamp = rapid_fleet::state::now_ms() / 1000;
        let signature = sign(&self.app.config.callback_secret, timestamp, &body);
        let response = self
            .client
            .post(url)
            .header("Content-Type", "application/json")
            .header("X-Rapid-Timestamp", timestamp.to_string())
            .header("X-Rapid-Signature", format!("sha256={signature}"))
            .body(body)
            .send()
            .await
            .map_err(|e| format!("POST {}: {e}", message.callback_url))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("POST {} answered {}", message.callback_url, response.status()))
        }
    }
}

/// Hex HMAC-SHA256 of `"{timestamp}.{body}"` under `secret`: what a client recomputes to check
/// `X-Rapid-Signature`.
pub fn sign(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    #[test]
    fn signature_matches_python_hmac() {
        // python3 -c 'import hmac,hashlib; print(hmac.new(b"secret", b"1700000000.{\"a\":1}", hashlib.sha256).hexdigest())'
        let expected = "49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686";
        assert_eq!(super::sign("secret", 1_700_000_000, br#"{"a":1}"#), expected);
        assert_ne!(super::sign("secret", 1_700_000_001, br#"{"a":1}"#), expected, "the timestamp is signed");
    }
}
