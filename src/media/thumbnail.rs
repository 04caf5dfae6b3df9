//! Making thumbnails of PNG, JPEG, GIF and WebP images with the `image` crate: decoding under
//! limits (so a small file that claims a huge image cannot take the memory), sizing by the spec's
//! rules and encoding the result. Pure: no files, no database.
//!
//! The sizing follows the spec's thumbnail section: `scale` keeps the aspect ratio and fits the
//! requested box, `crop` fills the requested box exactly, cutting what sticks out; neither makes
//! an image larger than its original (a crop of a small image keeps the requested proportions at
//! the size the original allows).
//!
//! FIXME: `animated=true` is answered with a still thumbnail (the first frame of a GIF or WebP,
//! as PNG), which the spec allows but an animated WebP would serve such clients better.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, ImageReader, Limits, imageops::FilterType};

/// How the thumbnail fits the requested size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Crop,
    Scale,
}

impl Method {
    /// The spec's name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Crop => "crop",
            Self::Scale => "scale",
        }
    }
}

/// A generated thumbnail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Thumbnail {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
}

/// Why no thumbnail was made.
#[derive(Debug, thiserror::Error)]
pub enum ThumbnailError {
    /// The content is not an image of a supported format, or is damaged.
    #[error("cannot make a thumbnail of this content: {0}")]
    Unsupported(String),
    /// The image has more pixels than the configured limit.
    #[error("the image is too large to make a thumbnail of")]
    TooLarge,
}

/// The stored content types thumbnails are made of.
pub fn is_supported(content_type: &str) -> bool {
    matches!(
        super::essence(content_type).as_str(),
        "image/png" | "image/jpeg" | "image/gif" | "image/webp"
    )
}

/// Makes a thumbnail of `bytes` no larger than the requested size, refusing images of more than
/// `max_pixels` pixels before decoding them. Blocking and CPU-heavy: run it off the runtime.
pub fn make(
    bytes: &[u8],
    width: u32,
    height: u32,
    method: Method,
    max_pixels: u64,
) -> Result<Thumbnail, ThumbnailError> {
    let format = sniff(bytes)?;
    let (source_width, source_height) = reader(bytes, format, max_pixels)
        .into_dimensions()
        .map_err(|error| ThumbnailError::Unsupported(error.to_string()))?;
    if u64::from(source_width) * u64::from(source_height) > max_pixels {
        return Err(ThumbnailError::TooLarge);
    }
    let image = reader(bytes, format, max_pixels).decode().map_err(|error| match error {
        image::ImageError::Limits(_) => ThumbnailError::TooLarge,
        other => ThumbnailError::Unsupported(other.to_string()),
    })?;
    let resized = resize(&image, (width, height), method);
    encode(resized, format)
}

/// The format of the bytes themselves (never the client's word for it), if supported.
fn sniff(bytes: &[u8]) -> Result<ImageFormat, ThumbnailError> {
    match image::guess_format(bytes) {
        Ok(
            format @ (ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Gif | ImageFormat::WebP),
        ) => Ok(format),
        Ok(other) => {
            Err(ThumbnailError::Unsupported(format!("{other:?} images are not supported")))
        }
        Err(_) => Err(ThumbnailError::Unsupported("not an image".to_owned())),
    }
}

/// A reader of the bytes in their format, under limits that keep one decode within
/// `max_pixels` pixels of up to 16 bytes each (16-bit RGBA and the decoder's own buffers).
fn reader(bytes: &[u8], format: ImageFormat, max_pixels: u64) -> ImageReader<Cursor<&[u8]>> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let side = u32::try_from(max_pixels).unwrap_or(u32::MAX);
    let mut limits = Limits::default();
    limits.max_image_width = Some(side);
    limits.max_image_height = Some(side);
    limits.max_alloc = Some(max_pixels.saturating_mul(16));
    reader.limits(limits);
    reader
}

/// Resizes by the method to the size [`target_size`] picks.
fn resize(image: &DynamicImage, requested: (u32, u32), method: Method) -> DynamicImage {
    let (width, height) = target_size((image.width(), image.height()), requested, method);
    match method {
        Method::Scale => image.resize_exact(width, height, FilterType::Triangle),
        Method::Crop => image.resize_to_fill(width, height, FilterType::Triangle),
    }
}

