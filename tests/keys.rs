//! End-to-end encryption through the client-server API: `/keys/upload`, `/keys/query`,
//! `/keys/claim`, `/keys/changes`, `/keys/device_signing/upload`, `/keys/signatures/upload`,
//! `PUT /sendToDevice`, and what `/sync` says of them; and the bad requests with their errors.
//!
//! Keys are made and signed here with ruma's ed25519 keys, as a client would.

mod common;

use std::time::Duration;

use common::{
    TestServer, TestUser,
    table::{row, run_table},
};
use reqwest::{Method, StatusCode};
use ruma::{
    CanonicalJsonObject,
    serde::{Base64, base64::Standard},
    signatures::{Ed25519KeyPair, sign_json},
};
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";

/// An ed25519 key pair whose key ID is `ed25519:<name>`.
struct Signer {
    pair: Ed25519KeyPair,
    public: String,
}

impl Signer {
    /// A new key named `name` (a device ID), or named after its public key when `None`.
    fn new(name: Option<&str>) -> Self {
        let document = Ed25519KeyPair::generate();
        let probe = Ed25519KeyPair::from_der(&document, String::new()).unwrap();
        let public = Base64::<Standard>::new(probe.public_key().to_vec()).encode();
        let name = name.map_or_else(|| public.clone(), str::to_owned);
        Self { pair: Ed25519KeyPair::from_der(&document, name).unwrap(), public }
    }

    /// `object` with this key's signature as `entity` added.
    fn sign(&self, entity: &str, object: Value) -> Value {
        let mut canonical: CanonicalJsonObject = serde_json::from_value(object).unwrap();
        sign_json(entity, &self.pair, &mut canonical).unwrap();
        serde_json::to_value(canonical).unwrap()
    }
}

/// The device keys of the user's device, signed by the device.
fn device_keys(user: &TestUser, device: &Signer, curve: &str) -> Value {
    let (user_id, device_id) = (&user.user_id, &user.device_id);
    device.sign(
        user_id,
        json!({
            "user_id": user_id,
            "device_id": device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": { format!("ed25519:{device_id}"): device.public, format!("curve25519:{device_id}"): curve },
        }),
    )
}

/// A one-time key signed by the device (`fallback` for a fallback key).
fn one_time_key(user: &TestUser, device: &Signer, key: &str, fallback: bool) -> Value {
    let mut object = json!({ "key": key });
    if fallback {
        object["fallback"] = json!(true);
    }
    device.sign(&user.user_id, object)
}

/// A cross-signing key of the user with the usage, signed by `signed_by` unless `None`.
fn cross_signing_key(
    user: &TestUser,
    key: &Signer,
    usage: &str,
    signed_by: Option<&Signer>,
) -> Value {
    let object = json!({
        "user_id": user.user_id,
        "usage": [usage],
        "keys": { format!("ed25519:{}", key.public): key.public },
    });
    match signed_by {
        Some(signer) => signer.sign(&user.user_id, object),
        None => object,
    }
}

async fn upload(server: &TestServer, user: &TestUser, body: Value) -> Value {
    let (status, json) = server.post(&format!("{V3}/keys/upload"), &user.access_token, body).await;
    assert_eq!(status, StatusCode::OK, "keys/upload: {json}");
    json
}

async fn query(server: &TestServer, user: &TestUser, of: &TestUser) -> Value {
    let body = json!({ "device_keys": { of.user_id.clone(): [] } });
    let (status, json) = server.post(&format!("{V3}/keys/query"), &user.access_token, body).await;
    assert_eq!(status, StatusCode::OK, "keys/query: {json}");
    json
}

async fn claim(server: &TestServer, user: &TestUser, of: &TestUser) -> Value {
    let body = json!({ "one_time_keys": { of.user_id.clone(): { of.device_id.clone(): "signed_curve25519" } } });
    let (status, json) = server.post(&format!("{V3}/keys/claim"), &user.access_token, body).await;
    assert_eq!(status, StatusCode::OK, "keys/claim: {json}");
    json
}

async fn sync_since(server: &TestServer, user: &TestUser, since: &Value) -> Value {
    server.sync(user, &format!("since={}&timeout=0", since["next_batch"].as_str().unwrap())).await
}

