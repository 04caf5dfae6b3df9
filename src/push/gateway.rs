//! Delivery to push gateways: each notification published on [`super::NOTIFICATION_SUBJECT`]
//! is posted to every http pusher of its user, as the push gateway API's
//! `POST /_matrix/push/v1/notify` (ruma's request and response types), in a task of its own.
//!
//! A 5xx answer or a connection failure is retried with a doubling wait ([`RetryPolicy`]); any
//! other failure drops that notification for that pusher. A push key the gateway lists as
//! `rejected` is removed. Push keys and URLs never reach the logs: they identify devices.
//!
//! FIXME: a notification still being retried when the server stops is lost, as is one
//! published while the gateway task is busy restarting; the spec asks for best effort only.

use std::sync::Arc;

use tokio::sync::OnceCell;

use ruma::api::push_gateway::send_event_notification::v1::{
    Device, Notification, NotificationCounts, NotificationPriority, PusherData, Request, Response,
};
use ruma::{
    UInt,
    api::{IncomingResponseExt as _, OutgoingRequestExt as _},
    push::{HttpPusherData, PushFormat, Tweak},
};

use super::{NOTIFY_PATH, NotificationOutput, RetryPolicy};
use crate::{
    Error, Result,
    bus::Bus,
    rooms::power::content_of,
    store::{PusherRecord, Store},
};

/// How long one post to a gateway may take.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Starts the delivery task. Needs a Tokio runtime.
pub(super) fn start(store: Store, bus: &Bus, retry: RetryPolicy) {
    let mut notifications = bus.subscribe(super::NOTIFICATION_SUBJECT);
    // Built at the first delivery: its TLS set-up is memory an idle server without pushers
    // does not need.
    let client = Arc::new(OnceCell::new());
    tokio::spawn(async move {
        while let Some(message) = notifications.next().await {
            let Ok(output) = message.decode::<NotificationOutput>() else { continue };
            let delivery = Delivery { store: store.clone(), client: client.clone(), retry };
            tokio::spawn(async move {
                if let Err(error) = delivery.deliver(&output).await {
                    tracing::warn!(error = format!("{error:#}"), "cannot deliver a notification");
                }
            });
        }
    });
}

