//! The media repository over HTTP: uploads (`POST /_matrix/media/v3/upload`, `POST
//! /_matrix/media/v1/create` and `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`),
//! authenticated downloads, thumbnails and configuration under `/_matrix/client/v1/media/`, and
//! the deprecated unauthenticated `/_matrix/media/v3/` downloads and thumbnails.
//!
//! Every route here is registered as a media route: its body may be as large as
//! `[media] max_upload_bytes`, and its responses carry the sandboxing headers (`crate::api`).
//! The `Content-Disposition` is `inline` only for types a browser shows without running anything
//! (`crate::media::is_safe_inline`), with the file name encoded by ruma's `ContentDisposition`.
//!
//! URL previews (`GET /_matrix/client/v1/media/preview_url` and the deprecated
//! `GET /_matrix/media/v3/preview_url`) are made by `crate::media::preview`, limited per user
//! here; with `[media] url_previews = false` (the default) they answer 403.
// The unauthenticated `/_matrix/media/v3/` download endpoints are deprecated since v1.11 and
// still served, as the spec allows, for clients that have not moved on.
#![allow(deprecated)]

use std::sync::Arc;

use ruma::{
    UInt,
    api::client::{
        authenticated_media::{
            get_content, get_content_as_filename, get_content_thumbnail, get_media_config,
            get_media_preview,
        },
        media,
    },
    http_headers::{ContentDisposition, ContentDispositionType},
    media::Method as RumaMethod,
};

use crate::{
    Error, Result,
    api::router::{Anonymous, Router, User},
    media::{Content, ThumbnailRequest, Upload, thumbnail::Method},
    services::Services,
};

pub fn routes(router: &mut Router) {
    router
        .add_media(create_content)
        .add_media(create_mxc_uri)
        .add_media(create_content_async)
        .add_media(get_content)
        .add_media(get_content_as_filename)
        .add_media(get_content_thumbnail)
        .add_media(get_media_config)
        .add_media(get_content_legacy)
        .add_media(get_content_as_filename_legacy)
        .add_media(get_content_thumbnail_legacy)
        .add_media(get_media_config_legacy)
        .add_media(get_media_preview)
        .add_media(get_media_preview_legacy);
}

async fn create_content(
    services: Arc<Services>,
    user: User,
    request: media::create_content::v3::Request,
) -> Result<media::create_content::v3::Response> {
    user.require_not_suspended()?;
    let upload = Upload {
        content_type: request.content_type,
        file_name: request.filename,
        bytes: request.file,
    };
    let uri = services.media.upload(&user.user_id, upload).await?;
    Ok(media::create_content::v3::Response::new(uri))
}

async fn create_mxc_uri(
    services: Arc<Services>,
    user: User,
    _: media::create_mxc_uri::v1::Request,
) -> Result<media::create_mxc_uri::v1::Response> {
    user.require_not_suspended()?;
    let (uri, expires_ts) = services.media.reserve(&user.user_id).await?;
    let mut response = media::create_mxc_uri::v1::Response::new(uri);
    response.unused_expires_at =
        UInt::try_from(expires_ts).ok().map(ruma::MilliSecondsSinceUnixEpoch);
    Ok(response)
}

/// `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`, declared here with ruma's endpoint
/// macros exactly as `ruma::api::client::media::create_content_async::v3` declares it.
///
/// FIXME: ruma 0.17.2's own `Response` of this endpoint is `non_exhaustive` with no fields and no
/// constructor, so a server cannot build it; use ruma's type again once it has one.
pub mod create_content_async {
    pub mod v3 {
        use http::header::CONTENT_TYPE;
        use ruma::{
            OwnedServerName,
            api::{auth_scheme::AccessToken, request, response},
        };

        ruma::metadata! {
            method: PUT,
            rate_limited: true,
            authentication: AccessToken,
            history: {
                unstable("fi.mau.msc2246") => "/_matrix/media/unstable/fi.mau.msc2246/upload/{server_name}/{media_id}",
                1.7 => "/_matrix/media/v3/upload/{server_name}/{media_id}",
            }
        }

        /// The content of a media ID reserved with `POST /_matrix/media/v1/create`.
        #[request]
        pub struct Request {
            #[ruma_api(path)]
            pub server_name: OwnedServerName,
            #[ruma_api(path)]
            pub media_id: String,
            #[ruma_api(raw_body)]
            pub file: Vec<u8>,
            #[ruma_api(header = CONTENT_TYPE)]
            pub content_type: Option<String>,
            #[ruma_api(query)]
            #[serde(skip_serializing_if = "Option::is_none")]
            pub filename: Option<String>,
        }

        /// Empty: the content is stored.
        #[response]
        pub struct Response {}
    }
}

async fn create_content_async(
    services: Arc<Services>,
    user: User,
    request: create_content_async::v3::Request,
) -> Result<create_content_async::v3::Response> {
    user.require_not_suspended()?;
    let upload = Upload {
        content_type: request.content_type,
        file_name: request.filename,
        bytes: request.file,
    };
    let (server_name, media_id) = (&request.server_name, &request.media_id);
    services.media.upload_reserved(&user.user_id, server_name, media_id, upload).await?;
    Ok(create_content_async::v3::Response {})
}

async fn get_content(
    services: Arc<Services>,
    _: User,
    request: get_content::v1::Request,
) -> Result<get_content::v1::Response> {
    let media = &services.media;
    let content =
        media.download(&request.server_name, &request.media_id, request.timeout_ms).await?;
    let (file, content_type, disposition) = download_parts(content, None);
    Ok(get_content::v1::Response::new(file, content_type, disposition))
}

