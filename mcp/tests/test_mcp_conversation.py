"""nexus-mcp driven by the official MCP Python SDK (the `mcp` package), against a real nexusd.

The acceptance test of issue 12, part 1: a client this project did not write launches
`nexus-mcp` over stdio, initializes, lists the tools, calls each of them (remember, recall,
feedback, stats, forget) and meets the failures a model will meet (bad arguments and feedback
naming an unknown recall are tool errors with isError; an unknown tool is a protocol error); plus nexus-mcp started with no daemon, and a
daemon restarted under a running nexus-mcp.

Binaries: NEXUSD_BIN (default target/debug/nexusd) and NEXUS_MCP_BIN (default
target/debug/nexus-mcp), relative paths taken from the repository root. Run with
`pytest mcp/tests` after `cargo build -p nexus-daemon -p nexus-mcp`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import pytest
from mcp import ClientSession, MCPError, StdioServerParameters, stdio_client

REPO = Path(__file__).resolve().parents[2]
TOOLS = {"remember", "recall", "forget", "feedback", "stats"}
# How long nexusd may take to start serving (a debug build loads its embedding model).
DAEMON_START_TIMEOUT_S = 60.0
# JSON-RPC "invalid params": what the SDK answers for a tool that does not exist.
INVALID_PARAMS = -32602


def binary(env: str, default: str) -> Path:
    path = Path(os.environ.get(env, default))
    if not path.is_absolute():
        path = REPO / path
    if not path.is_file():
        pytest.fail(f"{path} is missing: build it (cargo build -p nexus-daemon -p nexus-mcp) or set {env}")
    return path


@pytest.fixture(scope="session")
def nexusd_bin() -> Path:
    return binary("NEXUSD_BIN", "target/debug/nexusd")


@pytest.fixture(scope="session")
def mcp_bin() -> Path:
    return binary("NEXUS_MCP_BIN", "target/debug/nexus-mcp")


class Daemon:
    """A nexusd on a private socket and data directory."""

    def __init__(self, binary: Path, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.socket = workdir / "nexusd.sock"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.workdir / "nexusd.log", "ab")
        self.process = subprocess.Popen(
            [str(self.binary), "--socket", str(self.socket), "--data-dir", str(self.workdir / "data")],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()
        deadline = time.monotonic() + DAEMON_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"nexusd exited with {self.process.returncode}: {self.log()}")
            if self.accepts():
                return
            time.sleep(0.05)
        pytest.fail(f"nexusd did not listen on {self.socket} within {DAEMON_START_TIMEOUT_S} s: {self.log()}")

    def accepts(self) -> bool:
        if not self.socket.exists():
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(self.socket))
            except OSError:
                return False
        return True

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        path = self.workdir / "nexusd.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


@pytest.fixture
def daemon(nexusd_bin: Path) -> Iterator[Daemon]:
    # A short path of our own: a Unix socket path must stay under 108 bytes.
    workdir = Path(tempfile.mkdtemp(prefix="nexus-mcp-"))
    nexusd = Daemon(nexusd_bin, workdir)
    nexusd.start()
    try:
        yield nexusd
    finally:
        nexusd.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def session(
    mcp_bin: Path, daemon: Daemon, *extra: str, env: dict[str, str] | None = None
) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(command=str(mcp_bin), args=["--socket", str(daemon.socket), *extra], env=env)
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write, read_timeout_seconds=30) as client:
            await client.initialize()
            yield client


async def call(client: ClientSession, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """A tool call that must succeed; its JSON answer (text and structured content agree)."""
    result = await client.call_tool(tool, arguments)
    text = result.content[0].text
    assert not result.is_error, f"{tool} failed: {text}"
    answer = json.loads(text)
    assert result.structured_content == answer
    return answer


async def tool_error(client: ClientSession, tool: str, arguments: dict[str, Any]) -> str:
    """A tool call nexusd refused: the line the model reads."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error, f"{tool} succeeded: {result.content}"
    assert len(result.content) == 1
    return result.content[0].text


