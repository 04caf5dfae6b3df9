//! Hearth's configuration: the `hearth.toml` file in the data directory, its commented template,
//! and the per-OS default data directory.
//!
//! This module parses and validates; it never opens sockets or databases. A file that does not
//! parse is reported with its path, line and reason, and the server does not start.

use std::{
    fmt, fs,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use ruma::{OwnedServerName, ServerName};
use serde::{Deserialize, Serialize};

mod email;

pub use email::{EmailConfig, EmailRegistration, IdentityServerConfig};

/// The name of the configuration file inside the data directory.
pub const CONFIG_FILE: &str = "hearth.toml";

/// Who may create an account through the client-server API.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RegistrationMode {
    /// Only an administrator creates accounts (`hearth user add`).
    #[default]
    Closed,
    /// Anyone holding one of the configured registration tokens.
    Token,
    /// Anyone who can reach the server.
    Open,
}

impl fmt::Display for RegistrationMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Closed => "closed",
            Self::Token => "token",
            Self::Open => "open",
        })
    }
}

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The server name: the part after the colon in user IDs. Fixed after the first run.
    pub server_name: OwnedServerName,
    /// The address the HTTP listener binds to.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default)]
    pub registration: RegistrationConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub well_known: WellKnownConfig,
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub media: MediaConfig,
    #[serde(default)]
    pub presence: PresenceConfig,
    #[serde(default)]
    pub voip: VoipConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub appservices: AppservicesConfig,
    #[serde(default)]
    pub email: EmailConfig,
    #[serde(default)]
    pub identity_server: IdentityServerConfig,
}

/// `[appservices]`: the application services (bridges) this server talks to.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppservicesConfig {
    /// Registration files (the spec's YAML registration), relative to the data directory unless
    /// absolute. Read at start; a bad file stops the server (see `crate::appservice`).
    #[serde(default)]
    pub registration_files: Vec<PathBuf>,
}

/// `[registration]`: who may sign up.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationConfig {
    #[serde(default)]
    pub mode: RegistrationMode,
    /// Tokens accepted by `m.login.registration_token` when `mode = "token"`.
    #[serde(default)]
    pub tokens: Vec<String>,
}

/// `[log]`: how much is logged.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `hearth=debug,info`. `RUST_LOG` overrides it.
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: default_log_level() }
    }
}

/// `[limits]`: protection against oversized or abusive requests.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// The largest request body accepted, in bytes.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: u64,
    /// Login and registration attempts allowed per client address per minute.
    #[serde(default = "default_login_per_minute")]
    pub login_attempts_per_minute: u32,
    /// How long a client may take to send a request's headers, or pause while it sends a body,
    /// in seconds; also how long an idle kept-alive connection stays open.
    #[serde(default = "default_request_timeout_seconds")]
    pub request_timeout_seconds: u64,
    /// Connections open at once, in all; past it new ones wait until one closes.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Connections open at once from one IP address; more are closed at once. A reverse proxy
    /// on the same machine counts as one address.
    #[serde(default = "default_connections_per_address")]
    pub connections_per_address: usize,
}

impl LimitsConfig {
    /// [`Self::request_timeout_seconds`] as a duration (at least a second).
    pub fn request_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.request_timeout_seconds.max(1))
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_request_bytes: default_max_request_bytes(),
            login_attempts_per_minute: default_login_per_minute(),
            request_timeout_seconds: default_request_timeout_seconds(),
            max_connections: default_max_connections(),
            connections_per_address: default_connections_per_address(),
        }
    }
}

/// `[media]`: limits of the media repository (uploads, downloads, thumbnails).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    /// The largest file accepted, in bytes. Uploads may be this large whatever
    /// `[limits] max_request_bytes` says; every other request keeps that limit.
    #[serde(default = "default_max_upload_bytes")]
    pub max_upload_bytes: u64,
    /// Media IDs a user may hold reserved (`POST /_matrix/media/v1/create`) and not uploaded yet.
    #[serde(default = "default_max_pending_uploads")]
    pub max_pending_uploads: u64,
    /// How long a reserved media ID waits for its upload, in seconds.
    #[serde(default = "default_pending_upload_expiry_seconds")]
    pub pending_upload_expiry_seconds: u64,
    /// The largest image, in pixels (width times height), that thumbnails are made from: a
    /// decoded image takes four bytes a pixel.
    #[serde(default = "default_max_thumbnail_source_pixels")]
    pub max_thumbnail_source_pixels: u64,
    /// Whether `GET /preview_url` fetches the pages users link to. Off by default: the server
    /// then makes requests to addresses its users choose.
    #[serde(default)]
    pub url_previews: bool,
    /// The largest page or image a preview downloads, in bytes.
    #[serde(default = "default_url_preview_max_bytes")]
    pub url_preview_max_bytes: u64,
    /// Addresses a preview may fetch from although they are private, loopback or otherwise
    /// reserved (all such addresses are refused by default).
    #[serde(default)]
    pub url_preview_ip_allowlist: Vec<ipnet::IpNet>,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            max_upload_bytes: default_max_upload_bytes(),
            max_pending_uploads: default_max_pending_uploads(),
            pending_upload_expiry_seconds: default_pending_upload_expiry_seconds(),
            max_thumbnail_source_pixels: default_max_thumbnail_source_pixels(),
            url_previews: false,
            url_preview_max_bytes: default_url_preview_max_bytes(),
            url_preview_ip_allowlist: Vec::new(),
        }
    }
}

