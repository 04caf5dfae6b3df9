//! What a server tells clients about itself and the networks around it: the support contacts
//! (`/.well-known/matrix/support`), the TURN server for calls (`/voip/turnServer`), the
//! third-party networks it bridges to (none: `/thirdparty/*`) and the third-party identifiers it
//! keeps (none: `GET /account/3pid`).

mod common;

use common::{
    TestServer, assert_error, enc,
    table::{row, run_table},
};
use reqwest::{Method, StatusCode};
use serde_json::json;

const V3: &str = "/_matrix/client/v3";
const SUPPORT: &str = "/.well-known/matrix/support";

fn config(extra: &str) -> String {
    format!("server_name = \"localhost\"\n{extra}")
}

#[tokio::test]
async fn support_is_not_found_until_configured() {
    let server = TestServer::start().await;
    let got = server.call(Method::GET, SUPPORT, None, None).await;
    assert_error(&got, StatusCode::NOT_FOUND, "M_NOT_FOUND");
}

#[tokio::test]
async fn support_lists_the_configured_contacts_and_page() {
    let toml = config(
        "[well_known]\nsupport_page = \"https://example.org/help.html\"\ncontacts = [\n\
         { matrix_id = \"@parent:localhost\" },\n\
         { email_address = \"security@example.org\", role = \"m.role.security\" },\n\
         { matrix_id = \"@kid:localhost\", email_address = \"kid@example.org\", \
         role = \"org.example.role.helper\" },\n]\n",
    );
    let server = TestServer::start_with_config(&toml, &["--registration", "open"]).await;
    let got = server.call(Method::GET, SUPPORT, None, None).await;
    let expected = json!({
        "contacts": [
            {"matrix_id": "@parent:localhost", "role": "m.role.admin"},
            {"email_address": "security@example.org", "role": "m.role.security"},
            {"matrix_id": "@kid:localhost", "email_address": "kid@example.org",
             "role": "org.example.role.helper"},
        ],
        "support_page": "https://example.org/help.html",
    });
    assert_eq!(got, (StatusCode::OK, expected));
}

#[tokio::test]
async fn without_a_turn_server_the_answer_is_an_empty_object() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let got = server.get(&format!("{V3}/voip/turnServer"), &alice.access_token).await;
    assert_eq!(got, (StatusCode::OK, json!({})));
    let anonymous = server.call(Method::GET, &format!("{V3}/voip/turnServer"), None, None).await;
    assert_error(&anonymous, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn a_shared_secret_gives_each_user_expiring_credentials() {
    let toml = config(
        "[voip]\nturn_uris = [\"turn:turn.example.org:3478?transport=udp\", \
         \"turns:turn.example.org:5349?transport=tcp\"]\nturn_shared_secret = \"north-wind\"\n\
         turn_ttl_seconds = 3600\n",
    );
    let server = TestServer::start_with_config(&toml, &["--registration", "open"]).await;
    let alice = server.register("alice").await;
    let (status, got) = server.get(&format!("{V3}/voip/turnServer"), &alice.access_token).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(
        got["uris"],
        json!([
            "turn:turn.example.org:3478?transport=udp",
            "turns:turn.example.org:5349?transport=tcp"
        ])
    );
    assert_eq!(got["ttl"], 3600);
    let username = got["username"].as_str().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, "@alice:localhost");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let expiry: u64 = expiry.parse().unwrap();
    assert!((now + 3590..=now + 3610).contains(&expiry), "{expiry} vs {now}");
    // base64 of a 20-byte HMAC-SHA1 (its value is checked against a known one in src/voip.rs).
    let password = got["password"].as_str().unwrap();
    assert!(password.len() == 28 && password.ends_with('='), "{password}");
}

#[tokio::test]
async fn fixed_turn_credentials_are_handed_out_as_configured() {
    let toml = config(
        "[voip]\nturn_uris = [\"turn:10.0.0.1:3478\"]\nturn_username = \"family\"\n\
         turn_password = \"hearth\"\n",
    );
    let server = TestServer::start_with_config(&toml, &["--registration", "open"]).await;
    let alice = server.register("alice").await;
    let got = server.get(&format!("{V3}/voip/turnServer"), &alice.access_token).await;
    let expected = json!({"username": "family", "password": "hearth",
                          "uris": ["turn:10.0.0.1:3478"], "ttl": 86400});
    assert_eq!(got, (StatusCode::OK, expected));
}

#[tokio::test]
async fn no_third_party_network_is_bridged_and_no_third_party_id_is_kept() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let token = alice.access_token.as_str();
    let protocols = server.get(&format!("{V3}/thirdparty/protocols"), token).await;
    assert_eq!(protocols, (StatusCode::OK, json!({})));
    let alias = enc("#family:localhost");
    let locations = server.get(&format!("{V3}/thirdparty/location?alias={alias}"), token).await;
    assert_eq!(locations, (StatusCode::OK, json!([])));
    let users =
        server.get(&format!("{V3}/thirdparty/user?userid={}", enc(&alice.user_id)), token).await;
    assert_eq!(users, (StatusCode::OK, json!([])));
    let threepids = server.get(&format!("{V3}/account/3pid"), token).await;
    assert_eq!(threepids, (StatusCode::OK, json!({"threepids": []})));

    let t = Some(token);
    let get = Method::GET;
    run_table(
        &server,
        vec![
            row(
                "a protocol no bridge serves",
                get.clone(),
                format!("{V3}/thirdparty/protocol/irc"),
                t,
                None,
            )
            .expect(StatusCode::NOT_FOUND, "M_NOT_FOUND"),
            row(
                "locations on an unknown protocol",
                get.clone(),
                format!("{V3}/thirdparty/location/irc?searchFields=x"),
                t,
                None,
            )
            .expect(StatusCode::NOT_FOUND, "M_NOT_FOUND"),
            row(
                "users on an unknown protocol",
                get.clone(),
                format!("{V3}/thirdparty/user/irc"),
                t,
                None,
            )
            .expect(StatusCode::NOT_FOUND, "M_NOT_FOUND"),
            row(
                "a location lookup by something not an alias",
                get.clone(),
                format!("{V3}/thirdparty/location?alias=family"),
                t,
                None,
            )
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
            row(
                "a user lookup by something not a user ID",
                get.clone(),
                format!("{V3}/thirdparty/user?userid=alice"),
                t,
                None,
            )
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
            row(
                "a protocol name with a NUL character",
                get.clone(),
                format!("{V3}/thirdparty/protocol/i%00rc"),
                t,
                None,
            )
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
            row(
                "protocols without a token",
                get.clone(),
                format!("{V3}/thirdparty/protocols"),
                None,
                None,
            )
            .expect(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN"),
            row(
                "third-party IDs without a token",
                get.clone(),
                format!("{V3}/account/3pid"),
                None,
                None,
            )
            .expect(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN"),
        ],
    )
    .await;
}