async def bad_arguments(client: ClientSession, tool: str, arguments: dict[str, Any]) -> str:
    """A call whose arguments cannot be used: a tool error the model can correct its call from
    (the MCP spec's input validation errors), not a protocol error; its line."""
    line = await tool_error(client, tool, arguments)
    assert line.startswith((f"invalid arguments for {tool}: ", "failed to deserialize parameters: ")), line
    return line


@pytest.mark.anyio
async def test_initialize_lists_the_five_tools_with_schemas(mcp_bin: Path, daemon: Daemon) -> None:
    params = StdioServerParameters(command=str(mcp_bin), args=["--socket", str(daemon.socket)])
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write, read_timeout_seconds=30) as client:
            init = await client.initialize()
            assert init.server_info.name == "nexus-mcp"
            assert init.capabilities.tools is not None
            assert "recall" in (init.instructions or "")
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert tool.description and len(tool.description) > 80, f"{tool.name}: say when to use it"
        assert tool.input_schema["type"] == "object"
    assert tools["remember"].description.startswith("Store a fact, preference or event worth recalling")
    remember = tools["remember"].input_schema
    assert remember["required"] == ["text"]
    assert set(remember["properties"]) == {"text", "namespace", "key", "tags", "importance", "created_at"}
    assert "RFC 3339" in remember["properties"]["created_at"]["description"]
    recall = tools["recall"].input_schema
    assert recall["required"] == ["query"]
    assert set(recall["properties"]) == {"query", "k", "namespace", "tags", "since", "until", "route"}
    assert recall["properties"]["k"]["maximum"] == 50
    schema_text = json.dumps(recall)
    for route in ["auto", "cache", "smart", "full", "max"]:
        assert f'"{route}"' in schema_text
    assert set(tools["feedback"].input_schema["required"]) == {"memory_id", "recall_id", "useful"}
    assert set(tools["forget"].input_schema["properties"]) == {"ids", "namespace"}
    # Hosts that confirm destructive calls can tell which tool deletes and which only read.
    assert tools["forget"].annotations.destructive_hint is True
    assert tools["recall"].annotations.read_only_hint is True
    assert tools["stats"].annotations.read_only_hint is True
    assert tools["remember"].annotations.destructive_hint is False


@pytest.mark.anyio
async def test_a_conversation_remembers_recalls_judges_counts_and_forgets(mcp_bin: Path, daemon: Daemon) -> None:
    async with session(mcp_bin, daemon, "--namespace", "agent-a") as client:
        stored = await call(
            client,
            "remember",
            {
                "text": "The user's cat is called Miso",
                "tags": {"who": "user", "topic": "pets"},
                "key": "user-cat",
                "importance": 2.0,
                "created_at": "2024-05-01T12:00:00Z",
            },
        )
        assert stored["namespace"] == "agent-a", "the --namespace default applies"
        memory_id = stored["id"]
        await call(client, "remember", {"text": "The user prefers tea to coffee"})

        found = await call(client, "recall", {"query": "what is the name of the user's cat", "k": 3})
        assert isinstance(found["recall_id"], int) and found["route"] in {"cache", "smart", "full", "max"}
        best = next(result for result in found["results"] if result["id"] == memory_id)
        assert best["text"] == "The user's cat is called Miso"
        assert best["tags"] == {"who": "user", "topic": "pets"}
        assert best["created_at"] == "2024-05-01T12:00:00Z"
        assert isinstance(best["score"], float) and best["reason"]
        assert "vector" not in best and "why" not in best, "no vectors, no factor arrays"

        filtered = await call(
            client, "recall", {"query": "cat", "tags": {"topic": "pets"}, "since": "2024-05-01", "until": "2024-05-01"}
        )
        assert [result["id"] for result in filtered["results"]] == [memory_id]
        elsewhere = await call(client, "recall", {"query": "cat", "namespace": "agent-b"})
        assert elsewhere["results"] == [], "another namespace holds none of agent-a's memories"

        judged = await call(
            client, "feedback", {"memory_id": memory_id, "recall_id": found["recall_id"], "useful": True}
        )
        assert judged == {"recorded": True, "memory_id": memory_id, "recall_id": found["recall_id"], "useful": True}

        stats = await call(client, "stats", {})
        assert stats["memories"] == 2 and stats["namespaces"] == 1
        assert sum(stats["recalls_by_route"].values()) >= 3
        assert stats["uptime_s"] >= 0 and "cache_hit_rate" in stats

        assert await call(client, "forget", {"ids": [memory_id]}) == {"forgotten": 1}
        after = await call(client, "recall", {"query": "what is the name of the user's cat", "k": 5})
        assert memory_id not in [result["id"] for result in after["results"]]
        assert (await call(client, "stats", {}))["memories"] == 1


