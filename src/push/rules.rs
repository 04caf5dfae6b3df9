//! A user's push rules as the `/pushrules` API changes them: ruma's [`Ruleset`] operations with
//! the spec's errors, and the checks ruma leaves to the server.
//!
//! See <https://spec.matrix.org/v1.19/client-server-api/#push-rules-api>. Server-default rules
//! (IDs starting with `.`) keep their conditions and patterns: only `enabled` and `actions`
//! change, and they cannot be deleted. A rule is placed with `before`/`after` only relative to
//! rules the user made.

use ruma::{
    api::error::ErrorKind,
    push::{
        Action, AnyPushRuleRef, InsertPushRuleError, NewPushRule, PushCondition,
        RemovePushRuleError, RuleKind, Ruleset,
    },
};

use crate::{Error, Result};

/// The global account data type that holds a user's push rules.
pub const PUSH_RULES: &str = "m.push_rules";

/// The longest rule ID, pattern or condition text taken, in bytes.
pub const MAX_TEXT: usize = 1_000;
/// The most conditions and actions one rule may have.
pub const MAX_ITEMS: usize = 32;

/// The rule of that kind and ID; `M_NOT_FOUND` if there is none.
pub fn get(
    rules: &Ruleset,
    kind: &RuleKind,
    rule_id: &str,
) -> Result<ruma::api::client::push::PushRule> {
    Ok(find(rules, kind, rule_id)?.into())
}

/// Whether the rule is enabled.
pub fn enabled(rules: &Ruleset, kind: &RuleKind, rule_id: &str) -> Result<bool> {
    Ok(find(rules, kind, rule_id)?.enabled())
}

/// The rule's actions.
pub fn actions(rules: &Ruleset, kind: &RuleKind, rule_id: &str) -> Result<Vec<Action>> {
    Ok(find(rules, kind, rule_id)?.actions().to_vec())
}

fn find<'a>(rules: &'a Ruleset, kind: &RuleKind, rule_id: &str) -> Result<AnyPushRuleRef<'a>> {
    known_kind(kind)?;
    rules.get(kind.clone(), rule_id).ok_or_else(|| Error::not_found("No such push rule"))
}

/// The most rules of their own a user may have. Each is evaluated against every event of their
/// rooms, so that thousands of them would slow every message sent to them.
pub const MAX_USER_RULES: usize = 100;

/// Adds or replaces a rule the user made, placed as `before`/`after` ask.
pub fn insert(
    rules: &mut Ruleset,
    rule: NewPushRule,
    before: Option<&str>,
    after: Option<&str>,
) -> Result<()> {
    check_new_rule(&rule)?;
    let replaces = rules.get(rule.kind(), rule.rule_id()).is_some();
    let own = rules.iter().filter(|r| !r.rule_id().starts_with('.')).count();
    if !replaces && own >= MAX_USER_RULES {
        return Err(Error::forbidden(format!(
            "A user may have at most {MAX_USER_RULES} push rules of their own: delete one first"
        )));
    }
    rules.insert(rule, after, before).map_err(insert_error)
}

/// Deletes a rule the user made.
pub fn remove(rules: &mut Ruleset, kind: &RuleKind, rule_id: &str) -> Result<()> {
    known_kind(kind)?;
    rules.remove(kind.clone(), rule_id).map_err(|error| match error {
        RemovePushRuleError::ServerDefault => {
            Error::invalid_param("Server-default push rules cannot be deleted")
        }
        _ => Error::not_found("No such push rule"),
    })
}

pub fn set_enabled(rules: &mut Ruleset, kind: &RuleKind, rule_id: &str, on: bool) -> Result<()> {
    known_kind(kind)?;
    rules.set_enabled(kind.clone(), rule_id, on).map_err(|_| Error::not_found("No such push rule"))
}

pub fn set_actions(
    rules: &mut Ruleset,
    kind: &RuleKind,
    rule_id: &str,
    actions: Vec<Action>,
) -> Result<()> {
    known_kind(kind)?;
    check_actions(&actions)?;
    rules
        .set_actions(kind.clone(), rule_id, actions)
        .map_err(|_| Error::not_found("No such push rule"))
}

