"""The persister conformance suite: every test runs against every persister, on asyncio and trio.

Persister-specific tests (file names, SQLite sharing) follow the shared ones. The PostgreSQL
persister runs against the server at ``$PLUMIO_POSTGRES_DSN`` (default: the one
``.ci/postgres.sh`` starts), each test in a table of its own, dropped afterwards; its tests
skip, saying what is missing (psycopg or a server), when it can't be used.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings

from corelib.persistence._checkpoint import (
    Checkpoint,
    CheckpointEncodeError,
    CheckpointNotFoundError,
    CheckpointVersionError,
    CorruptCheckpointError,
    PersisterClosedError,
)
from corelib.persistence._file import FilePersister
from corelib.persistence._journal import _PUT, JournalPersister, _ticket
from corelib.persistence._persisters import InMemoryPersister, PersistedCheckpoint, Persister
from corelib.persistence._postgres import PostgresPersister, postgres_problem
from corelib.persistence._sqlite import SqlitePersister

from ._checkpoint_helpers import (
    assert_same_checkpoint,
    checkpoints,
    rich_checkpoint,
    user_codec,
)

KINDS = ["memory", "file", "sqlite", "postgres", "journal"]

POSTGRES_DSN = os.environ.get(
    "PLUMIO_POSTGRES_DSN", "postgresql://plumio:plumio@127.0.0.1:5432/plumio"
)


@functools.cache
def postgres_skip_reason() -> str | None:
    """Why the PostgreSQL tests skip (psycopg or a server missing), or ``None``; asked once."""
    problem = postgres_problem(POSTGRES_DSN)
    if problem is not None and problem.startswith("no PostgreSQL server"):
        problem += " (start one with .ci/postgres.sh, or set PLUMIO_POSTGRES_DSN)"
    return problem


def postgres_persister(**options: Any) -> PostgresPersister:
    """A PostgresPersister on a new table of its own, or a skip saying what is missing."""
    reason = postgres_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    options.setdefault("table", f"plumio_test_{uuid.uuid4().hex}")
    return PostgresPersister(POSTGRES_DSN, **options)


def drop_table(persister: PostgresPersister) -> None:
    import psycopg
    import psycopg.sql

    with psycopg.connect(persister.dsn, autocommit=True) as connection:
        connection.execute(
            psycopg.sql.SQL("DROP TABLE IF EXISTS {}").format(
                psycopg.sql.Identifier(persister.table)
            )
        )


def make_persister(kind: str, tmp_path: Path) -> Persister:
    codec = user_codec()
    if kind == "memory":
        return InMemoryPersister(codec=codec)
    if kind == "file":
        return FilePersister(tmp_path / "checkpoints", codec=codec)
    if kind == "postgres":
        return postgres_persister(codec=codec)
    if kind == "journal":
        return JournalPersister(tmp_path / "checkpoints.journal", codec=codec)
    return SqlitePersister(tmp_path / "checkpoints.sqlite", codec=codec)


@pytest.fixture(params=KINDS)
async def persister(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Persister]:
    made = make_persister(request.param, tmp_path)
    try:
        async with made as persister:
            yield persister
    finally:
        if isinstance(made, PostgresPersister):
            await anyio.to_thread.run_sync(drop_table, made)


def overwrite_stored(persister: Persister, pid: str, tag: str | None, data: bytes) -> None:
    """Replace the stored bytes of one checkpoint behind the persister's back."""
    if isinstance(persister, InMemoryPersister):
        persister._checkpoints[pid][tag] = data
    elif isinstance(persister, FilePersister):
        persister.path_for(pid, tag).write_bytes(data)
    elif isinstance(persister, JournalPersister):
        persister._commit_blocking(_ticket([(_PUT, pid, tag, data)]))  # appended: it wins
    elif isinstance(persister, PostgresPersister):
        import psycopg
        import psycopg.sql

        with psycopg.connect(persister.dsn, autocommit=True) as pg_connection:
            pg_cursor = pg_connection.execute(
                psycopg.sql.SQL("UPDATE {} SET data = %s WHERE pid = %s AND tag = %s").format(
                    psycopg.sql.Identifier(persister.table)
                ),
                (data, pid.encode(), b"" if tag is None else tag.encode()),
            )
            assert pg_cursor.rowcount == 1
    else:
        assert isinstance(persister, SqlitePersister)
        with sqlite3.connect(persister.path) as connection:
            cursor = connection.execute(
                "UPDATE checkpoints SET data = ? WHERE pid = ? AND tag = ?",
                (data, pid, "" if tag is None else tag),
            )
            assert cursor.rowcount == 1
        connection.close()


