//! The process and its data directory: first run, the lock, configuration errors, the command
//! line, server names, durability across `kill -9`, and the HTTP surface every request shares
//! (unknown endpoints, methods, body limits, CORS, discovery).

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Output, Stdio},
    time::Duration,
};

use common::{TestServer, assert_error, binary, enc, run_hearth};
use futures::future::join_all;
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    process::Command,
};

const V3: &str = "/_matrix/client/v3";

/// Runs `hearth --data-dir DIR serve --listen 127.0.0.1:0 ARGS` expecting it to stop with an
/// error; returns its stderr.
async fn serve_fails(data_dir: &Path, args: &[&str]) -> String {
    let dir = data_dir.to_str().unwrap();
    let mut all = vec!["--data-dir", dir, "serve", "--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let output = run_hearth(&all).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "hearth serve {args:?} should fail; stderr: {stderr}");
    assert!(!stdout.contains("hearth listening on"), "it must not serve: {stdout}");
    stderr
}

fn stdout_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[track_caller]
fn dir_str(server: &TestServer) -> &str {
    server.data_dir.to_str().unwrap()
}

// ---------------------------------------------------------------------------------------------
// First run and later runs

#[tokio::test]
async fn first_run_creates_a_commented_config_the_signing_key_and_the_database() {
    // On PostgreSQL the harness writes the first run's template itself, pointed at the test's
    // database (the server cannot know the database otherwise); the rest is the server's.
    let mut server = TestServer::start_with(&["--server-name", "home.example"]).await;
    let dir = server.data_dir.clone();
    for file in ["hearth.toml", "signing.key"] {
        assert!(dir.join(file).is_file(), "{file} created in {}", dir.display());
    }
    // The database: the file, or the schema in the configured PostgreSQL database.
    match server.database() {
        None => assert!(dir.join("hearth.db").is_file(), "hearth.db created in {}", dir.display()),
        Some(database) => {
            assert!(!dir.join("hearth.db").exists(), "no hearth.db on PostgreSQL");
            let tables = database.tables().await;
            for table in ["users", "devices", "access_tokens", "rooms"] {
                assert!(tables.iter().any(|t| t == table), "table {table} in {tables:?}");
            }
        }
    }

    // The configuration parses, holds the first-run settings, and documents every option.
    let text = std::fs::read_to_string(dir.join("hearth.toml")).unwrap();
    let config = hearth::config::Config::parse(&text).expect("the written hearth.toml parses");
    assert_eq!(config.server_name.as_str(), "home.example");
    let backend = match server.database() {
        None => hearth::config::DatabaseBackend::Sqlite,
        Some(_) => hearth::config::DatabaseBackend::Postgres,
    };
    assert_eq!(config.database.backend, backend);
    assert_eq!(config.registration.mode, hearth::config::RegistrationMode::Closed);
    assert_eq!(config.limits.max_request_bytes, 1024 * 1024);
    let parsed: toml::Table = toml::from_str(&text).expect("plain TOML");
    let keys = |table: &str| -> Vec<String> {
        let mut keys: Vec<String> =
            parsed[table].as_table().unwrap().keys().cloned().collect::<Vec<_>>();
        keys.sort();
        keys
    };
    assert_eq!(keys("registration"), ["mode", "tokens"]);
    assert_eq!(keys("log"), ["level"]);
    assert_eq!(
        keys("limits"),
        [
            "connections_per_address",
            "login_attempts_per_minute",
            "max_connections",
            "max_request_bytes",
            "request_timeout_seconds"
        ]
    );
    assert_eq!(keys("well_known"), ["client", "contacts", "server", "support_page"]);
    assert_eq!(
        keys("voip"),
        ["turn_password", "turn_shared_secret", "turn_ttl_seconds", "turn_uris", "turn_username"]
    );
    assert_eq!(keys("database"), ["backend", "url"]);
    assert!(parsed.contains_key("server_name") && parsed.contains_key("listen"));
    // Every setting line comes right after a comment explaining it (or after another setting
    // of the same explained group).
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    for (i, line) in lines.iter().enumerate() {
        if line.is_empty() || line.starts_with('#') || line.starts_with('[') {
            continue;
        }
        let previous = lines[..i].iter().rev().find(|l| !l.contains('=') || l.starts_with('#'));
        assert!(
            previous.is_some_and(|l| l.starts_with('#')),
            "setting {line:?} has no comment above it in\n{text}"
        );
    }
    assert!(text.lines().filter(|l| l.starts_with('#')).count() >= 10, "{text}");

    // The signing key: `ed25519 <version> <base64>`, readable by the owner only.
    let key = std::fs::read(dir.join("signing.key")).unwrap();
    let key_text = String::from_utf8(key.clone()).unwrap();
    let parts: Vec<&str> = key_text.split_whitespace().collect();
    assert_eq!(parts.len(), 3, "{key_text}");
    assert_eq!(parts[0], "ed25519");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.join("signing.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "signing.key mode {mode:o}");
    }

    // Logs go to a file in the data directory as well.
    let logs: Vec<PathBuf> =
        std::fs::read_dir(dir.join("logs")).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(
        logs.iter().any(|p| p.file_name().unwrap().to_string_lossy().starts_with("hearth")),
        "{logs:?}"
    );

    // A later run reads the files instead of writing new ones: edit the configuration, restart.
    std::fs::write(dir.join("hearth.toml"), text.replace("mode = \"closed\"", "mode = \"open\""))
        .unwrap();
    server.kill_and_restart().await;
    assert_eq!(std::fs::read(dir.join("signing.key")).unwrap(), key, "the key is kept");
    let user = server.register("alice").await;
    assert_eq!(user.user_id, "@alice:home.example");
    let edited = std::fs::read_to_string(dir.join("hearth.toml")).unwrap();
    assert!(edited.contains("mode = \"open\""), "the file is not rewritten: {edited}");
}

#[tokio::test]
async fn logs_go_to_stderr_and_to_a_file_at_the_configured_level() {
    let temp = tempfile::tempdir().unwrap();
    let _database = common::backend::write_config(
        temp.path(),
        "server_name = \"localhost\"\n[registration]\nmode = \"open\"\n[log]\nlevel = \"info\"\n",
    )
    .await;
    let mut child = Command::new(binary())
        .arg("--data-dir")
        .arg(temp.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = wait_for_listening(&mut stdout).await;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let reply = reqwest::get(format!("{url}/_matrix/client/versions")).await.unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
    // Events, whose authorization ruma would log at info, one line per check.
    let client = reqwest::Client::new();
    let body = json!({"username": "alice", "password": "pw", "auth": {"type": "m.login.dummy"}});
    let reply = client.post(format!("{url}/_matrix/client/v3/register")).json(&body).send();
    let registered: Value = reply.await.unwrap().json().await.unwrap();
    let token = registered["access_token"].as_str().unwrap();
    let reply = client
        .post(format!("{url}/_matrix/client/v3/createRoom"))
        .bearer_auth(token)
        .json(&json!({"name": "logged"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
    child.start_kill().unwrap();
    let output = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("serving"), "the info line on stderr: {stderr}");

    let logs: Vec<PathBuf> =
        std::fs::read_dir(temp.path().join("logs")).unwrap().map(|e| e.unwrap().path()).collect();
    let text: String = logs.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect();
    assert!(text.contains("serving"), "the info line in the log file: {logs:?}: {text}");
    for (place, logged) in [("stderr", &*stderr), ("the log file", &*text)] {
        assert!(!logged.contains('\u{1b}'), "terminal colours in {place}: {logged}");
        assert!(!logged.contains("ruma_state_res"), "per-event auth lines in {place}: {logged}");
    }
}

async fn wait_for_listening(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) -> String {
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("hearth listening on ") {
                return url.to_owned();
            }
        }
        panic!("hearth exited before listening");
    })
    .await
    .expect("listening within 30 s")
}

#[tokio::test]
async fn a_second_server_on_the_same_data_directory_stops_at_once() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let stderr = serve_fails(&server.data_dir, &[]).await;
    assert!(stderr.contains("already running"), "{stderr}");
    assert!(stderr.contains(dir_str(&server)), "names the data directory: {stderr}");
    // The first server is unharmed.
    let (status, json) = server.get(&format!("{V3}/account/whoami"), &alice.access_token).await;
    assert_eq!((status, json["user_id"].clone()), (StatusCode::OK, json!("@alice:localhost")));
}

