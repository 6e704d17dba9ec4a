"""corral's overhead per MCP call, beside the bare SDK client calling the same server in the same run.

One server (``_mcp_echo_server.py``: a tool that returns its argument) is started once per transport, and
two clients call it in alternating batches, so load on the machine hits both alike:

- ``sdk``: the official SDK's ``Client.call_tool`` (what any MCP client pays: JSON-RPC, the transport, the
  server's own time);
- ``corral``: an :class:`~corral.tools.MCPTool` of an :class:`~corral.tools.MCPToolset` — argument validation
  against the server's schema, the per-server bulkhead, timeout and circuit breaker, the watch for a dead or
  garbled connection, and the result rendered and bounded for the model.

The two clients call in turn, call by call; ``overhead = corral - sdk`` from the medians of all calls (and the
range of the per-batch differences, to show the noise). Under load that difference is mostly noise, so the
bench also times corral's own work directly: each corral call's time minus the time it spent inside the SDK's
``call_tool`` (median). Target: <= 1 ms of overhead per call.

Usage: ``python bench/mcp.py [CALLS_PER_BATCH] [BATCHES]`` (default 50 x 20, per transport and client).
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

# This file is named mcp.py: drop its directory from the path, or ``import mcp`` would import it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import httpx  # noqa: E402
from mcp import Client, StdioServerParameters  # noqa: E402

from corral.tools import HttpServer, MCPToolset, StdioServer  # noqa: E402

SERVER = str(Path(__file__).with_name("_mcp_echo_server.py"))


async def timed(call: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started


async def compare(name: str, sdk: Client, corral: MCPToolset, calls: int, batches: int) -> None:
    (echo,) = await corral.tools()
    args = {"text": "hello"}
    assert await echo.call(args) == "hello"
    assert (await sdk.call_tool("echo", args)).content[0].text == "hello"  # type: ignore[union-attr]
    # Time spent inside the SDK's call_tool during corral's calls: the rest is corral's own work.
    inside: list[float] = []
    client = corral._connection.client if corral._connection is not None else None
    assert client is not None
    sdk_call = client.call_tool

    async def measured(*a: Any, **k: Any) -> Any:
        started = time.perf_counter()
        try:
            return await sdk_call(*a, **k)
        finally:
            inside.append(time.perf_counter() - started)

    client.call_tool = measured  # type: ignore[method-assign]
    sdk_times, corral_times, batch_sdk, batch_corral, own = [], [], [], [], []
    for _ in range(batches):
        pair_sdk, pair_corral = [], []
        for _ in range(calls):  # call by call in turn, so a burst of load hits both clients alike
            pair_sdk.append(await timed(lambda: sdk.call_tool("echo", args)))
            pair_corral.append(await timed(lambda: echo.call(args)))
            own.append(pair_corral[-1] - inside[-1])
        sdk_times += pair_sdk
        corral_times += pair_corral
        batch_sdk.append(statistics.median(pair_sdk))
        batch_corral.append(statistics.median(pair_corral))
    sdk_us, corral_us = statistics.median(sdk_times) * 1e6, statistics.median(corral_times) * 1e6
    spread = sorted((c - s) * 1e6 for s, c in zip(batch_sdk, batch_corral, strict=True))
    print(
        f"{name:6} sdk {sdk_us:7.0f} us/call   corral {corral_us:7.0f} us/call   "
        f"overhead {corral_us - sdk_us:+5.0f} us/call (batch medians {spread[0]:+.0f}..{spread[-1]:+.0f})   "
        f"ratio {corral_us / sdk_us:.2f}   corral's own work {statistics.median(own) * 1e6:.0f} us/call"
    )


async def stdio(calls: int, batches: int) -> None:
    # -P: the server script's directory (bench/, which holds mcp.py) must not shadow the SDK.
    params = StdioServerParameters(command=sys.executable, args=["-P", SERVER])
    toolset = MCPToolset(StdioServer(sys.executable, ("-P", SERVER)), name="echo")
    async with Client(params) as sdk, toolset:
        await compare("stdio", sdk, toolset, calls, batches)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def http(url: str, calls: int, batches: int) -> None:
    toolset = MCPToolset(HttpServer(url), name="echo")
    async with Client(url) as sdk, toolset:
        await compare("http", sdk, toolset, calls, batches)


def with_http_server(calls: int, batches: int) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    server = subprocess.Popen([sys.executable, "-P", SERVER, str(port)])
    try:
        for _ in range(200):
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        asyncio.run(http(url, calls, batches))
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    batches = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    load = os.getloadavg()[0]
    print(f"MCP call overhead: {calls} calls x {batches} batches per client, medians; load {load:.1f}")
    asyncio.run(stdio(calls, batches))
    with_http_server(calls, batches)


if __name__ == "__main__":
    main()
