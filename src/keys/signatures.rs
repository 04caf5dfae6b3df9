//! Checking the ed25519 signatures on uploaded keys, with `ruma::signatures`, and the
//! `M_INVALID_SIGNATURE` error for the ones that do not verify.
//!
//! Only the one signature asked about is checked, so an object that also carries signatures of
//! others (another user's, a key this server does not know) can still be checked.

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue,
    serde::{Base64, base64::Standard},
    signatures::{
        SigningKeyAlgorithm, to_canonical_json_string_for_signing, verify_canonical_json_bytes,
    },
};

use crate::Error;

/// `M_INVALID_SIGNATURE` (400), which ruma's error kinds do not name.
pub fn invalid_signature(message: impl Into<String>) -> Error {
    let kind = serde_json::from_value(serde_json::json!({ "errcode": "M_INVALID_SIGNATURE" }))
        .unwrap_or(ruma::api::error::ErrorKind::Unknown);
    Error::client(http::StatusCode::BAD_REQUEST, kind, message)
}

/// The signature `entity` made with `key_id` on the object, if it has one.
pub fn signature<'a>(
    object: &'a CanonicalJsonObject,
    entity: &str,
    key_id: &str,
) -> Option<&'a str> {
    match object.get("signatures")? {
        CanonicalJsonValue::Object(signatures) => match signatures.get(entity)? {
            CanonicalJsonValue::Object(by_key) => match by_key.get(key_id)? {
                CanonicalJsonValue::String(signature) => Some(signature),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}

/// Checks that `entity` signed the object with the ed25519 key `key_id` whose public part is
/// `public_key` (unpadded base64). The error says what is wrong, for the client.
pub fn verify(
    object: &CanonicalJsonObject,
    entity: &str,
    key_id: &str,
    public_key: &str,
) -> Result<(), String> {
    let signature = signature(object, entity, key_id)
        .ok_or_else(|| format!("No signature by {entity} with {key_id}"))?;
    let signature = Base64::<Standard>::parse(signature)
        .map_err(|_| format!("The signature by {key_id} is not base64"))?;
    let public_key = Base64::<Standard>::parse(public_key)
        .map_err(|_| format!("The public key {key_id} is not base64"))?;
    let canonical = to_canonical_json_string_for_signing(object)
        .map_err(|_| "The signed object is not canonical JSON".to_owned())?;
    verify_canonical_json_bytes(
        &SigningKeyAlgorithm::Ed25519,
        public_key.as_bytes(),
        signature.as_bytes(),
        canonical.as_bytes(),
    )
    .map_err(|_| format!("The signature by {key_id} does not verify"))
}

/// The object as canonical JSON, for [`verify`]; `M_BAD_JSON` if it is not (floats, numbers
/// out of range).
pub fn canonical(json: &str) -> crate::Result<CanonicalJsonObject> {
    serde_json::from_str(json).map_err(|_| Error::bad_json("A key is not canonical JSON"))
}

#[cfg(test)]
mod tests {
    use ruma::signatures::Ed25519KeyPair;

    use super::*;

    #[test]
    fn a_signature_verifies_only_over_what_was_signed() {
        let document = Ed25519KeyPair::generate();
        let pair = Ed25519KeyPair::from_der(&document, "DEV".into()).unwrap();
        let public = Base64::<Standard>::new(pair.public_key().to_vec()).encode();
        let mut object: CanonicalJsonObject =
            serde_json::from_str(r#"{"user_id":"@a:x","keys":{}}"#).unwrap();
        ruma::signatures::sign_json("@a:x", &pair, &mut object).unwrap();
        assert_eq!(verify(&object, "@a:x", "ed25519:DEV", &public), Ok(()));
        assert!(verify(&object, "@b:x", "ed25519:DEV", &public).is_err(), "another entity");
        object.insert("user_id".into(), CanonicalJsonValue::String("@c:x".into()));
        assert!(verify(&object, "@a:x", "ed25519:DEV", &public).is_err(), "changed after signing");
    }
}