#[tokio::test]
async fn a_broken_config_stops_the_server_with_file_line_and_reason() {
    // (file text, expected line, words of the reason)
    let cases: [(&str, Option<usize>, &[&str]); 6] = [
        ("server_name = \"localhost\"\n\nthis is not toml\n", Some(3), &["expected `=`"]),
        (
            "server_name = \"localhost\"\n[limits]\nmax_request_bytes = \"big\"\n",
            Some(3),
            &["invalid type", "expected u64"],
        ),
        (
            "server_name = \"localhost\"\nlsiten = \"127.0.0.1:1\"\n",
            Some(2),
            &["unknown field `lsiten`"],
        ),
        ("server_name = \"not a name!\"\n", Some(1), &["not a valid IP address or domain name"]),
        ("listen = \"127.0.0.1:0\"\n", None, &["missing field `server_name`"]),
        (
            "server_name = \"localhost\"\n[database]\nbackend = \"postgres\"\n",
            None,
            &["backend = \"postgres\" needs the connection `url`"],
        ),
    ];
    for (text, line, reasons) in cases {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("hearth.toml");
        std::fs::write(&path, text).unwrap();
        let stderr = serve_fails(temp.path(), &[]).await;
        assert!(stderr.contains(path.to_str().unwrap()), "names the file for {text:?}: {stderr}");
        if let Some(line) = line {
            assert!(stderr.contains(&format!("line {line}")), "line {line} for {text:?}: {stderr}");
        }
        for reason in reasons {
            assert!(stderr.contains(reason), "reason {reason:?} for {text:?}: {stderr}");
        }
        // The file is left as it was, and no database was created from it.
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        assert!(!temp.path().join("hearth.db").exists());
    }
}

