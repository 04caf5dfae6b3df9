//! The in-process message bus between components, shaped like NATS JetStream so that it could
//! later run on a real NATS server.
//!
//! Subjects are dot-separated tokens. A subscription pattern may use `*` for exactly one token
//! and `>` (last) for one or more tokens. Plain subjects are ephemeral: delivered to whoever is
//! subscribed now, kept nowhere. A subject captured by a durable stream is first appended to the
//! database; a durable consumer reads the stream in order, acknowledges what it processed, and
//! after a restart resumes after its last acknowledgement.
//!
//! Payloads are JSON, as they would be on the wire to NATS.

use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::{Notify, mpsc};

use crate::store::{Store, StoreResult};

/// One delivered message.
#[derive(Clone, Debug)]
pub struct Message {
    pub subject: String,
    pub payload: Arc<str>,
}

impl Message {
    /// Decodes the JSON payload.
    pub fn decode<T: DeserializeOwned>(&self) -> anyhow::Result<T> {
        serde_json::from_str(&self.payload)
            .with_context(|| format!("undecodable payload on {}", self.subject))
    }
}

/// A durable stream: its name and the subjects it captures.
///
/// A stream keeps what it captured until its owner trims it ([`Bus::trim`]) once every consumer
/// it knows of acknowledged it, as JetStream's interest retention does. Trimming always keeps
/// the last message, after whose sequence the next one is numbered: a sequence is never given
/// twice, so no consumer's acknowledgement ever covers a message it did not get.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    pub name: String,
    pub subjects: Vec<String>,
}

/// The bus. Cheap to clone; all clones share subscribers and streams.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    /// Live subscriptions; closed ones are pruned on the next publish.
    subscribers: Mutex<Vec<Subscriber>>,
    /// Durable streams and the signal that wakes their consumers.
    streams: Mutex<Vec<(StreamConfig, Arc<Notify>)>>,
}

struct Subscriber {
    pattern: String,
    sender: mpsc::UnboundedSender<Message>,
}

/// The receiving end of [`Bus::subscribe`].
pub struct Subscription {
    receiver: mpsc::UnboundedReceiver<Message>,
}

impl Subscription {
    /// The next message, or `None` once the bus is gone.
    pub async fn next(&mut self) -> Option<Message> {
        self.receiver.recv().await
    }

    /// The next message if one is already queued, without waiting.
    pub fn try_next(&mut self) -> Option<Message> {
        self.receiver.try_recv().ok()
    }
}

impl Bus {
    pub fn new(store: Store) -> Self {
        let inner = Inner { store, subscribers: Mutex::default(), streams: Mutex::default() };
        Self { inner: Arc::new(inner) }
    }

    /// Declares a durable stream. Messages published on its subjects from now on are kept.
    pub fn add_stream(&self, config: StreamConfig) {
        let mut streams = self.inner.streams.lock().unwrap_or_else(|e| e.into_inner());
        if !streams.iter().any(|(existing, _)| existing.name == config.name) {
            streams.push((config, Arc::new(Notify::new())));
        }
    }

    /// Subscribes to every subject matching `pattern`.
    pub fn subscribe(&self, pattern: &str) -> Subscription {
        let (sender, receiver) = mpsc::unbounded_channel();
        let subscriber = Subscriber { pattern: pattern.to_owned(), sender };
        self.inner.subscribers.lock().unwrap_or_else(|e| e.into_inner()).push(subscriber);
        Subscription { receiver }
    }

    /// Publishes a message: persisted first if a durable stream captures the subject, then
    /// delivered to live subscribers.
    pub async fn publish<T: Serialize>(&self, subject: &str, payload: &T) -> StoreResult<()> {
        let payload: Arc<str> = serde_json::to_string(payload)?.into();
        for (stream, notify) in self.streams_for(subject) {
            self.inner.store.bus_append(&stream, subject, &payload).await?;
            notify.notify_waiters();
        }
        self.deliver(Message { subject: subject.to_owned(), payload });
        Ok(())
    }

    /// A durable consumer of `stream`, resuming after its last acknowledgement.
    pub async fn consumer(&self, stream: &str, name: &str) -> StoreResult<Consumer> {
        let notify = {
            let streams = self.inner.streams.lock().unwrap_or_else(|e| e.into_inner());
            let found = streams.iter().find(|(config, _)| config.name == stream);
            found.map(|(_, notify)| notify.clone()).context("no such durable stream")?
        };
        let acked = self.inner.store.bus_acked(stream, name).await?;
        Ok(Consumer {
            store: self.inner.store.clone(),
            stream: stream.to_owned(),
            name: name.to_owned(),
            notify,
            delivered: acked,
        })
    }

