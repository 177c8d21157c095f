"""pysignalr (an independent SignalR client) acting as a nodelink node, driven by
tests/tests/interop_pysignalr.rs. Prints one JSON object per line for every thing the test checks.

Environment: NL_HUB_URL, NL_TOKEN, NL_NODE_ID, NL_HEARTBEAT_MS (default 1000)."""

import asyncio
import json
import os
import sys
import time

from pysignalr.client import SignalRClient
from pysignalr.messages import CompletionMessage

HUB_URL = os.environ["NL_HUB_URL"]
TOKEN = os.environ["NL_TOKEN"]
NODE_ID = os.environ["NL_NODE_ID"]
HEARTBEAT_S = int(os.environ.get("NL_HEARTBEAT_MS", "1000")) / 1000
STARTED = time.monotonic()


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}), flush=True)


async def main():
    client = SignalRClient(HUB_URL, headers={"Authorization": f"Bearer {TOKEN}"})

    async def on_hello(message: CompletionMessage):
        emit("ready", protocolVersion=(message.result or {}).get("protocolVersion"))

    async def on_ack(message: CompletionMessage):
        emit("acknowledged", error=message.error)

    async def on_error(message: CompletionMessage):
        emit("error", message=str(message.error))

    async def on_open():
        await client.send(
            "Hello",
            [{"nodeId": NODE_ID, "protocolVersions": ["2026-04-01", "2025-10-01"]}],
            on_invocation=on_hello,
        )

    async def on_execute(arguments):
        command = arguments[0]
        emit("execute", commandId=command["commandId"], command=command["command"])
        result = {
            "commandId": command["commandId"],
            "ok": True,
            "result": command.get("params") or {},
            "durationMs": 0,
        }
        if "protocolVersion" in command:
            result["protocolVersion"] = command["protocolVersion"]
        await client.send("CommandResult", [result], on_invocation=on_ack)

    async def on_close():
        emit("closed")

    client.on_open(on_open)
    client.on_close(on_close)
    client.on_error(on_error)
    client.on("ExecuteCommand", on_execute)

    async def heartbeats():
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            await client.send(
                "Heartbeat",
                [
                    {
                        "nodeId": NODE_ID,
                        "status": "online",
                        "uptime": int(time.monotonic() - STARTED),
                        "platform": sys.platform,
                        "version": "pysignalr",
                        "cpuPercent": 1.0,
                        "memoryMb": 30,
                    }
                ],
            )

    await asyncio.gather(client.run(), heartbeats())


asyncio.run(main())
