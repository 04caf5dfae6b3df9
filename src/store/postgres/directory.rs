//! PostgreSQL queries for the user directory and for reports.

use async_trait::async_trait;

use super::{PostgresStore, query, query_opt};
use crate::store::{
    DirectoryUser, NewReport, ReportRecord, ReportStore, StoreResult, UserDirectoryQuery,
    UserDirectoryStore,
    shared::{like_pattern, target_columns, target_of},
};

#[async_trait]
impl UserDirectoryStore for PostgresStore {
    async fn search_user_directory(
        &self,
        search: UserDirectoryQuery,
    ) -> StoreResult<Vec<DirectoryUser>> {
        let pattern = like_pattern(&search.term);
        let limit = i64::try_from(search.limit)?;
        // The users joined to a room the searcher is joined to or to a published room.
        let rows = query(
            &*self.conn().await?,
            "SELECT u.user_id, u.displayname, u.avatar_url FROM users u
             WHERE u.deactivated = 0
               AND (lower(split_part(substr(u.user_id, 2), ':', 1)) LIKE $2 ESCAPE '\\'
                    OR lower(COALESCE(u.displayname, '')) LIKE $2 ESCAPE '\\')
               AND EXISTS (
                   SELECT 1 FROM current_state m
                   WHERE m.state_key = u.user_id AND m.event_type = 'm.room.member'
                     AND m.membership = 'join'
                     AND (m.room_id IN (SELECT room_id FROM rooms WHERE published = 1)
                          OR m.room_id IN (
                              SELECT s.room_id FROM current_state s
                              WHERE s.state_key = $1 AND s.event_type = 'm.room.member'
                                AND s.membership = 'join')))
             ORDER BY u.user_id
             LIMIT $3",
            &[&search.searcher.as_str(), &pattern, &limit],
        )
        .await?;
        rows.iter()
            .map(|row| {
                Ok(DirectoryUser {
                    user_id: row.try_get::<_, String>(0)?.try_into()?,
                    displayname: row.try_get(1)?,
                    avatar_url: row.try_get(2)?,
                })
            })
            .collect()
    }
}

#[async_trait]
impl ReportStore for PostgresStore {
    async fn add_report(&self, report: NewReport) -> StoreResult<i64> {
        self.write(move |w| {
            let (room_id, event_id, user_id) = target_columns(&report.target);
            w.block_on(async {
                let row = query_opt(
                    w.conn(),
                    "INSERT INTO reports (report_id, reporter, room_id, event_id,
                                          reported_user_id, reason, received_ts)
                     SELECT COALESCE(MAX(report_id), 0) + 1, $1, $2, $3, $4, $5, $6 FROM reports
                     RETURNING report_id",
                    &[
                        &report.reporter.as_str(),
                        &room_id,
                        &event_id,
                        &user_id,
                        &report.reason,
                        &report.received_ts,
                    ],
                )
                .await?;
                let row = row.ok_or_else(|| anyhow::anyhow!("no report was stored"))?;
                Ok(row.try_get(0)?)
            })
        })
        .await
    }

    async fn reports(&self, after: i64, limit: usize) -> StoreResult<Vec<ReportRecord>> {
        let limit = i64::try_from(limit)?;
        let rows = query(
            &*self.conn().await?,
            "SELECT report_id, reporter, room_id, event_id, reported_user_id, reason, received_ts
             FROM reports WHERE report_id > $1 ORDER BY report_id LIMIT $2",
            &[&after, &limit],
        )
        .await?;
        rows.iter()
            .map(|row| {
                let target = [row.try_get(2)?, row.try_get(3)?, row.try_get(4)?];
                let report = NewReport {
                    reporter: row.try_get::<_, String>(1)?.try_into()?,
                    target: target_of(target)?,
                    reason: row.try_get(5)?,
                    received_ts: row.try_get(6)?,
                };
                Ok(ReportRecord { report_id: row.try_get(0)?, report })
            })
            .collect()
    }
}
