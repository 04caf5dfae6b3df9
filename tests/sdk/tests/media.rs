//! The media repository through `matrix-sdk`'s `client.media()` on the real `hearth` binary
//! (named by `HEARTH_BIN`): alice uploads a PNG, the SDK chooses the authenticated media
//! endpoints (`/_matrix/client/v1/media/`, advertised as `org.matrix.msc3916.stable`), and the
//! file and a thumbnail come back through them: the file byte for byte, the thumbnail scaled to
//! the requested box with the picture's proportions.

use std::io::Cursor;

use anyhow::{Context as _, ensure};
use hearth_sdk_tests::{
    client::{login, register},
    init_logging,
    server::TestServer,
};
use image::{DynamicImage, ImageFormat, Rgb, RgbImage};
use matrix_sdk::{
    media::{MediaFormat, MediaRequestParameters, MediaThumbnailSettings},
    ruma::{
        UInt,
        api::{Metadata as _, client::authenticated_media::get_content},
        events::room::MediaSource,
        media::Method,
    },
};

/// A 120×80 picture with a gradient, as PNG.
fn picture() -> anyhow::Result<Vec<u8>> {
    let image = RgbImage::from_fn(120, 80, |x, y| Rgb([x as u8, y as u8, (x + y) as u8]));
    let mut bytes = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(image).write_to(&mut bytes, ImageFormat::Png)?;
    Ok(bytes.into_inner())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_uploaded_image_and_its_thumbnail_come_back_through_authenticated_media()
-> anyhow::Result<()> {
    init_logging();
    let server = TestServer::start().await?;
    register(server.url(), "alice").await?;
    let alice = login(server.url(), "alice").await?;

    let versions = alice.supported_versions().await?;
    ensure!(
        get_content::v1::Request::PATH_BUILDER.is_supported(&versions),
        "the SDK would not use authenticated media: {versions:?}"
    );

    let png = picture()?;
    let uploaded = alice.media().upload(&mime::IMAGE_PNG, png.clone(), None).await?;
    let source = MediaSource::Plain(uploaded.content_uri.clone());

    let file = MediaRequestParameters { source: source.clone(), format: MediaFormat::File };
    let downloaded = alice.media().get_media_content(&file, false).await?;
    ensure!(downloaded == png, "the download differs from the upload");

    let mut settings = MediaThumbnailSettings::new(UInt::from(60u32), UInt::from(60u32));
    settings.method = Method::Scale;
    let thumbnail = MediaRequestParameters { source, format: MediaFormat::Thumbnail(settings) };
    let bytes = alice.media().get_media_content(&thumbnail, false).await?;
    let decoded = image::load_from_memory(&bytes).context("the thumbnail is not an image")?;
    ensure!(
        (decoded.width(), decoded.height()) == (60, 40),
        "a 120×80 picture scaled into 60×60 is 60×40, not {}×{}",
        decoded.width(),
        decoded.height()
    );
    Ok(())
}
