//! What server administrators may see and restrict of other accounts: `whois` (devices and their
//! last requests), account locking and account suspension.
//!
//! Every operation checks who asks before it looks the target up, as the spec's admin endpoints
//! require, so that a user who is not an administrator cannot learn which accounts exist. What a
//! lock or suspension then refuses is enforced where requests are served: a lock in the router's
//! authentication, a suspension by the handlers of the actions it forbids. This module never
//! knows HTTP.

use ruma::UserId;

use super::Users;
use crate::{
    Error, Result,
    store::{AccountRestrictions, DeviceRecord, UserRecord},
};

/// A change of an account's restrictions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestrictionChange {
    /// Lock (`true`) or unlock the account.
    Lock(bool),
    /// Suspend (`true`) the account or lift its suspension.
    Suspend(bool),
}

impl Users {
    /// The devices of `target`, for `GET /admin/whois`: a server administrator may ask about
    /// any local account, anyone else only about their own.
    pub async fn whois(&self, caller: &UserId, target: &UserId) -> Result<Vec<DeviceRecord>> {
        if caller != target && !self.is_admin(caller).await? {
            return Err(Error::forbidden("Only a server administrator may look up other users"));
        }
        self.require_local(target)?;
        if self.get(target).await?.is_none() {
            return Err(Error::not_found("No such user on this server"));
        }
        self.devices(target).await
    }

    /// Whether `target` is locked and suspended, as a server administrator asks.
    pub async fn restrictions(
        &self,
        caller: &UserId,
        target: &UserId,
    ) -> Result<AccountRestrictions> {
        let account = self.moderated_account(caller, target).await?;
        Ok(AccountRestrictions { locked: account.locked, suspended: account.suspended })
    }

    /// Locks, unlocks, suspends or unsuspends `target` at a server administrator's request, and
    /// returns the account's restrictions after the change. The account's sessions stay valid
    /// (a locked client is told to log in again, a suspended one keeps reading); they are
    /// dropped from the cache so that the next request sees the change.
    pub async fn restrict(
        &self,
        caller: &UserId,
        target: &UserId,
        change: RestrictionChange,
    ) -> Result<AccountRestrictions> {
        let account = self.moderated_account(caller, target).await?;
        if caller == target {
            return Err(Error::forbidden("Administrators may not lock or suspend themselves"));
        }
        let mut restrictions =
            AccountRestrictions { locked: account.locked, suspended: account.suspended };
        match change {
            RestrictionChange::Lock(locked) => {
                self.store.set_locked(target, locked).await?;
                restrictions.locked = locked;
            }
            RestrictionChange::Suspend(suspended) => {
                self.store.set_suspended(target, suspended).await?;
                restrictions.suspended = suspended;
            }
        }
        self.forget_sessions_of_user(target);
        tracing::info!(%caller, %target, ?change, "account restrictions changed");
        Ok(restrictions)
    }

    /// The account an administrator's lock or suspension request is about, after the spec's
    /// checks in its order: the caller is an administrator (403), the target is local (400),
    /// exists and is active (404), and is not another administrator (403).
    async fn moderated_account(&self, caller: &UserId, target: &UserId) -> Result<UserRecord> {
        if !self.is_admin(caller).await? {
            return Err(Error::forbidden("Only a server administrator may do this"));
        }
        self.require_local(target)?;
        let account = match self.get(target).await? {
            Some(account) if !account.deactivated => account,
            _ => return Err(Error::not_found("No such user on this server")),
        };
        if account.is_admin && caller != target {
            return Err(Error::forbidden("Server administrators cannot be locked or suspended"));
        }
        Ok(account)
    }

    /// 400 `M_INVALID_PARAM` for a user of another server: only local accounts are kept here.
    fn require_local(&self, user_id: &UserId) -> Result<()> {
        if user_id.server_name() != self.server_name {
            return Err(Error::invalid_param("The user does not belong to this server"));
        }
        Ok(())
    }
}