/// `[presence]`: whether users see who is online, and when someone counts as idle or gone.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceConfig {
    /// Whether presence is tracked and shared. When off, everyone shows as offline.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Seconds without activity after which an online user shows as unavailable.
    #[serde(default = "default_idle_after_seconds")]
    pub idle_after_seconds: u64,
    /// Seconds after a user's last sync ended (with none in progress) after which they show as
    /// offline.
    #[serde(default = "default_offline_after_seconds")]
    pub offline_after_seconds: u64,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            idle_after_seconds: default_idle_after_seconds(),
            offline_after_seconds: default_offline_after_seconds(),
        }
    }
}

impl PresenceConfig {
    fn validate(&self) -> anyhow::Result<()> {
        // A day at most: the limits are timers, and a typo of many digits is not a wish.
        for (key, value) in [
            ("idle_after_seconds", self.idle_after_seconds),
            ("offline_after_seconds", self.offline_after_seconds),
        ] {
            if !(1..=86_400).contains(&value) {
                bail!("[presence] {key} must be between 1 and 86400");
            }
        }
        Ok(())
    }
}

/// `[auth]`: how long the access tokens of clients that can refresh them work.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Seconds an access token works when the client asked for a refresh token at login or
    /// registration (`refresh_token: true`); it then refreshes it. Clients that did not ask get
    /// access tokens that never expire.
    #[serde(default = "default_access_token_lifetime_seconds")]
    pub access_token_lifetime_seconds: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { access_token_lifetime_seconds: default_access_token_lifetime_seconds() }
    }
}

impl AuthConfig {
    /// [`Self::access_token_lifetime_seconds`] as a duration.
    pub fn access_token_lifetime(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.access_token_lifetime_seconds)
    }

    fn validate(&self) -> anyhow::Result<()> {
        // A year at most: beyond that, a token that expires is no different from one that never
        // does, and a typo of many digits is not a wish.
        if !(1..=365 * 86_400).contains(&self.access_token_lifetime_seconds) {
            bail!("[auth] access_token_lifetime_seconds must be between 1 and 31536000");
        }
        Ok(())
    }
}

/// `[well_known]`: what `/.well-known/matrix/*` advertises.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WellKnownConfig {
    /// The base URL clients should use, e.g. `https://matrix.example.org`. Empty: not served.
    #[serde(default)]
    pub client: String,
    /// The `host:port` other servers should use to reach this one. Empty: not served.
    #[serde(default)]
    pub server: String,
    /// A web page with help for this server's users, at `/.well-known/matrix/support`.
    #[serde(default)]
    pub support_page: String,
    /// How to reach the administrators, at `/.well-known/matrix/support`. With neither this
    /// nor `support_page`, that document is not served.
    #[serde(default)]
    pub contacts: Vec<SupportContact>,
}

/// One of `[well_known] contacts`: a Matrix user ID, an e-mail address or both, and a role.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupportContact {
    #[serde(default)]
    pub matrix_id: Option<String>,
    #[serde(default)]
    pub email_address: Option<String>,
    /// `m.role.admin` (the default: any question), `m.role.security` (sensitive reports), or
    /// a namespaced role of one's own such as `org.example.role.billing`.
    #[serde(default = "default_contact_role")]
    pub role: String,
}

impl WellKnownConfig {
    fn validate(&self) -> anyhow::Result<()> {
        let server = &self.server;
        if !server.is_empty() && <&ruma::ServerName>::try_from(server.as_str()).is_err() {
            bail!(
                "[well_known] server = {server:?} is not a server name (host, optionally with :port)"
            );
        }
        let page = &self.support_page;
        let is_url = page.starts_with("https://") || page.starts_with("http://");
        if !page.is_empty() && !is_url {
            bail!("[well_known] support_page = {page:?} must be an http:// or https:// URL");
        }
        self.contacts.iter().try_for_each(SupportContact::validate)
    }
}

impl SupportContact {
    fn validate(&self) -> anyhow::Result<()> {
        if self.matrix_id.is_none() && self.email_address.is_none() {
            bail!("[well_known] contacts: each contact needs a matrix_id or an email_address");
        }
        if let Some(id) = &self.matrix_id
            && <&ruma::UserId>::try_from(id.as_str()).is_err()
        {
            bail!("[well_known] contacts: matrix_id = {id:?} is not a user ID (@name:server)");
        }
        if let Some(address) = &self.email_address
            && (!address.contains('@') || address.chars().any(char::is_whitespace))
        {
            bail!("[well_known] contacts: email_address = {address:?} is not an e-mail address");
        }
        let role = &self.role;
        let namespaced = role.contains('.')
            && role
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
        if !namespaced {
            bail!(
                "[well_known] contacts: role = {role:?} must be m.role.admin, m.role.security or \
                 a namespaced role such as org.example.role.billing"
            );
        }
        Ok(())
    }
}