def checkpoint(pid: str = "p1", **fields: Any) -> Checkpoint:
    fields = {"pid": pid, "process_class": "m:C", "state": "running", **fields}
    return Checkpoint(**fields)


def key(pid: str, tag: str | None = None) -> PersistedCheckpoint:
    return PersistedCheckpoint(pid, tag)


# --- the shared contract ------------------------------------------------------------------------


async def test_round_trip_of_every_field_kind(persister: Persister) -> None:
    original = rich_checkpoint("pid-rich")
    await persister.save_checkpoint(original)
    await persister.save_checkpoint(original, "tagged")
    assert_same_checkpoint(await persister.load_checkpoint("pid-rich"), original)
    assert_same_checkpoint(await persister.load_checkpoint("pid-rich", "tagged"), original)


async def test_load_returns_a_fresh_copy(persister: Persister) -> None:
    state_data = {"items": [1, 2]}
    await persister.save_checkpoint(checkpoint(state_data=state_data))
    state_data["items"].append(3)  # changing the saved object afterwards changes nothing
    first = await persister.load_checkpoint("p1")
    first.state_data["items"].append(4)
    second = await persister.load_checkpoint("p1")
    assert second.state_data == {"items": [1, 2]}
    assert first.state_data is not second.state_data


async def test_overwrite_same_tag(persister: Persister) -> None:
    await persister.save_checkpoint(checkpoint(state="created"), "t")
    await persister.save_checkpoint(checkpoint(state="waiting"), "t")
    assert (await persister.load_checkpoint("p1", "t")).state == "waiting"
    assert await persister.get_checkpoints() == [key("p1", "t")]


async def test_several_tags_per_pid_and_listing(persister: Persister) -> None:
    assert await persister.get_checkpoints() == []
    for tag in ["b", None, "a"]:
        await persister.save_checkpoint(checkpoint("p2", state_data={"tag": tag}), tag)
    await persister.save_checkpoint(checkpoint("p1"), "z")
    assert await persister.get_checkpoints() == [
        key("p1", "z"),
        key("p2"),
        key("p2", "a"),
        key("p2", "b"),
    ]
    assert await persister.get_process_checkpoints("p2") == [
        key("p2"),
        key("p2", "a"),
        key("p2", "b"),
    ]
    assert await persister.get_process_checkpoints("p1") == [key("p1", "z")]
    assert await persister.get_process_checkpoints("p3") == []
    for tag in ["b", None, "a"]:
        assert (await persister.load_checkpoint("p2", tag)).state_data == {"tag": tag}


async def test_delete(persister: Persister) -> None:
    for pid in ["p1", "p2"]:
        for tag in [None, "a", "b"]:
            await persister.save_checkpoint(checkpoint(pid), tag)
    await persister.delete_checkpoint("p1", "a")
    await persister.delete_checkpoint("p1")
    assert await persister.get_process_checkpoints("p1") == [key("p1", "b")]
    # Deleting what isn't there is not an error.
    await persister.delete_checkpoint("p1", "a")
    await persister.delete_checkpoint("nobody")
    await persister.delete_process_checkpoints("nobody")
    await persister.delete_process_checkpoints("p2")
    assert await persister.get_checkpoints() == [key("p1", "b")]
    with pytest.raises(CheckpointNotFoundError):
        await persister.load_checkpoint("p2", "a")


