//! Application services (bridges): their registrations, which users, aliases and rooms they
//! claim, and what acting as one of them allows, as the spec's
//! [Application Service API](https://spec.matrix.org/v1.19/application-service-api/) says.
//!
//! The registrations are read once at start from the files `[appservices] registration_files`
//! names; a file that cannot be read, parsed or checked stops the server with a message naming
//! it. Events are pushed to each service by [`transactions`], and the calls the server makes to a
//! service (transactions, ping, user and alias queries) are in [`client`]. This module never
//! speaks to clients: the handlers in `crate::api` call it.
//!
//! A namespace's regular expression is matched from the start of the ID (as Synapse does, so
//! registrations written for it behave the same); it need not match to the end.

pub mod client;
pub mod transactions;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context as _, bail};
use regex::Regex;
use ruma::{
    OwnedUserId, RoomAliasId, RoomId, ServerName, UserId,
    api::appservice::{Namespace, Registration},
};

use crate::{Error, Result};

/// One namespace of a registration, its regular expression compiled.
#[derive(Clone, Debug)]
struct CompiledNamespace {
    regex: Regex,
    exclusive: bool,
}

/// A registered application service.
#[derive(Debug)]
pub struct Appservice {
    pub registration: Registration,
    /// The service's own user, `@<sender_localpart>:<server name>`.
    pub sender: OwnedUserId,
    users: Vec<CompiledNamespace>,
    aliases: Vec<CompiledNamespace>,
    rooms: Vec<CompiledNamespace>,
}

impl Appservice {
    fn new(registration: Registration, server_name: &ServerName) -> anyhow::Result<Self> {
        let sender =
            UserId::parse_with_server_name(registration.sender_localpart.as_str(), server_name)
                .map_err(|error| {
                    anyhow::anyhow!("sender_localpart is not a valid localpart: {error}")
                })?;
        // The server creates this user: it must be a user ID of today's grammar.
        if sender.validate_strict().is_err() {
            bail!("sender_localpart may only contain a-z, 0-9, and . _ = - / +");
        }
        let namespaces = &registration.namespaces;
        Ok(Self {
            users: compile(&namespaces.users).context("namespaces.users")?,
            aliases: compile(&namespaces.aliases).context("namespaces.aliases")?,
            rooms: compile(&namespaces.rooms).context("namespaces.rooms")?,
            sender,
            registration,
        })
    }

    pub fn id(&self) -> &str {
        &self.registration.id
    }

    /// Whether the user is the service's own user or in one of its user namespaces.
    pub fn is_user_interesting(&self, user_id: &UserId) -> bool {
        user_id == self.sender || matches_any(&self.users, user_id.as_str(), false)
    }

    /// Whether the service claims the user exclusively (or it is the service's own user).
    pub fn claims_user_exclusively(&self, user_id: &UserId) -> bool {
        user_id == self.sender || matches_any(&self.users, user_id.as_str(), true)
    }

    pub fn is_alias_interesting(&self, alias: &RoomAliasId) -> bool {
        matches_any(&self.aliases, alias.as_str(), false)
    }

    pub fn claims_alias_exclusively(&self, alias: &RoomAliasId) -> bool {
        matches_any(&self.aliases, alias.as_str(), true)
    }

    pub fn is_room_interesting(&self, room_id: &RoomId) -> bool {
        matches_any(&self.rooms, room_id.as_str(), false)
    }

    /// Whether requests acting for this service are rate-limited (`rate_limited`, default true).
    pub fn is_rate_limited(&self) -> bool {
        self.registration.rate_limited.unwrap_or(true)
    }

    /// The user a request made with this service's token acts as: the `user_id` query
    /// parameter, which must be the service's own user or in its user namespaces (403
    /// `M_FORBIDDEN` otherwise, as the spec's identity assertion says), or the service's own
    /// user without one.
    pub fn asserted_user(&self, user_id: Option<&str>) -> Result<OwnedUserId> {
        let Some(user_id) = user_id else { return Ok(self.sender.clone()) };
        let user_id = UserId::parse(user_id)
            .map_err(|_| Error::invalid_param("user_id is not a valid user ID"))?;
        if user_id.server_name() != self.sender.server_name() || !self.is_user_interesting(&user_id)
        {
            return Err(Error::forbidden(
                "The application service may not act as a user outside its namespaces",
            ));
        }
        Ok(user_id)
    }
}