/// `[voip]`: the TURN server `/voip/turnServer` hands to clients for calls.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoipConfig {
    /// `turn:` and `turns:` URIs of the TURN server. Empty: no TURN server is offered.
    #[serde(default)]
    pub turn_uris: Vec<String>,
    /// The secret shared with the TURN server (coturn's `static-auth-secret`): each client gets
    /// a username `<expiry>:<user ID>` and the password base64(HMAC-SHA1(secret, username)).
    #[serde(default)]
    pub turn_shared_secret: String,
    /// Fixed credentials every client gets instead, when there is no shared secret.
    #[serde(default)]
    pub turn_username: String,
    #[serde(default)]
    pub turn_password: String,
    /// How long the credentials are valid, in seconds.
    #[serde(default = "default_turn_ttl_seconds")]
    pub turn_ttl_seconds: u64,
}

impl Default for VoipConfig {
    fn default() -> Self {
        Self {
            turn_uris: Vec::new(),
            turn_shared_secret: String::new(),
            turn_username: String::new(),
            turn_password: String::new(),
            turn_ttl_seconds: default_turn_ttl_seconds(),
        }
    }
}

/// The secrets are never printed.
impl fmt::Debug for VoipConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VoipConfig")
            .field("turn_uris", &self.turn_uris)
            .field("turn_shared_secret", &"<hidden>")
            .field("turn_username", &self.turn_username)
            .field("turn_password", &"<hidden>")
            .field("turn_ttl_seconds", &self.turn_ttl_seconds)
            .finish()
    }
}

impl VoipConfig {
    fn validate(&self) -> anyhow::Result<()> {
        for uri in &self.turn_uris {
            if !(uri.starts_with("turn:") || uri.starts_with("turns:")) {
                bail!("[voip] turn_uris: {uri:?} must start with turn: or turns:");
            }
        }
        let has_secret = !self.turn_shared_secret.is_empty();
        let has_fixed = !self.turn_username.is_empty() || !self.turn_password.is_empty();
        if has_secret && has_fixed {
            bail!("[voip] give either turn_shared_secret or turn_username and turn_password");
        }
        if !self.turn_uris.is_empty() && !has_secret && !has_fixed {
            bail!("[voip] turn_uris needs turn_shared_secret, or turn_username and turn_password");
        }
        if !(1..=7 * 86_400).contains(&self.turn_ttl_seconds) {
            bail!("[voip] turn_ttl_seconds must be between 1 and 604800 (a week)");
        }
        Ok(())
    }
}

/// `[database]`: where the data lives.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    #[serde(default)]
    pub backend: DatabaseBackend,
    /// For PostgreSQL: the connection URL (`postgresql://user:password@host:port/database`) or
    /// key-value string. It may hold a password, so it is never logged.
    #[serde(default)]
    pub url: String,
}

/// The storage backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseBackend {
    /// One file, `hearth.db`, in the data directory.
    #[default]
    Sqlite,
    /// A PostgreSQL 12 (or later) database named by `url`.
    Postgres,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8008))
}

fn default_log_level() -> String {
    "info".to_owned()
}

fn default_max_request_bytes() -> u64 {
    1024 * 1024
}

fn default_login_per_minute() -> u32 {
    30
}

fn default_request_timeout_seconds() -> u64 {
    30
}

fn default_max_connections() -> usize {
    1024
}

fn default_connections_per_address() -> usize {
    256
}

fn default_max_upload_bytes() -> u64 {
    50 * 1024 * 1024
}

fn default_max_pending_uploads() -> u64 {
    10
}

fn default_pending_upload_expiry_seconds() -> u64 {
    24 * 60 * 60
}

fn default_max_thumbnail_source_pixels() -> u64 {
    32 * 1024 * 1024
}

fn default_url_preview_max_bytes() -> u64 {
    10 * 1024 * 1024
}

fn default_true() -> bool {
    true
}

fn default_idle_after_seconds() -> u64 {
    5 * 60
}

fn default_offline_after_seconds() -> u64 {
    30
}

fn default_contact_role() -> String {
    "m.role.admin".to_owned()
}

fn default_turn_ttl_seconds() -> u64 {
    86_400
}

/// Five minutes, as Synapse's default for clients that use refresh tokens.
fn default_access_token_lifetime_seconds() -> u64 {
    5 * 60
}

/// Why a PostgreSQL URL that asks for TLS is refused.
pub const NO_TLS: &str = "TLS connections to PostgreSQL are not supported yet; use a server on \
                          this machine or sslmode=disable";

/// Refuses a PostgreSQL connection URL (or key-value string) whose `sslmode` asks for TLS
/// (`require`, `verify-ca`, `verify-full`): Hearth connects without TLS, and such a server would
/// otherwise fail in an obscure handshake error. `disable`, `prefer` and no `sslmode` pass.
pub fn check_postgres_url(url: &str) -> anyhow::Result<()> {
    match requested_ssl_mode(url) {
        Some("require" | "verify-ca" | "verify-full") => bail!(NO_TLS),
        _ => Ok(()),
    }
}