/// Checks a pusher's URL: http or https, with a host, the gateway path and nothing after it.
pub fn check_url(url: &str) -> Result<()> {
    let parsed =
        reqwest::Url::parse(url).map_err(|_| Error::invalid_param("data.url is not a URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(Error::invalid_param("data.url must be an http or https URL"));
    }
    if parsed.path() != NOTIFY_PATH || parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(Error::invalid_param("data.url must have the path /_matrix/push/v1/notify"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(Error::invalid_param("data.url may not hold credentials"));
    }
    Ok(())
}

/// One notification on its way to the user's pushers.
struct Delivery {
    store: Store,
    client: Arc<OnceCell<reqwest::Client>>,
    retry: RetryPolicy,
}

impl Delivery {
    async fn deliver(&self, output: &NotificationOutput) -> anyhow::Result<()> {
        let pushers = self.store.pushers(&output.user_id).await?;
        let pushers: Vec<PusherRecord> = pushers.into_iter().filter(|p| p.kind == "http").collect();
        if pushers.is_empty() {
            return Ok(());
        }
        let Some(event) = self.store.event(&output.event_id).await? else { return Ok(()) };
        let unread = self.unread(output).await?;
        for pusher in &pushers {
            let data: HttpPusherData = serde_json::from_str(&pusher.data)?;
            let notification = notification(output, &event, pusher, &data, unread);
            if let Some(rejected) = self.post(&data.url, notification).await?
                && rejected.contains(&pusher.pushkey)
            {
                self.store.delete_pusher(&output.user_id, &pusher.app_id, &pusher.pushkey).await?;
                tracing::info!(app_id = pusher.app_id, "a push gateway rejected a pusher: removed");
            }
        }
        Ok(())
    }

    /// The user's unread notifications across their joined rooms.
    async fn unread(&self, output: &NotificationOutput) -> anyhow::Result<UInt> {
        let memberships = self.store.memberships_of(&output.user_id).await?;
        let rooms: Vec<_> =
            memberships.into_iter().filter(|m| m.membership == "join").map(|m| m.room_id).collect();
        let counts = self.store.notification_counts(&output.user_id, &rooms).await?;
        let total: u64 = counts.iter().map(|c| c.notifications).sum();
        Ok(UInt::try_from(total).unwrap_or(UInt::MAX))
    }

    /// Posts to the gateway, retrying as the policy says; the gateway's rejected push keys, or
    /// `None` when it never accepted the notification.
    async fn post(
        &self,
        url: &str,
        notification: Notification,
    ) -> anyhow::Result<Option<Vec<String>>> {
        let base = url.strip_suffix(NOTIFY_PATH).unwrap_or(url);
        let mut delay = self.retry.first_delay;
        for attempt in 1..=self.retry.attempts {
            let request: http::Request<Vec<u8>> =
                Request::new(notification.clone()).try_into_http_request(base, (), ())?;
            match self.send(request).await {
                Ok(answer) if answer.status().is_success() => {
                    let (parts, body) = answer.into_parts();
                    let answer = http::Response::from_parts(parts, body.as_slice());
                    let rejected = Response::try_from_http_response(answer)
                        .map(|response| response.rejected)
                        .unwrap_or_default();
                    return Ok(Some(rejected));
                }
                Ok(answer) if !answer.status().is_server_error() => {
                    tracing::warn!(status = %answer.status(), "a push gateway refused a notification");
                    return Ok(None);
                }
                Ok(answer) => {
                    tracing::debug!(status = %answer.status(), attempt, "push gateway failed")
                }
                // Without the URL: a pusher's URL may carry a secret path.
                Err(error) => {
                    let error = error.without_url();
                    tracing::debug!(%error, attempt, "push gateway unreachable");
                }
            }
            if attempt < self.retry.attempts {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
        tracing::warn!(attempts = self.retry.attempts, "a push gateway never took a notification");
        Ok(None)
    }

    async fn send(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> reqwest::Result<http::Response<Vec<u8>>> {
        let request = reqwest::Request::try_from(request)?;
        let build = || async { reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build() };
        let client = self.client.get_or_try_init(build).await?;
        let response = client.execute(request).await?;
        let status = response.status();
        // An answer too large to be a gateway's is read as an empty one (no rejected pushkeys).
        let body =
            crate::outgoing::body_within(response, crate::outgoing::MAX_ANSWER_BYTES).await?;
        let body = body.unwrap_or_default();
        let mut answer = http::Response::new(body);
        *answer.status_mut() = status;
        Ok(answer)
    }
}

/// The notification for one pusher: only IDs and counts in the `event_id_only` format, the
/// event's type, sender and content too otherwise.
fn notification(
    output: &NotificationOutput,
    event: &crate::store::EventRecord,
    pusher: &PusherRecord,
    data: &HttpPusherData,
    unread: UInt,
) -> Notification {
    let mut device = Device::new(pusher.app_id.clone(), pusher.pushkey.clone());
    device.data = PusherData::from(data.clone());
    device.tweaks = output
        .actions
        .iter()
        .filter_map(|action| match action {
            ruma::push::Action::SetTweak(tweak) => Some(tweak.clone()),
            _ => None,
        })
        .collect();
    let mut notification = Notification::new(vec![device.clone()]);
    notification.event_id = Some(output.event_id.clone());
    notification.room_id = Some(output.room_id.clone());
    notification.counts = NotificationCounts::new(unread, UInt::MIN);
    let loud = device.tweaks.iter().any(|t| matches!(t, Tweak::Sound(_) | Tweak::Highlight(_)));
    notification.prio = if loud { NotificationPriority::High } else { NotificationPriority::Low };
    if data.format == Some(PushFormat::EventIdOnly) {
        return notification;
    }
    notification.event_type = Some(event.event_type.as_str().into());
    notification.sender = Some(event.sender.clone());
    notification.content = content_of::<Box<serde_json::value::RawValue>>(&event.pdu);
    notification.user_is_target = event.state_key.as_deref() == Some(output.user_id.as_str());
    notification
}
