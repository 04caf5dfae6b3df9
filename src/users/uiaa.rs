//! User-interactive authentication (UIA): sessions kept in memory while a client completes the
//! stages of one of an endpoint's flows.
//!
//! See <https://spec.matrix.org/v1.19/client-server-api/#user-interactive-authentication-api>.
//! Sessions expire after [`SESSION_LIFETIME`]; a restart forgets them, and the client then simply
//! starts again.

use std::{
    collections::BTreeMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use ruma::{
    OwnedUserId,
    api::{
        client::uiaa::{AuthData, AuthFlow, AuthType, UiaaInfo, UserIdentifier},
        error::{ErrorKind, StandardErrorBody},
    },
};

use super::{Users, random_string};
use crate::{
    Error, Result,
    threepids::{Threepids, Validated},
};

const SESSION_LIFETIME: Duration = Duration::from_secs(15 * 60);
const MAX_SESSIONS: usize = 10_000;

/// Who is authenticating and what the stages accept.
pub struct UiaaContext<'a> {
    /// For an authenticated endpoint: the user whose password `m.login.password` must match.
    pub user_id: Option<&'a ruma::UserId>,
    /// Registration tokens accepted by `m.login.registration_token`.
    pub registration_tokens: &'a [String],
    /// Where `m.login.email.identity` looks its validation session up; `None`: the stage is not
    /// accepted.
    pub threepids: Option<&'a Threepids>,
}

/// The UIA sessions in progress.
#[derive(Default)]
pub struct Uiaa {
    #[allow(clippy::disallowed_types)] // in-memory only
    sessions: Mutex<BTreeMap<String, Session>>,
}

#[derive(Clone)]
struct Session {
    started: Instant,
    completed: Vec<AuthType>,
    user_id: Option<OwnedUserId>,
    /// The identifier an `m.login.email.identity` stage proved.
    validated: Option<Validated>,
}

impl Uiaa {
    /// Succeeds once `auth` completes one of `flows`; otherwise the 401 UIA reply to send.
    pub async fn check(
        &self,
        users: &Users,
        flows: &[Vec<AuthType>],
        auth: Option<&AuthData>,
        context: UiaaContext<'_>,
    ) -> Result<()> {
        self.check_with_threepid(users, flows, auth, context).await.map(|_| ())
    }

    /// [`Self::check`], answering also the identifier an `m.login.email.identity` stage of the
    /// completed flow proved, if it had one.
    pub async fn check_with_threepid(
        &self,
        users: &Users,
        flows: &[Vec<AuthType>],
        auth: Option<&AuthData>,
        context: UiaaContext<'_>,
    ) -> Result<Option<Validated>> {
        let Some(auth) = auth else {
            return Err(self.challenge(flows, self.start(context.user_id), Vec::new(), None));
        };
        let session_id = match auth.session() {
            Some(id) if self.get(id).is_some() => id.to_owned(),
            Some(_) => return Err(Error::forbidden("Unknown or expired authentication session")),
            None => self.start(context.user_id),
        };
        let session = self.get(&session_id).ok_or_else(|| Error::forbidden("Session expired"))?;
        if session.user_id.as_deref() != context.user_id {
            return Err(Error::forbidden("The authentication session belongs to another user"));
        }

        let (stage, validated) = match self.run_stage(users, auth, &context).await {
            Ok(stage) => stage,
            Err(error) => {
                return Err(self.challenge(flows, session_id, session.completed, Some(error)));
            }
        };
        let validated = validated.or(session.validated);
        let mut completed = session.completed;
        if !completed.contains(&stage) {
            completed.push(stage);
        }
        if flows.iter().any(|flow| flow.iter().all(|stage| completed.contains(stage))) {
            self.lock().remove(&session_id);
            return Ok(validated);
        }
        self.update(&session_id, completed.clone(), validated);
        Err(self.challenge(flows, session_id, completed, None))
    }

    async fn run_stage(
        &self,
        users: &Users,
        auth: &AuthData,
        context: &UiaaContext<'_>,
    ) -> Result<(AuthType, Option<Validated>), StandardErrorBody> {
        if let AuthData::EmailIdentity(stage) = auth {
            let creds = &stage.thirdparty_id_creds;
            let unsupported =
                || StandardErrorBody::new(ErrorKind::Unrecognized, "E-mail is not offered".into());
            let threepids = context.threepids.ok_or_else(unsupported)?;
            let validated = threepids
                .validated(creds.sid.as_str(), creds.client_secret.as_str())
                .await
                .map_err(|error| match error {
                    Error::Client { kind, message, .. } => StandardErrorBody::new(kind, message),
                    _ => StandardErrorBody::new(ErrorKind::Unknown, "Internal error".into()),
                })?;
            return Ok((AuthType::EmailIdentity, Some(validated)));
        }
        self.run_plain_stage(users, auth, context).await.map(|stage| (stage, None))
    }

    async fn run_plain_stage(
        &self,
        users: &Users,
        auth: &AuthData,
        context: &UiaaContext<'_>,
    ) -> Result<AuthType, StandardErrorBody> {
        match auth {
            AuthData::Dummy(_) => Ok(AuthType::Dummy),
            AuthData::RegistrationToken(stage) => {
                if context.registration_tokens.iter().any(|t| t == &stage.token) {
                    Ok(AuthType::RegistrationToken)
                } else {
                    Err(StandardErrorBody::new(
                        ErrorKind::Forbidden,
                        "Invalid registration token".into(),
                    ))
                }
            }
            AuthData::Password(stage) => {
                let refused =
                    || StandardErrorBody::new(ErrorKind::Forbidden, "Invalid password".into());
                let Some(user_id) = context.user_id else { return Err(refused()) };
                let UserIdentifier::Matrix(identifier) = &stage.identifier else {
                    return Err(refused());
                };
                let claimed = users.local_user_id(&identifier.user).map_err(|_| refused())?;
                if claimed != user_id {
                    return Err(refused());
                }
                users.check_password(user_id, &stage.password).await.map_err(|_| refused())?;
                Ok(AuthType::Password)
            }
            _ => Err(StandardErrorBody::new(
                ErrorKind::Unrecognized,
                "Unsupported authentication stage".into(),
            )),
        }
    }

    fn challenge(
        &self,
        flows: &[Vec<AuthType>],
        session: String,
        completed: Vec<AuthType>,
        error: Option<StandardErrorBody>,
    ) -> Error {
        let mut info =
            UiaaInfo::new(flows.iter().map(|stages| AuthFlow::new(stages.clone())).collect());
        info.session = Some(session);
        info.completed = completed;
        info.auth_error = error.map(Box::new);
        Error::Uiaa(Box::new(info))
    }

    fn start(&self, user_id: Option<&ruma::UserId>) -> String {
        let id = random_string(24);
        let mut sessions = self.lock();
        if sessions.len() >= MAX_SESSIONS {
            sessions.retain(|_, s| s.started.elapsed() < SESSION_LIFETIME);
        }
        let session = Session {
            started: Instant::now(),
            completed: Vec::new(),
            user_id: user_id.map(ToOwned::to_owned),
            validated: None,
        };
        sessions.insert(id.clone(), session);
        id
    }

    fn get(&self, id: &str) -> Option<Session> {
        self.lock().get(id).filter(|s| s.started.elapsed() < SESSION_LIFETIME).cloned()
    }

    fn update(&self, id: &str, completed: Vec<AuthType>, validated: Option<Validated>) {
        if let Some(session) = self.lock().get_mut(id) {
            session.completed = completed;
            session.validated = validated;
        }
    }

    #[allow(clippy::disallowed_types)]
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}