async def test_missing_checkpoint(persister: Persister) -> None:
    with pytest.raises(CheckpointNotFoundError, match=r"^no checkpoint of pid 'p1'$") as info:
        await persister.load_checkpoint("p1")
    assert (info.value.pid, info.value.tag) == ("p1", None)
    await persister.save_checkpoint(checkpoint("p1"))
    with pytest.raises(CheckpointNotFoundError, match=r"^no checkpoint of pid 'p1' tag 'x'$"):
        await persister.load_checkpoint("p1", "x")
    with pytest.raises(LookupError):
        await persister.load_checkpoint("p2")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "invalid JSON (Expecting value: line 1 column 1 (char 0))"),
        (b'{"version":1,"pid":"p2","process_cl', "invalid JSON (Unterminated string"),
        (b"\x00\x00garbage", "invalid JSON (Expecting value"),
        (b'{"version":1,"pid":"p2","process_class":"m:C"}', "missing field 'state'"),
        (
            b'{"version":1,"pid":"p2","process_class":"m:C","state":"created",'
            b'"inputs":{"!type":"nope","value":1}}',
            "unknown type tag 'nope'",
        ),
        (
            b'{"version":1,"pid":"someone-else","process_class":"m:C","state":"created"}',
            "it holds the checkpoint of pid 'someone-else'",
        ),
    ],
)
async def test_corruption_is_isolated(persister: Persister, data: bytes, problem: str) -> None:
    for pid in ["p1", "p2", "p3"]:
        for tag in [None, "t"]:
            await persister.save_checkpoint(checkpoint(pid, state_data={"pid": pid}), tag)
    overwrite_stored(persister, "p2", "t", data)
    with pytest.raises(
        CorruptCheckpointError,
        match=f"^checkpoint of pid 'p2' tag 't' is corrupt: {re.escape(problem)}",
    ) as info:
        await persister.load_checkpoint("p2", "t")
    assert (info.value.pid, info.value.tag) == ("p2", "t")
    assert len(await persister.get_checkpoints()) == 6
    for pid in ["p1", "p2", "p3"]:
        for tag in [None, "t"]:
            if (pid, tag) != ("p2", "t"):
                assert (await persister.load_checkpoint(pid, tag)).state_data == {"pid": pid}
    # A corrupt checkpoint can still be replaced and deleted.
    await persister.save_checkpoint(checkpoint("p2"), "t")
    await persister.load_checkpoint("p2", "t")
    overwrite_stored(persister, "p2", "t", b"junk")
    await persister.delete_checkpoint("p2", "t")
    assert len(await persister.get_checkpoints()) == 5


async def test_version_from_the_future(persister: Persister) -> None:
    await persister.save_checkpoint(checkpoint("x", version=7))
    await persister.save_checkpoint(checkpoint("x", version=7), "t")
    await persister.save_checkpoint(checkpoint("y"))
    with pytest.raises(
        CheckpointVersionError,
        match=r"^checkpoint of pid 'x' has schema version 7, newer than this plumio \(1\)$",
    ):
        await persister.load_checkpoint("x")
    with pytest.raises(CheckpointVersionError, match=r"^checkpoint of pid 'x' tag 't' has schema"):
        await persister.load_checkpoint("x", "t")
    await persister.load_checkpoint("y")


ODD_KEYS = [
    "a/b",
    "..",
    ".",
    "x y",
    "A",
    "a",
    "%2F",
    "/",
    "a\\b",
    "p.q",
    "-",
    "_",
    "ünïcødé",
    "\U0001f642",
    "tab\there",
    "nul\x00",
    "con",
    "a.json",
    ".tmp",
]


async def test_odd_pids_and_tags(persister: Persister) -> None:
    expected = []
    for i, odd in enumerate(ODD_KEYS):
        await persister.save_checkpoint(checkpoint(odd, state_data={"i": i}))
        await persister.save_checkpoint(checkpoint(odd, state_data={"i": -i}), odd)
        expected += [key(odd), key(odd, odd)]
    listed = await persister.get_checkpoints()
    assert listed == sorted(expected, key=lambda k: (k.pid, k.tag is not None, k.tag or ""))
    for i, odd in enumerate(ODD_KEYS):
        assert (await persister.load_checkpoint(odd)).state_data == {"i": i}
        assert (await persister.load_checkpoint(odd, odd)).state_data == {"i": -i}
        assert await persister.get_process_checkpoints(odd) == [key(odd), key(odd, odd)]
    await persister.delete_process_checkpoints("a")
    assert await persister.get_process_checkpoints("A") == [key("A"), key("A", "A")]


@pytest.mark.parametrize(
    ("pid", "tag", "message"),
    [
        ("", None, "pid must be a non-empty string, got ''"),
        (3, None, "pid must be a non-empty string, got 3"),
        ("p", "", "tag must be a non-empty string or None, got ''"),
        ("p", 5, "tag must be a non-empty string or None, got 5"),
        ("\ud800", None, "pid '\\ud800' is not valid unicode"),
        ("p", "\udfff", "tag '\\udfff' is not valid unicode"),
    ],
)
async def test_invalid_keys(persister: Persister, pid: Any, tag: Any, message: str) -> None:
    pattern = f"^{re.escape(message)}$"
    with pytest.raises(ValueError, match=pattern):
        await persister.save_checkpoint(checkpoint(pid), tag)
    with pytest.raises(ValueError, match=pattern):
        await persister.load_checkpoint(pid, tag)
    with pytest.raises(ValueError, match=pattern):
        await persister.delete_checkpoint(pid, tag)
    if tag is None:
        with pytest.raises(ValueError, match=pattern):
            await persister.get_process_checkpoints(pid)
        with pytest.raises(ValueError, match=pattern):
            await persister.delete_process_checkpoints(pid)


