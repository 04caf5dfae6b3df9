// A matrix-js-sdk client (with its Rust crypto, @matrix-org/matrix-sdk-crypto-wasm) that a Rust
// test in tests/sdk drives line by line, so that Hearth is tested against a second real client.
//
// Usage: node client.mjs HOMESERVER_URL USER_LOCALPART PASSWORD
//
// It logs in, starts end-to-end encryption with an in-memory crypto store, syncs, and waits until
// the server holds its device keys. Then it reads one JSON command a line on stdin and answers
// each with one JSON line on stdout:
//
//   {"command":"join","room_id":R}            -> {"event":"joined","room_id":R}
//   {"command":"wait_for_message","room_id":R,"body":B}
//                                             -> {"event":"decrypted","event_id":E,"sender":S}
//   {"command":"send","room_id":R,"body":B}   -> {"event":"sent","event_id":E}
//
// The first line it prints is {"event":"ready","user_id":U,"device_id":D}. A failure prints
// {"event":"error","message":M} and exits with status 1; the end of stdin stops the client and
// exits with status 0. Everything else (the SDK's own log) goes to stderr, never to stdout, so
// stdout carries the protocol alone. Waits are bounded by WAIT_MS; the Rust side has its own
// timeouts too.

import { createInterface } from "node:readline";

// Before the SDK loads: its logger writes to the console, and the console's log goes to stdout.
for (const level of ["log", "info", "debug", "trace"]) {
  console[level] = console.error;
}

const sdk = await import("matrix-js-sdk");

/** How long any wait (first sync, keys on the server, a room, a message) may take. */
const WAIT_MS = 60_000;

/** How often a wait looks again. */
const POLL_MS = 100;

/** Writes one protocol line. */
function reply(message) {
  process.stdout.write(JSON.stringify(message) + "\n");
}

/** Polls `check` until it returns a value other than undefined, or fails after WAIT_MS. */
async function waitFor(what, check) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const value = await check();
    if (value !== undefined) {
      return value;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${WAIT_MS} ms waiting for ${what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

/** Logs in with a password and returns a client with that access token and device. */
async function login(baseUrl, localpart, password) {
  const anonymous = sdk.createClient({ baseUrl });
  const session = await anonymous.loginRequest({
    type: "m.login.password",
    identifier: { type: "m.id.user", user: localpart },
    password,
    initial_device_display_name: "hearth js-sdk test",
  });
  return sdk.createClient({
    baseUrl,
    userId: session.user_id,
    deviceId: session.device_id,
    accessToken: session.access_token,
  });
}

/** Starts crypto and the sync loop; resolves after the first sync. */
async function start(client) {
  await client.initRustCrypto({ useIndexedDB: false });
  const synced = new Promise((resolve, reject) => {
    client.on(sdk.ClientEvent.Sync, (state, _previous, data) => {
      if (state === sdk.SyncState.Prepared) {
        resolve();
      } else if (state === sdk.SyncState.Error) {
        reject(new Error(`sync failed: ${data?.error}`));
      }
    });
  });
  await client.startClient({ initialSyncLimit: 50 });
  await synced;
}

/** Waits until `/keys/query` on the server shows this device's keys (the SDK uploads them). */
async function waitForOwnDeviceKeys(client) {
  const userId = client.getUserId();
  const deviceId = client.getDeviceId();
  await waitFor("the device keys on the server", async () => {
    const response = await client.http.authedRequest(sdk.Method.Post, "/keys/query", undefined, {
      device_keys: { [userId]: [] },
    });
    return response.device_keys?.[userId]?.[deviceId] ? true : undefined;
  });
}

/** The room once the client knows it as joined and encrypted. */
async function joinedEncryptedRoom(client, roomId) {
  return waitFor(`room ${roomId} joined and encrypted`, () => {
    const room = client.getRoom(roomId);
    const joined = room?.getMyMembership() === sdk.KnownMembership.Join;
    return joined && room.hasEncryptionStateEvent() ? room : undefined;
  });
}

async function join(client, { room_id: roomId }) {
  await client.joinRoom(roomId);
  await joinedEncryptedRoom(client, roomId);
  return { event: "joined", room_id: roomId };
}

/** Waits for an `m.room.message` with `body` that arrived encrypted and was decrypted. */
async function waitForMessage(client, { room_id: roomId, body }) {
  const room = await joinedEncryptedRoom(client, roomId);
  const event = await waitFor(`a decrypted message "${body}" in ${roomId}`, () =>
    room
      .getLiveTimeline()
      .getEvents()
      .find(
        (event) =>
          event.isEncrypted() &&
          !event.isDecryptionFailure() &&
          event.getType() === "m.room.message" &&
          event.getContent().body === body,
      ),
  );
  return { event: "decrypted", event_id: event.getId(), sender: event.getSender() };
}

/** Sends a text message to an encrypted room (the SDK encrypts it, as the room says). */
async function send(client, { room_id: roomId, body }) {
  await joinedEncryptedRoom(client, roomId);
  const { event_id: eventId } = await client.sendTextMessage(roomId, body);
  return { event: "sent", event_id: eventId };
}

const COMMANDS = { join, wait_for_message: waitForMessage, send };

/** Runs the commands on stdin in order until stdin ends. */
async function serve(client) {
  for await (const line of createInterface({ input: process.stdin })) {
    if (line.trim() === "") {
      continue;
    }
    const command = JSON.parse(line);
    const handler = COMMANDS[command.command];
    if (!handler) {
      throw new Error(`unknown command: ${line}`);
    }
    reply(await handler(client, command));
  }
}

async function main() {
  const [baseUrl, localpart, password] = process.argv.slice(2);
  if (!password) {
    throw new Error("usage: node client.mjs HOMESERVER_URL USER_LOCALPART PASSWORD");
  }
  const client = await login(baseUrl, localpart, password);
  await start(client);
  await waitForOwnDeviceKeys(client);
  reply({ event: "ready", user_id: client.getUserId(), device_id: client.getDeviceId() });
  await serve(client);
  client.stopClient();
}

try {
  await main();
  process.exit(0);
} catch (error) {
  reply({ event: "error", message: String(error?.stack ?? error) });
  process.exit(1);
}
