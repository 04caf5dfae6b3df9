//! Pushing room events to application services: `PUT /_matrix/app/v1/transactions/{txnId}`
//! with the service's `hs_token`, in stream order, each event to every service it interests.
//!
//! With at least one service registered, the room event subject
//! ([`crate::rooms::ROOM_EVENT_SUBJECT`]) is captured by the durable bus stream [`STREAM`], and
//! each service reads it with a durable consumer of its own (`appservice.<id>`). A batch of what
//! queued up is sent as one transaction, retried with a doubling wait (up to
//! [`MAX_RETRY_DELAY`]) until the service accepts it, and only then acknowledged: a service that
//! is down, or a server restart, delays events but never loses or reorders them. The
//! transaction ID is the batch's first and last stream sequence, so a retry of the same batch
//! carries the same ID, and the service can drop one it already processed.
//!
//! An event interests a service when its sender or (for a membership) its target is in the
//! service's user namespaces, when its room is in the room namespaces or has a local alias in the
//! alias namespaces, or when a user of the namespaces is joined to the room, as the spec's
//! [pushing events](https://spec.matrix.org/v1.19/application-service-api/#pushing-events) asks.
//! A service without `url` gets nothing.
//!
//! The stream keeps only what some service still has to be sent: after each transaction, what
//! every service acknowledged is trimmed.
//!
//! FIXME: ephemeral events (typing, receipts, presence) are not pushed, even with
//! `receive_ephemeral`; and an event published in the moment between its commit and its
//! publication on the bus, when the server stops, is never pushed.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use ruma::serde::Raw;
use ruma::{OwnedEventId, OwnedRoomId, OwnedTransactionId, RoomId, events::AnyTimelineEvent};

use super::{Appservice, Appservices, client::AppserviceClient};
use crate::{
    bus::{Bus, Consumer, DurableMessage, StreamConfig},
    rooms::{ROOM_EVENT_SUBJECT, RoomEventOutput, pdu::Unsigned},
    store::{EventRecord, Store},
};

/// The durable stream of room events for application services.
pub const STREAM: &str = "appservice";
/// The most stream messages read into one transaction.
const MAX_BATCH: usize = 100;
/// The first wait after a failed transaction; each further failure doubles it.
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(250);
/// The longest wait between two attempts.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// Declares the stream and starts one sender task per service with a URL. Needs a Tokio
/// runtime; does nothing without services.
pub fn start(appservices: &Appservices, bus: &Bus, store: Store, client: AppserviceClient) {
    if appservices.is_empty() {
        return;
    }
    let subjects = vec![ROOM_EVENT_SUBJECT.to_owned()];
    bus.add_stream(StreamConfig { name: STREAM.to_owned(), subjects });
    let pushed: Vec<&Arc<Appservice>> =
        appservices.iter().filter(|s| s.registration.url.is_some()).collect();
    let consumers: Arc<[String]> = pushed.iter().map(|s| consumer_name(s)).collect();
    for service in pushed {
        let sender = Sender {
            service: service.clone(),
            store: store.clone(),
            client: client.clone(),
            consumers: consumers.clone(),
        };
        let bus = bus.clone();
        tokio::spawn(async move { sender.run(bus).await });
    }
}

/// Pushes the stream to one service.
struct Sender {
    service: Arc<Appservice>,
    store: Store,
    client: AppserviceClient,
    /// The consumers of every service pushed to: the stream keeps what one of them still needs.
    consumers: Arc<[String]>,
}

/// The durable consumer that pushes the stream to `service`.
fn consumer_name(service: &Appservice) -> String {
    format!("appservice.{}", service.id())
}

/// The record of the batch in flight to `service`: the consumer acknowledgement of this name
/// holds the batch's last sequence, so that after a restart the same batch is sent again, under
/// the same transaction ID.
fn in_flight_name(service: &Appservice) -> String {
    format!("{}.in-flight", consumer_name(service))
}

impl Sender {
    async fn run(self, bus: Bus) {
        let mut consumer = self.consumer(&bus).await;
        // The size of a batch the last run sent but did not see accepted; read again as it was.
        let mut unfinished = self.unfinished_batch().await;
        let mut batch = Vec::new();
        loop {
            if batch.is_empty() {
                let limit = unfinished.take().unwrap_or(MAX_BATCH);
                match consumer.next_batch(limit).await {
                    Ok(read) => batch = read,
                    Err(error) => {
                        self.warn(&error);
                        tokio::time::sleep(FIRST_RETRY_DELAY).await;
                        continue;
                    }
                }
            }
            match self.send(&batch, &consumer).await {
                Ok(()) => {
                    batch.clear();
                    self.trim(&bus).await;
                }
                Err(error) => {
                    self.warn(&error);
                    tokio::time::sleep(FIRST_RETRY_DELAY).await;
                }
            }
        }
    }