/// The `sslmode` a connection string names (the last one, as libpq takes it), if any.
fn requested_ssl_mode(url: &str) -> Option<&str> {
    if url.contains("://") {
        let (_, query) = url.split_once('?')?;
        return query.split('&').filter_map(|pair| pair.strip_prefix("sslmode=")).next_back();
    }
    // Key-value form: `host=... sslmode = require`, a value optionally in single quotes.
    let mut found = None;
    let mut rest = url;
    while let Some(at) = rest.find("sslmode") {
        let starts_word = rest[..at].chars().next_back().is_none_or(char::is_whitespace);
        rest = &rest[at + "sslmode".len()..];
        if let Some(value) = rest.trim_start().strip_prefix('=')
            && starts_word
        {
            let value = value.trim_start().trim_start_matches('\'');
            found = value.split(|c: char| c.is_whitespace() || c == '\'').next();
        }
    }
    found
}

/// The values a first run writes into a fresh configuration file.
#[derive(Clone, Debug)]
pub struct FirstRunSettings {
    pub server_name: OwnedServerName,
    pub listen: SocketAddr,
    pub registration: RegistrationMode,
}

impl Config {
    /// Reads and validates the configuration file at `path`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = fs::read_to_string(path)
            .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid configuration file {}", path.display()))
    }

    /// Parses and validates configuration text. Errors name the line and the reason.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let config: Self = toml::from_str(text).map_err(|error| anyhow::anyhow!("{error}"))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.database.backend == DatabaseBackend::Postgres && self.database.url.is_empty() {
            bail!("[database] backend = \"postgres\" needs the connection `url`");
        }
        if self.database.backend == DatabaseBackend::Postgres {
            check_postgres_url(&self.database.url).context("[database] url")?;
        }
        if self.database.backend == DatabaseBackend::Postgres && !cfg!(feature = "postgres") {
            bail!(
                "[database] backend = \"postgres\": this build of Hearth has no PostgreSQL support"
            );
        }
        if self.registration.mode == RegistrationMode::Token && self.registration.tokens.is_empty()
        {
            bail!("[registration] mode = \"token\" needs at least one entry in `tokens`");
        }
        if self.limits.max_request_bytes < 1024 {
            bail!("[limits] max_request_bytes must be at least 1024");
        }
        self.media.validate()?;
        self.presence.validate()?;
        self.well_known.validate()?;
        self.voip.validate()?;
        self.email.validate()?;
        self.auth.validate()
    }

    /// Loads the configuration from `data_dir`, writing the commented template first if the
    /// directory has none yet.
    pub fn load_or_create(data_dir: &Path, first_run: &FirstRunSettings) -> anyhow::Result<Self> {
        let path = data_dir.join(CONFIG_FILE);
        if !path.exists() {
            let text = template(first_run);
            write_private(&path, &text).with_context(|| {
                format!("cannot write the configuration file {}", path.display())
            })?;
            tracing::info!(path = %path.display(), "wrote a new configuration file");
            if first_run.registration == RegistrationMode::Token {
                tracing::info!("a registration token is in [registration] tokens of that file");
            }
        }
        Self::load(&path)
    }
}

impl MediaConfig {
    fn validate(&self) -> anyhow::Result<()> {
        if self.max_upload_bytes == 0 {
            bail!("[media] max_upload_bytes must be at least 1");
        }
        if self.max_pending_uploads == 0 {
            bail!("[media] max_pending_uploads must be at least 1");
        }
        if self.pending_upload_expiry_seconds == 0 {
            bail!("[media] pending_upload_expiry_seconds must be at least 1");
        }
        // 2^40 pixels is beyond any decoder's allocation; a typo rather than a wish.
        if !(1..=1 << 40).contains(&self.max_thumbnail_source_pixels) {
            bail!("[media] max_thumbnail_source_pixels must be between 1 and 2^40");
        }
        if self.url_preview_max_bytes == 0 {
            bail!("[media] url_preview_max_bytes must be at least 1");
        }
        Ok(())
    }
}

/// Points `[database]` of the configuration file at `path` to another backend, keeping every
/// comment and other setting. The new file is checked, then replaces the old one atomically
/// (written beside it, flushed, renamed), so a crash leaves either the old or the new file.
pub fn set_database(path: &Path, database: &DatabaseConfig) -> anyhow::Result<()> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
    let mut document: toml_edit::DocumentMut =
        text.parse().with_context(|| format!("invalid configuration file {}", path.display()))?;
    let backend = match database.backend {
        DatabaseBackend::Sqlite => "sqlite",
        DatabaseBackend::Postgres => "postgres",
    };
    if !document.contains_table("database") {
        document["database"] = toml_edit::table();
    }
    document["database"]["backend"] = toml_edit::value(backend);
    document["database"]["url"] = toml_edit::value(database.url.as_str());
    let text = document.to_string();
    Config::parse(&text).context("the changed configuration would not be valid")?;

    let temporary = path.with_extension("toml.new");
    write_private(&temporary, &text)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    fs::rename(&temporary, path)
        .with_context(|| format!("cannot replace the configuration file {}", path.display()))
}

