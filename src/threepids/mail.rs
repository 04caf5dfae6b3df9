//! Outgoing mail over SMTP (`[email] smtp_url`), through lettre. Only the validation mails of
//! `crate::threepids` are sent. The SMTP URL may hold a password and the mails hold tokens:
//! neither is ever logged, only the failure's kind.

use std::time::Duration;

use anyhow::Context as _;
use lettre::{
    AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor,
    message::{Mailbox, header::ContentType},
};

use crate::{Error, Result, config::EmailConfig};

/// How long one mail may take to hand to the SMTP server.
const SEND_TIMEOUT: Duration = Duration::from_secs(20);

/// A mail to send.
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub body: String,
}

/// The SMTP server and the sender of this server's mails.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    /// The mailer `[email]` describes, or `None` when it names no SMTP server.
    pub fn from_config(config: &EmailConfig) -> anyhow::Result<Option<Self>> {
        if !config.enabled() {
            return Ok(None);
        }
        // The URL is not in the context: it may hold the SMTP password.
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&config.smtp_url)
            .context("[email] smtp_url is not a valid SMTP URL")?
            .timeout(Some(SEND_TIMEOUT))
            .build();
        let from = config.from.parse().context("[email] from is not a valid address")?;
        Ok(Some(Self { transport, from }))
    }

    /// Sends a plain-text mail; a failure is `503 M_UNKNOWN` (the client may ask again).
    pub async fn send(&self, mail: Mail) -> Result<()> {
        let to: Mailbox = mail.to.parse().map_err(|_| Error::invalid_param("Invalid address"))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject)
            .header(ContentType::TEXT_PLAIN)
            .body(mail.body)
            .context("build a mail")?;
        if let Err(error) = self.transport.send(message).await {
            // lettre's error names the server's answer, never the credentials or the mail.
            tracing::warn!(%error, "cannot send a mail");
            return Err(Error::unavailable("The mail could not be sent; try again later"));
        }
        Ok(())
    }
}