/// The five kinds of the spec; anything else is `M_INVALID_PARAM`.
fn known_kind(kind: &RuleKind) -> Result<()> {
    match kind {
        RuleKind::Override
        | RuleKind::Underride
        | RuleKind::Sender
        | RuleKind::Room
        | RuleKind::Content => Ok(()),
        other => Err(Error::invalid_param(format!("Unknown push rule kind {:?}", other.as_str()))),
    }
}

/// The checks ruma's parser leaves: sizes, an empty or unknown condition, an empty pattern.
fn check_new_rule(rule: &NewPushRule) -> Result<()> {
    let rule_id = rule.rule_id();
    if rule_id.is_empty() || rule_id.len() > MAX_TEXT {
        return Err(Error::invalid_param("A rule ID must have 1 to 1000 bytes"));
    }
    match rule {
        NewPushRule::Override(r) | NewPushRule::Underride(r) => {
            check_conditions(&r.conditions)?;
            check_actions(&r.actions)
        }
        NewPushRule::Content(r) => {
            if r.pattern.is_empty() || r.pattern.len() > MAX_TEXT {
                return Err(Error::invalid_param("A pattern must have 1 to 1000 bytes"));
            }
            check_actions(&r.actions)
        }
        NewPushRule::Room(r) => check_actions(&r.actions),
        NewPushRule::Sender(r) => check_actions(&r.actions),
        _ => Err(Error::invalid_param("Unknown push rule kind")),
    }
}

fn check_conditions(conditions: &[PushCondition]) -> Result<()> {
    if conditions.len() > MAX_ITEMS {
        return Err(Error::invalid_param("A push rule may have at most 32 conditions"));
    }
    for condition in conditions {
        let text = serde_json::to_string(condition).map_err(anyhow::Error::from)?;
        if text.len() > MAX_TEXT {
            return Err(Error::invalid_param("A push condition is too long"));
        }
        // ruma keeps a condition of a kind it does not know as custom; the spec's kinds are
        // the only ones a rule can use here, so such a rule would never match.
        if !KNOWN_CONDITIONS.contains(&condition.kind()) {
            return Err(Error::invalid_param(format!(
                "Unknown push condition kind {:?}",
                condition.kind()
            )));
        }
    }
    Ok(())
}

/// The condition kinds of the spec (v1.19).
const KNOWN_CONDITIONS: [&str; 6] = [
    "event_match",
    "event_property_is",
    "event_property_contains",
    // Deprecated, but still defined.
    "contains_display_name",
    "room_member_count",
    "sender_notification_permission",
];

fn check_actions(actions: &[Action]) -> Result<()> {
    if actions.len() > MAX_ITEMS {
        return Err(Error::invalid_param("A push rule may have at most 32 actions"));
    }
    let text = serde_json::to_string(actions).map_err(anyhow::Error::from)?;
    if text.len() > MAX_TEXT {
        return Err(Error::invalid_param("The actions are too long"));
    }
    Ok(())
}

fn insert_error(error: InsertPushRuleError) -> Error {
    match error {
        InsertPushRuleError::ServerDefaultRuleId => Error::invalid_param(
            "Rule IDs starting with a dot are reserved for server-default rules",
        ),
        InsertPushRuleError::InvalidRuleId => {
            Error::invalid_param("A rule ID may not contain a slash or a backslash")
        }
        InsertPushRuleError::RelativeToServerDefaultRule => {
            Error::invalid_param("A rule cannot be placed relative to a server-default rule")
        }
        InsertPushRuleError::UnknownRuleId => Error::client(
            http::StatusCode::BAD_REQUEST,
            ErrorKind::Unknown,
            "The before or after rule was not found",
        ),
        InsertPushRuleError::BeforeHigherThanAfter => {
            Error::invalid_param("The before rule comes before the after rule")
        }
        _ => Error::invalid_param("The push rule cannot be placed"),
    }
}