fn key_ids(claimed: &Value, of: &TestUser) -> Vec<String> {
    let keys = &claimed["one_time_keys"][&of.user_id][&of.device_id];
    keys.as_object().map(|k| k.keys().cloned().collect()).unwrap_or_default()
}

/// Alice (logged in on the device `PHONE`) and Bob, each with device keys uploaded.
async fn family() -> (TestServer, TestUser, Signer, TestUser, Signer) {
    let server = TestServer::start().await;
    server.register("alice").await;
    let alice = server.login_ok("alice", "password-alice", Some("PHONE")).await;
    let bob = server.register("bob").await;
    let (alice_device, bob_device) =
        (Signer::new(Some("PHONE")), Signer::new(Some(&bob.device_id)));
    upload(&server, &alice, json!({ "device_keys": device_keys(&alice, &alice_device, "curveA") }))
        .await;
    upload(&server, &bob, json!({ "device_keys": device_keys(&bob, &bob_device, "curveB") })).await;
    (server, alice, alice_device, bob, bob_device)
}

#[tokio::test]
async fn uploaded_keys_are_queried_and_claimed_one_time_keys_first_then_the_fallback_key() {
    let (server, alice, device, bob, _) = family().await;
    let counts = upload(
        &server,
        &alice,
        json!({
            "one_time_keys": {
                "signed_curve25519:AAAA": one_time_key(&alice, &device, "k1", false),
                "signed_curve25519:AAAB": one_time_key(&alice, &device, "k2", false),
            },
            "fallback_keys": { "signed_curve25519:FFFF": one_time_key(&alice, &device, "kf", true) },
        }),
    )
    .await;
    assert_eq!(counts, json!({ "one_time_key_counts": { "signed_curve25519": 2 } }));

    let found = query(&server, &bob, &alice).await;
    let keys = &found["device_keys"][&alice.user_id]["PHONE"];
    assert_eq!(keys["keys"]["curve25519:PHONE"], "curveA");
    assert_eq!(keys["unsigned"]["device_display_name"], "PHONE display name");
    assert!(found.get("user_signing_keys").is_none());

    let before = server.sync(&alice, "timeout=0").await;
    assert_eq!(before["device_one_time_keys_count"]["signed_curve25519"], 2);
    assert_eq!(before["device_unused_fallback_key_types"], json!(["signed_curve25519"]));
    let mut claimed = Vec::new();
    for _ in 0..4 {
        claimed.extend(key_ids(&claim(&server, &bob, &alice).await, &alice));
    }
    assert_eq!(
        claimed,
        [
            "signed_curve25519:AAAA",
            "signed_curve25519:AAAB",
            "signed_curve25519:FFFF",
            "signed_curve25519:FFFF"
        ]
    );
    let last = claim(&server, &bob, &alice).await;
    let fallback = &last["one_time_keys"][&alice.user_id]["PHONE"]["signed_curve25519:FFFF"];
    assert_eq!((fallback["key"].clone(), fallback["fallback"].clone()), (json!("kf"), json!(true)));
    let after = server.sync(&alice, "timeout=0").await;
    assert_eq!(after["device_one_time_keys_count"]["signed_curve25519"], 0);
    assert_eq!(after["device_unused_fallback_key_types"], json!([]), "the fallback key was used");

    // Remote users cannot be asked yet: their servers are failures.
    let body = json!({ "device_keys": { "@zoe:elsewhere.example": [] } });
    let (status, json) = server.post(&format!("{V3}/keys/query"), &bob.access_token, body).await;
    assert_eq!(
        (status, json["failures"].clone()),
        (StatusCode::OK, json!({ "elsewhere.example": {} }))
    );
}

