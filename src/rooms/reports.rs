//! Reports of events, rooms and users to the server's administrators (client-server API,
//! "Reporting content"), kept in the store for them.
//!
//! An event can be reported only by a member of its room; a room and a user by anyone. An
//! unknown event, room or user is `M_NOT_FOUND`, as is an event of a room the reporter is not
//! joined to. Reasons are limited to [`MAX_REASON_CHARS`].
//! FIXME: administrators cannot list or act on reports yet (no admin API or page for them), and
//! nobody is notified of a new one.

use ruma::{EventId, RoomId, UserId};

use super::Rooms;
use crate::{
    Error, Result,
    store::{NewReport, ReportTarget},
};

/// The longest reason a report may give, in characters.
pub const MAX_REASON_CHARS: usize = 1000;

impl Rooms {
    /// Reports an event of a room the reporter is joined to.
    pub async fn report_event(
        &self,
        reporter: &UserId,
        room_id: &RoomId,
        event_id: &EventId,
        reason: Option<String>,
    ) -> Result<()> {
        check_reason(reason.as_deref())?;
        let not_found =
            || Error::not_found("The event was not found or you are not joined to the room");
        self.require_joined(room_id, reporter).await.map_err(|_| not_found())?;
        let event = self.event_in_room(room_id, event_id).await.map_err(|_| not_found())?;
        let target = ReportTarget::Event(room_id.to_owned(), event.event_id);
        self.store_report(reporter, target, reason).await
    }

    /// Reports a room of this server.
    pub async fn report_room(
        &self,
        reporter: &UserId,
        room_id: &RoomId,
        reason: String,
    ) -> Result<()> {
        check_reason(Some(&reason))?;
        if !self.exists(room_id).await? {
            return Err(Error::not_found("The room was not found"));
        }
        self.store_report(reporter, ReportTarget::Room(room_id.to_owned()), Some(reason)).await
    }

    /// Reports a user of this server.
    pub async fn report_user(
        &self,
        reporter: &UserId,
        user_id: &UserId,
        reason: String,
    ) -> Result<()> {
        check_reason(Some(&reason))?;
        let is_local = user_id.server_name() == self.server_name();
        if !is_local || self.store.user(user_id).await?.is_none() {
            return Err(Error::not_found("The user was not found"));
        }
        self.store_report(reporter, ReportTarget::User(user_id.to_owned()), Some(reason)).await
    }

    async fn store_report(
        &self,
        reporter: &UserId,
        target: ReportTarget,
        reason: Option<String>,
    ) -> Result<()> {
        let report = NewReport {
            reporter: reporter.to_owned(),
            target,
            reason,
            received_ts: crate::users::now_millis(),
        };
        let report_id = self.store.add_report(report).await?;
        tracing::info!(report_id, "content reported to the administrators");
        Ok(())
    }
}

fn check_reason(reason: Option<&str>) -> Result<()> {
    Error::check_no_nul("reason", reason.unwrap_or_default())?;
    if reason.is_some_and(|reason| reason.chars().count() > MAX_REASON_CHARS) {
        return Err(Error::bad_json(format!(
            "The reason is longer than {MAX_REASON_CHARS} characters"
        )));
    }
    Ok(())
}
