"""The nexus_memory package against a real nexusd: every method, error mapping,
threads, a large batch, a restart mid-session."""

from __future__ import annotations

import sys
import threading
import time
from array import array
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

import nexus_memory
from nexus_memory import Client

from conftest import Daemon


def test_remember_then_recall_returns_typed_hits(client: Client) -> None:
    created = datetime(2025, 1, 2, 3, 4, 5, 6000, tzinfo=timezone.utc)
    memory_id = client.remember(
        "the quokka smiles at the ferry",
        namespace="hits",
        key="quokka",
        tags={"topic": "animals"},
        importance=2.0,
        created_at=created,
    )
    hits = client.recall("quokka ferry", namespace="hits", k=3)
    assert [h.id for h in hits] == [memory_id]
    hit = hits[0]
    assert hit.text == "the quokka smiles at the ferry"
    assert hit.namespace == "hits"
    assert hit.tags == {"topic": "animals"}
    assert hit.created_at == created
    assert hit.created_at_ms == int(created.timestamp() * 1000)
    assert hit.score > 0 and "lexical" in hit.why
    with pytest.raises(AttributeError):
        hit.text = "changed"  # type: ignore[misc]


def test_same_key_is_the_same_memory(client: Client) -> None:
    first = client.remember("first version", namespace="keys", key="k")
    second = client.remember("second version", namespace="keys", key="k")
    assert first == second
    assert [h.text for h in client.recall("version", namespace="keys")] == ["second version"]


def test_naive_datetime_is_utc_and_int_is_epoch_ms(client: Client) -> None:
    naive = datetime(2024, 6, 1, 12, 0, 0)
    client.remember("naive time note", namespace="times", created_at=naive)
    client.remember("int time note", namespace="times", created_at=1_000)
    aware = naive.replace(tzinfo=timezone.utc)
    hits = client.recall("note", namespace="times", since=aware - timedelta(seconds=1), until=aware + timedelta(seconds=1))
    assert [h.text for h in hits] == ["naive time note"]
    assert [h.text for h in client.recall("note", namespace="times", until=2_000)] == ["int time note"]
    assert len(client.recall("note", namespace="times", since=0)) == 2


def test_tags_filter_recall(client: Client) -> None:
    client.remember("tagged apple pie", namespace="tags", tags={"kind": "dessert"})
    client.remember("untagged apple juice", namespace="tags")
    hits = client.recall("apple", namespace="tags", tags={"kind": "dessert"})
    assert [h.text for h in hits] == ["tagged apple pie"]


def test_recall_answer_names_request_and_route_and_feedback_accepts_it(client: Client) -> None:
    memory_id = client.remember("feedback target text", namespace="fb")
    answer = client.recall_answer("feedback target", namespace="fb", route="smart")
    assert answer.route == "smart" and answer.route_reason
    assert answer.degraded is None
    assert [h.id for h in answer.hits] == [memory_id]
    client.feedback(memory_id, answer.request_id, useful=True)
    client.feedback(memory_id, answer.request_id, False)


def test_forget_by_ids_and_namespace(client: Client) -> None:
    ids = client.remember_many([("forget me one", "fg"), ("forget me two", "fg"), ("keep me", "fg2")])
    assert client.forget([ids[0]]) == 1
    assert [h.id for h in client.recall("forget me", namespace="fg")] == [ids[1]]
    assert client.forget(namespace="fg") == 1
    assert client.recall("forget me", namespace="fg") == []
    assert len(client.recall("keep", namespace="fg2")) == 1
    with pytest.raises(ValueError):
        client.forget()


def test_stats_and_health(client: Client) -> None:
    client.remember("counted", namespace="stats")
    stats = client.stats()
    assert isinstance(stats, dict) and all(isinstance(v, int) for v in stats.values())
    assert stats["memories"] >= 1
    health = client.health()
    assert health.serving and health.write_failure is None and health.degraded == []
    assert health.version == nexus_memory.__version__


def test_vectors_as_numpy_list_and_buffer(client: Client) -> None:
    ns = "vectors"
    a = client.remember("north", namespace=ns, vector=np.array([1, 0, 0, 0], dtype=np.float32))
    b = client.remember("east", namespace=ns, vector=[0.0, 1.0, 0.0, 0.0])
    c = client.remember("up", namespace=ns, vector=array("f", [0.0, 0.0, 1.0, 0.0]))
    d = client.remember("float64 west", namespace=ns, vector=np.array([-1, 0, 0, 0], dtype=np.float64))
    assert len({a, b, c, d}) == 4
    hits = client.recall(None, namespace=ns, vector=np.array([0, 0.9, 0.1, 0], dtype=np.float32), k=1)
    assert [h.id for h in hits] == [b]
    hits = client.recall(None, namespace=ns, vector=[0.9, 0.0, 0.1, 0.0], k=1)
    assert [h.id for h in hits] == [a]
    with pytest.raises(TypeError):
        client.remember("bad vector", namespace=ns, vector="not a vector")