@pytest.mark.anyio
async def test_the_default_namespace_comes_from_the_flag_else_the_environment(mcp_bin: Path, daemon: Daemon) -> None:
    async with session(mcp_bin, daemon, env={"NEXUS_NAMESPACE": "from-env"}) as client:
        assert (await call(client, "remember", {"text": "x"}))["namespace"] == "from-env"
        assert (await call(client, "remember", {"text": "y", "namespace": "mine"}))["namespace"] == "mine"
    async with session(mcp_bin, daemon, "--namespace", "from-flag", env={"NEXUS_NAMESPACE": "from-env"}) as client:
        assert (await call(client, "remember", {"text": "z"}))["namespace"] == "from-flag"
    async with session(mcp_bin, daemon) as client:
        assert (await call(client, "remember", {"text": "w"}))["namespace"] == "default"


@pytest.mark.anyio
async def test_failures_are_tool_errors_with_the_fix_or_nexusds_message(mcp_bin: Path, daemon: Daemon) -> None:
    async with session(mcp_bin, daemon) as client:
        since = await bad_arguments(client, "recall", {"query": "cat", "since": "last tuesday"})
        assert "`since` is \"last tuesday\"" in since and "RFC 3339" in since
        assert "`k` is 51" in await bad_arguments(client, "recall", {"query": "cat", "k": 51})
        route = await bad_arguments(client, "recall", {"query": "cat", "route": "fast"})
        assert "unknown variant `fast`" in route and "`smart`" in route
        nothing = await bad_arguments(client, "forget", {})
        assert "forget needs what to delete" in nothing and "nothing was deleted" in nothing
        assert "`txt`" in await bad_arguments(client, "remember", {"txt": "typo"})

        stored = await call(client, "remember", {"text": "The user's dog is called Rex"})
        unknown = await tool_error(client, "feedback", {"memory_id": stored["id"], "recall_id": 999999, "useful": True})
        assert unknown.startswith("feedback failed: no recent recall has request id 999999"), unknown

        with pytest.raises(MCPError) as raised:
            await client.call_tool("summarize", {})
        assert raised.value.code == INVALID_PARAMS and "not found" in raised.value.message

        still = await call(client, "recall", {"query": "dog"})
        assert [result["id"] for result in still["results"]] == [stored["id"]], "the session survives its errors"


@pytest.mark.anyio
async def test_a_restarted_nexusd_is_reconnected_to(mcp_bin: Path, daemon: Daemon) -> None:
    async with session(mcp_bin, daemon) as client:
        stored = await call(client, "remember", {"text": "The user lives in Lisbon"})
        daemon.stop()
        down = await tool_error(client, "recall", {"query": "where does the user live"})
        assert f"nexusd is not running on {daemon.socket}" in down, down
        daemon.start()
        found = await call(client, "recall", {"query": "where does the user live"})
        assert stored["id"] in [result["id"] for result in found["results"]]


def test_without_nexusd_it_exits_2_with_one_line_saying_how_to_start_it(mcp_bin: Path) -> None:
    missing = Path(tempfile.mkdtemp(prefix="nexus-mcp-")) / "nexusd.sock"
    try:
        run = subprocess.run(
            [str(mcp_bin), "--socket", str(missing)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        shutil.rmtree(missing.parent, ignore_errors=True)
    assert run.returncode == 2
    assert run.stdout == "", "stdout is the protocol"
    assert run.stderr == (
        f"nexus-mcp: nexusd is not running on {missing}: "
        f"start it with `nexusd --socket {missing}` (or `systemctl start nexusd`)\n"
    )
