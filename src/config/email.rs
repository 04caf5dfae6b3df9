//! `[email]` and `[identity_server]`: the settings of third-party identifiers (e-mail addresses
//! on accounts). Parsing and checking only; the mail itself is sent by `crate::threepids`.

use anyhow::bail;
use serde::Deserialize;

/// `[email]`: outgoing mail, with which users prove they own the e-mail addresses they add to
/// their accounts and reset forgotten passwords. Without `smtp_url` and `from` Hearth sends no
/// mail, and the e-mail endpoints answer `M_THREEPID_MEDIUM_NOT_SUPPORTED`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// The SMTP server, as lettre reads it: `smtp://host:25` (plain), `smtp://user:pass@host:587
    /// ?tls=required` (STARTTLS), `smtps://user:pass@host:465` (TLS). It may hold a password, so
    /// it is never logged.
    #[serde(default)]
    pub smtp_url: String,
    /// The sender of the mails, e.g. `Hearth <hearth@example.org>`.
    #[serde(default)]
    pub from: String,
    /// The URL the validation links in mails start with, e.g. `https://matrix.example.org`.
    /// Empty: `[well_known] client`, or else the address the server listens on.
    #[serde(default)]
    pub public_base_url: String,
    /// Whether registration asks for an e-mail address (with mail configured).
    #[serde(default)]
    pub registration: EmailRegistration,
    /// How long the link (or code) in a validation mail works, in seconds.
    #[serde(default = "default_token_lifetime_seconds")]
    pub token_lifetime_seconds: u64,
    /// Validation mails asked for per client address, and per e-mail address, per minute.
    #[serde(default = "default_token_requests_per_minute")]
    pub token_requests_per_minute: u32,
}

impl Default for EmailConfig {
    fn default() -> Self {
        Self {
            smtp_url: String::new(),
            from: String::new(),
            public_base_url: String::new(),
            registration: EmailRegistration::default(),
            token_lifetime_seconds: default_token_lifetime_seconds(),
            token_requests_per_minute: default_token_requests_per_minute(),
        }
    }
}

/// Whether registration asks for an e-mail address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmailRegistration {
    /// Registration never offers it (`m.login.email.identity` is not a stage).
    Off,
    /// A flow with `m.login.email.identity` is offered beside the one without.
    #[default]
    Optional,
    /// Every flow has `m.login.email.identity`.
    Required,
}

impl EmailConfig {
    /// Whether mail can be sent.
    pub fn enabled(&self) -> bool {
        !self.smtp_url.is_empty() && !self.from.is_empty()
    }

    pub(super) fn validate(&self) -> anyhow::Result<()> {
        if self.smtp_url.is_empty() != self.from.is_empty() {
            bail!("[email] needs both smtp_url and from, or neither");
        }
        if !self.from.is_empty() && self.from.parse::<lettre::message::Mailbox>().is_err() {
            bail!("[email] from must be an address such as \"Hearth <hearth@example.org>\"");
        }
        if !empty_or_with_scheme(&self.smtp_url, &["smtp://", "smtps://"]) {
            bail!("[email] smtp_url must start with smtp:// or smtps://");
        }
        if !empty_or_with_scheme(&self.public_base_url, &["http://", "https://"]) {
            bail!("[email] public_base_url must start with http:// or https://");
        }
        if !(1..=7 * 86_400).contains(&self.token_lifetime_seconds) {
            bail!("[email] token_lifetime_seconds must be between 1 and 604800 (a week)");
        }
        if self.token_requests_per_minute == 0 {
            bail!("[email] token_requests_per_minute must be at least 1");
        }
        Ok(())
    }
}

/// `[identity_server]`: how `/account/3pid/bind` and `/unbind` reach the identity server a
/// client names. It is a host the client chooses, so the same protection as URL previews applies.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityServerConfig {
    /// Networks (CIDRs) that identity servers may be on although they are private, loopback or
    /// otherwise reserved.
    #[serde(default)]
    pub ip_allowlist: Vec<ipnet::IpNet>,
    /// Talks plain HTTP instead of HTTPS to identity servers: for tests only.
    #[serde(default)]
    pub plain_http: bool,
}

/// Whether `url` is unset (empty) or starts with one of `schemes`.
fn empty_or_with_scheme(url: &str, schemes: &[&str]) -> bool {
    url.is_empty() || schemes.iter().any(|scheme| url.starts_with(scheme))
}

fn default_token_lifetime_seconds() -> u64 {
    60 * 60
}

fn default_token_requests_per_minute() -> u32 {
    5
}