fn compile(namespaces: &[Namespace]) -> anyhow::Result<Vec<CompiledNamespace>> {
    namespaces
        .iter()
        .map(|namespace| {
            let regex = Regex::new(&format!("^(?:{})", namespace.regex))
                .with_context(|| format!("invalid regex {:?}", namespace.regex))?;
            Ok(CompiledNamespace { regex, exclusive: namespace.exclusive })
        })
        .collect()
}

fn matches_any(namespaces: &[CompiledNamespace], id: &str, exclusive_only: bool) -> bool {
    namespaces.iter().any(|n| (n.exclusive || !exclusive_only) && n.regex.is_match(id))
}

/// Every registered application service. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Appservices {
    services: Arc<Vec<Arc<Appservice>>>,
}

impl Appservices {
    /// Reads and checks the registration files; relative paths are taken from `data_dir`. The
    /// error names the file and what is wrong with it.
    pub fn load(
        files: &[PathBuf],
        data_dir: &Path,
        server_name: &ServerName,
    ) -> anyhow::Result<Self> {
        let mut services: Vec<Arc<Appservice>> = Vec::new();
        for file in files {
            let path = data_dir.join(file);
            let service = load_file(&path, server_name).with_context(|| {
                format!("invalid application service registration {}", path.display())
            })?;
            check_unique(&services, &service).with_context(|| {
                format!("invalid application service registration {}", path.display())
            })?;
            services.push(Arc::new(service));
        }
        Ok(Self { services: Arc::new(services) })
    }

    /// The services given (for tests).
    pub fn from_registrations(
        registrations: Vec<Registration>,
        server_name: &ServerName,
    ) -> anyhow::Result<Self> {
        let services = registrations
            .into_iter()
            .map(|registration| Appservice::new(registration, server_name).map(Arc::new))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { services: Arc::new(services) })
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Appservice>> {
        self.services.iter()
    }

    /// The service whose `as_token` this is.
    pub fn by_as_token(&self, token: &str) -> Option<Arc<Appservice>> {
        self.services.iter().find(|s| constant_time_eq(&s.registration.as_token, token)).cloned()
    }

    pub fn by_id(&self, id: &str) -> Option<Arc<Appservice>> {
        self.services.iter().find(|s| s.id() == id).cloned()
    }

    /// 400 `M_EXCLUSIVE` if a service claims the user exclusively and it is not `acting`.
    pub fn require_not_claimed(&self, user_id: &UserId, acting: Option<&Appservice>) -> Result<()> {
        let claimed = self
            .services
            .iter()
            .filter(|s| acting.is_none_or(|acting| acting.id() != s.id()))
            .any(|s| s.claims_user_exclusively(user_id));
        if claimed {
            return Err(exclusive("This user ID is reserved by an application service"));
        }
        Ok(())
    }

    /// 400 `M_EXCLUSIVE` if a service other than `acting` claims the alias exclusively.
    pub fn require_alias_not_claimed(
        &self,
        alias: &RoomAliasId,
        acting: Option<&str>,
    ) -> Result<()> {
        let claimed = self
            .services
            .iter()
            .filter(|s| acting.is_none_or(|acting| acting != s.id()))
            .any(|s| s.claims_alias_exclusively(alias));
        if claimed {
            return Err(exclusive("This alias is reserved by an application service"));
        }
        Ok(())
    }
}

/// 400 `M_EXCLUSIVE`: an application service reserved the ID.
pub fn exclusive(message: &str) -> Error {
    Error::client(http::StatusCode::BAD_REQUEST, ruma::api::error::ErrorKind::Exclusive, message)
}

/// The largest registration file read: a real one is a few hundred bytes.
const MAX_REGISTRATION_BYTES: u64 = 1024 * 1024;

fn load_file(path: &Path, server_name: &ServerName) -> anyhow::Result<Appservice> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).context("cannot read the file")?;
    let mut text = String::new();
    file.take(MAX_REGISTRATION_BYTES + 1)
        .read_to_string(&mut text)
        .context("cannot read the file as UTF-8 text")?;
    if text.len() as u64 > MAX_REGISTRATION_BYTES {
        bail!("the file is larger than {MAX_REGISTRATION_BYTES} bytes");
    }
    let registration: Registration =
        serde_yaml_ng::from_str(&text).context("not a registration in the spec's format")?;
    check_registration(&registration)?;
    Appservice::new(registration, server_name)
}