    /// Deletes the messages of `stream` that each of `consumers` acknowledged (a consumer that
    /// never acknowledged anything keeps the whole stream), but the last. Returns how many.
    pub async fn trim(&self, stream: &str, consumers: &[String]) -> StoreResult<u64> {
        let mut through = i64::MAX;
        for consumer in consumers {
            through = through.min(self.inner.store.bus_acked(stream, consumer).await?);
        }
        if consumers.is_empty() || through == 0 {
            return Ok(0);
        }
        self.inner.store.bus_trim(stream, through).await
    }

    fn streams_for(&self, subject: &str) -> Vec<(String, Arc<Notify>)> {
        let streams = self.inner.streams.lock().unwrap_or_else(|e| e.into_inner());
        streams
            .iter()
            .filter(|(config, _)| config.subjects.iter().any(|p| subject_matches(p, subject)))
            .map(|(config, notify)| (config.name.clone(), notify.clone()))
            .collect()
    }

    fn deliver(&self, message: Message) {
        let mut subscribers = self.inner.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        subscribers.retain(|subscriber| {
            if subject_matches(&subscriber.pattern, &message.subject) {
                subscriber.sender.send(message.clone()).is_ok()
            } else {
                !subscriber.sender.is_closed()
            }
        });
    }
}

/// A durable consumer: reads a stream in order from where it last acknowledged.
pub struct Consumer {
    store: Store,
    stream: String,
    name: String,
    notify: Arc<Notify>,
    /// The highest sequence handed out by [`Consumer::next`].
    delivered: i64,
}

/// A message of a durable stream, with its sequence for acknowledgement.
#[derive(Clone, Debug)]
pub struct DurableMessage {
    pub sequence: i64,
    pub message: Message,
}

impl Consumer {
    /// The next message after those already handed out, waiting until one is published.
    pub async fn next(&mut self) -> StoreResult<DurableMessage> {
        loop {
            let notified = self.notify.notified();
            let mut batch = self.store.bus_read(&self.stream, self.delivered, 1).await?;
            if let Some(stored) = batch.pop() {
                self.delivered = stored.sequence;
                let message = Message { subject: stored.subject, payload: stored.payload.into() };
                return Ok(DurableMessage { sequence: stored.sequence, message });
            }
            notified.await;
        }
    }

    /// The next messages after those already handed out, at most `limit` (at least one), waiting
    /// until one is published: what queued up while the consumer was busy comes as one batch.
    pub async fn next_batch(&mut self, limit: usize) -> StoreResult<Vec<DurableMessage>> {
        loop {
            let notified = self.notify.notified();
            let batch = self.store.bus_read(&self.stream, self.delivered, limit.max(1)).await?;
            if let Some(last) = batch.last() {
                self.delivered = last.sequence;
                return Ok(batch
                    .into_iter()
                    .map(|stored| DurableMessage {
                        sequence: stored.sequence,
                        message: Message {
                            subject: stored.subject,
                            payload: stored.payload.into(),
                        },
                    })
                    .collect());
            }
            notified.await;
        }
    }

    /// Records that everything up to `sequence` was processed.
    pub async fn ack(&self, sequence: i64) -> StoreResult<()> {
        self.store.bus_ack(&self.stream, &self.name, sequence).await
    }
}