async def test_unencodable_checkpoint_stores_nothing(persister: Persister) -> None:
    await persister.save_checkpoint(checkpoint(state_data={"v": 1}))
    with pytest.raises(
        CheckpointEncodeError,
        match=r"^can't encode outputs\['x'\]: object of type object is not registered$",
    ):
        await persister.save_checkpoint(checkpoint(outputs={"x": object()}))
    assert (await persister.load_checkpoint("p1")).state_data == {"v": 1}


async def test_closed_persister(persister: Persister) -> None:
    await persister.save_checkpoint(checkpoint())
    await persister.aclose()
    await persister.aclose()  # idempotent
    name = type(persister).__name__
    calls: list[Callable[[], Any]] = [
        lambda: persister.save_checkpoint(checkpoint()),
        lambda: persister.load_checkpoint("p1"),
        persister.get_checkpoints,
        lambda: persister.get_process_checkpoints("p1"),
        lambda: persister.delete_checkpoint("p1"),
        lambda: persister.delete_process_checkpoints("p1"),
    ]
    for call in calls:
        with pytest.raises(PersisterClosedError, match=f"^{name} is closed$"):
            await call()


async def test_concurrent_saves_and_loads(persister: Persister) -> None:
    async def save_and_load(i: int) -> None:
        for round_ in range(3):
            await persister.save_checkpoint(checkpoint(f"p{i}", state_data={"r": round_}), "t")
            assert (await persister.load_checkpoint(f"p{i}", "t")).state_data == {"r": round_}

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(save_and_load, i)
    assert len(await persister.get_checkpoints()) == 20


async def test_cancelled_save_is_all_or_nothing(persister: Persister) -> None:
    # A cancelled save either stored the whole checkpoint or nothing (I/O that has started in
    # a worker thread is allowed to finish).
    original = rich_checkpoint("p1")
    with anyio.CancelScope() as scope:
        scope.cancel()
        await persister.save_checkpoint(original)
    assert scope.cancelled_caught
    with contextlib.suppress(CheckpointNotFoundError):
        assert_same_checkpoint(await persister.load_checkpoint("p1"), original)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(original=checkpoints)
async def test_random_checkpoints_round_trip_exactly(
    persister: Persister, original: Checkpoint
) -> None:
    await persister.save_checkpoint(original, "h")
    assert_same_checkpoint(await persister.load_checkpoint(original.pid, "h"), original)
    assert key(original.pid, "h") in await persister.get_process_checkpoints(original.pid)
    await persister.delete_process_checkpoints(original.pid)


def test_persister_is_an_enforced_abc() -> None:
    with pytest.raises(TypeError, match=r"abstract"):
        Persister()  # type: ignore[abstract]

    class Partial(Persister):
        async def aclose(self) -> None:
            pass

    with pytest.raises(TypeError, match=r"abstract"):
        Partial()  # type: ignore[abstract]


@pytest.mark.parametrize("kind", KINDS)
def test_repr(kind: str, tmp_path: Path) -> None:
    repr(make_persister(kind, tmp_path))  # smoke test


# --- storage outlives the persister (file and sqlite) -------------------------------------------


@pytest.mark.parametrize("kind", ["file", "sqlite", "journal"])
async def test_checkpoints_survive_reopening(kind: str, tmp_path: Path) -> None:
    original = rich_checkpoint("p1")
    async with make_persister(kind, tmp_path) as first:
        await first.save_checkpoint(original, "t")
    async with make_persister(kind, tmp_path) as second:
        assert await second.get_checkpoints() == [key("p1", "t")]
        assert_same_checkpoint(await second.load_checkpoint("p1", "t"), original)