fn check_registration(registration: &Registration) -> anyhow::Result<()> {
    if registration.id.is_empty() {
        bail!("id is empty");
    }
    if registration.as_token.is_empty() || registration.hs_token.is_empty() {
        bail!("as_token and hs_token must not be empty");
    }
    if registration.as_token == registration.hs_token {
        bail!("as_token and hs_token must differ");
    }
    if let Some(url) = &registration.url {
        let parsed =
            reqwest::Url::parse(url).with_context(|| format!("url {url:?} is not a URL"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            bail!("url {url:?} must be an http or https URL");
        }
    }
    Ok(())
}

/// Refuses a second service with the same ID or tokens as one already loaded.
fn check_unique(loaded: &[Arc<Appservice>], new: &Appservice) -> anyhow::Result<()> {
    let new_tokens = [&new.registration.as_token, &new.registration.hs_token];
    for service in loaded {
        if service.id() == new.id() {
            bail!("another registration has the id {:?}", new.id());
        }
        let tokens = [&service.registration.as_token, &service.registration.hs_token];
        if new_tokens.iter().any(|token| tokens.contains(token)) {
            bail!("another registration ({}) has the same as_token or hs_token", service.id());
        }
        if service.sender == new.sender {
            bail!("another registration ({}) has the same sender_localpart", service.id());
        }
    }
    Ok(())
}

/// Compares tokens without stopping at the first difference.
fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGISTRATION: &str = r##"
id: telegram
url: null
as_token: as-secret
hs_token: hs-secret
sender_localpart: telegrambot
namespaces:
  users:
    - exclusive: true
      regex: "@telegram_.*:example.org"
  aliases:
    - exclusive: false
      regex: "#telegram_.*"
rate_limited: false
"##;

    fn service() -> Appservice {
        let registration: Registration = serde_yaml_ng::from_str(REGISTRATION).unwrap();
        Appservice::new(registration, "example.org".try_into().unwrap()).unwrap()
    }

    #[test]
    fn namespaces_match_from_the_start_of_the_id() {
        let service = service();
        let user = |id: &str| UserId::parse(id).unwrap();
        assert!(service.claims_user_exclusively(&user("@telegram_1:example.org")));
        assert!(service.claims_user_exclusively(&user("@telegrambot:example.org")));
        assert!(!service.is_user_interesting(&user("@x_telegram_1:example.org")));
        let alias = <&RoomAliasId>::try_from("#telegram_chat:example.org").unwrap();
        assert!(service.is_alias_interesting(alias));
        assert!(!service.claims_alias_exclusively(alias));
        assert!(!service.is_rate_limited());
    }

    #[test]
    fn asserted_users_must_be_in_a_namespace() {
        let service = service();
        assert_eq!(service.asserted_user(None).unwrap(), "@telegrambot:example.org");
        assert!(service.asserted_user(Some("@telegram_2:example.org")).is_ok());
        let cases = [
            ("@alice:example.org", "outside the namespaces"),
            ("@telegram_2:other.org", "another server"),
            ("not a user", "not a user ID"),
        ];
        for (user_id, why) in cases {
            assert!(service.asserted_user(Some(user_id)).is_err(), "{why}");
        }
    }

    #[test]
    fn bad_registrations_are_refused() {
        let server: &ServerName = "example.org".try_into().unwrap();
        let bad_regex = REGISTRATION.replace("@telegram_.*:example.org", "@telegram_(");
        let registration: Registration = serde_yaml_ng::from_str(&bad_regex).unwrap();
        assert!(Appservice::new(registration, server).is_err(), "an invalid regex");
        let same_tokens = REGISTRATION.replace("hs-secret", "as-secret");
        let registration: Registration = serde_yaml_ng::from_str(&same_tokens).unwrap();
        assert!(check_registration(&registration).is_err(), "as_token equals hs_token");
        let first = Arc::new(service());
        assert!(check_unique(&[first], &service()).is_err(), "a duplicate id");
    }
}