/// The thumbnail's size for a source image and a requested size: `scale` is the largest size of
/// the source's proportions that fits the request, `crop` is the request itself; both shrink
/// (keeping their proportions) until they are no larger than the source.
pub fn target_size(source: (u32, u32), requested: (u32, u32), method: Method) -> (u32, u32) {
    let (sw, sh) = (f64::from(source.0), f64::from(source.1));
    let (rw, rh) = (f64::from(requested.0), f64::from(requested.1));
    let (base, factor) = match method {
        Method::Scale => ((sw, sh), (rw / sw).min(rh / sh).min(1.0)),
        Method::Crop => ((rw, rh), (sw / rw).min(sh / rh).min(1.0)),
    };
    let side = |length: f64| ((length * factor).round() as u32).max(1);
    (side(base.0), side(base.1))
}

/// Encodes as JPEG when the source was a JPEG (photos stay small), as PNG otherwise (keeps
/// transparency).
fn encode(image: DynamicImage, source: ImageFormat) -> Result<Thumbnail, ThumbnailError> {
    let (image, format, content_type) = match source {
        ImageFormat::Jpeg => {
            (DynamicImage::ImageRgb8(image.to_rgb8()), ImageFormat::Jpeg, "image/jpeg")
        }
        _ => (image, ImageFormat::Png, "image/png"),
    };
    let mut bytes = Cursor::new(Vec::new());
    image
        .write_to(&mut bytes, format)
        .map_err(|error| ThumbnailError::Unsupported(format!("cannot encode: {error}")))?;
    Ok(Thumbnail { bytes: bytes.into_inner(), content_type })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let image = DynamicImage::new_rgba8(width, height);
        let mut bytes = Cursor::new(Vec::new());
        image.write_to(&mut bytes, ImageFormat::Png).unwrap();
        bytes.into_inner()
    }

    #[test]
    fn scale_fits_the_box_and_crop_fills_it_without_upscaling() {
        use Method::{Crop, Scale};
        let cases = [
            ((400, 200), (100, 100), Scale, (100, 50)),
            ((400, 200), (100, 100), Crop, (100, 100)),
            ((400, 200), (800, 800), Scale, (400, 200)),
            ((400, 200), (800, 800), Crop, (200, 200)),
            ((40, 20), (32, 32), Crop, (20, 20)),
            ((1000, 1), (10, 10), Scale, (10, 1)),
        ];
        for (source, requested, method, expected) in cases {
            assert_eq!(target_size(source, requested, method), expected, "{source:?} {method:?}");
        }
    }

    #[test]
    fn a_png_becomes_a_png_of_the_target_size() {
        let thumbnail = make(&png(64, 32), 16, 16, Method::Scale, 1 << 20).unwrap();
        assert_eq!(thumbnail.content_type, "image/png");
        let decoded = image::load_from_memory(&thumbnail.bytes).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (16, 8));
    }

    #[test]
    fn gif_and_webp_become_png_and_jpeg_stays_jpeg() {
        let source = DynamicImage::new_rgb8(30, 60);
        for (format, content_type) in [
            (ImageFormat::Gif, "image/png"),
            (ImageFormat::WebP, "image/png"),
            (ImageFormat::Jpeg, "image/jpeg"),
        ] {
            let mut bytes = Cursor::new(Vec::new());
            source.write_to(&mut bytes, format).unwrap();
            let thumbnail = make(bytes.get_ref(), 10, 10, Method::Crop, 1 << 20).unwrap();
            assert_eq!(thumbnail.content_type, content_type, "{format:?}");
            let decoded = image::load_from_memory(&thumbnail.bytes).unwrap();
            assert_eq!((decoded.width(), decoded.height()), (10, 10), "{format:?}");
        }
    }

    #[test]
    fn images_over_the_pixel_limit_are_refused_before_decoding() {
        let error = make(&png(100, 100), 10, 10, Method::Crop, 9_999).unwrap_err();
        assert!(matches!(error, ThumbnailError::TooLarge), "{error}");
    }

    #[test]
    fn damaged_and_foreign_bytes_are_unsupported() {
        let mut damaged = png(20, 20);
        damaged.truncate(40);
        for bytes in [damaged, b"hello, world".to_vec(), b"<svg></svg>".to_vec()] {
            let error = make(&bytes, 10, 10, Method::Crop, 1 << 20).unwrap_err();
            assert!(matches!(error, ThumbnailError::Unsupported(_)), "{error}");
        }
    }
}