@pytest.mark.parametrize("kind", ["file", "sqlite"])
async def test_two_persisters_share_storage(kind: str, tmp_path: Path) -> None:
    async with make_persister(kind, tmp_path) as one, make_persister(kind, tmp_path) as two:
        await one.save_checkpoint(checkpoint("p1"))
        await two.save_checkpoint(checkpoint("p2"))
        assert await one.get_checkpoints() == await two.get_checkpoints() == [key("p1"), key("p2")]
        await two.delete_checkpoint("p1")
        with pytest.raises(CheckpointNotFoundError):
            await one.load_checkpoint("p1")


@pytest.mark.parametrize("durable", [True, False])
@pytest.mark.parametrize("kind", ["file", "sqlite"])
async def test_durable_flag(kind: str, durable: bool, tmp_path: Path) -> None:
    cls = FilePersister if kind == "file" else SqlitePersister
    target = tmp_path / ("folder" if kind == "file" else "db.sqlite")
    async with cls(target, durable=durable) as persister:
        await persister.save_checkpoint(checkpoint())
        await persister.delete_checkpoint("p1")
        await persister.save_checkpoint(checkpoint(), "t")
        assert await persister.get_checkpoints() == [key("p1", "t")]


# --- file persister specifics -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pid", "tag", "name"),
    [
        ("p1", None, "p1.json"),
        ("p1", "t", "p1.t.json"),
        ("a/b", None, "a%2Fb.json"),
        ("..", "..", "%2E%2E.%2E%2E.json"),
        ("x y", None, "x%20y.json"),
        ("Ab", "ü", "%41b.%C3%BC.json"),
        ("6f1c-uuid_like", None, "6f1c-uuid_like.json"),
    ],
)
def test_file_names(tmp_path: Path, pid: str, tag: str | None, name: str) -> None:
    persister = FilePersister(tmp_path)
    assert persister.path_for(pid, tag) == tmp_path / name
    assert persister.folder == tmp_path


def test_file_name_too_long(tmp_path: Path) -> None:
    persister = FilePersister(tmp_path)
    persister.path_for("x" * 250)
    with pytest.raises(ValueError, match=r"make a file name longer than 255 bytes$"):
        persister.path_for("x" * 251)
    with pytest.raises(ValueError, match=r"make a file name longer than 255 bytes$"):
        persister.path_for("é" * 50)


async def test_foreign_and_temporary_files_are_ignored(tmp_path: Path) -> None:
    async with FilePersister(tmp_path) as persister:
        await persister.save_checkpoint(checkpoint("p1"))
        for name in [
            ".0123456789abcdef.tmp",  # a crashed save
            "README",
            "notes.txt",
            "a.b.c.json",  # too many parts
            "%2f.json",  # not canonical (lower-case hex)
            "A.json",  # upper case is always escaped
            "%ZZ.json",
            ".json",
            "p1..json",
            "%FF.json",  # not UTF-8
        ]:
            (tmp_path / name).write_bytes(b"{}")
        (tmp_path / "sub.json").mkdir()
        assert await persister.get_checkpoints() == [key("p1")]
        assert await persister.get_process_checkpoints("p1") == [key("p1")]


async def test_remove_stale_temp_files(tmp_path: Path) -> None:
    async with FilePersister(tmp_path) as persister:
        await persister.save_checkpoint(checkpoint("p1"))
        old = tmp_path / ".aaaaaaaaaaaaaaaa.tmp"
        new = tmp_path / ".bbbbbbbbbbbbbbbb.tmp"
        old.write_bytes(b"x")
        new.write_bytes(b"x")
        an_hour_ago = time.time() - 3700
        os.utime(old, (an_hour_ago, an_hour_ago))
        assert await persister.remove_stale_temp_files() == 1
        assert not old.exists()
        assert new.exists()
        assert await persister.remove_stale_temp_files(min_age=0) == 1
        assert sorted(os.listdir(tmp_path)) == ["p1.json"]


async def test_failed_write_leaves_no_temp_file(tmp_path: Path) -> None:
    async with FilePersister(tmp_path) as persister:
        # The target name is taken by a non-empty directory, so the final rename fails.
        (tmp_path / "p1.json").mkdir()
        (tmp_path / "p1.json" / "x").write_bytes(b"")
        with pytest.raises(OSError):
            await persister.save_checkpoint(checkpoint("p1"))
        assert sorted(os.listdir(tmp_path)) == ["p1.json"]


# --- sqlite persister specifics -----------------------------------------------------------------


async def test_sqlite_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    async with SqlitePersister(path) as persister:
        await persister.save_checkpoint(checkpoint())
        assert persister.path == str(path)
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    connection.close()