/// Whether `subject` matches `pattern` (`*`: one token, `>`: one or more trailing tokens).
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for token in pattern.split('.') {
        match (token, subject_tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (literal, Some(actual)) if literal == actual => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::TestDatabase;

    #[test]
    fn wildcards_match_as_in_nats() {
        let cases = [
            ("a.b.c", "a.b.c", true, "literal"),
            ("a.*.c", "a.b.c", true, "star matches one token"),
            ("a.*", "a.b.c", false, "star matches only one token"),
            ("a.>", "a.b.c", true, "gt matches the rest"),
            ("a.>", "a", false, "gt needs at least one token"),
            ("a.b", "a.b.c", false, "longer subject"),
            ("a.b.c", "a.b", false, "shorter subject"),
            (">", "x", true, "gt alone matches anything"),
        ];
        for (pattern, subject, expected, why) in cases {
            assert_eq!(subject_matches(pattern, subject), expected, "{why}");
        }
    }

    async fn temp_store() -> (TestDatabase, Store) {
        let db = TestDatabase::new().await;
        let store = db.open().await;
        (db, store)
    }

    #[tokio::test]
    async fn subscribers_get_only_matching_subjects() {
        let (_db, store) = temp_store().await;
        let bus = Bus::new(store);
        let mut rooms = bus.subscribe("room.*.event");
        bus.publish("typing.x", &1).await.unwrap();
        bus.publish("room.r1.event", &2).await.unwrap();
        let message = rooms.next().await.unwrap();
        assert_eq!(message.subject, "room.r1.event");
        assert_eq!(message.decode::<i32>().unwrap(), 2);
    }

    #[tokio::test]
    async fn durable_consumers_resume_after_their_acknowledgement() {
        let (db, store) = temp_store().await;
        let stream = StreamConfig { name: "out".into(), subjects: vec!["out.>".into()] };
        let bus = Bus::new(store);
        bus.add_stream(stream.clone());
        for n in 1..=3 {
            bus.publish("out.n", &n).await.unwrap();
        }
        let mut consumer = bus.consumer("out", "worker").await.unwrap();
        let first = consumer.next().await.unwrap();
        assert_eq!(first.message.decode::<i32>().unwrap(), 1);
        consumer.ack(first.sequence).await.unwrap();
        drop((consumer, bus));

        // A "restart": a new store on the same database, a new bus.
        let bus = Bus::new(db.open().await);
        bus.add_stream(stream);
        let mut consumer = bus.consumer("out", "worker").await.unwrap();
        assert_eq!(consumer.next().await.unwrap().message.decode::<i32>().unwrap(), 2);
    }

    #[tokio::test]
    async fn trimming_keeps_what_a_consumer_has_not_acknowledged_and_the_last_message() {
        let (_db, store) = temp_store().await;
        let bus = Bus::new(store);
        bus.add_stream(StreamConfig { name: "s".into(), subjects: vec!["s.*".into()] });
        for n in 1..=5 {
            bus.publish("s.n", &n).await.unwrap();
        }
        let consumers = ["fast".to_owned(), "slow".to_owned()];
        let (mut fast, mut slow) =
            (bus.consumer("s", "fast").await.unwrap(), bus.consumer("s", "slow").await.unwrap());
        let left = |bus: Bus| async move {
            let mut consumer = bus.consumer("s", "reader").await.unwrap();
            let messages = consumer.next_batch(100).await.unwrap();
            messages.iter().map(|m| m.message.decode::<i32>().unwrap()).collect::<Vec<_>>()
        };

        let read = fast.next_batch(100).await.unwrap();
        fast.ack(read.last().unwrap().sequence).await.unwrap();
        assert_eq!(bus.trim("s", &consumers).await.unwrap(), 0, "slow acknowledged nothing");
        slow.next_batch(3).await.unwrap();
        slow.ack(3).await.unwrap();
        assert_eq!(bus.trim("s", &consumers).await.unwrap(), 3);
        assert_eq!(left(bus.clone()).await, [4, 5]);

        let read = slow.next_batch(100).await.unwrap();
        slow.ack(read.last().unwrap().sequence).await.unwrap();
        assert_eq!(bus.trim("s", &consumers).await.unwrap(), 1, "the last message stays");
        assert_eq!(left(bus.clone()).await, [5]);
        // The next message is numbered after the kept one, and both consumers get it.
        bus.publish("s.n", &6).await.unwrap();
        assert_eq!(fast.next().await.unwrap().sequence, 6);
        assert_eq!(slow.next().await.unwrap().message.decode::<i32>().unwrap(), 6);
    }

    #[tokio::test]
    async fn durable_consumers_wait_for_new_messages() {
        let (_db, store) = temp_store().await;
        let bus = Bus::new(store);
        bus.add_stream(StreamConfig { name: "s".into(), subjects: vec!["s.*".into()] });
        let mut consumer = bus.consumer("s", "c").await.unwrap();
        let waiter = tokio::spawn(async move { consumer.next().await.unwrap() });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        bus.publish("s.x", &"hello").await.unwrap();
        let message = waiter.await.unwrap();
        assert_eq!(message.message.decode::<String>().unwrap(), "hello");
    }
}
