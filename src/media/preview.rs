//! URL previews (`GET /preview_url`): fetches the page a user links to, reads its Open Graph
//! tags (falling back to `<title>` and `<meta name="description">`), stores its image in the
//! media repository as local media, and answers the tags with the image's `mxc://` URI.
//!
//! The server fetches addresses its users choose, so every request is checked before it is made:
//! only http and https, the host resolved here and refused when any of its addresses is
//! loopback, private, link-local, shared (CGNAT), multicast, documentation or otherwise reserved
//! (unless `[media] url_preview_ip_allowlist` lists it), and the connection made to exactly the
//! address checked (reqwest's `resolve` override, no proxy), so a second DNS answer cannot
//! point it elsewhere. Redirects are followed by hand, each hop checked the same way. A fetch
//! takes at most [`FETCH_TIMEOUT`] and `[media] url_preview_max_bytes`.
//!
//! Previews are cached per URL (without fragment) in the database (`url_previews`, migration V12)
//! for [`CACHE_FOR`]; failures are not cached, so a page that was down is tried again at the next
//! request. The `ts` parameter of the request is ignored: the spec lets a server answer its
//! latest preview. This module never knows HTTP routing; it returns previews and `Error`s,
//! and never logs a URL (which may carry tokens in its query), only the host at debug level.