# --- postgres persister specifics ---------------------------------------------------------------


@pytest.fixture
async def postgres() -> AsyncIterator[PostgresPersister]:
    made = postgres_persister()
    try:
        async with made as persister:
            yield persister
    finally:
        await anyio.to_thread.run_sync(drop_table, made)


def test_postgres_skip_reason_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    extra = "pip install 'plumio[postgres]'"
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "psycopg", None)  # as if not installed: import fails
        assert postgres_problem(POSTGRES_DSN) == f"psycopg 3 is not installed: {extra}"
        with pytest.raises(
            ImportError, match=re.escape(f"needs psycopg 3 (the postgres extra): {extra}")
        ):
            PostgresPersister(POSTGRES_DSN)
    if postgres_skip_reason() == f"psycopg 3 is not installed: {extra}":
        pytest.skip("psycopg 3 is not installed, so a missing server can't be told apart")
    # port 1 on loopback: nothing listens there; the password is not shown
    problem = postgres_problem("postgresql://u:secret@127.0.0.1:1/db")
    assert problem is not None
    assert problem.startswith("no PostgreSQL server answers at ")
    assert "127.0.0.1" in problem
    assert "secret" not in problem


async def test_postgres_two_threads_share_one_persister(postgres: PostgresPersister) -> None:
    # Workers on two threads, each with its own event loop (asyncio and trio), save and load
    # through the same persister at once; each loop group-commits its own saves.
    errors: list[BaseException] = []

    async def worker(name: str) -> None:
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for i in range(25):
                    tg.start_soon(save_and_load, f"{name}-{i}")

    async def save_and_load(pid: str) -> None:
        for round_ in range(4):
            await postgres.save_checkpoint(checkpoint(pid, state_data={"r": round_}))
            assert (await postgres.load_checkpoint(pid)).state_data == {"r": round_}

    def run(name: str, backend: str) -> None:
        try:
            anyio.run(worker, name, backend=backend)
        except BaseException as exc:  # reported by the test below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(name, name)) for name in ["asyncio", "trio"]]
    with anyio.fail_after(30):
        for thread in threads:
            thread.start()
        for thread in threads:
            await anyio.to_thread.run_sync(thread.join, abandon_on_cancel=True)
    assert errors == []
    stored = await postgres.get_checkpoints()
    assert stored == sorted(
        (key(f"{name}-{i}") for name in ["asyncio", "trio"] for i in range(25)),
        key=lambda k: k.pid,
    )


async def test_postgres_concurrent_saves_are_all_stored(postgres: PostgresPersister) -> None:
    # Many saves at once are written in a few batches; every one is stored, and saves to
    # the same key keep the order they were called in.
    async def save(i: int) -> None:
        await postgres.save_checkpoint(checkpoint(f"p{i % 50}", state_data={"i": i}), "t")

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(save, i)
        assert len(await postgres.get_checkpoints()) == 50
        await postgres.save_many(
            [(f"m{i}", None, postgres.codec.encode(checkpoint(f"m{i}"))) for i in range(3)]
        )
        assert await postgres.get_process_checkpoints("m2") == [key("m2")]


@pytest.mark.parametrize("durable", [True, False])
async def test_postgres_durable_flag_and_sharing(durable: bool) -> None:
    one = postgres_persister(durable=durable)
    try:
        async with one, PostgresPersister(POSTGRES_DSN, table=one.table) as two:
            await one.save_checkpoint(checkpoint("p1"))
            await two.save_checkpoint(checkpoint("p2"), "t")
            assert (
                await one.get_checkpoints()
                == await two.get_checkpoints()
                == [
                    key("p1"),
                    key("p2", "t"),
                ]
            )
            await two.delete_checkpoint("p1")
            with pytest.raises(CheckpointNotFoundError):
                await one.load_checkpoint("p1")
        # the table outlives the persisters
        async with PostgresPersister(POSTGRES_DSN, table=one.table) as three:
            assert await three.get_checkpoints() == [key("p2", "t")]
    finally:
        await anyio.to_thread.run_sync(drop_table, one)


def test_postgres_connections_must_be_positive() -> None:
    # checked before psycopg is imported: this runs without it too
    with pytest.raises(ValueError, match=r"^connections must be >= 1, got 0$"):
        PostgresPersister(POSTGRES_DSN, connections=0)
