// The official @microsoft/signalr client acting as a nodelink node (docs/protocol.md section 5),
// driven by tests/tests/interop_signalr_js.rs. It prints one JSON object per line on stdout for
// every thing the test checks ({"event": ...}), and exits when the gateway closes it for good.
//
// Configuration (environment):
//   NL_HUB_URL        http://127.0.0.1:PORT/hubs/node
//   NL_TOKEN          the node token ({nodeId}.{secret})
//   NL_NODE_ID        the node id (the token's prefix)
//   NL_PROTOCOL       json | msgpack
//   NL_SKIP_NEGOTIATION  1: WebSockets only, no negotiate request
//   NL_TOKEN_IN       header (accessTokenFactory: Authorization: Bearer) | query (?access_token=)
//   NL_STATEFUL       1: withStatefulReconnect()
//   NL_HEARTBEAT_MS   heartbeat interval (default 1000)

import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";

const env = process.env;
const nodeId = env.NL_NODE_ID;
const token = env.NL_TOKEN;
const heartbeatMs = Number(env.NL_HEARTBEAT_MS || 1000);
const started = Date.now();

function emit(event, fields = {}) {
  process.stdout.write(JSON.stringify({ event, ...fields }) + "\n");
}

let url = env.NL_HUB_URL;
const options = {};
if (env.NL_TOKEN_IN === "query") {
  url += (url.includes("?") ? "&" : "?") + "access_token=" + encodeURIComponent(token);
} else {
  options.accessTokenFactory = () => token;
}
if (env.NL_SKIP_NEGOTIATION === "1") {
  options.skipNegotiation = true;
  options.transport = signalR.HttpTransportType.WebSockets;
}

let builder = new signalR.HubConnectionBuilder()
  .withUrl(url, options)
  .configureLogging(signalR.LogLevel.Warning);
if (env.NL_PROTOCOL === "msgpack") {
  builder = builder.withHubProtocol(new MessagePackHubProtocol());
}
if (env.NL_STATEFUL === "1") {
  builder = builder.withStatefulReconnect();
}
const connection = builder.build();

// Each command the tests send, and what this node answers. Results go back with invoke(), so
// the gateway's void Completion (the acknowledgment, section 5.4) is awaited.
const PART = 1_000_000; // characters per part of a chunked result, under the 1 MiB field cap

async function answer(command) {
  const base = { commandId: command.commandId, protocolVersion: command.protocolVersion };
  switch (command.command) {
    case "echo":
      return [{ ...base, ok: true, result: command.params ?? {}, durationMs: 0 }];
    case "big": {
      // A result over 1 MiB: one string, cut into parts (docs/protocol.md section 6.2).
      const size = command.params?.size ?? 1_500_000;
      const text = "x".repeat(size);
      const parts = [];
      for (let index = 0, offset = 0; offset < size; index++, offset += PART) {
        const last = offset + PART >= size;
        const part = {
          commandId: command.commandId,
          ok: true,
          result: { data: text.slice(offset, offset + PART) },
          partIndex: index,
          isLast: last,
        };
        if (index === 0) {
          part.protocolVersion = command.protocolVersion;
          part.durationMs = 1;
        }
        parts.push(part);
      }
      return parts;
    }
    default:
      return [
        {
          ...base,
          ok: false,
          error: { code: "platform_unsupported", message: `no command ${command.command}` },
        },
      ];
  }
}

connection.on("ExecuteCommand", async (command) => {
  emit("execute", { commandId: command.commandId, command: command.command });
  try {
    for (const result of await answer(command)) {
      await connection.invoke("CommandResult", result);
    }
    emit("answered", { commandId: command.commandId });
  } catch (error) {
    emit("error", { where: "CommandResult", message: String(error) });
  }
});

connection.on("RefreshScopes", async (scopes) => {
  emit("scopes", { scopes });
  await connection.send("ScopeChanged", scopes);
});

let revoked = false;
connection.on("RevokeAccess", (reason) => {
  revoked = true;
  emit("revoked", { reason });
});

connection.onclose((error) => {
  emit("closed", { error: error ? String(error) : null, revoked });
  clearInterval(timer);
  // Give stdout a moment, then end: a revoked node must not reconnect.
  setTimeout(() => process.exit(0), 50);
});

function heartbeat() {
  return connection
    .send("Heartbeat", {
      nodeId,
      status: "online",
      uptime: Math.floor((Date.now() - started) / 1000),
      platform: "linux",
      version: "signalr-js-" + signalR.VERSION,
      cpuPercent: 1.5,
      memoryMb: 40,
      capabilities: { commands: ["echo", "big"], slots: 4 },
    })
    .catch((error) => emit("error", { where: "Heartbeat", message: String(error) }));
}

let timer;
try {
  await connection.start();
  const ack = await connection.invoke("Hello", {
    nodeId,
    protocolVersions: ["2026-04-01", "2025-10-01"],
    capabilities: { commands: ["echo", "big"], slots: 4 },
  });
  emit("ready", { protocolVersion: ack?.protocolVersion ?? null });
  await heartbeat();
  timer = setInterval(heartbeat, heartbeatMs);
} catch (error) {
  emit("failed", { message: String(error) });
  process.exit(2);
}
