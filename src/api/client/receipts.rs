//! Read receipts and read markers: `POST /rooms/{roomId}/receipt/{receiptType}/{eventId}` and
//! `POST /rooms/{roomId}/read_markers`.

use std::sync::Arc;

use ruma::{
    EventId, RoomId,
    api::client::{
        read_marker::set_read_marker,
        receipt::create_receipt::{self, v3::ReceiptType},
    },
    events::receipt::ReceiptThread,
};

use crate::{
    Error, Result,
    api::router::{Router, User},
    rooms::receipts::{READ, READ_PRIVATE, Receipt},
    services::Services,
};

pub fn routes(router: &mut Router) {
    router.add(create_receipt).add(set_read_marker);
}

async fn create_receipt(
    services: Arc<Services>,
    user: User,
    request: create_receipt::v3::Request,
) -> Result<create_receipt::v3::Response> {
    let (room_id, event_id) = (&request.room_id, &request.event_id);
    let receipt_type = match request.receipt_type {
        ReceiptType::Read => READ,
        ReceiptType::ReadPrivate => READ_PRIVATE,
        ReceiptType::FullyRead => {
            if request.thread != ReceiptThread::Unthreaded {
                return Err(Error::invalid_param("The fully read marker has no thread"));
            }
            set_fully_read(&services, &user, room_id, event_id).await?;
            return Ok(create_receipt::v3::Response::new());
        }
        other => {
            return Err(Error::invalid_param(format!(
                "Unknown receipt type {:?}: use m.read, m.read.private or m.fully_read",
                other.as_str()
            )));
        }
    };
    let thread_id = match request.thread {
        ReceiptThread::Unthreaded => None,
        ReceiptThread::Main => Some("main".to_owned()),
        ReceiptThread::Thread(root) => {
            // The root must be an event of this room; this also keeps arbitrary strings (NULs,
            // megabytes) that ruma takes for event IDs out of storage and out of every sync.
            if services.rooms.event_in_room(room_id, &root).await.is_err() {
                return Err(Error::invalid_param("thread_id is not an event of this room"));
            }
            Some(root.to_string())
        }
        _ => return Err(Error::invalid_param("thread_id is neither \"main\" nor an event ID")),
    };
    let receipt = Receipt { room_id, user_id: &user.user_id, receipt_type, event_id, thread_id };
    services.rooms.set_receipt(receipt).await?;
    Ok(create_receipt::v3::Response::new())
}

async fn set_read_marker(
    services: Arc<Services>,
    user: User,
    request: set_read_marker::v3::Request,
) -> Result<set_read_marker::v3::Response> {
    let room_id = &request.room_id;
    services.rooms.require_joined(room_id, &user.user_id).await?;
    // Every event is checked before anything is stored.
    for event_id in [&request.fully_read, &request.read_receipt, &request.private_read_receipt]
        .into_iter()
        .flatten()
    {
        services.rooms.event_in_room(room_id, event_id).await?;
    }
    if let Some(event_id) = &request.fully_read {
        set_fully_read(&services, &user, room_id, event_id).await?;
    }
    let receipts = [(READ, &request.read_receipt), (READ_PRIVATE, &request.private_read_receipt)];
    for (receipt_type, event_id) in receipts {
        if let Some(event_id) = event_id {
            let receipt = Receipt {
                room_id,
                user_id: &user.user_id,
                receipt_type,
                event_id,
                thread_id: None,
            };
            services.rooms.set_receipt(receipt).await?;
        }
    }
    Ok(set_read_marker::v3::Response::new())
}

/// Moves the user's fully read marker (the `m.fully_read` room account data) forward to the
/// event; a marker already at or after it stays.
async fn set_fully_read(
    services: &Services,
    user: &User,
    room_id: &RoomId,
    event_id: &EventId,
) -> Result<()> {
    services.rooms.require_joined(room_id, &user.user_id).await?;
    let event = services.rooms.event_in_room(room_id, event_id).await?;
    let users = &services.users;
    let _serial = users.lock_account_data().await;
    if let Some(marked) = fully_read_position(services, user, room_id).await?
        && marked >= event.stream_position
    {
        return Ok(());
    }
    let content = serde_json::value::to_raw_value(&serde_json::json!({ "event_id": event_id }))
        .map_err(anyhow::Error::from)?;
    users.set_account_data(&user.user_id, Some(room_id), FULLY_READ, &content).await
}

/// The stream position of the event the user's fully read marker is at, if it is at one.
async fn fully_read_position(
    services: &Services,
    user: &User,
    room_id: &RoomId,
) -> Result<Option<i64>> {
    let stored = services.store.account_data(&user.user_id, Some(room_id), FULLY_READ).await?;
    let Some(content) = stored.and_then(|raw| serde_json::from_str::<FullyRead>(raw.get()).ok())
    else {
        return Ok(None);
    };
    let event = services.rooms.event_in_room(room_id, &content.event_id).await.ok();
    Ok(event.map(|event| event.stream_position))
}

/// The room account data type of the fully read marker.
const FULLY_READ: &str = "m.fully_read";

/// What the fully read marker holds.
#[derive(serde::Deserialize)]
struct FullyRead {
    event_id: ruma::OwnedEventId,
}