#[tokio::test]
async fn a_first_run_in_token_mode_writes_a_token_that_registers() {
    let server = TestServer::start_with(&["--registration", "token"]).await;
    let config = std::fs::read_to_string(server.data_dir.join("hearth.toml")).unwrap();
    let config: toml::Value = toml::from_str(&config).unwrap();
    let token = config["registration"]["tokens"][0].as_str().unwrap().to_owned();

    let path = "/_matrix/client/v3/register";
    let body = json!({ "username": "kid", "password": "pw-kid" });
    let (status, first) = server.call(Method::POST, path, None, Some(body.clone())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{first}");
    assert_eq!(first["flows"], json!([{ "stages": ["m.login.registration_token"] }]));
    let mut answer = body;
    answer["auth"] = json!({ "type": "m.login.registration_token", "token": token, "session": first["session"] });
    let (status, json) = server.call(Method::POST, path, None, Some(answer)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["user_id"], "@kid:localhost");
}

#[tokio::test]
async fn serve_refuses_inconsistent_command_lines() {
    // Token registration on a later run, with no tokens in the file.
    let server = TestServer::start().await;
    let other = tempfile::tempdir().unwrap();
    std::fs::copy(server.data_dir.join("hearth.toml"), other.path().join("hearth.toml")).unwrap();
    let stderr = serve_fails(other.path(), &["--registration", "token"]).await;
    assert!(stderr.contains("--registration token needs tokens"), "{stderr}");

    // An invalid server name.
    let temp = tempfile::tempdir().unwrap();
    let stderr = serve_fails(temp.path(), &["--server-name", "under_score:port"]).await;
    assert!(stderr.contains("invalid server name \"under_score:port\""), "{stderr}");
    assert!(!temp.path().join("hearth.toml").exists());

    // A server name different from the first run's.
    let server = TestServer::start_with(&["--server-name", "first.example"]).await;
    let other = tempfile::tempdir().unwrap();
    let copy = other.path().join("hearth.toml");
    std::fs::copy(server.data_dir.join("hearth.toml"), &copy).unwrap();
    let stderr = serve_fails(other.path(), &["--server-name", "second.example"]).await;
    assert!(stderr.contains("first.example") && stderr.contains("cannot change"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// The command line

#[tokio::test]
async fn version_prints_the_package_version() {
    let output = run_hearth(&["--version"]).await;
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert_eq!(stdout_of(&output).trim(), format!("hearth {}", env!("CARGO_PKG_VERSION")));
}

#[tokio::test]
async fn user_add_creates_accounts_while_the_server_runs() {
    // Registration is closed: accounts come only from the command line.
    let server = TestServer::start_with(&[]).await;
    let dir = dir_str(&server);
    let password_file = server.data_dir.join("alice-password.txt");
    std::fs::write(&password_file, "correct horse battery\nsecond line ignored\n").unwrap();
    let file = password_file.to_str().unwrap();

    let output = run_hearth(&[
        "--data-dir",
        dir,
        "user",
        "add",
        "alice",
        "--password-file",
        file,
        "--admin",
    ])
    .await;
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert_eq!(stdout_of(&output).trim(), "created @alice:localhost (administrator)");
    let output =
        run_hearth(&["--data-dir", dir, "user", "add", "bob", "--password", "bob pw"]).await;
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert_eq!(stdout_of(&output).trim(), "created @bob:localhost");
    let output =
        run_hearth(&["--data-dir", dir, "user", "add", "carol", "--password", "carol pw"]).await;
    assert!(output.status.success(), "{}", stderr_of(&output));

    // The running server sees them at once.
    let alice = server.login_ok("alice", "correct horse battery", None).await;
    assert_eq!(alice.user_id, "@alice:localhost");
    assert_error(
        &server.login("alice", "correct horse battery\nsecond line ignored").await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    let bob = server.login_ok("bob", "bob pw", None).await;
    assert_eq!(bob.user_id, "@bob:localhost");
    let carol = server.login_ok("carol", "carol pw", None).await;

    // `--admin` made alice a server administrator: she may remove an alias in a room she is
    // not in, which carol may not.
    let body = json!({ "room_alias_name": "kitchen" });
    let (status, json) = server.post(&format!("{V3}/createRoom"), &bob.access_token, body).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let room = json["room_id"].as_str().unwrap().to_owned();
    let alias = format!("{V3}/directory/room/{}", enc("#kitchen:localhost"));
    let refused = server.call(Method::DELETE, &alias, Some(&carol.access_token), None).await;
    assert_error(&refused, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let (status, json) = server.call(Method::DELETE, &alias, Some(&alice.access_token), None).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let gone = server.call(Method::GET, &alias, None, None).await;
    assert_error(&gone, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    // While the server is busy writing, another account can still be added.
    let (server_ref, bob_ref, room_ref) = (&server, &bob, &room);
    let sends = (0..100).map(|i| async move {
        server_ref.send_text(bob_ref, room_ref, &format!("busy {i}")).await
    });
    let add_args = ["--data-dir", dir, "user", "add", "frank", "--password", "frank pw"];
    let (_, output) = tokio::join!(join_all(sends), run_hearth(&add_args));
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert_eq!(server.login_ok("frank", "frank pw", None).await.user_id, "@frank:localhost");

    // Refusals: a taken name, an invalid name, no password, an empty password file.
    let output = run_hearth(&["--data-dir", dir, "user", "add", "alice", "--password", "x"]).await;
    assert!(!output.status.success());
    assert!(stderr_of(&output).contains("taken"), "{}", stderr_of(&output));
    let output =
        run_hearth(&["--data-dir", dir, "user", "add", "Not Valid", "--password", "x"]).await;
    assert!(!output.status.success());
    let stderr = stderr_of(&output);
    assert!(stderr.contains("User names may only contain"), "{stderr}");
    assert!(!stderr.contains("Bad Request"), "no HTTP wording on the command line: {stderr}");
    let output = run_hearth(&["--data-dir", dir, "user", "add", "dave"]).await;
    assert!(!output.status.success());
    assert!(stderr_of(&output).contains("--password-file"), "{}", stderr_of(&output));
    let empty = server.data_dir.join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let output = run_hearth(&[
        "--data-dir",
        dir,
        "user",
        "add",
        "dave",
        "--password-file",
        empty.to_str().unwrap(),
    ])
    .await;
    assert!(!output.status.success());
    assert!(stderr_of(&output).contains("empty"), "{}", stderr_of(&output));
    assert_error(&server.login("dave", "").await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // Registration over HTTP is still closed.
    let register =
        json!({ "username": "eve", "password": "pw", "auth": { "type": "m.login.dummy" } });
    let got = server.call(Method::POST, &format!("{V3}/register"), None, Some(register)).await;
    assert_error(&got, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

#[tokio::test]
async fn user_add_needs_an_initialised_data_directory() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().to_str().unwrap();
    let output = run_hearth(&["--data-dir", dir, "user", "add", "alice", "--password", "x"]).await;
    assert!(!output.status.success());
    assert!(stderr_of(&output).contains("hearth serve"), "{}", stderr_of(&output));
}

/// `db migrate` and `user add` act on an existing server's data: a directory that is not there
/// is named as such, not mistaken for a running server.
#[tokio::test]
async fn offline_commands_on_a_missing_data_directory_say_to_run_serve_first() {
    let temp = tempfile::tempdir().unwrap();
    let missing = temp.path().join("no-such-dir");
    let dir = missing.to_str().unwrap();
    let mut commands = vec![vec!["--data-dir", dir, "user", "add", "alice", "--password", "x"]];
    if cfg!(feature = "postgres") {
        commands.push(vec![
            "--data-dir",
            dir,
            "db",
            "migrate",
            "--to",
            "postgresql://h@127.0.0.1:1/h",
        ]);
    }
    for args in commands {
        let output = run_hearth(&args).await;
        let stderr = stderr_of(&output);
        assert!(!output.status.success(), "{args:?}: {stderr}");
        assert!(stderr.contains("there is no Hearth data directory at"), "{args:?}: {stderr}");
        assert!(stderr.contains(dir) && stderr.contains("hearth serve"), "{args:?}: {stderr}");
        assert!(!stderr.contains("running"), "{args:?}: {stderr}");
        assert!(!missing.exists(), "{args:?} created the directory");
    }
}

/// Hearth connects to PostgreSQL without TLS: a URL that asks for it is refused with a clear
/// message before any connection is tried, in the config and by `db migrate`.
#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_urls_asking_for_tls_are_refused_with_a_clear_message() {
    const NO_TLS: &str = "TLS connections to PostgreSQL are not supported yet";
    for mode in ["require", "verify-ca", "verify-full"] {
        let url = format!("postgresql://h:secret@127.0.0.1:1/h?sslmode={mode}");
        let temp = tempfile::tempdir().unwrap();
        let config = format!(
            "server_name = \"localhost\"\n[database]\nbackend = \"postgres\"\nurl = \"{url}\"\n"
        );
        std::fs::write(temp.path().join("hearth.toml"), config).unwrap();
        let stderr = serve_fails(temp.path(), &[]).await;
        assert!(stderr.contains(NO_TLS) && stderr.contains("sslmode=disable"), "{mode}: {stderr}");
        assert!(!stderr.contains("secret"), "the password stays out of the message: {stderr}");

        let sqlite = tempfile::tempdir().unwrap();
        let dir = sqlite.path().to_str().unwrap();
        let settings = hearth::config::FirstRunSettings {
            server_name: hearth::config::parse_server_name("localhost").unwrap(),
            listen: "127.0.0.1:0".parse().unwrap(),
            registration: hearth::config::RegistrationMode::Closed,
        };
        std::fs::write(sqlite.path().join("hearth.toml"), hearth::config::template(&settings))
            .unwrap();
        let output = run_hearth(&["--data-dir", dir, "db", "migrate", "--to", &url]).await;
        let stderr = stderr_of(&output);
        assert!(!output.status.success(), "{mode}: {stderr}");
        assert!(stderr.contains(NO_TLS), "{mode}: {stderr}");
    }
}

/// A URL that does not parse cannot be fixed by waiting for PostgreSQL: the server stops at once.
#[cfg(feature = "postgres")]
#[tokio::test]
async fn a_postgres_url_that_does_not_parse_stops_the_server_at_once() {
    let temp = tempfile::tempdir().unwrap();
    let config = "server_name = \"localhost\"\n[database]\nbackend = \"postgres\"\n\
                  url = \"postgresql://h@127.0.0.1:99999/h\"\n";
    std::fs::write(temp.path().join("hearth.toml"), config).unwrap();
    let stderr = serve_fails(temp.path(), &[]).await;
    assert!(stderr.contains("URL is not valid"), "{stderr}");
    assert!(!stderr.contains("retrying"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// Server names

#[tokio::test]
async fn server_names_with_ports_and_ip_literals_make_user_ids() {
    for name in ["localhost:8448", "127.0.0.1:8448", "[::1]:8448", "home.example"] {
        let server =
            TestServer::start_with(&["--registration", "open", "--server-name", name]).await;
        let config = std::fs::read_to_string(server.data_dir.join("hearth.toml")).unwrap();
        assert!(config.contains(&format!("server_name = \"{name}\"")), "{config}");

        let alice = server.register("alice").await;
        let expected = format!("@alice:{name}");
        assert_eq!(alice.user_id, expected);
        let (status, json) = server.get(&format!("{V3}/account/whoami"), &alice.access_token).await;
        assert_eq!((status, json["user_id"].clone()), (StatusCode::OK, json!(expected)));
        // Login by the full user ID, and the user ID in a path.
        assert_eq!(server.login_ok(&expected, "password-alice", None).await.user_id, expected);
        let path = format!("{V3}/profile/{}/displayname", enc(&expected));
        let (status, json) =
            server.put(&path, &alice.access_token, json!({ "displayname": "A" })).await;
        assert_eq!(status, StatusCode::OK, "{name}: {json}");
        let got = server.call(Method::GET, &path, None, None).await;
        assert_eq!(got, (StatusCode::OK, json!({ "displayname": "A" })), "{name}");
        // Room aliases carry the server name as well.
        let body = json!({ "room_alias_name": "hall" });
        let (status, json) =
            server.post(&format!("{V3}/createRoom"), &alice.access_token, body).await;
        assert_eq!(status, StatusCode::OK, "{name}: {json}");
        let alias = format!("#hall:{name}");
        let got = server
            .call(Method::GET, &format!("{V3}/directory/room/{}", enc(&alias)), None, None)
            .await;
        assert_eq!(got.0, StatusCode::OK, "{name}: {}", got.1);
        assert_eq!(got.1["room_id"], json["room_id"], "{name}");
        assert_eq!(got.1["servers"], json!([name]), "{name}");
    }
}

// ---------------------------------------------------------------------------------------------
// Durability

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let mut server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room =
        server.create_room(&alice, json!({ "preset": "public_chat", "name": "Durable" })).await;
    server.join(&bob, &room).await;

    // Many writes at once, so several share a commit; each counted only once acknowledged.
    let sends = (0..200).map(|i| {
        let (server, room) = (&server, &room);
        let user = if i % 2 == 0 { &alice } else { &bob };
        async move { (i, server.send_text(user, room, &format!("message {i}")).await) }
    });
    let events: Vec<(usize, String)> = join_all(sends).await;
    let account_data = (0..50).map(|i| {
        let server = &server;
        let path = format!("{V3}/user/{}/account_data/org.example.item{i}", enc(&alice.user_id));
        let token = alice.access_token.clone();
        async move {
            let (status, json) = server.put(&path, &token, json!({ "n": i })).await;
            assert_eq!(status, StatusCode::OK, "{json}");
        }
    });
    join_all(account_data).await;
    let room_data = format!(
        "{V3}/user/{}/rooms/{}/account_data/org.example.room",
        enc(&bob.user_id),
        enc(&room)
    );
    assert_eq!(
        server.put(&room_data, &bob.access_token, json!({ "pinned": true })).await.0,
        StatusCode::OK
    );
    let topic = format!("{V3}/rooms/{}/state/m.room.topic/", enc(&room));
    assert_eq!(
        server.put(&topic, &alice.access_token, json!({ "topic": "kept" })).await.0,
        StatusCode::OK
    );
    let displayname = format!("{V3}/profile/{}/displayname", enc(&bob.user_id));
    assert_eq!(
        server.put(&displayname, &bob.access_token, json!({ "displayname": "Bobby" })).await.0,
        StatusCode::OK
    );

    server.kill_and_restart().await;

    // Every acknowledged message is there, with its content.
    let checks = events.iter().map(|(i, event_id)| {
        let path = format!("{V3}/rooms/{}/event/{}", enc(&room), enc(event_id));
        let server = &server;
        let token = alice.access_token.clone();
        async move {
            let (status, json) = server.get(&path, &token).await;
            assert_eq!(status, StatusCode::OK, "event {i} after the restart: {json}");
            assert_eq!(json["content"]["body"], format!("message {i}"));
            assert_eq!(json["event_id"], event_id.as_str());
        }
    });
    join_all(checks).await;
    // And in order, through /messages.
    let path = format!("{V3}/rooms/{}/messages?dir=b&limit=100", enc(&room));
    let mut from: Option<String> = None;
    let mut bodies = Vec::new();
    loop {
        let page_path = match &from {
            Some(token) => format!("{path}&from={}", enc(token)),
            None => path.clone(),
        };
        let (status, json) = server.get(&page_path, &bob.access_token).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        let chunk = json["chunk"].as_array().unwrap();
        bodies.extend(
            chunk
                .iter()
                .filter(|e| e["type"] == "m.room.message")
                .map(|e| e["content"]["body"].clone()),
        );
        match json["end"].as_str() {
            Some(end) if !chunk.is_empty() => from = Some(end.to_owned()),
            _ => break,
        }
        assert!(bodies.len() <= 200, "no event is returned twice");
    }
    assert_eq!(bodies.len(), 200);
    let mut seen: Vec<usize> =
        bodies.iter().map(|b| b.as_str().unwrap()["message ".len()..].parse().unwrap()).collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..200).collect::<Vec<_>>());

    for i in 0..50 {
        let path = format!("{V3}/user/{}/account_data/org.example.item{i}", enc(&alice.user_id));
        assert_eq!(
            server.get(&path, &alice.access_token).await,
            (StatusCode::OK, json!({ "n": i }))
        );
    }
    assert_eq!(
        server.get(&room_data, &bob.access_token).await,
        (StatusCode::OK, json!({ "pinned": true }))
    );
    assert_eq!(
        server.get(&topic, &bob.access_token).await,
        (StatusCode::OK, json!({ "topic": "kept" }))
    );
    assert_eq!(
        server.call(Method::GET, &displayname, None, None).await,
        (StatusCode::OK, json!({ "displayname": "Bobby" }))
    );
    // Sessions and membership too.
    let (status, json) = server.get(&format!("{V3}/joined_rooms"), &bob.access_token).await;
    assert_eq!((status, json), (StatusCode::OK, json!({ "joined_rooms": [room] })));
}

// ---------------------------------------------------------------------------------------------
// The HTTP surface

#[tokio::test]
async fn unknown_endpoints_and_wrong_methods_are_unrecognized() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let token = Some(alice.access_token.as_str());
    let not_found = [
        (Method::GET, "/"),
        (Method::GET, "/nothing/here"),
        (Method::GET, "/_matrix/client/v3/no_such_endpoint"),
        (Method::GET, "/_matrix/client/v3/login/sso/redirect"),
        (Method::GET, "/_matrix/client/v1/auth_metadata"),
        (Method::GET, "/_matrix/client/v3/account/whoami/extra"),
    ];
    for (method, path) in not_found {
        let got = server.call(method.clone(), path, token, None).await;
        assert_error(&got, StatusCode::NOT_FOUND, "M_UNRECOGNIZED");
    }
    let wrong_method = [
        (Method::POST, format!("{V3}/account/whoami")),
        (Method::DELETE, format!("{V3}/login")),
        (Method::PUT, "/_matrix/client/versions".to_owned()),
        (Method::GET, format!("{V3}/logout")),
        (Method::GET, format!("{V3}/register")),
        (Method::PATCH, format!("{V3}/devices")),
        (Method::GET, format!("{V3}/rooms/{}/send/m.room.message/t1", enc("!r:localhost"))),
    ];
    for (method, path) in wrong_method {
        let got = server.call(method.clone(), &path, token, Some(json!({}))).await;
        assert_error(&got, StatusCode::METHOD_NOT_ALLOWED, "M_UNRECOGNIZED");
    }
}

#[tokio::test]
async fn bodies_over_the_limit_are_too_large() {
    let config = "server_name = \"localhost\"\n[limits]\nmax_request_bytes = 4096\n";
    let server = TestServer::start_with_config(config, &["--registration", "open"]).await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let send = format!("{V3}/rooms/{}/send/m.room.message/big1", enc(&room));

    // Just under the limit is served; over it is refused before it is parsed.
    let under = json!({ "msgtype": "m.text", "body": "x".repeat(3500) });
    assert_eq!(server.put(&send, &alice.access_token, under).await.0, StatusCode::OK);
    let over = json!({ "msgtype": "m.text", "body": "x".repeat(5000) });
    let path = format!("{V3}/rooms/{}/send/m.room.message/big2", enc(&room));
    assert_error(
        &server.put(&path, &alice.access_token, over).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "M_TOO_LARGE",
    );
    let huge = vec![b'{'; 200_000];
    let got = server.call_raw(Method::POST, &format!("{V3}/login"), None, huge).await;
    assert_error(&got, StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE");
    // The refused message was not stored.
    let (status, json) = server
        .get(&format!("{V3}/rooms/{}/messages?dir=b&limit=50", enc(&room)), &alice.access_token)
        .await;
    assert_eq!(status, StatusCode::OK);
    let messages =
        json["chunk"].as_array().unwrap().iter().filter(|e| e["type"] == "m.room.message").count();
    assert_eq!(messages, 1, "{json}");

    // The default limit is 1 MiB.
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let body = json!({ "k": "y".repeat(1024 * 1024) });
    let path = format!("{V3}/user/{}/account_data/org.example.big", enc(&alice.user_id));
    assert_error(
        &server.put(&path, &alice.access_token, body).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "M_TOO_LARGE",
    );
    let body = json!({ "k": "y".repeat(1000 * 1000) });
    assert_eq!(server.put(&path, &alice.access_token, body).await.0, StatusCode::OK);
}

#[track_caller]
fn assert_cors(headers: &reqwest::header::HeaderMap) {
    let get = |name: header::HeaderName| {
        headers.get(&name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
    };
    assert_eq!(get(header::ACCESS_CONTROL_ALLOW_ORIGIN), "*", "{headers:?}");
    let methods = get(header::ACCESS_CONTROL_ALLOW_METHODS);
    for method in ["GET", "POST", "PUT", "DELETE", "OPTIONS"] {
        assert!(methods.split(',').any(|m| m.trim() == method), "{method} in {methods}");
    }
    let allowed = get(header::ACCESS_CONTROL_ALLOW_HEADERS).to_lowercase();
    for name in ["x-requested-with", "content-type", "authorization"] {
        assert!(allowed.split(',').any(|h| h.trim() == name), "{name} in {allowed}");
    }
}

#[tokio::test]
async fn every_response_carries_cors_headers_and_preflights_succeed() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let send = |method: Method, path: &str, token: Option<&str>| {
        let mut request = server
            .http
            .request(method, server.url(path))
            .header(header::ORIGIN, "https://app.element.io");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let whoami = format!("{V3}/account/whoami");
    for (method, path, token, status) in [
        (Method::GET, "/_matrix/client/versions", None, StatusCode::OK),
        (Method::GET, whoami.as_str(), Some(alice.access_token.as_str()), StatusCode::OK),
        (Method::GET, whoami.as_str(), None, StatusCode::UNAUTHORIZED),
        (Method::GET, "/_matrix/client/v3/unknown", None, StatusCode::NOT_FOUND),
        (Method::POST, whoami.as_str(), None, StatusCode::METHOD_NOT_ALLOWED),
        (Method::GET, "/.well-known/matrix/client", None, StatusCode::NOT_FOUND),
    ] {
        let response = send(method.clone(), path, token).await.unwrap();
        assert_eq!(response.status(), status, "{method} {path}");
        assert_cors(response.headers());
        let content_type = response.headers().get(header::CONTENT_TYPE).unwrap().to_str().unwrap();
        assert!(content_type.starts_with("application/json"), "{method} {path}: {content_type}");
    }

    // Preflights need no token, on any served path.
    let room_send = format!("{V3}/rooms/{}/send/m.room.message/t1", enc("!abc:localhost"));
    for path in [whoami.as_str(), "/_matrix/client/v3/login", room_send.as_str()] {
        let response = server
            .http
            .request(Method::OPTIONS, server.url(path))
            .header(header::ORIGIN, "https://app.element.io")
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization, content-type")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "OPTIONS {path}");
        assert_cors(response.headers());
    }
}

#[tokio::test]
async fn versions_and_capabilities_describe_the_server() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;

    let (status, json) = server.call(Method::GET, "/_matrix/client/versions", None, None).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let versions: Vec<&str> =
        json["versions"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(!versions.is_empty());
    assert!(versions.contains(&"v1.1"), "{versions:?}");
    for version in &versions {
        let minor = version.strip_prefix("v1.").and_then(|m| m.parse::<u32>().ok());
        assert!(minor.is_some(), "a v1.x version: {version}");
        // v1.3 brought `/relations` and v1.4 `/threads`, which are not served yet.
        assert!(minor < Some(3), "{version} is advertised but its endpoints are not served");
    }
    assert!(
        json["unstable_features"].is_object() || json.get("unstable_features").is_none(),
        "{json}"
    );
    // The same with a token.
    let with_token = server.get("/_matrix/client/versions", &alice.access_token).await;
    assert_eq!(with_token, (status, json));

    let missing = server.call(Method::GET, &format!("{V3}/capabilities"), None, None).await;
    assert_error(&missing, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    let (status, json) = server.get(&format!("{V3}/capabilities"), &alice.access_token).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let room_versions = &json["capabilities"]["m.room_versions"];
    assert_eq!(room_versions["default"], "12", "{json}");
    for version in ["10", "11", "12"] {
        assert_eq!(room_versions["available"][version], "stable", "{json}");
    }
    let capabilities = &json["capabilities"];
    assert_eq!(capabilities["m.3pid_changes"]["enabled"], false, "3pids are not served: {json}");
    assert_ne!(capabilities["m.change_password"]["enabled"], false, "{json}");
    // And the default really is what createRoom uses.
    let room = server.create_room(&alice, json!({})).await;
    let path = format!("{V3}/rooms/{}/state/m.room.create/", enc(&room));
    let (status, create) = server.get(&path, &alice.access_token).await;
    assert_eq!(status, StatusCode::OK, "{create}");
    assert_eq!(create["room_version"], "12");
}

#[tokio::test]
async fn well_known_documents_are_served_only_when_configured() {
    let server = TestServer::start().await;
    for path in ["/.well-known/matrix/client", "/.well-known/matrix/server"] {
        let got = server.call(Method::GET, path, None, None).await;
        assert_error(&got, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    }

    let config = "server_name = \"example.org\"\n\
                  [well_known]\n\
                  client = \"https://matrix.example.org\"\n\
                  server = \"matrix.example.org:443\"\n";
    let server = TestServer::start_with_config(config, &[]).await;
    let got = server.call(Method::GET, "/.well-known/matrix/client", None, None).await;
    assert_eq!(
        got,
        (StatusCode::OK, json!({ "m.homeserver": { "base_url": "https://matrix.example.org" } }))
    );
    let got = server.call(Method::GET, "/.well-known/matrix/server", None, None).await;
    assert_eq!(got, (StatusCode::OK, json!({ "m.server": "matrix.example.org:443" })));

    // A server entry that is not a server name is a configuration error.
    let temp = tempfile::tempdir().unwrap();
    std::fs::write(
        temp.path().join("hearth.toml"),
        "server_name = \"example.org\"\n[well_known]\nserver = \"https://bad\"\n",
    )
    .unwrap();
    let stderr = serve_fails(temp.path(), &[]).await;
    assert!(stderr.contains("[well_known] server"), "{stderr}");
}