/// Writes `text` to `path` (created or truncated) readable by its owner only, and flushes it to
/// disk: the file may hold the database password. The mode is set before the text is written, so
/// the secret is never in a file others may read, even one left by an earlier run.
///
/// On Windows the file keeps the permissions of the data directory it is in, the per-user
/// `%APPDATA%`, which other users cannot read already.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut file = fs::File::create(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    std::io::Write::write_all(&mut file, text.as_bytes())?;
    file.sync_all()
}

/// Renders the commented configuration file written on first run.
pub fn template(settings: &FirstRunSettings) -> String {
    format!(
        r#"# Hearth configuration. Lines starting with '#' are comments.
# Every option is listed with its default value.

# The server name: the part after ':' in user IDs such as @alice:example.org.
# It cannot change once users exist. An explicit port ("example.org:8448") or
# an IP literal ("127.0.0.1:8448", "[::1]:8448") is allowed.
server_name = "{server_name}"

# The address and port the HTTP listener binds to.
listen = "{listen}"

[registration]
# Who may create accounts: "closed" (only `hearth user add`), "token"
# (anyone holding one of the tokens below) or "open" (anyone).
mode = "{registration}"
# Registration tokens accepted when mode = "token". A first run with
# `--registration token` writes one random token here.
tokens = [{tokens}]

[log]
# How much to log: error, warn, info, debug or trace, or a filter such as
# "hearth=debug,info". The RUST_LOG environment variable overrides it.
level = "info"

[limits]
# The largest request body accepted, in bytes.
max_request_bytes = 1048576
# Login and registration attempts allowed per client address per minute, and
# password confirmations (changing the password, deleting devices) per account.
login_attempts_per_minute = 30
# How long a client may take to send a request's headers, or pause while it
# sends a body, in seconds; also how long an idle connection stays open.
request_timeout_seconds = 30
# Connections open at once, in all; past it new ones wait until one closes.
max_connections = 1024
# Connections open at once from one address (a reverse proxy counts as one).
connections_per_address = 256

[media]
# The largest file a user may upload, in bytes (50 MiB). Uploads may be this
# large even though other requests stay under max_request_bytes.
max_upload_bytes = 52428800
# Media IDs a user may reserve for a later upload and not fill yet.
max_pending_uploads = 10
# How long a reserved media ID waits for its upload, in seconds (one day).
pending_upload_expiry_seconds = 86400
# The largest image (width times height, in pixels) thumbnails are made from.
# Decoding takes four bytes a pixel: 33554432 pixels is 128 MiB.
max_thumbnail_source_pixels = 33554432
# Whether links in messages get previews: the server fetches the page a user
# links to and answers its title, description and image. Off by default.
url_previews = false
# The largest page or image a preview downloads, in bytes (10 MiB).
url_preview_max_bytes = 10485760
# Previews never fetch from private, loopback, link-local or other reserved
# addresses, except from these networks (CIDRs such as "192.168.1.0/24").
url_preview_ip_allowlist = []

[presence]
# Whether users see who is online ("presence"). When false, everyone shows as
# offline and nothing about presence is kept.
enabled = true
# Seconds without activity (sending, setting presence) after which an online
# user shows as unavailable (idle).
idle_after_seconds = 300
# Seconds after a user's last sync after which they show as offline.
offline_after_seconds = 30

[auth]
# Seconds an access token works when the client asked for a refresh token
# (clients such as Element X do): it then gets a new one with the refresh
# token, without signing in again. Clients that do not ask for one get access
# tokens that work until they log out.
access_token_lifetime_seconds = 300

[well_known]
# The base URL advertised at /.well-known/matrix/client, e.g.
# "https://matrix.example.org". Empty: that document is not served.
client = ""
# The "host:port" advertised at /.well-known/matrix/server for federation.
# Empty: that document is not served.
server = ""
# A web page with help for this server's users, e.g.
# "https://example.org/help.html", advertised at /.well-known/matrix/support
# with the contacts below. With neither, that document is not served.
support_page = ""
# How users reach the administrators: each contact has a matrix_id, an
# email_address or both, and a role: "m.role.admin" (any question, the
# default) or "m.role.security" (sensitive reports), e.g.
# contacts = [
#   {{ matrix_id = "@parent:example.org", role = "m.role.admin" }},
#   {{ email_address = "security@example.org", role = "m.role.security" }},
# ]
contacts = []

[voip]
# The TURN server clients use to relay calls through firewalls, handed out at
# /voip/turnServer; with no turn_uris, clients are offered none (calls then
# connect only where the two ends reach each other directly), e.g.
# turn_uris = ["turn:turn.example.org:3478?transport=udp",
#              "turns:turn.example.org:5349?transport=tcp"]
turn_uris = []
# The secret shared with the TURN server (coturn: use-auth-secret and
# static-auth-secret): each user gets credentials valid for turn_ttl_seconds.
turn_shared_secret = ""
# Or fixed credentials every user gets (without a shared secret).
turn_username = ""
turn_password = ""
# How long the credentials are valid, in seconds (a day).
turn_ttl_seconds = 86400

[email]
# Outgoing mail: users add e-mail addresses to their accounts (a mail with a
# link proves the address is theirs) and reset a forgotten password by mail.
# Empty: no mail is sent and e-mail addresses cannot be added. The SMTP server:
#   "smtp://localhost:25" (plain, for a server on this machine),
#   "smtp://user:password@mail.example.org:587?tls=required" (STARTTLS), or
#   "smtps://user:password@mail.example.org:465" (TLS).
smtp_url = ""
# The sender of the mails, e.g. "Hearth <hearth@example.org>".
from = ""
# The URL the links in mails start with, e.g. "https://matrix.example.org".
# Empty: [well_known] client, or else the address the server listens on.
public_base_url = ""
# Whether registration asks for an e-mail address: "off", "optional" (a
# choice) or "required". Only with mail configured.
registration = "optional"
# How long the link in a validation mail works, in seconds (an hour).
token_lifetime_seconds = 3600
# Validation mails asked for per client address, and per e-mail address, per
# minute.
token_requests_per_minute = 5

[identity_server]
# /account/3pid/bind and /unbind reach the identity server a client names.
# Like previews, they never connect to private, loopback, link-local or other
# reserved addresses, except to these networks (CIDRs).
ip_allowlist = []
# Plain HTTP instead of HTTPS to identity servers: for tests only.
plain_http = false

[database]
# Where the data lives: "sqlite" (one file, hearth.db, in the data directory) or
# "postgres" (PostgreSQL 12 or later, at `url`).
backend = "sqlite"
# For "postgres": the connection URL, e.g.
# "postgresql://hearth:secret@localhost:5432/hearth". Empty for "sqlite".
# Connections are unencrypted: sslmode=require (or verify-*) is refused.
# PostgreSQL cuts off a statement after 30 s, or after 10 s waiting for a lock
# (the client gets 503); the URL's options may change either, as in
# "postgresql://...?options=-c%20statement_timeout%3D60s".
url = ""

[appservices]
# Application services (bridges such as mautrix-telegram or heisenbridge): the
# registration file each bridge generates, in the spec's YAML format, relative
# to this data directory unless absolute. Read at start; a file that cannot be
# read or is invalid stops the server with a message naming it, e.g.
# registration_files = ["telegram-registration.yaml"]
registration_files = []
"#,
        server_name = settings.server_name,
        listen = settings.listen,
        registration = settings.registration,
        tokens = first_run_tokens(settings.registration),
    )
}

