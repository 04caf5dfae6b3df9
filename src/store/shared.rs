//! Helpers both backends share for turning values into columns and back; no SQL runs here.

use super::{BackupKeysScope, ReportTarget, StoreResult};

/// A `LIKE` pattern matching text that contains `term`, lowercased, with `LIKE`'s wildcards in it
/// escaped by `\`.
pub(super) fn like_pattern(term: &str) -> String {
    let mut pattern = String::from("%");
    for c in term.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// The room, event and user columns of a report's target.
pub(super) fn target_columns(target: &ReportTarget) -> (Option<&str>, Option<&str>, Option<&str>) {
    match target {
        ReportTarget::Event(room_id, event_id) => {
            (Some(room_id.as_str()), Some(event_id.as_str()), None)
        }
        ReportTarget::Room(room_id) => (Some(room_id.as_str()), None, None),
        ReportTarget::User(user_id) => (None, None, Some(user_id.as_str())),
    }
}

/// A report's target from its room, event and user columns.
pub(super) fn target_of(columns: [Option<String>; 3]) -> StoreResult<ReportTarget> {
    Ok(match columns {
        [Some(room_id), Some(event_id), None] => {
            ReportTarget::Event(room_id.try_into()?, event_id.try_into()?)
        }
        [Some(room_id), None, None] => ReportTarget::Room(room_id.try_into()?),
        [None, None, Some(user_id)] => ReportTarget::User(user_id.try_into()?),
        other => anyhow::bail!("a report with an impossible target: {other:?}"),
    })
}

/// The room and session a scope narrows to (`None`: any).
pub(super) fn scope_values(scope: &BackupKeysScope) -> (Option<String>, Option<String>) {
    match scope {
        BackupKeysScope::All => (None, None),
        BackupKeysScope::Room(room_id) => (Some(room_id.to_string()), None),
        BackupKeysScope::Session(room_id, session) => {
            (Some(room_id.to_string()), Some(session.clone()))
        }
    }
}
