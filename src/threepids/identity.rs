//! The identity service API as a homeserver calls it: `POST /_matrix/identity/v2/3pid/bind`
//! (with the client's `id_access_token`) and `/3pid/unbind` (signed by this server, the
//! `X-Matrix` scheme of the server-server API).
//!
//! The identity server is a host the client names, so it is reached the way URL previews reach a
//! page (`crate::media::preview`): its addresses are resolved and checked here, any reserved one
//! (loopback, private, link-local, ...) refuses the request unless `[identity_server]
//! ip_allowlist` lists it, and the connection goes to exactly the addresses checked. Access
//! tokens and client secrets are never logged.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use anyhow::Context as _;
use http::StatusCode;
use ipnet::IpNet;
use ruma::{
    ServerName, UserId,
    api::error::{ErrorKind, StandardErrorBody},
    serde::{Base64, base64::Standard},
};
use serde_json::{Value, json};

use crate::{Error, Result, config::IdentityServerConfig, federation::ServerKeys};

/// The longest a call to an identity server may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// An identifier an identity server bound.
pub struct Bound {
    pub medium: String,
    pub address: String,
}

/// Calls identity servers.
pub struct IdentityClient {
    allowlist: Vec<IpNet>,
    plain_http: bool,
    keys: ServerKeys,
}

impl IdentityClient {
    pub fn new(config: &IdentityServerConfig, keys: ServerKeys) -> Self {
        Self { allowlist: config.ip_allowlist.clone(), plain_http: config.plain_http, keys }
    }

    /// Binds the identifier the identity server's session `sid` validated to `mxid`. The
    /// identity server's errors are passed on to the client, as the spec asks.
    pub async fn bind(
        &self,
        id_server: &str,
        id_access_token: &str,
        creds: (&str, &str),
        mxid: &UserId,
    ) -> Result<Bound> {
        let (sid, client_secret) = creds;
        let body = json!({ "sid": sid, "client_secret": client_secret, "mxid": mxid });
        let auth = format!("Bearer {id_access_token}");
        let answer = self.post(id_server, "/_matrix/identity/v2/3pid/bind", &auth, &body).await?;
        let field = |name: &str| answer.get(name).and_then(Value::as_str).map(ToOwned::to_owned);
        match (field("medium"), field("address")) {
            (Some(medium), Some(address)) => Ok(Bound { medium, address }),
            _ => Err(bad_gateway("The identity server's answer names no identifier")),
        }
    }

    /// Asks the identity server to unbind an identifier from `mxid`; whether it did.
    pub async fn unbind(&self, id_server: &str, mxid: &UserId, threepid: (&str, &str)) -> bool {
        let (medium, address) = threepid;
        let path = "/_matrix/identity/v2/3pid/unbind";
        let body = json!({ "mxid": mxid, "threepid": { "medium": medium, "address": address } });
        let outcome = async {
            let auth = self.x_matrix(id_server, path, &body)?;
            self.post(id_server, path, &auth, &body).await
        };
        match outcome.await {
            Ok(_) => true,
            Err(error) => {
                tracing::debug!(%error, "an identity server did not unbind an identifier");
                false
            }
        }
    }

    /// The `Authorization` header of a request signed by this server.
    fn x_matrix(&self, id_server: &str, path: &str, body: &Value) -> Result<String> {
        let origin = &self.keys.server_name;
        let signed = json!({
            "method": "POST",
            "uri": path,
            "origin": origin,
            "destination": id_server,
            "content": body,
        });
        let canonical = ruma::canonical_json::to_canonical_value(signed)
            .context("canonical JSON of an identity server request")?;
        let signature =
            Base64::<Standard, _>::new(self.keys.sign(canonical.to_string().as_bytes()));
        let key = self.keys.key_id();
        Ok(format!(
            "X-Matrix origin=\"{origin}\",destination=\"{id_server}\",key=\"{key}\",sig=\"{signature}\""
        ))
    }

    /// POSTs JSON to the identity server and returns its JSON answer.
    async fn post(&self, id_server: &str, path: &str, auth: &str, body: &Value) -> Result<Value> {
        let (host, port) = parse_id_server(id_server, self.plain_http)?;
        let addresses = self.checked_addresses(&host, port).await?;
        let scheme = if self.plain_http { "http" } else { "https" };
        let url = format!("{scheme}://{id_server}{path}");
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(TIMEOUT)
            .resolve_to_addrs(&host, &addresses)
            .build()
            .context("build the identity server client")?;
        let request = client.post(url).header(http::header::AUTHORIZATION, auth).json(body);
        let response = request.send().await.map_err(|error| {
            tracing::debug!(host, error = %error, "cannot reach an identity server");
            bad_gateway("Cannot reach the identity server")
        })?;
        let status = response.status();
        let bytes = crate::outgoing::body_within(response, crate::outgoing::MAX_ANSWER_BYTES).await;
        let bytes = bytes.map_err(|_| bad_gateway("The answer was cut off"))?;
        let Some(bytes) = bytes else {
            return Err(bad_gateway("The identity server's answer is too large"));
        };
        if !status.is_success() {
            return Err(passed_on(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|_| bad_gateway("The answer is not JSON"))
    }

    /// The addresses of `host`, refused when any of them is reserved and not allowed.
    async fn checked_addresses(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>> {
        let found = tokio::net::lookup_host((host, port)).await;
        let addresses: Vec<SocketAddr> =
            found.map_err(|_| bad_gateway("Cannot resolve the identity server's host"))?.collect();
        if addresses.is_empty() {
            return Err(bad_gateway("The identity server's host has no address"));
        }
        if addresses.iter().any(|address| !self.may_connect_to(address.ip())) {
            return Err(Error::client(
                StatusCode::BAD_REQUEST,
                ErrorKind::ServerNotTrusted,
                "This server does not contact identity servers at reserved addresses",
            ));
        }
        Ok(addresses)
    }

    fn may_connect_to(&self, ip: IpAddr) -> bool {
        self.allowlist.iter().any(|net| net.contains(&ip))
            || !crate::media::preview::is_reserved(ip)
    }
}

/// The host and port of an `id_server` (a host name with an optional port, as the spec gives it).
fn parse_id_server(id_server: &str, plain_http: bool) -> Result<(String, u16)> {
    let invalid = || Error::invalid_param("id_server must be a host name with an optional port");
    let name = <&ServerName>::try_from(id_server).map_err(|_| invalid())?;
    let default_port = if plain_http { 80 } else { 443 };
    let host = name.host().trim_start_matches('[').trim_end_matches(']').to_owned();
    Ok((host, name.port().unwrap_or(default_port)))
}

/// An identity server's refusal, passed on with its errcode (a 4xx keeps its status; anything
/// else is a 502).
fn passed_on(status: StatusCode, body: &[u8]) -> Error {
    let status = if status.is_client_error() { status } else { StatusCode::BAD_GATEWAY };
    match serde_json::from_slice::<StandardErrorBody>(body) {
        Ok(error) => Error::client(status, error.kind, error.message),
        Err(_) => Error::client(status, ErrorKind::Unknown, "The identity server refused"),
    }
}

fn bad_gateway(message: &str) -> Error {
    Error::client(StatusCode::BAD_GATEWAY, ErrorKind::Unknown, message)
}