    async fn consumer(&self, bus: &Bus) -> Consumer {
        loop {
            match bus.consumer(STREAM, &consumer_name(&self.service)).await {
                Ok(consumer) => return consumer,
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), "cannot read the stream");
                    tokio::time::sleep(MAX_RETRY_DELAY).await;
                }
            }
        }
    }

    /// How many messages the batch in flight at the last stop held, if one was (sequences of a
    /// stream follow each other, and only acknowledged ones are ever trimmed).
    async fn unfinished_batch(&self) -> Option<usize> {
        let acked = self.store.bus_acked(STREAM, &consumer_name(&self.service)).await.ok()?;
        let in_flight = self.store.bus_acked(STREAM, &in_flight_name(&self.service)).await.ok()?;
        usize::try_from(in_flight - acked).ok().filter(|&count| count > 0)
    }

    fn warn(&self, error: &anyhow::Error) {
        tracing::warn!(
            appservice = self.service.id(),
            error = format!("{error:#}"),
            "cannot push events to an application service"
        );
    }

    /// Drops from the stream what every service has been sent. A failure only leaves the
    /// messages for a later trim.
    async fn trim(&self, bus: &Bus) {
        if let Err(error) = bus.trim(STREAM, &self.consumers).await {
            tracing::warn!(
                error = format!("{error:#}"),
                "cannot trim the application service stream"
            );
        }
    }

    /// Pushes what interests the service in a batch and acknowledges the batch. The transaction
    /// ID is the batch's first and last sequence: a batch sent again, also after a restart, is
    /// the same transaction.
    async fn send(&self, batch: &[DurableMessage], consumer: &Consumer) -> anyhow::Result<()> {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else { return Ok(()) };
        let txn_id: OwnedTransactionId = format!("{}-{}", first.sequence, last.sequence).into();
        self.store.bus_ack(STREAM, &in_flight_name(&self.service), last.sequence).await?;
        let events = self.interesting_events(batch).await?;
        if !events.is_empty() {
            self.push_until_accepted(txn_id, events).await;
        }
        consumer.ack(last.sequence).await?;
        Ok(())
    }

    /// The batch's events that interest the service, in the client format.
    async fn interesting_events(
        &self,
        batch: &[DurableMessage],
    ) -> anyhow::Result<Vec<Raw<AnyTimelineEvent>>> {
        let ids: Vec<OwnedEventId> = batch
            .iter()
            .filter_map(|m| m.message.decode::<RoomEventOutput>().ok())
            .map(|output| output.event_id)
            .collect();
        let mut records: BTreeMap<OwnedEventId, EventRecord> = self
            .store
            .events(&ids)
            .await?
            .into_iter()
            .map(|record| (record.event_id.clone(), record))
            .collect();
        let mut rooms = BTreeMap::new();
        let now = crate::users::now_millis();
        let mut events = Vec::new();
        for id in &ids {
            let Some(record) = records.remove(id) else { continue };
            if self.is_interesting(&record, &mut rooms).await? {
                let json = crate::rooms::pdu::client_event(&record, Unsigned::default(), now);
                events.push(Raw::from_json(serde_json::value::to_raw_value(&json)?));
            }
        }
        Ok(events)
    }

    async fn is_interesting(
        &self,
        event: &EventRecord,
        rooms: &mut BTreeMap<OwnedRoomId, bool>,
    ) -> anyhow::Result<bool> {
        let service = &self.service;
        let target = event.state_key.as_deref().filter(|_| event.event_type == "m.room.member");
        let target_interests = target
            .and_then(|target| ruma::UserId::parse(target).ok())
            .is_some_and(|target| service.is_user_interesting(&target));
        if service.is_user_interesting(&event.sender) || target_interests {
            return Ok(true);
        }
        if let Some(&interesting) = rooms.get(&event.room_id) {
            return Ok(interesting);
        }
        let interesting = self.is_room_interesting(&event.room_id).await?;
        rooms.insert(event.room_id.clone(), interesting);
        Ok(interesting)
    }

    /// Whether the room is in the room namespaces, has an alias in the alias namespaces or a
    /// joined member in the user namespaces.
    async fn is_room_interesting(&self, room_id: &RoomId) -> anyhow::Result<bool> {
        let service = &self.service;
        if service.is_room_interesting(room_id) {
            return Ok(true);
        }
        let aliases = self.store.room_aliases(room_id).await?;
        if aliases.iter().any(|alias| service.is_alias_interesting(alias)) {
            return Ok(true);
        }
        let joined = self.store.members_with(room_id, "join").await?;
        Ok(joined.iter().any(|user_id| service.is_user_interesting(user_id)))
    }

    /// Sends the transaction until the service accepts it, waiting longer after each failure.
    async fn push_until_accepted(
        &self,
        txn_id: OwnedTransactionId,
        events: Vec<Raw<AnyTimelineEvent>>,
    ) {
        let mut delay = FIRST_RETRY_DELAY;
        let mut attempt = 1u32;
        loop {
            match self.client.push_events(&self.service, txn_id.clone(), events.clone()).await {
                Ok(()) => return,
                Err(error) => tracing::debug!(
                    appservice = self.service.id(),
                    %txn_id,
                    attempt,
                    %error,
                    "an application service did not take a transaction"
                ),
            }
            if attempt == 5 {
                tracing::warn!(
                    appservice = self.service.id(),
                    "an application service keeps refusing events; still retrying"
                );
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_RETRY_DELAY);
            attempt = attempt.saturating_add(1);
        }
    }
}
