//! SQLite queries for the user directory and for reports.

use async_trait::async_trait;
use rusqlite::params;

use super::SqliteStore;
use crate::store::shared::{like_pattern, target_columns, target_of};
use crate::store::{
    DirectoryUser, NewReport, ReportRecord, ReportStore, StoreResult, UserDirectoryQuery,
    UserDirectoryStore,
};

#[async_trait]
impl UserDirectoryStore for SqliteStore {
    async fn search_user_directory(
        &self,
        query: UserDirectoryQuery,
    ) -> StoreResult<Vec<DirectoryUser>> {
        self.read(move |c| {
            let pattern = like_pattern(&query.term);
            let limit = i64::try_from(query.limit)?;
            // The users joined to a room the searcher is joined to or to a published room. SQLite's
            // lower() folds ASCII letters only.
            let mut statement = c.prepare(
                "SELECT u.user_id, u.displayname, u.avatar_url FROM users u
                 WHERE u.deactivated = 0
                   AND (lower(substr(u.user_id, 2, instr(u.user_id, ':') - 2)) LIKE ?2 ESCAPE '\\'
                        OR lower(COALESCE(u.displayname, '')) LIKE ?2 ESCAPE '\\')
                   AND EXISTS (
                       SELECT 1 FROM current_state m
                       WHERE m.state_key = u.user_id AND m.event_type = 'm.room.member'
                         AND m.membership = 'join'
                         AND (m.room_id IN (SELECT room_id FROM rooms WHERE published = 1)
                              OR m.room_id IN (
                                  SELECT s.room_id FROM current_state s
                                  WHERE s.state_key = ?1 AND s.event_type = 'm.room.member'
                                    AND s.membership = 'join')))
                 ORDER BY u.user_id
                 LIMIT ?3",
            )?;
            let rows = statement
                .query_map(params![query.searcher.as_str(), pattern, limit], |row| {
                    Ok((row.get::<_, String>(0)?, row.get(1)?, row.get(2)?))
                })?;
            let mut users = Vec::new();
            for row in rows {
                let (user_id, displayname, avatar_url) = row?;
                users.push(DirectoryUser { user_id: user_id.try_into()?, displayname, avatar_url });
            }
            Ok(users)
        })
        .await
    }
}

#[async_trait]
impl ReportStore for SqliteStore {
    async fn add_report(&self, report: NewReport) -> StoreResult<i64> {
        self.write(move |c| {
            let report_id: i64 =
                c.query_row("SELECT COALESCE(MAX(report_id), 0) + 1 FROM reports", [], |row| {
                    row.get(0)
                })?;
            let (room_id, event_id, user_id) = target_columns(&report.target);
            c.execute(
                "INSERT INTO reports (report_id, reporter, room_id, event_id, reported_user_id,
                                      reason, received_ts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    report_id,
                    report.reporter.as_str(),
                    room_id,
                    event_id,
                    user_id,
                    report.reason,
                    report.received_ts
                ],
            )?;
            Ok(report_id)
        })
        .await
    }

    async fn reports(&self, after: i64, limit: usize) -> StoreResult<Vec<ReportRecord>> {
        let limit = i64::try_from(limit)?;
        self.read(move |c| {
            let mut statement = c.prepare(
                "SELECT report_id, reporter, room_id, event_id, reported_user_id, reason,
                        received_ts
                 FROM reports WHERE report_id > ?1 ORDER BY report_id LIMIT ?2",
            )?;
            let rows = statement.query_map(params![after, limit], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    [row.get(2)?, row.get(3)?, row.get(4)?],
                    row.get(5)?,
                    row.get(6)?,
                ))
            })?;
            let mut reports = Vec::new();
            for row in rows {
                let (report_id, reporter, target, reason, received_ts) = row?;
                let report = NewReport {
                    reporter: reporter.try_into()?,
                    target: target_of(target)?,
                    reason,
                    received_ts,
                };
                reports.push(ReportRecord { report_id, report });
            }
            Ok(reports)
        })
        .await
    }
}