#[tokio::test]
async fn a_device_keeps_its_identity_keys_and_one_time_key_ids_their_content() {
    let (server, alice, device, _, _) = family().await;
    let same =
        upload(&server, &alice, json!({ "device_keys": device_keys(&alice, &device, "curveA") }))
            .await;
    assert_eq!(same["one_time_key_counts"]["signed_curve25519"], 0, "the same keys again are fine");

    let path = format!("{V3}/keys/upload");
    let changed = json!({ "device_keys": device_keys(&alice, &device, "otherCurve") });
    let got = server.post(&path, &alice.access_token, changed).await;
    common::assert_error(&got, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let other_device = Signer::new(Some("PHONE"));
    let got = server
        .post(
            &path,
            &alice.access_token,
            json!({ "device_keys": device_keys(&alice, &other_device, "curveA") }),
        )
        .await;
    common::assert_error(&got, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

    let key = |content: &str| json!({ "one_time_keys": { "signed_curve25519:K": one_time_key(&alice, &device, content, false) } });
    upload(&server, &alice, key("one")).await;
    upload(&server, &alice, key("one")).await;
    let got = server.post(&path, &alice.access_token, key("two")).await;
    common::assert_error(&got, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let found = query(&server, &alice, &alice).await;
    assert_eq!(found["device_keys"][&alice.user_id]["PHONE"]["keys"]["curve25519:PHONE"], "curveA");
}

#[tokio::test]
async fn to_device_messages_reach_their_device_once_and_page_when_many() {
    let (server, alice, _, bob, _) = family().await;
    let bob_laptop = server.login_ok("bob", "password-bob", Some("LAPTOP")).await;
    let bob_first = server.sync(&bob, "timeout=0").await;
    let laptop_first = server.sync(&bob_laptop, "timeout=0").await;

    // A long poll of Bob's wakes for the message.
    let waiting = {
        let (server_url, bob, since) =
            (server.url(""), bob.clone(), bob_first["next_batch"].clone());
        tokio::spawn(async move {
            let url =
                format!("{server_url}{V3}/sync?since={}&timeout=20000", since.as_str().unwrap());
            let client = reqwest::Client::new();
            let response = client.get(url).bearer_auth(&bob.access_token).send().await.unwrap();
            response.json::<Value>().await.unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let path = format!("{V3}/sendToDevice/m.test/txn1");
    let body = json!({ "messages": { bob.user_id.clone(): { "*": { "n": 1 } } } });
    let (status, _) = server.put(&path, &alice.access_token, body.clone()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server.put(&path, &alice.access_token, body).await;
    assert_eq!(status, StatusCode::OK, "the same transaction again");
    let woken = tokio::time::timeout(Duration::from_secs(10), waiting).await.unwrap().unwrap();
    let events = woken["to_device"]["events"].clone();
    assert_eq!(
        events,
        json!([{ "type": "m.test", "sender": alice.user_id, "content": { "n": 1 } }])
    );

    // Delivered again until acknowledged by a sync with the token after it.
    let again = sync_since(&server, &bob, &bob_first).await;
    assert_eq!(again["to_device"]["events"], events, "not acknowledged yet");
    let acked = sync_since(&server, &bob, &again).await;
    assert!(acked.get("to_device").is_none(), "acknowledged: {acked}");
    let laptop = sync_since(&server, &bob_laptop, &laptop_first).await;
    assert_eq!(laptop["to_device"]["events"], events, "each device has its own inbox");

    // A token from beyond the stream acknowledges nothing: the message stays for the laptop.
    let future = json!({ "next_batch": "s99999999_0_99999999" });
    let from_the_future = sync_since(&server, &bob_laptop, &future).await;
    assert!(from_the_future.get("next_batch").is_some(), "{from_the_future}");
    let laptop = sync_since(&server, &bob_laptop, &laptop_first).await;
    assert_eq!(laptop["to_device"]["events"], events, "still there after a future token");

    // Many messages page, 100 per sync.
    for n in 0..130 {
        let body =
            json!({ "messages": { bob.user_id.clone(): { bob.device_id.clone(): { "n": n } } } });
        let (status, _) = server
            .put(&format!("{V3}/sendToDevice/m.test/many{n}"), &alice.access_token, body)
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let first_page = sync_since(&server, &bob, &acked).await;
    let second_page = sync_since(&server, &bob, &first_page).await;
    let numbers = |page: &Value| -> Vec<i64> {
        page["to_device"]["events"].as_array().map_or(Vec::new(), |events| {
            events.iter().map(|e| e["content"]["n"].as_i64().unwrap()).collect()
        })
    };
    assert_eq!(numbers(&first_page), (0..100).collect::<Vec<_>>());
    assert_eq!(numbers(&second_page), (100..130).collect::<Vec<_>>());
    assert!(numbers(&sync_since(&server, &bob, &second_page).await).is_empty());

    // Unknown devices and users of this server get nothing and break nothing.
    let body = json!({ "messages": {
        bob.user_id.clone(): { "NOSUCHDEVICE": { "n": -1 } },
        "@nobody:localhost": { "*": { "n": -2 } },
        "@zoe:elsewhere.example": { "*": { "n": -3 } },
    } });
    let (status, _) =
        server.put(&format!("{V3}/sendToDevice/m.test/unknown"), &alice.access_token, body).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn device_list_changes_reach_those_who_share_a_room() {
    let (server, alice, _, bob, _) = family().await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    let bob_before = server.sync(&bob, "timeout=0").await;
    server.join(&bob, &room).await;
    let joined = sync_since(&server, &bob, &bob_before).await;
    assert!(
        contains(&joined["device_lists"]["changed"], &alice.user_id),
        "a new room-mate: {joined}"
    );

    // A new device of Alice's wakes Bob's long poll.
    let waiting = {
        let (url, bob, since) = (server.url(""), bob.clone(), joined["next_batch"].clone());
        tokio::spawn(async move {
            let url = format!("{url}{V3}/sync?since={}&timeout=20000", since.as_str().unwrap());
            let response =
                reqwest::Client::new().get(url).bearer_auth(&bob.access_token).send().await;
            response.unwrap().json::<Value>().await.unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tablet = server.login_ok("alice", "password-alice", Some("TABLET")).await;
    let tablet_device = Signer::new(Some("TABLET"));
    upload(
        &server,
        &tablet,
        json!({ "device_keys": device_keys(&tablet, &tablet_device, "curveT") }),
    )
    .await;
    let woken = tokio::time::timeout(Duration::from_secs(10), waiting).await.unwrap().unwrap();
    assert!(contains(&woken["device_lists"]["changed"], &alice.user_id), "{woken}");
    let quiet = sync_since(&server, &bob, &woken).await;
    assert!(quiet.get("device_lists").is_none(), "told once: {quiet}");

    let from = woken["next_batch"].as_str().unwrap().to_owned();
    let (status, _) = server.post(&format!("{V3}/logout"), &tablet.access_token, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let logged_out = sync_since(&server, &bob, &woken).await;
    assert!(contains(&logged_out["device_lists"]["changed"], &alice.user_id), "a deleted device");
    let found = query(&server, &bob, &alice).await;
    assert!(found["device_keys"][&alice.user_id].get("TABLET").is_none(), "its keys went with it");

    let to = logged_out["next_batch"].as_str().unwrap().to_owned();
    let changes =
        server.get(&format!("{V3}/keys/changes?from={from}&to={to}"), &bob.access_token).await;
    assert_eq!(changes.0, StatusCode::OK);
    assert_eq!(changes.1["changed"], json!([alice.user_id]));

    // Bob leaves the only room they share: Alice is left.
    let (status, _) = server
        .post(&format!("{V3}/rooms/{}/leave", common::enc(&room)), &bob.access_token, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let left = sync_since(&server, &bob, &logged_out).await;
    assert_eq!(left["device_lists"]["left"], json!([alice.user_id]), "{left}");
}

fn contains(list: &Value, user_id: &str) -> bool {
    list.as_array().is_some_and(|users| users.iter().any(|u| u == user_id))
}

/// Alice's master, self-signing and user-signing keys, uploaded.
struct CrossSigning {
    master: Signer,
    self_signing: Signer,
    user_signing: Signer,
}

async fn bootstrap_cross_signing(server: &TestServer, user: &TestUser) -> CrossSigning {
    let keys = CrossSigning {
        master: Signer::new(None),
        self_signing: Signer::new(None),
        user_signing: Signer::new(None),
    };
    let body = signing_keys_body(user, &keys);
    let path = format!("{V3}/keys/device_signing/upload");
    let (status, json) = server.post(&path, &user.access_token, body).await;
    assert_eq!(status, StatusCode::OK, "the first upload needs no password: {json}");
    keys
}

fn signing_keys_body(user: &TestUser, keys: &CrossSigning) -> Value {
    json!({
        "master_key": cross_signing_key(user, &keys.master, "master", None),
        "self_signing_key": cross_signing_key(user, &keys.self_signing, "self_signing", Some(&keys.master)),
        "user_signing_key": cross_signing_key(user, &keys.user_signing, "user_signing", Some(&keys.master)),
    })
}

#[tokio::test]
async fn cross_signing_keys_are_replaced_only_with_the_password() {
    let (server, alice, _, bob, _) = family().await;
    let keys = bootstrap_cross_signing(&server, &alice).await;
    let path = format!("{V3}/keys/device_signing/upload");
    let (status, _) =
        server.post(&path, &alice.access_token, signing_keys_body(&alice, &keys)).await;
    assert_eq!(status, StatusCode::OK, "the same keys again need no password");

    let for_bob = query(&server, &bob, &alice).await;
    let master_key = &for_bob["master_keys"][&alice.user_id];
    assert_eq!(master_key["keys"][format!("ed25519:{}", keys.master.public)], keys.master.public);
    assert_eq!(for_bob["self_signing_keys"][&alice.user_id]["usage"], json!(["self_signing"]));
    assert!(for_bob.get("user_signing_keys").is_none(), "the user-signing key is Alice's alone");
    let for_alice = query(&server, &alice, &alice).await;
    assert_eq!(for_alice["user_signing_keys"][&alice.user_id]["usage"], json!(["user_signing"]));

    let new_keys = CrossSigning {
        master: Signer::new(None),
        self_signing: Signer::new(None),
        user_signing: Signer::new(None),
    };
    let mut body = signing_keys_body(&alice, &new_keys);
    let (status, challenge) = server.post(&path, &alice.access_token, body.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{challenge}");
    body["auth"] = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": alice.user_id },
        "password": "password-alice",
        "session": challenge["session"],
    });
    let (status, json) = server.post(&path, &alice.access_token, body).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let replaced = query(&server, &bob, &alice).await;
    assert!(
        replaced["master_keys"][&alice.user_id]["keys"]
            .get(format!("ed25519:{}", new_keys.master.public))
            .is_some()
    );
}

#[tokio::test]
async fn signatures_that_verify_are_shown_with_the_keys_they_sign() {
    let (server, alice, alice_device, bob, _) = family().await;
    let alice_keys = bootstrap_cross_signing(&server, &alice).await;
    let bob_keys = bootstrap_cross_signing(&server, &bob).await;
    let path = format!("{V3}/keys/signatures/upload");

    // Alice's self-signing key signs her device; her device signs her master key.
    let stored = query(&server, &alice, &alice).await;
    let mut device = stored["device_keys"][&alice.user_id]["PHONE"].clone();
    device.as_object_mut().unwrap().remove("unsigned");
    let signed_device = alice_keys.self_signing.sign(&alice.user_id, device.clone());
    let master = cross_signing_key(&alice, &alice_keys.master, "master", None);
    let signed_master = alice_device.sign(&alice.user_id, master.clone());
    let body = json!({ alice.user_id.clone(): {
        "PHONE": signed_device,
        alice_keys.master.public.clone(): signed_master,
    } });
    let (status, json) = server.post(&path, &alice.access_token, body).await;
    assert_eq!((status, json.get("failures").cloned()), (StatusCode::OK, None), "{json}");

    // Bob's user-signing key signs Alice's master key; a bad signature is refused.
    let bob_signed = bob_keys.user_signing.sign(&bob.user_id, master.clone());
    let mut forged = master.clone();
    forged["signatures"] = json!({ bob.user_id.clone(): { format!("ed25519:{}", bob_keys.user_signing.public): "AAAA" } });
    let (status, json) = server
        .post(
            &path,
            &bob.access_token,
            json!({ alice.user_id.clone(): { alice_keys.master.public.clone(): bob_signed } }),
        )
        .await;
    assert_eq!((status, json.get("failures").cloned()), (StatusCode::OK, None), "{json}");
    let (status, json) = server
        .post(&path, &bob.access_token, json!({ alice.user_id.clone(): { alice_keys.master.public.clone(): forged, "NOSUCH": device } }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let failures = &json["failures"][&alice.user_id];
    assert_eq!(failures[&alice_keys.master.public]["errcode"], "M_INVALID_SIGNATURE", "{json}");
    assert!(failures["NOSUCH"]["errcode"].is_string(), "{json}");

    let for_bob = query(&server, &bob, &alice).await;
    let device_signatures =
        &for_bob["device_keys"][&alice.user_id]["PHONE"]["signatures"][&alice.user_id];
    assert!(
        device_signatures.get(format!("ed25519:{}", alice_keys.self_signing.public)).is_some(),
        "{for_bob}"
    );
    let master_signatures = &for_bob["master_keys"][&alice.user_id]["signatures"];
    assert!(master_signatures[&alice.user_id].get("ed25519:PHONE").is_some(), "{for_bob}");
    assert!(
        master_signatures[&bob.user_id]
            .get(format!("ed25519:{}", bob_keys.user_signing.public))
            .is_some()
    );
    let for_alice = query(&server, &alice, &alice).await;
    assert!(
        for_alice["master_keys"][&alice.user_id]["signatures"].get(&bob.user_id).is_none(),
        "Bob's signature is Bob's to see"
    );
}

#[tokio::test]
async fn bad_key_requests_get_the_spec_errors() {
    let (server, alice, device, bob, _) = family().await;
    let token = Some(alice.access_token.as_str());
    let upload_path = format!("{V3}/keys/upload");
    let as_text = |value: Value| value.to_string();
    let stranger = Signer::new(Some("PHONE"));
    let mut wrong_user = device_keys(&bob, &device, "c");
    wrong_user["device_id"] = json!("PHONE");
    let mut wrong_device = device_keys(&alice, &device, "c");
    wrong_device["device_id"] = json!("OTHER");
    let mut unsigned_keys = device_keys(&alice, &device, "curveA");
    unsigned_keys["signatures"] = json!({});
    let mut tampered = device_keys(&alice, &device, "curveA");
    tampered["algorithms"] = json!(["m.megolm.v1.aes-sha2"]);
    let otk = |id: &str, value: Value| as_text(json!({ "one_time_keys": { id: value } }));
    let good_otk = one_time_key(&alice, &device, "k", false);
    let badly_signed_otk = one_time_key(&alice, &stranger, "k", false);
    let signing_path = format!("{V3}/keys/device_signing/upload");
    let master = Signer::new(None);
    let ssk = Signer::new(None);
    let mut wrong_usage = cross_signing_key(&alice, &master, "self_signing", None);
    wrong_usage["usage"] = json!(["self_signing"]);
    let to_device = |txn: &str| format!("{V3}/sendToDevice/m.test/{txn}");
    let huge = "x".repeat(70 * 1024);

    let rows = vec![
        row("device keys of another user", Method::POST, &upload_path, token, Some(&as_text(json!({ "device_keys": wrong_user })))).expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row("device keys of another device", Method::POST, &upload_path, token, Some(&as_text(json!({ "device_keys": wrong_device })))).expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row("device keys without their signature", Method::POST, &upload_path, token, Some(&as_text(json!({ "device_keys": unsigned_keys })))).expect(StatusCode::BAD_REQUEST, "M_INVALID_SIGNATURE"),
        row("device keys changed after signing", Method::POST, &upload_path, token, Some(&as_text(json!({ "device_keys": tampered })))).expect(StatusCode::BAD_REQUEST, "M_INVALID_SIGNATURE"),
        row("device keys that are not an object", Method::POST, &upload_path, token, Some(r#"{"device_keys": 5}"#)).expect(StatusCode::BAD_REQUEST, "M_BAD_JSON"),
        row("device keys without identity keys", Method::POST, &upload_path, token, Some(&as_text(json!({ "device_keys": device.sign(&alice.user_id, json!({"user_id": alice.user_id, "device_id": "PHONE", "algorithms": [], "keys": {}})) })))).expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row("a one-time key ID without an algorithm", Method::POST, &upload_path, token, Some(&otk("AAAA", good_otk.clone()))).expect(StatusCode::BAD_REQUEST, "M_BAD_JSON"),
        row("a one-time key of an unknown algorithm", Method::POST, &upload_path, token, Some(&otk("curve25519:AAAA", json!("plainkey")))).expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row("a one-time key that is not a signed key", Method::POST, &upload_path, token, Some(&otk("signed_curve25519:AAAA", json!("plainkey")))).expect(StatusCode::BAD_REQUEST, "M_BAD_JSON"),
        row("a one-time key signed by another key", Method::POST, &upload_path, token, Some(&otk("signed_curve25519:AAAA", badly_signed_otk))).expect(StatusCode::BAD_REQUEST, "M_INVALID_SIGNATURE"),
        row("one_time_keys of the wrong type", Method::POST, &upload_path, token, Some(r#"{"one_time_keys": []}"#)).expect(StatusCode::BAD_REQUEST, "M_BAD_JSON"),
        row("not JSON", Method::POST, &upload_path, token, Some("{")).expect(StatusCode::BAD_REQUEST, "M_NOT_JSON"),
        row("no access token", Method::POST, &upload_path, None, Some("{}")).expect(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN"),
        row("a query naming a bad user ID", Method::POST, format!("{V3}/keys/query"), token, Some(r#"{"device_keys": {"nobody": []}}"#)).expect(StatusCode::BAD_REQUEST, "M_BAD_JSON"),
        row("a query with device lists of the wrong type", Method::POST, format!("{V3}/keys/query"), token, Some(r#"{"device_keys": {"@bob:localhost": "all"}}"#)).expect(StatusCode::BAD_REQUEST, "M_BAD_JSON"),
        row("a claim without an algorithm", Method::POST, format!("{V3}/keys/claim"), token, Some(r#"{"one_time_keys": {"@bob:localhost": {"D": 5}}}"#)).expect(StatusCode::BAD_REQUEST, "M_BAD_JSON"),
        row("changes from a bad token", Method::GET, format!("{V3}/keys/changes?from=garbage&to=s1"), token, None).expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row("changes without a from token", Method::GET, format!("{V3}/keys/changes?to=s1"), token, None).expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row("a self-signing key with no master key", Method::POST, &signing_path, token, Some(&as_text(json!({ "self_signing_key": cross_signing_key(&alice, &ssk, "self_signing", Some(&master)) })))).expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row("a master key of another user", Method::POST, &signing_path, token, Some(&as_text(json!({ "master_key": cross_signing_key(&bob, &master, "master", None) })))).expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row("a master key with the wrong usage", Method::POST, &signing_path, token, Some(&as_text(json!({ "master_key": wrong_usage })))).expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row("a self-signing key the master key did not sign", Method::POST, &signing_path, token, Some(&as_text(json!({ "master_key": cross_signing_key(&alice, &master, "master", None), "self_signing_key": cross_signing_key(&alice, &ssk, "self_signing", Some(&ssk)) })))).expect(StatusCode::BAD_REQUEST, "M_INVALID_SIGNATURE"),
        row("a master key with two public keys", Method::POST, &signing_path, token, Some(&as_text(json!({ "master_key": { "user_id": alice.user_id, "usage": ["master"], "keys": { "ed25519:a": "a", "ed25519:b": "b" } } })))).expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row("signatures of the wrong type", Method::POST, format!("{V3}/keys/signatures/upload"), token, Some(r#"{"@bob:localhost": 5}"#)).expect(StatusCode::BAD_REQUEST, "M_BAD_JSON"),
        row("a to-device message to a bad user ID", Method::PUT, to_device("t1"), token, Some(r#"{"messages": {"bob": {"*": {}}}}"#)).expect(StatusCode::BAD_REQUEST, "M_BAD_JSON"),
        row("a to-device message that is not an object", Method::PUT, to_device("t2"), token, Some(&as_text(json!({ "messages": { bob.user_id.clone(): { "*": 5 } } })))).expect(StatusCode::BAD_REQUEST, "M_BAD_JSON"),
        row("an oversize to-device message", Method::PUT, to_device("t3"), token, Some(&as_text(json!({ "messages": { bob.user_id.clone(): { "*": { "x": huge } } } })))).expect(StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE"),
        row("to-device without messages", Method::PUT, to_device("t4"), token, Some("{}")).expect(StatusCode::BAD_REQUEST, "M_BAD_JSON"),
        row("a one-time key ID with a NUL character", Method::POST, &upload_path, token, Some(&otk("signed_curve25519:AA\0AA", good_otk.clone()))).expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
    ];
    run_table(&server, rows).await;
}

const DEHYDRATED: &str = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device";

#[tokio::test]
async fn a_dehydrated_device_keeps_its_to_device_messages_until_read() {
    let (server, alice, _, bob, _) = family().await;
    let parked = TestUser { device_id: "PARKED".into(), ..alice.clone() };
    let signer = Signer::new(Some("PARKED"));
    let data = json!({ "algorithm": "org.matrix.msc3814.v1.olm", "device_pickle": "pickle" });
    let body = json!({
        "device_id": "PARKED",
        "initial_device_display_name": "dehydrated",
        "device_data": data,
        "device_keys": device_keys(&parked, &signer, "curveP"),
        "one_time_keys": { "signed_curve25519:P1": one_time_key(&parked, &signer, "p1", false) },
    });
    let (status, json) = server.put(DEHYDRATED, &alice.access_token, body.clone()).await;
    assert_eq!((status, json), (StatusCode::OK, json!({ "device_id": "PARKED" })));
    let (status, json) = server.get(DEHYDRATED, &alice.access_token).await;
    assert_eq!(
        (status, json),
        (StatusCode::OK, json!({ "device_id": "PARKED", "device_data": data }))
    );
    let found = query(&server, &bob, &alice).await;
    assert_eq!(
        found["device_keys"][&alice.user_id]["PARKED"]["keys"]["curve25519:PARKED"],
        "curveP"
    );
    assert_eq!(key_ids(&claim(&server, &bob, &parked).await, &parked), ["signed_curve25519:P1"]);

    for n in 0..3 {
        let body = json!({ "messages": { alice.user_id.clone(): { "PARKED": { "n": n } } } });
        let (status, _) =
            server.put(&format!("{V3}/sendToDevice/m.test/d{n}"), &bob.access_token, body).await;
        assert_eq!(status, StatusCode::OK);
    }
    // A refused replacement changes nothing: the device before it stays.
    let mut refused = body.clone();
    refused["device_keys"] = device_keys(&bob, &signer, "curveX");
    let got = server.put(DEHYDRATED, &alice.access_token, refused).await;
    common::assert_error(&got, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let (status, json) = server.get(DEHYDRATED, &alice.access_token).await;
    assert_eq!((status, json["device_id"].clone()), (StatusCode::OK, json!("PARKED")));

    let events_path = format!("{DEHYDRATED}/PARKED/events");
    // A next_batch from beyond the stream acknowledges nothing.
    let future = json!({ "next_batch": "s99999999" });
    let (status, page) = server.post(&events_path, &alice.access_token, future).await;
    assert_eq!((status, page["events"].as_array().map(Vec::len)), (StatusCode::OK, Some(3)));
    let (status, page) = server.post(&events_path, &alice.access_token, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["events"].as_array().unwrap().len(), 3);
    assert_eq!(page["events"][0]["sender"], bob.user_id);
    let next = json!({ "next_batch": page["next_batch"] });
    let (status, rest) = server.post(&events_path, &alice.access_token, next).await;
    assert_eq!((status, rest["events"].clone()), (StatusCode::OK, json!([])));

    let got =
        server.post(&format!("{DEHYDRATED}/PHONE/events"), &alice.access_token, json!({})).await;
    common::assert_error(&got, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let mut clash = body.clone();
    clash["device_id"] = json!("PHONE");
    let got = server.put(DEHYDRATED, &alice.access_token, clash).await;
    common::assert_error(&got, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

    let (status, json) =
        server.call(Method::DELETE, DEHYDRATED, Some(&alice.access_token), None).await;
    assert_eq!((status, json), (StatusCode::OK, json!({ "device_id": "PARKED" })));
    let got = server.get(DEHYDRATED, &alice.access_token).await;
    common::assert_error(&got, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let found = query(&server, &bob, &alice).await;
    assert!(found["device_keys"][&alice.user_id].get("PARKED").is_none(), "its keys went with it");
}

/// A device holds at most 1,000 unclaimed one-time keys: an upload beyond that is refused whole.
#[tokio::test]
async fn one_time_keys_beyond_the_cap_are_refused() {
    let (server, alice, device, _, _) = family().await;
    let keys = |from: usize, count: usize| {
        let keys: serde_json::Map<String, Value> = (from..from + count)
            .map(|n| {
                let key = one_time_key(&alice, &device, &format!("k{n}"), false);
                (format!("signed_curve25519:K{n:05}"), key)
            })
            .collect();
        json!({ "one_time_keys": keys })
    };
    let counts = upload(&server, &alice, keys(0, 900)).await;
    assert_eq!(counts["one_time_key_counts"]["signed_curve25519"], 900);

    let path = format!("{V3}/keys/upload");
    let (status, refused) = server.post(&path, &alice.access_token, keys(900, 101)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert_eq!(refused["errcode"], "M_INVALID_PARAM");
    let counts = upload(&server, &alice, json!({})).await;
    assert_eq!(counts["one_time_key_counts"]["signed_curve25519"], 900, "nothing of it stored");

    let counts = upload(&server, &alice, keys(900, 100)).await;
    assert_eq!(counts["one_time_key_counts"]["signed_curve25519"], 1_000, "up to the cap is fine");
}