/// The `tokens` list a first run writes: one random token in token mode, so that the server
/// starts and the family has a token to hand out (it is in the file, never in the logs).
fn first_run_tokens(mode: RegistrationMode) -> String {
    use rand::{Rng as _, distributions::Alphanumeric};
    if mode != RegistrationMode::Token {
        return String::new();
    }
    let token: String =
        rand::thread_rng().sample_iter(Alphanumeric).take(24).map(char::from).collect();
    format!("\"{token}\"")
}

/// The data directory used when `--data-dir` is not given: `%APPDATA%\Hearth\data` on Windows,
/// `~/Library/Application Support/Hearth` on macOS, `$XDG_DATA_HOME/hearth` elsewhere.
pub fn default_data_dir() -> anyhow::Result<PathBuf> {
    let dirs = directories::ProjectDirs::from("", "", "Hearth")
        .context("cannot find a home directory for the default data directory")?;
    Ok(dirs.data_dir().to_owned())
}

/// Parses a server name following the spec's grammar (host, optional port, IP literals).
pub fn parse_server_name(name: &str) -> anyhow::Result<OwnedServerName> {
    <&ServerName>::try_from(name)
        .map(ToOwned::to_owned)
        .map_err(|error| anyhow::anyhow!("invalid server name {name:?}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_run() -> FirstRunSettings {
        FirstRunSettings {
            server_name: parse_server_name("localhost:8448").unwrap(),
            listen: default_listen(),
            registration: RegistrationMode::Open,
        }
    }

    #[test]
    fn template_parses_back_to_the_first_run_settings() {
        let config = Config::parse(&template(&first_run())).unwrap();
        assert_eq!(config.server_name.as_str(), "localhost:8448");
        assert_eq!(config.registration.mode, RegistrationMode::Open);
        assert_eq!(config.limits.max_request_bytes, 1024 * 1024);
        let defaults = MediaConfig::default();
        assert_eq!(config.media.max_upload_bytes, defaults.max_upload_bytes);
        assert_eq!(config.media.max_pending_uploads, defaults.max_pending_uploads);
        assert_eq!(
            config.media.pending_upload_expiry_seconds,
            defaults.pending_upload_expiry_seconds
        );
        assert_eq!(config.media.max_thumbnail_source_pixels, defaults.max_thumbnail_source_pixels);
        assert!(!config.media.url_previews);
        assert_eq!(config.media.url_preview_max_bytes, defaults.url_preview_max_bytes);
        assert!(config.media.url_preview_ip_allowlist.is_empty());
        let presence = PresenceConfig::default();
        assert!(config.presence.enabled);
        assert_eq!(config.presence.idle_after_seconds, presence.idle_after_seconds);
        assert_eq!(config.presence.offline_after_seconds, presence.offline_after_seconds);
        assert_eq!(
            config.auth.access_token_lifetime_seconds,
            AuthConfig::default().access_token_lifetime_seconds
        );
    }

    #[test]
    fn access_token_lifetimes_out_of_range_are_refused() {
        for value in ["0", "31536001"] {
            let text = format!(
                "server_name = \"localhost\"\n[auth]\naccess_token_lifetime_seconds = {value}\n"
            );
            let error = format!("{:#}", Config::parse(&text).unwrap_err());
            assert!(error.contains("access_token_lifetime_seconds"), "{error}");
        }
        let text = "server_name = \"localhost\"\n[auth]\naccess_token_lifetime_seconds = 2\n";
        assert_eq!(Config::parse(text).unwrap().auth.access_token_lifetime_seconds, 2);
    }

    #[test]
    fn presence_timers_out_of_range_are_refused() {
        for value in ["0", "86401"] {
            let text =
                format!("server_name = \"localhost\"\n[presence]\nidle_after_seconds = {value}\n");
            let error = format!("{:#}", Config::parse(&text).unwrap_err());
            assert!(error.contains("idle_after_seconds"), "{error}");
        }
        let text = "server_name = \"localhost\"\n[presence]\nenabled = false\n";
        assert!(!Config::parse(text).unwrap().presence.enabled);
    }

    #[test]
    fn the_template_offers_no_support_page_and_no_turn_server() {
        let config = Config::parse(&template(&first_run())).unwrap();
        assert!(config.well_known.support_page.is_empty() && config.well_known.contacts.is_empty());
        assert!(config.voip.turn_uris.is_empty());
        assert_eq!(config.voip.turn_ttl_seconds, 86_400);
    }

    #[test]
    fn support_contacts_need_a_way_to_reach_them_and_a_namespaced_role() {
        let parse = |contacts: &str| {
            Config::parse(&format!(
                "server_name = \"localhost\"\n[well_known]\ncontacts = [{contacts}]\n"
            ))
        };
        let good = parse(r#"{ matrix_id = "@parent:localhost" }, { email_address = "a@b.c", role = "m.role.security" }"#)
            .unwrap();
        assert_eq!(good.well_known.contacts[0].role, "m.role.admin", "the default role");
        for (bad, why) in [
            (r#"{ role = "m.role.admin" }"#, "matrix_id or an email_address"),
            (r#"{ matrix_id = "parent" }"#, "not a user ID"),
            (r#"{ email_address = "nobody" }"#, "not an e-mail address"),
            (r#"{ matrix_id = "@p:localhost", role = "Admin" }"#, "namespaced role"),
        ] {
            let error = format!("{:#}", parse(bad).unwrap_err());
            assert!(error.contains(why), "{bad}: {error}");
        }
        let page = "server_name = \"localhost\"\n[well_known]\nsupport_page = \"help.html\"\n";
        assert!(format!("{:#}", Config::parse(page).unwrap_err()).contains("support_page"));
    }

    #[test]
    fn a_turn_server_needs_turn_uris_and_one_kind_of_credentials() {
        let parse =
            |voip: &str| Config::parse(&format!("server_name = \"localhost\"\n[voip]\n{voip}\n"));
        let uris = "turn_uris = [\"turn:turn.example.org\"]\n";
        assert!(parse(&format!("{uris}turn_shared_secret = \"s\"")).is_ok());
        assert!(parse(&format!("{uris}turn_username = \"u\"\nturn_password = \"p\"")).is_ok());
        for (bad, why) in [
            (uris.to_owned(), "needs turn_shared_secret"),
            (format!("{uris}turn_shared_secret = \"s\"\nturn_username = \"u\""), "either"),
            ("turn_uris = [\"http://turn\"]\nturn_shared_secret = \"s\"".to_owned(), "turn:"),
            (format!("{uris}turn_shared_secret = \"s\"\nturn_ttl_seconds = 0"), "turn_ttl_seconds"),
        ] {
            let error = format!("{:#}", parse(&bad).unwrap_err());
            assert!(error.contains(why), "{bad}: {error}");
        }
        let secret = parse(&format!("{uris}turn_shared_secret = \"hidden-secret\"")).unwrap();
        assert!(!format!("{:?}", secret.voip).contains("hidden-secret"), "secrets never print");
    }

    #[test]
    fn media_limits_of_zero_are_refused() {
        for key in ["max_upload_bytes", "max_pending_uploads", "pending_upload_expiry_seconds"] {
            let text = format!("server_name = \"localhost\"\n[media]\n{key} = 0\n");
            let error = format!("{:#}", Config::parse(&text).unwrap_err());
            assert!(error.contains(key), "{error}");
        }
        let text = "server_name = \"localhost\"\n[media]\nmax_upload_bytes = 1000\n";
        assert_eq!(Config::parse(text).unwrap().media.max_upload_bytes, 1000);
    }

    #[test]
    fn a_first_run_in_token_mode_writes_a_fresh_random_token() {
        let settings = FirstRunSettings { registration: RegistrationMode::Token, ..first_run() };
        let first = Config::parse(&template(&settings)).unwrap();
        let second = Config::parse(&template(&settings)).unwrap();
        assert_eq!(first.registration.mode, RegistrationMode::Token);
        assert_eq!(first.registration.tokens.len(), 1);
        let token = &first.registration.tokens[0];
        assert!(token.len() == 24 && token.chars().all(|c| c.is_ascii_alphanumeric()), "{token}");
        assert_ne!(first.registration.tokens, second.registration.tokens);
        assert!(Config::parse(&template(&first_run())).unwrap().registration.tokens.is_empty());
    }

    #[test]
    fn switching_the_database_keeps_comments_and_other_settings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONFIG_FILE);
        fs::write(&path, template(&first_run())).unwrap();
        let postgres = DatabaseConfig {
            backend: DatabaseBackend::Postgres,
            url: "postgresql://h@localhost/h".into(),
        };
        set_database(&path, &postgres).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let config = Config::parse(&text).unwrap();
        assert_eq!(config.database.backend, DatabaseBackend::Postgres);
        assert_eq!(config.database.url, "postgresql://h@localhost/h");
        assert_eq!(config.server_name.as_str(), "localhost:8448");
        assert!(text.contains("# Where the data lives"), "comments kept");

        let broken = DatabaseConfig { backend: DatabaseBackend::Postgres, url: String::new() };
        assert!(set_database(&path, &broken).is_err(), "a config that would not start");
        assert_eq!(fs::read_to_string(&path).unwrap(), text, "the file is left as it was");
    }

    #[test]
    fn urls_asking_for_tls_are_refused_and_the_others_pass() {
        let refused = [
            "postgresql://h@localhost/h?sslmode=require",
            "postgres://h:p@db:5432/h?application_name=x&sslmode=verify-full",
            "postgresql://h@localhost/h?sslmode=disable&sslmode=verify-ca",
            "host=db user=h sslmode=require",
            "host=db sslmode = 'verify-full' user=h",
        ];
        for url in refused {
            let error = check_postgres_url(url).unwrap_err();
            assert_eq!(error.to_string(), NO_TLS, "{url}");
        }
        let accepted = [
            "postgresql://h@localhost/h",
            "postgresql://h@localhost/h?sslmode=prefer",
            "postgresql://h@localhost/h?sslmode=disable",
            "postgresql://h@localhost/h?sslmode=require&sslmode=disable",
            "host=db user=h sslmode=disable",
            "host=db password=nosslmode=require",
        ];
        for url in accepted {
            assert!(check_postgres_url(url).is_ok(), "{url}");
        }
    }

    #[test]
    fn a_postgres_config_asking_for_tls_does_not_load() {
        let text = "server_name = \"localhost\"\n[database]\nbackend = \"postgres\"\n\
                    url = \"postgresql://h@localhost/h?sslmode=require\"\n";
        let error = format!("{:#}", Config::parse(text).unwrap_err());
        assert!(error.contains(NO_TLS) && error.contains("[database] url"), "{error}");
        let sqlite = "server_name = \"localhost\"\n";
        assert!(Config::parse(sqlite).is_ok());
    }

    /// The file may hold the database password in its URL.
    #[cfg(unix)]
    #[test]
    fn the_config_file_is_readable_by_its_owner_only_when_written_and_rewritten() {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONFIG_FILE);
        Config::load_or_create(dir.path(), &first_run()).unwrap();
        assert_eq!(mode(&path), 0o600, "the first run's template");

        // A readable file and a readable leftover of an interrupted rewrite, as an older version
        // (or a hand edit) may have left them: the rewrite with the password is private anyway.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let leftover = path.with_extension("toml.new");
        fs::write(&leftover, "old").unwrap();
        fs::set_permissions(&leftover, fs::Permissions::from_mode(0o644)).unwrap();
        let postgres = DatabaseConfig {
            backend: DatabaseBackend::Postgres,
            url: "postgresql://hearth:secret@localhost/hearth".into(),
        };
        set_database(&path, &postgres).unwrap();
        assert_eq!(mode(&path), 0o600, "rewritten by set_database");
        assert!(fs::read_to_string(&path).unwrap().contains("secret"));
        assert!(!leftover.exists());
    }

    #[test]
    fn parse_errors_name_the_line() {
        let error = Config::parse("server_name = \"localhost\"\nlisten = 5\n").unwrap_err();
        let text = format!("{error:#}");
        assert!(text.contains("line 2"), "{text}");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let error = Config::parse("server_name = \"localhost\"\nlsiten = \"x\"\n").unwrap_err();
        assert!(format!("{error:#}").contains("lsiten"));
    }

    #[test]
    fn server_names_follow_the_spec_grammar() {
        for good in ["localhost", "localhost:8448", "127.0.0.1:8448", "[::1]:8448", "a.b-c.org"] {
            assert!(parse_server_name(good).is_ok(), "{good}");
        }
        for bad in ["", "has space", "host:port", "[::1", "under_score.org:99999999"] {
            assert!(parse_server_name(bad).is_err(), "{bad}");
        }
    }
}