use std::{
    cell::RefCell,
    collections::BTreeMap,
    io::Cursor,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use anyhow::Context as _;
use http::StatusCode;
use ipnet::IpNet;
use reqwest::{Url, header, redirect::Policy};
use ruma::{UserId, api::error::ErrorKind};
use serde_json::Value;

use super::{Media, Upload};
use crate::{
    Error, Result,
    config::MediaConfig,
    store::{Store, media::UrlPreviewRecord},
    users::now_millis,
};

/// The longest one fetch (a page with its redirects, or an image) may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a preview is answered from the cache before the page is fetched again.
pub const CACHE_FOR: Duration = Duration::from_secs(60 * 60);

/// Redirects followed before giving up.
const MAX_REDIRECTS: usize = 5;

/// The longest URL previewed, in bytes; browsers and Synapse stop around there too.
const MAX_URL_BYTES: usize = 2048;

/// Descriptions are cut to this many characters, as a preview shows only a line or two.
const MAX_DESCRIPTION_CHARS: usize = 500;

const USER_AGENT: &str = concat!("Hearth/", env!("CARGO_PKG_VERSION"), " (URL preview)");

/// A preview: Open Graph keys (`og:title`, `og:image`, ...) and `matrix:image:size`.
pub type Preview = BTreeMap<String, Value>;

/// The previews of this server: its settings, and the store that caches them.
pub struct Previews {
    enabled: bool,
    max_bytes: u64,
    allowlist: Vec<IpNet>,
    store: Store,
}

/// A body fetched, and the URL it came from after redirects.
struct Fetched {
    url: Url,
    content_type: String,
    bytes: Vec<u8>,
}

impl Previews {
    pub fn new(config: &MediaConfig, store: Store) -> Self {
        Self {
            enabled: config.url_previews,
            max_bytes: config.url_preview_max_bytes,
            allowlist: config.url_preview_ip_allowlist.clone(),
            store,
        }
    }

    /// The preview of `url` for `user`, from the cache or fetched now. Images are stored in
    /// `media` as uploads of `user`.
    pub async fn preview(&self, media: &Media, user: &UserId, url: &str) -> Result<Preview> {
        if !self.enabled {
            return Err(Error::forbidden("URL previews are disabled on this server"));
        }
        let url = parse_url(url)?;
        let cache_for = i64::try_from(CACHE_FOR.as_millis()).unwrap_or(i64::MAX);
        let cached = self.store.url_preview(url.as_str(), now_millis() - cache_for).await?;
        if let Some(preview) = cached.and_then(|json| serde_json::from_str(&json).ok()) {
            return Ok(preview);
        }
        tracing::debug!(host = url.host_str(), "previewing a URL");
        let page = self.fetch(url.clone()).await?;
        let preview = self.build(media, user, page).await?;
        let json = serde_json::to_string(&preview).context("serialize a URL preview")?;
        let fetched_ts = now_millis();
        let record = UrlPreviewRecord { url: url.into(), fetched_ts, preview: json };
        self.store.insert_url_preview(record, fetched_ts - cache_for).await?;
        Ok(preview)
    }

    /// The preview of a fetched body: an image is its own preview, an HTML page its tags, and
    /// anything else has nothing to show (an empty preview, as Synapse answers).
    async fn build(&self, media: &Media, user: &UserId, page: Fetched) -> Result<Preview> {
        let essence = essence(&page.content_type);
        if essence.starts_with("image/") {
            let mut preview = Preview::new();
            add_image(media, user, &mut preview, page.bytes, &essence).await?;
            return Ok(preview);
        }
        if essence != "text/html" && essence != "application/xhtml+xml" {
            return Ok(Preview::new());
        }
        let charset = charset(&page.content_type);
        let bytes = page.bytes;
        let tags = tokio::task::spawn_blocking(move || extract(&bytes, charset.as_deref()))
            .await
            .context("parse a page for its preview")?;
        let mut preview = tags.preview();
        let image = tags.og.get("og:image").and_then(|image| page.url.join(image).ok());
        if let Some(image_url) = image {
            self.add_page_image(media, user, &mut preview, image_url).await?;
        }
        Ok(preview)
    }

    /// Replaces the page's `og:image` URL by the image stored here, or drops it when it cannot
    /// be fetched (the preview is still worth showing without it).
    async fn add_page_image(
        &self,
        media: &Media,
        user: &UserId,
        preview: &mut Preview,
        image_url: Url,
    ) -> Result<()> {
        for key in ["og:image", "og:image:width", "og:image:height", "og:image:type"] {
            preview.remove(key);
        }
        let Ok(image_url) = check_scheme(image_url) else { return Ok(()) };
        let image = match self.fetch(image_url).await {
            Ok(image) => image,
            Err(error) => {
                tracing::debug!(error = %error, "cannot fetch a preview's image");
                return Ok(());
            }
        };
        let essence = essence(&image.content_type);
        if essence.starts_with("image/") {
            add_image(media, user, preview, image.bytes, &essence).await?;
        }
        Ok(())
    }

    /// Fetches `url`, following redirects, within [`FETCH_TIMEOUT`].
    async fn fetch(&self, url: Url) -> Result<Fetched> {
        match tokio::time::timeout(FETCH_TIMEOUT, self.fetch_following(url)).await {
            Ok(fetched) => fetched,
            Err(_) => Err(bad_gateway("The page took too long to answer")),
        }
    }

    async fn fetch_following(&self, mut url: Url) -> Result<Fetched> {
        for _ in 0..=MAX_REDIRECTS {
            let response = self.get_once(&url).await?;
            let status = response.status();
            if status.is_redirection() {
                let location = response.headers().get(header::LOCATION);
                let location = location.and_then(|l| l.to_str().ok());
                let next = location.and_then(|l| url.join(l).ok());
                let next = next.ok_or_else(|| bad_gateway("The page redirects to no valid URL"))?;
                url = check_scheme(next)
                    .map_err(|_| bad_gateway("The page redirects to a URL that is not http(s)"))?;
                continue;
            }
            if !status.is_success() {
                return Err(bad_gateway(format!("The page answered {}", status.as_u16())));
            }
            return self.read(url, response).await;
        }
        Err(bad_gateway("The page redirects too many times"))
    }

    /// One request, to the address of `url`'s host that was checked, without redirects.
    async fn get_once(&self, url: &Url) -> Result<reqwest::Response> {
        let host = url.host_str().ok_or_else(|| bad_gateway("A URL without a host"))?;
        let port = url.port_or_known_default().unwrap_or(80);
        let (addresses, is_name) = self.checked_addresses(host, port).await?;
        let mut builder = reqwest::Client::builder()
            .redirect(Policy::none())
            .no_proxy()
            .user_agent(USER_AGENT)
            .connect_timeout(FETCH_TIMEOUT);
        if is_name {
            // reqwest tries these (IPv6 and IPv4 alike) and looks nothing else up for `host`.
            builder = builder.resolve_to_addrs(host, &addresses);
        }
        let client = builder.build().context("build the URL preview client")?;
        client.get(url.clone()).send().await.map_err(|error| {
            tracing::debug!(host, error = %error, "cannot fetch a page to preview");
            bad_gateway("Cannot reach the page")
        })
    }

    /// The addresses to connect to for `host`, and whether `host` is a name (not an IP literal).
    /// Refused when any address the name resolves to is reserved: a name with one public and one
    /// private address is likely a rebinding attempt.
    async fn checked_addresses(&self, host: &str, port: u16) -> Result<(Vec<SocketAddr>, bool)> {
        let literal = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>();
        let (addresses, is_name) = match literal {
            Ok(ip) => (vec![SocketAddr::new(ip, port)], false),
            Err(_) => {
                let found = tokio::net::lookup_host((host, port)).await;
                let found = found.map_err(|_| bad_gateway("Cannot resolve the page's host"))?;
                (found.collect::<Vec<_>>(), true)
            }
        };
        if addresses.is_empty() {
            return Err(bad_gateway("The page's host has no address"));
        }
        if addresses.iter().any(|a| !self.may_fetch_from(a.ip())) {
            tracing::debug!(host, "refused to preview from a reserved address");
            return Err(Error::forbidden("Previews may not fetch from this host's address"));
        }
        Ok((addresses, is_name))
    }

    fn may_fetch_from(&self, ip: IpAddr) -> bool {
        self.allowlist.iter().any(|net| net.contains(&ip)) || !is_reserved(ip)
    }

    /// Reads the body, refusing it once it is larger than the limit.
    async fn read(&self, url: Url, mut response: reqwest::Response) -> Result<Fetched> {
        if response.content_length().is_some_and(|length| length > self.max_bytes) {
            return Err(too_large());
        }
        let content_type = response.headers().get(header::CONTENT_TYPE);
        let content_type = content_type.and_then(|t| t.to_str().ok()).unwrap_or("").to_owned();
        let mut bytes = Vec::new();
        loop {
            let chunk = response.chunk().await;
            let Some(chunk) = chunk.map_err(|_| bad_gateway("The page's body was cut off"))? else {
                break;
            };
            if (bytes.len() + chunk.len()) as u64 > self.max_bytes {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Fetched { url, content_type, bytes })
    }
}

/// Checks what a client asked to preview: an http or https URL with a host, of sane length.
/// The fragment is dropped: the server never sees it in a browser either.
fn parse_url(url: &str) -> Result<Url> {
    if url.len() > MAX_URL_BYTES {
        return Err(Error::invalid_param(format!("url is longer than {MAX_URL_BYTES} bytes")));
    }
    Error::check_no_nul("url", url)?;
    let mut parsed = Url::parse(url).map_err(|_| Error::invalid_param("url is not a URL"))?;
    parsed.set_fragment(None);
    check_scheme(parsed).map_err(|_| Error::invalid_param("url must be an http or https URL"))
}

fn check_scheme(url: Url) -> Result<Url, ()> {
    let web = matches!(url.scheme(), "http" | "https");
    if web && url.host_str().is_some_and(|h| !h.is_empty()) { Ok(url) } else { Err(()) }
}

/// Stores an image as local media and names it in the preview.
async fn add_image(
    media: &Media,
    user: &UserId,
    preview: &mut Preview,
    bytes: Vec<u8>,
    content_type: &str,
) -> Result<()> {
    let size = bytes.len();
    let reader = image::ImageReader::new(Cursor::new(&bytes)).with_guessed_format();
    let dimensions = reader.ok().and_then(|reader| reader.into_dimensions().ok());
    let upload = Upload { content_type: Some(content_type.to_owned()), file_name: None, bytes };
    let uri = media.upload(user, upload).await?;
    preview.insert("og:image".into(), Value::from(uri.to_string()));
    preview.insert("og:image:type".into(), Value::from(content_type));
    preview.insert("matrix:image:size".into(), Value::from(size));
    if let Some((width, height)) = dimensions {
        preview.insert("og:image:width".into(), Value::from(width));
        preview.insert("og:image:height".into(), Value::from(height));
    }
    Ok(())
}

/// 502 `M_UNKNOWN`: the page could not be fetched; nothing the client can fix.
fn bad_gateway(message: impl Into<String>) -> Error {
    Error::client(StatusCode::BAD_GATEWAY, ErrorKind::Unknown, message)
}

/// 502 `M_TOO_LARGE`, as Synapse answers a page or image over its limit.
fn too_large() -> Error {
    let message = "The page is larger than this server previews";
    Error::client(StatusCode::BAD_GATEWAY, ErrorKind::TooLarge, message)
}

/// The media type of a `Content-Type` header, without parameters, in lower case.
fn essence(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// The `charset` parameter of a `Content-Type` header.
fn charset(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|parameter| {
        let (name, value) = parameter.split_once('=')?;
        name.trim().eq_ignore_ascii_case("charset").then(|| value.trim().trim_matches('"').into())
    })
}

/// Whether previews must not fetch from `ip` unless allowed: addresses that are not on the
/// public internet ([RFC 6890] and its IPv6 counterparts), or that reach IPv4 through IPv6.
///
/// [RFC 6890]: https://www.rfc-editor.org/rfc/rfc6890
pub fn is_reserved(ip: IpAddr) -> bool {
    const V4: [([u8; 4], u32); 15] = [
        ([0, 0, 0, 0], 8),       // "this network"
        ([10, 0, 0, 0], 8),      // private
        ([100, 64, 0, 0], 10),   // shared address space (CGNAT)
        ([127, 0, 0, 0], 8),     // loopback
        ([169, 254, 0, 0], 16),  // link-local
        ([172, 16, 0, 0], 12),   // private
        ([192, 0, 0, 0], 24),    // IETF protocol assignments
        ([192, 0, 2, 0], 24),    // documentation
        ([192, 88, 99, 0], 24),  // 6to4 relay anycast
        ([192, 168, 0, 0], 16),  // private
        ([198, 18, 0, 0], 15),   // benchmarking
        ([198, 51, 100, 0], 24), // documentation
        ([203, 0, 113, 0], 24),  // documentation
        ([224, 0, 0, 0], 4),     // multicast
        ([240, 0, 0, 0], 4),     // reserved, and broadcast
    ];
    const V6: [(u128, u32); 11] = [
        (0, 128),                               // unspecified
        (1, 128),                               // loopback
        (0xffff_0000_0000, 96),                 // IPv4-mapped
        (0x0064_ff9b << 96, 96),                // NAT64
        (0x0100 << 112, 64),                    // discard
        (0x2001 << 112, 23),                    // IETF protocol assignments, Teredo
        ((0x2001 << 112) | (0x0db8 << 96), 32), // documentation
        (0x2002 << 112, 16),                    // 6to4, which embeds any IPv4 address
        (0xfc00 << 112, 7),                     // unique local
        (0xfe80 << 112, 10),                    // link-local
        (0xff00 << 112, 8),                     // multicast
    ];
    match ip {
        IpAddr::V4(ip) => V4.iter().any(|(net, len)| in_v4(ip, Ipv4Addr::from(*net), *len)),
        IpAddr::V6(ip) => {
            let bits = u128::from(ip);
            V6.iter().any(|(net, len)| in_v6(bits, *net, *len)) || is_site_local(ip)
        }
    }
}

fn in_v4(ip: Ipv4Addr, net: Ipv4Addr, len: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

fn in_v6(bits: u128, net: u128, len: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
    bits & mask == net & mask
}

/// `fec0::/10`, deprecated site-local addresses, still routed privately on some networks.
fn is_site_local(ip: Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfec0
}

/// What a page says about itself.
#[derive(Debug, Default)]
struct PageTags {
    /// `og:*` properties, the first of each.
    og: BTreeMap<String, String>,
    title: Option<String>,
    description: Option<String>,
}

impl PageTags {
    fn preview(&self) -> Preview {
        let mut preview: Preview =
            self.og.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect();
        if !preview.contains_key("og:title")
            && let Some(title) = &self.title
        {
            preview.insert("og:title".into(), Value::from(title.as_str()));
        }
        if !preview.contains_key("og:description")
            && let Some(description) = &self.description
        {
            preview.insert("og:description".into(), Value::from(description.as_str()));
        }
        if let Some(Value::String(description)) = preview.get_mut("og:description") {
            cut(description, MAX_DESCRIPTION_CHARS);
        }
        preview
    }
}

/// Reads the Open Graph `<meta property="og:...">` tags, the first `<title>` and the
/// `<meta name="description">` of a page, in the charset of its `Content-Type` or, without
/// one, of its `<meta charset>` (UTF-8 when it names none). Malformed HTML yields what could
/// be read before the parser gave up.
fn extract(bytes: &[u8], charset: Option<&str>) -> PageTags {
    use lol_html::{AsciiCompatibleEncoding, HtmlRewriter, Settings, element, text};

    let tags = RefCell::new(PageTags::default());
    let title = RefCell::new((String::new(), false));
    let encoding = charset
        .and_then(|label| encoding_rs::Encoding::for_label_no_replacement(label.as_bytes()))
        .and_then(AsciiCompatibleEncoding::new);
    let settings = Settings::new()
        .with_strict(false)
        .with_encoding(encoding.unwrap_or_else(AsciiCompatibleEncoding::utf_8))
        .with_adjust_charset_on_meta_tag(encoding.is_none())
        .append_element_content_handler(element!("meta[content]", |el| {
            let content = decode_entities(&el.get_attribute("content").unwrap_or_default());
            let property = el.get_attribute("property").or_else(|| el.get_attribute("name"));
            let property = property.unwrap_or_default().to_ascii_lowercase();
            let mut tags = tags.borrow_mut();
            if property.starts_with("og:") {
                tags.og.entry(property).or_insert(content);
            } else if property == "description" {
                tags.description.get_or_insert(content);
            }
            Ok(())
        }))
        .append_element_content_handler(text!("title", |chunk| {
            let (text, done) = &mut *title.borrow_mut();
            if !*done {
                text.push_str(chunk.as_str());
                *done = chunk.last_in_text_node();
            }
            Ok(())
        }));
    {
        let mut rewriter = HtmlRewriter::new(settings, |_: &[u8]| {});
        if rewriter.write(bytes).is_ok() {
            let _ = rewriter.end();
        }
    }
    let mut tags = tags.into_inner();
    let title = decode_entities(title.into_inner().0.trim());
    tags.title = (!title.is_empty()).then_some(title);
    tags
}

/// Decodes the character references pages commonly use in titles and attributes (lol_html
/// leaves them as written): numeric ones and the five of XML plus `&nbsp;`. Others stay as
/// they are, which a preview can live with.
fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('&') {
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let Some(end) = rest.find(';').filter(|&end| end <= 10) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        match entity(&rest[1..end]) {
            Some(c) => out.push(c),
            None => out.push_str(&rest[..=end]),
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

fn entity(name: &str) -> Option<char> {
    let code = if let Some(hex) = name.strip_prefix("#x").or_else(|| name.strip_prefix("#X")) {
        u32::from_str_radix(hex, 16).ok()
    } else if let Some(decimal) = name.strip_prefix('#') {
        decimal.parse().ok()
    } else {
        return match name {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "nbsp" => Some('\u{a0}'),
            _ => None,
        };
    };
    code.and_then(char::from_u32).filter(|&c| c != '\0')
}

/// Cuts `text` to at most `max` characters, ending it with an ellipsis when cut.
fn cut(text: &mut String, max: usize) {
    if let Some((index, _)) = text.char_indices().nth(max) {
        text.truncate(index);
        text.push('…');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_addresses_are_recognized() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.31.255.255",
            "192.168.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:8.8.8.8",
            "fd00::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
        ] {
            assert!(is_reserved(ip.parse().unwrap()), "{ip} is reserved");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "172.32.0.1", "2606:4700:4700::1111"] {
            assert!(!is_reserved(ip.parse().unwrap()), "{ip} is public");
        }
    }

    #[test]
    fn open_graph_tags_win_over_title_and_description() {
        let page = br#"<html><head><title>Plain &amp; simple</title>
            <meta property="og:title" content="Caf&eacute; &#8212; &quot;OG&quot;">
            <meta name="description" content="A description">
            <meta property="og:image" content="/a.png"></head></html>"#;
        let tags = extract(page, None);
        assert_eq!(tags.title.as_deref(), Some("Plain & simple"));
        let preview = tags.preview();
        assert_eq!(preview["og:title"], "Caf&eacute; \u{2014} \"OG\"");
        assert_eq!(preview["og:description"], "A description");
        assert_eq!(preview["og:image"], "/a.png");
    }

    #[test]
    fn meta_charset_decodes_the_page() {
        let page = b"<meta charset=\"windows-1252\"><title>Caf\xe9</title>";
        assert_eq!(extract(page, None).title.as_deref(), Some("Caf\u{e9}"));
        let page = b"<title>Caf\xe9</title>";
        assert_eq!(extract(page, Some("ISO-8859-1")).title.as_deref(), Some("Caf\u{e9}"));
    }

    #[test]
    fn bad_urls_are_refused() {
        for url in ["", "example.com", "ftp://example.com/", "file:///etc/passwd", "http://"] {
            assert!(parse_url(url).is_err(), "{url:?} is refused");
        }
        assert!(parse_url("https://example.com/a#b").is_ok());
    }
}