def test_wrong_vector_dimension_is_invalid_request(client: Client) -> None:
    client.remember("dimension setter", namespace="dim", vector=[1.0, 0.0, 0.0, 0.0])
    with pytest.raises(nexus_memory.InvalidRequest, match="dimension"):
        client.remember("wrong dimension", namespace="dim", vector=[1.0, 2.0])


def test_unknown_recall_in_feedback_is_not_found(client: Client) -> None:
    memory_id = client.remember("nf", namespace="nf")
    with pytest.raises(nexus_memory.NotFound, match="request id") as raised:
        client.feedback(memory_id, 123_456_789)
    assert isinstance(raised.value, nexus_memory.NexusError)


def test_bad_route_is_value_error(client: Client) -> None:
    with pytest.raises(ValueError, match="unknown route"):
        client.recall("x", route="fastest")  # type: ignore[arg-type]


def test_daemon_not_running(tmp_path: Path) -> None:
    with pytest.raises(nexus_memory.DaemonNotRunning, match="is it running"):
        Client(str(tmp_path / "nobody.sock"))


def test_socket_from_environment(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXUS_SOCKET", daemon.socket)
    with Client() as c:
        assert str(c.socket) == daemon.socket
        assert c.health().serving


def test_context_manager_closes(daemon: Daemon) -> None:
    with Client(daemon.socket) as c:
        c.remember("inside with", namespace="ctx")
    with pytest.raises(nexus_memory.NexusError, match="closed"):
        c.recall("inside", namespace="ctx")


def test_remember_many_of_10000_in_order(client: Client) -> None:
    items = [{"text": f"bulk memory number {i}", "namespace": "bulk", "key": f"k{i}"} for i in range(10_000)]
    ids = client.remember_many(items)
    assert len(ids) == 10_000 and len(set(ids)) == 10_000
    hits = client.recall("bulk memory number 9999", namespace="bulk", k=1)
    assert hits[0].id == ids[9999]
    assert client.remember_many([]) == []


def test_remember_many_accepts_strings_tuples_dicts(client: Client) -> None:
    ids = client.remember_many(["plain string item", ("tuple item", "mix"), {"text": "dict item", "namespace": "mix", "tags": {"t": "1"}}])
    assert len(ids) == 3
    assert len(client.recall("plain string", namespace="default")) >= 1
    assert {h.text for h in client.recall("item", namespace="mix")} == {"tuple item", "dict item"}
    with pytest.raises(TypeError):
        client.remember_many([42])  # type: ignore[list-item]


def test_eight_threads_share_a_client(client: Client) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(50):
                client.remember(f"thread {n} note {i}", namespace=f"thr{n}")
                assert client.recall(f"thread {n} note", namespace=f"thr{n}", k=1)
        except BaseException as e:  # collected and re-raised in the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for n in range(8):
        assert len(client.recall("note", namespace=f"thr{n}", k=100)) == 50


def test_gil_is_released_during_a_blocking_call(client: Client) -> None:
    # The counter thread gives the GIL back after every tick (sleep(0)), and a
    # long switch interval stops the interpreter from taking the GIL from the
    # main thread by force: so the counter ticks during remember_many only if
    # the call releases the GIL itself.
    items = [(f"gil probe {i}", "gil") for i in range(10_000)]
    ticks = 0
    started = threading.Event()
    done = threading.Event()

    def count() -> None:
        nonlocal ticks
        started.set()
        while not done.is_set():
            ticks += 1
            time.sleep(0)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(30.0)
    try:
        counter = threading.Thread(target=count)
        counter.start()
        started.wait()
        before = ticks
        client.remember_many(items)
        during = ticks - before
        done.set()
        counter.join()
    finally:
        sys.setswitchinterval(interval)
    assert during > 100, during


def test_daemon_restart_gives_daemon_gone_then_reconnect_works(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    d.start()
    try:
        c = Client(d.socket)
        kept = c.remember("survives the restart", namespace="restart")
        d.stop()
        with pytest.raises(nexus_memory.DaemonGone, match="reconnect"):
            c.recall("survives", namespace="restart")
        with pytest.raises(nexus_memory.DaemonNotRunning):
            c.reconnect()
        d.start()
        c.reconnect()
        assert [h.id for h in c.recall("survives", namespace="restart")] == [kept]
        c.close()
    finally:
        d.stop()