async fn get_content_as_filename(
    services: Arc<Services>,
    _: User,
    request: get_content_as_filename::v1::Request,
) -> Result<get_content_as_filename::v1::Response> {
    let media = &services.media;
    let content =
        media.download(&request.server_name, &request.media_id, request.timeout_ms).await?;
    let (file, content_type, disposition) = download_parts(content, Some(request.filename));
    Ok(get_content_as_filename::v1::Response::new(file, content_type, disposition))
}

async fn get_content_thumbnail(
    services: Arc<Services>,
    _: User,
    request: get_content_thumbnail::v1::Request,
) -> Result<get_content_thumbnail::v1::Response> {
    let wanted = thumbnail_request(request.width, request.height, request.method.as_ref())?;
    let (server_name, media_id) = (&request.server_name, &request.media_id);
    let content =
        services.media.thumbnail(server_name, media_id, wanted, request.timeout_ms).await?;
    let (file, content_type, disposition) = thumbnail_parts(content);
    Ok(get_content_thumbnail::v1::Response::new(file, content_type, disposition))
}

async fn get_media_config(
    services: Arc<Services>,
    _: User,
    _: get_media_config::v1::Request,
) -> Result<get_media_config::v1::Response> {
    Ok(get_media_config::v1::Response::new(upload_size(&services)))
}

async fn get_content_legacy(
    services: Arc<Services>,
    _: Anonymous,
    request: media::get_content::v3::Request,
) -> Result<media::get_content::v3::Response> {
    let media = &services.media;
    let content =
        media.download(&request.server_name, &request.media_id, request.timeout_ms).await?;
    let (file, content_type, disposition) = download_parts(content, None);
    Ok(media::get_content::v3::Response::new(file, content_type, disposition))
}

async fn get_content_as_filename_legacy(
    services: Arc<Services>,
    _: Anonymous,
    request: media::get_content_as_filename::v3::Request,
) -> Result<media::get_content_as_filename::v3::Response> {
    let media = &services.media;
    let content =
        media.download(&request.server_name, &request.media_id, request.timeout_ms).await?;
    let (file, content_type, disposition) = download_parts(content, Some(request.filename));
    Ok(media::get_content_as_filename::v3::Response::new(file, content_type, disposition))
}

async fn get_content_thumbnail_legacy(
    services: Arc<Services>,
    _: Anonymous,
    request: media::get_content_thumbnail::v3::Request,
) -> Result<media::get_content_thumbnail::v3::Response> {
    let wanted = thumbnail_request(request.width, request.height, request.method.as_ref())?;
    let (server_name, media_id) = (&request.server_name, &request.media_id);
    let content =
        services.media.thumbnail(server_name, media_id, wanted, request.timeout_ms).await?;
    let (file, content_type, disposition) = thumbnail_parts(content);
    Ok(media::get_content_thumbnail::v3::Response::new(file, content_type, disposition))
}

async fn get_media_config_legacy(
    services: Arc<Services>,
    _: User,
    _: media::get_media_config::v3::Request,
) -> Result<media::get_media_config::v3::Response> {
    Ok(media::get_media_config::v3::Response::new(upload_size(&services)))
}

async fn get_media_preview(
    services: Arc<Services>,
    user: User,
    request: get_media_preview::v1::Request,
) -> Result<get_media_preview::v1::Response> {
    if user.is_rate_limited() {
        services.preview_limiter.check(user.user_id.clone())?;
    }
    let preview = services.media.preview_url(&user.user_id, &request.url).await?;
    let response = get_media_preview::v1::Response::from_serialize(&preview);
    Ok(response.map_err(anyhow::Error::from)?)
}

async fn get_media_preview_legacy(
    services: Arc<Services>,
    user: User,
    request: media::get_media_preview::v3::Request,
) -> Result<media::get_media_preview::v3::Response> {
    if user.is_rate_limited() {
        services.preview_limiter.check(user.user_id.clone())?;
    }
    let preview = services.media.preview_url(&user.user_id, &request.url).await?;
    let response = media::get_media_preview::v3::Response::from_serialize(&preview);
    Ok(response.map_err(anyhow::Error::from)?)
}

fn upload_size(services: &Services) -> UInt {
    UInt::try_from(services.media.max_upload_bytes()).unwrap_or(UInt::MAX)
}

/// The bytes, type and disposition of a download: `inline` only for types safe to show in the
/// page, the file name from the path if the client gave one there, else the uploader's.
fn download_parts(
    content: Content,
    file_name: Option<String>,
) -> (Vec<u8>, String, ContentDisposition) {
    let disposition_type = if crate::media::is_safe_inline(&content.content_type) {
        ContentDispositionType::Inline
    } else {
        ContentDispositionType::Attachment
    };
    let file_name = file_name.or(content.file_name);
    let disposition = ContentDisposition::new(disposition_type).with_filename(file_name);
    (content.bytes, content.content_type, disposition)
}

/// A thumbnail is always an image of ours, shown inline.
fn thumbnail_parts(content: Content) -> (Vec<u8>, String, ContentDisposition) {
    let disposition =
        ContentDisposition::new(ContentDispositionType::Inline).with_filename(content.file_name);
    (content.bytes, content.content_type, disposition)
}

/// The thumbnail asked for; `scale` when no method is given.
fn thumbnail_request(
    width: UInt,
    height: UInt,
    method: Option<&RumaMethod>,
) -> Result<ThumbnailRequest> {
    let method = match method {
        None | Some(RumaMethod::Scale) => Method::Scale,
        Some(RumaMethod::Crop) => Method::Crop,
        Some(other) => {
            return Err(Error::invalid_param(format!(
                "Unknown thumbnail method {:?}: use crop or scale",
                other.as_str()
            )));
        }
    };
    Ok(ThumbnailRequest { width: width.into(), height: height.into(), method })
}
