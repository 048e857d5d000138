"""The store against real TinyDB files in a temp folder: format, indexes, atomicity, durability."""

from __future__ import annotations

import gc
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
import weakref
from datetime import UTC, datetime, timedelta

import pytest
from tinydb import TinyDB, where

import store as store_module
from schemas import ENTERPRISE_USER_URN, USER_RESOURCE
from scimlang import compile_filter, parse_filter, text_terms
from store import (
    DATABASE_FILE,
    AtomicJSONStorage,
    CorruptDataError,
    DataFolderBusy,
    NotFoundError,
    PreconditionFailed,
    Store,
    StoreClosed,
    StoreFailed,
    StoreUnavailable,
    UniquenessError,
    _parse_snapshot_lines,
    compact_json,
    new_id,
    shown_user_version,
    snapshot_lines,
    utc_now,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def user(user_name: str, **extra) -> dict:
    return {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": user_name,
        "displayName": user_name,
        **extra,
    }


@pytest.fixture
def store(tmp_path):
    store = Store(str(tmp_path))
    yield store
    store.close()


@pytest.fixture
def directory(store):
    return store.create_directory("Contoso")


def test_after_close_the_file_is_a_tinydb_database_keyed_by_our_ids(store, directory, tmp_path):
    created = store.create_user(directory["id"], user("ana@contoso.example"), "test")
    store.close()
    database = TinyDB(str(tmp_path / DATABASE_FILE))
    stored = database.table("users").get(where("id") == created["id"])
    assert stored["resource"]["userName"] == "ana@contoso.example"
    assert stored["directory_id"] == directory["id"]
    actions = [entry["action"] for entry in database.table("audit").all()]
    assert actions == ["directory.create", "user.create"]


def test_new_ids_are_random_uuids_in_their_usual_text_form():
    ids = [new_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    for text in ids:
        parsed = uuid.UUID(text)
        assert (str(parsed), parsed.version, parsed.variant) == (text, 4, uuid.RFC_4122)


def test_utc_now_is_rfc3339_utc_with_milliseconds_and_keeps_up_with_the_clock():
    for _ in range(3):  # each second's text is formatted once, then reused within the second
        before = datetime.now(UTC) - timedelta(milliseconds=1)  # utc_now drops the microseconds
        stamp = utc_now()
        after = datetime.now(UTC)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp)
        assert before <= datetime.fromisoformat(stamp.replace("Z", "+00:00")) <= after
        time.sleep(0.6)


def test_user_name_is_unique_per_directory_ignoring_case(store, directory):
    store.create_user(directory["id"], user("ana@contoso.example"), "test")
    with pytest.raises(UniquenessError):
        store.create_user(directory["id"], user("ANA@Contoso.Example"), "test")
    other = store.create_directory("Fabrikam")
    store.create_user(other["id"], user("ana@contoso.example"), "test")
    assert store.count_users(directory["id"]) == 1


def test_lookups_by_user_name_and_external_id_use_the_indexes(store, directory):
    ana = store.create_user(directory["id"], user("ana@contoso.example", externalId="X1"), "t")
    store.create_user(directory["id"], user("bo@contoso.example", externalId="X1"), "t")
    total, found = store.search_users(
        directory["id"], equal_terms={"username": "ANA@contoso.example"}
    )
    assert (total, found[0]["id"]) == (1, ana["id"])
    total, _ = store.search_users(directory["id"], equal_terms={"externalid": "X1"})
    assert total == 2
    total, _ = store.search_users(directory["id"], equal_terms={"externalid": "x1"})
    assert total == 0  # externalId is caseExact (RFC 7643 §3.1)


def test_an_update_refiles_every_indexed_value_it_changes_and_only_those(store, directory):
    directory_id = directory["id"]
    boss = store.create_user(directory_id, user("boss@contoso.example"), "t")
    ana = store.create_user(directory_id, user("ana@contoso.example", externalId="X1"), "t")

    def update(**changes):
        store.update_user(directory_id, ana["id"], lambda current: {**current, **changes}, "t")

    def found(**terms):
        return [u["id"] for u in store.search_users(directory_id, equal_terms=terms)[1]]

    update(active=False)  # nothing indexed changes: every lookup still finds her
    assert found(username="ana@contoso.example") == found(externalid="X1") == [ana["id"]]
    update(externalId="X2")
    assert (found(externalid="X1"), found(externalid="X2")) == ([], [ana["id"]])
    update(displayName="Ana Maria")
    by_text = store.search_users(  # the folded names narrow the scan: they must be current
        directory_id,
        matches=lambda resource: "maria" in resource["displayName"].casefold(),
        text_terms=[("displayName", "co", "maria")],
    )
    assert [u["id"] for u in by_text[1]] == [ana["id"]]
    update(**{ENTERPRISE_USER_URN: {"manager": {"value": boss["id"]}}})
    assert [r["id"] for r in store.direct_reports(directory_id, boss["id"])] == [ana["id"]]


def test_renaming_a_user_moves_the_index_entry(store, directory):
    ana = store.create_user(directory["id"], user("ana@contoso.example"), "t")
    store.replace_user(directory["id"], ana["id"], user("anna@contoso.example"), "t")
    assert (
        store.search_users(directory["id"], equal_terms={"username": "ana@contoso.example"})[0] == 0
    )
    store.create_user(directory["id"], user("ana@contoso.example"), "t")  # the old name is free


def test_callers_get_copies_not_stored_state(store, directory):
    ana = store.create_user(
        directory["id"], user("ana@contoso.example", name={"givenName": "A"}), "t"
    )
    fetched = store.get_user(directory["id"], ana["id"])
    fetched["name"]["givenName"] = "changed behind the store's back"
    assert store.get_user(directory["id"], ana["id"])["name"]["givenName"] == "A"


def test_a_user_is_invisible_from_another_directory(store, directory):
    ana = store.create_user(directory["id"], user("ana@contoso.example"), "t")
    other = store.create_directory("Fabrikam")
    assert store.get_user(other["id"], ana["id"]) is None
    with pytest.raises(NotFoundError):
        store.delete_user(other["id"], ana["id"], "t")


def folder_contents(folder) -> dict:
    return {path.name: path.read_bytes() for path in folder.iterdir()}


def test_a_failing_change_writes_nothing(store, directory, tmp_path):
    ana = store.create_user(directory["id"], user("ana@contoso.example"), "t")
    before = folder_contents(tmp_path)

    def refuse(_current):
        raise ValueError("validation failed")

    with pytest.raises(ValueError):
        store.update_user(directory["id"], ana["id"], refuse, "t")
    assert folder_contents(tmp_path) == before


def test_concurrent_writers_lose_nothing(store, directory):
    ana = store.create_user(directory["id"], user("ana@contoso.example", title="0"), "t")

    def bump(_):
        for _ in range(20):
            store.update_user(
                directory["id"], ana["id"], lambda u: {**u, "title": str(int(u["title"]) + 1)}, "t"
            )

    threads = [threading.Thread(target=bump, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.get_user(directory["id"], ana["id"])["title"] == "80"


def test_a_second_owner_is_refused_and_a_view_reads_but_cannot_write(store, directory, tmp_path):
    store.create_user(directory["id"], user("ana@contoso.example"), "t")
    with pytest.raises(DataFolderBusy):
        Store(str(tmp_path))
    view = Store.open_or_view(str(tmp_path))
    assert view.read_only and view.count_users(directory["id"]) == 1
    with pytest.raises(DataFolderBusy):
        view.create_user(directory["id"], user("bo@contoso.example"), "t")
    view.close()


def test_delete_directory_takes_its_users_and_keys(store, directory):
    store.create_user(directory["id"], user("ana@contoso.example"), "t")
    store.create_key(directory["id"], "k", "hash", "t")
    assert store.delete_directory(directory["id"], "t") == 1
    assert store.list_keys() == []
    assert store.get_directory(directory["id"]) is None


WRITER = """
import sys
from store import Store
store = Store(sys.argv[1])
directory = store.create_directory("Crash")
for n in range(100000):
    created = store.create_user(directory["id"], {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": f"user{n}@crash.example", "displayName": "x" * 500}, "writer")
    print(created["id"], flush=True)
"""


def test_kill_9_mid_write_loses_no_acknowledged_user(tmp_path):
    """Every user whose create returned survives SIGKILL, and the file is never torn."""
    for round_number in range(3):
        data_dir = tmp_path / f"round{round_number}"
        process = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(data_dir)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        acknowledged = []
        deadline = time.monotonic() + 0.5 + round_number * 0.3
        while time.monotonic() < deadline:
            acknowledged.append(process.stdout.readline().strip())
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        reopened = Store(str(data_dir))
        directory = reopened.list_directories()[0]
        for user_id in acknowledged:
            assert reopened.get_user(directory["id"], user_id) is not None
        reopened.close()
        users = TinyDB(str(data_dir / DATABASE_FILE)).table("users")
        assert len(users) >= len(acknowledged)
        assert len(acknowledged) > 0


def test_deleting_a_manager_clears_the_reports_manager(store, directory):
    enterprise = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
    boss = store.create_user(directory["id"], user("boss@contoso.example"), "t")
    ana = store.create_user(
        directory["id"],
        user("ana@contoso.example", **{enterprise: {"manager": {"value": boss["id"]}}}),
        "t",
    )
    assert [r["id"] for r in store.direct_reports(directory["id"], boss["id"])] == [ana["id"]]
    store.delete_user(directory["id"], boss["id"], "t")
    after = store.get_user(directory["id"], ana["id"])
    assert enterprise not in after
    assert after["meta"]["version"] != ana["meta"]["version"]


def journal_files(folder) -> list:
    return sorted(folder.glob("journal-*.jsonl"))


def killed_after_one_user(tmp_path) -> tuple[dict, dict, object]:
    """A store with one user, left as a kill would leave it (no compaction): the directory,
    the user, and the journal that alone holds them."""
    store = Store(str(tmp_path))
    directory = store.create_directory("Contoso")
    ana = store.create_user(directory["id"], user("ana@contoso.example"), "t")
    store._folder.release()
    return directory, ana, journal_files(tmp_path)[-1]


def test_a_torn_last_journal_line_is_cut_and_the_rest_kept(tmp_path):
    directory, ana, journal = killed_after_one_user(tmp_path)
    with open(journal, "ab") as handle:
        handle.write(b'{"seq": 99, "changes": [["users", "7", {"id": "half')
    reopened = Store(str(tmp_path))
    assert reopened.get_user(directory["id"], ana["id"])["userName"] == "ana@contoso.example"
    bo = reopened.create_user(directory["id"], user("bo@contoso.example"), "t")
    reopened._folder.release()
    again = Store(str(tmp_path))
    assert again.get_user(directory["id"], bo["id"]) is not None
    again.close()


def test_an_interrupted_compaction_leaves_old_snapshot_and_journals_valid(tmp_path):
    store = Store(str(tmp_path))
    directory = store.create_directory("Contoso")
    store.compact()
    ana = store.create_user(directory["id"], user("ana@contoso.example"), "t")
    store._folder.release()
    # A crash mid-compaction: a half-written temp snapshot beside the real one.
    (tmp_path / ".roster-crashed.tmp").write_bytes(b'{"users": {"1": {"id": "x"')
    reopened = Store(str(tmp_path))
    assert reopened.get_user(directory["id"], ana["id"]) is not None
    assert not list(tmp_path.glob(".roster-*"))
    reopened.close()


def test_compaction_folds_the_journal_into_the_snapshot_without_losing_writes(tmp_path):
    store = Store(str(tmp_path))
    directory = store.create_directory("Contoso")
    ids = [store.create_user(directory["id"], user(f"u{n}@c.example"), "t")["id"] for n in range(5)]
    store.compact()
    ids.append(store.create_user(directory["id"], user("late@c.example"), "t")["id"])
    assert len(journal_files(tmp_path)) == 1
    store._folder.release()
    reopened = Store(str(tmp_path))
    assert all(reopened.get_user(directory["id"], user_id) for user_id in ids)
    reopened.close()


def test_a_gap_in_the_journal_is_refused_not_guessed(tmp_path):
    _directory, _ana, journal = killed_after_one_user(tmp_path)
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(lines[0] + lines[0].replace(b'"seq":1', b'"seq":5'))
    with pytest.raises(CorruptDataError):
        Store(str(tmp_path))


def test_an_update_keeps_the_users_place_in_an_unfiltered_list(store, directory):
    ids = [store.create_user(directory["id"], user(f"u{n}@c.example"), "t")["id"] for n in range(4)]
    store.update_user(directory["id"], ids[1], lambda u: {**u, "title": "Lead"}, "t")
    total, page = store.search_users(directory["id"], start_index=2, count=2)
    assert total == 4
    assert [u["id"] for u in page] == ids[1:3]
    store.delete_user(directory["id"], ids[0], "t")
    total, page = store.search_users(directory["id"], start_index=1, count=10)
    assert (total, [u["id"] for u in page]) == (3, ids[1:])


@pytest.mark.parametrize("content", [b"", b" \n\t"])
def test_an_empty_or_blank_snapshot_is_an_empty_database(tmp_path, content):
    (tmp_path / DATABASE_FILE).write_bytes(content)
    store = Store(str(tmp_path))
    assert store.list_directories() == []
    store.create_directory("Contoso")
    store.close()
    again = Store(str(tmp_path))
    assert [d["name"] for d in again.list_directories()] == ["Contoso"]
    again.close()


def test_a_cut_snapshot_is_refused_not_read_as_empty(tmp_path):
    (tmp_path / DATABASE_FILE).write_bytes(b'{"directories": {"1": {"id": "a"')
    with pytest.raises(ValueError):
        Store(str(tmp_path))


class _Node:
    """Something that can sit in a reference cycle (a dict cannot be weakly referenced)."""


def test_every_few_thousand_writes_collect_cycles_then_freeze_what_is_kept(tmp_path, monkeypatch):
    """So that a full pass of the cyclic collector walks only what the last writes made; and
    a cycle that was garbage before the freeze is collected, not frozen for good."""
    monkeypatch.setattr(store_module, "FREEZE_EVERY_WRITES", 3)
    store = Store(str(tmp_path))
    directory = store.create_directory("Contoso")  # write 1
    was_enabled = gc.isenabled()
    gc.disable()  # only Roster's own collection may reclaim the cycle below
    try:
        cycle = _Node()
        cycle.itself = cycle
        dead = weakref.ref(cycle)
        del cycle
        store.create_user(directory["id"], user("ana@contoso.example"), "t")  # write 2
        frozen = gc.get_freeze_count()
        assert dead() is not None  # not yet: nothing collected
        store.create_user(directory["id"], user("bo@contoso.example"), "t")  # write 3
        assert dead() is None
        assert gc.get_freeze_count() > frozen
    finally:
        if was_enabled:
            gc.enable()
    store.close()


def test_closing_twice_is_harmless_and_frees_the_folder(tmp_path):
    store = Store(str(tmp_path))
    store.create_directory("Contoso")
    store.close()
    store.close()
    again = Store(str(tmp_path))
    assert [d["name"] for d in again.list_directories()] == ["Contoso"]
    again.close()


def test_delete_directory_takes_its_groups_and_memberships(store, directory):
    ana = store.create_user(directory["id"], user("ana@contoso.example"), "t")
    group, skipped = store.create_group(
        directory["id"], {"schemas": [], "displayName": "Team"}, [ana["id"]], "t"
    )
    assert skipped == [] and store.group_members(directory["id"], group["id"])
    store.delete_directory(directory["id"], "t")
    assert store.get_group(directory["id"], group["id"]) is None
    assert store.groups_of_user(directory["id"], ana["id"]) == []


def test_compacting_twice_without_a_write_keeps_the_live_journal(tmp_path):
    store = Store(str(tmp_path))
    directory = store.create_directory("Contoso")
    store.compact()
    store.compact()
    ana = store.create_user(directory["id"], user("ana@contoso.example"), "t")
    store._folder.release()  # as if killed after the write
    reopened = Store(str(tmp_path))
    assert reopened.get_user(directory["id"], ana["id"]) is not None
    reopened.close()


def test_an_unreadable_line_inside_the_journal_is_refused_not_cut(tmp_path):
    _directory, _ana, journal = killed_after_one_user(tmp_path)
    first, second = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"{not json}\n" + first + second)
    with pytest.raises(CorruptDataError):
        Store(str(tmp_path))


def test_unreadable_bytes_that_end_the_last_journal_are_cut_like_a_torn_line(tmp_path):
    """A filesystem without a journal may show zeros where unsynced appends were due."""
    directory, ana, journal = killed_after_one_user(tmp_path)  # as if the power went
    kept = journal.read_bytes()
    with open(journal, "ab") as handle:
        handle.write(b"\0" * 50 + b"\n" + b"\0" * 30 + b"\n" + b"\0" * 10)
    reopened = Store(str(tmp_path))
    assert reopened.get_user(directory["id"], ana["id"])["userName"] == "ana@contoso.example"
    assert journal.read_bytes() == kept
    reopened.close()


def test_unreadable_bytes_followed_by_a_readable_line_are_refused_not_cut(tmp_path):
    _directory, _ana, journal = killed_after_one_user(tmp_path)
    *earlier, last = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(earlier) + b"\0" * 50 + b"\n" + last)
    with pytest.raises(CorruptDataError):
        Store(str(tmp_path))


def fail_once(monkeypatch, module, name: str) -> list[str]:
    """Make ``module.name`` raise EIO on its next call only; the list records the failure."""
    real, failed = getattr(module, name), []

    def failing(*args, **kwargs):
        if not failed:
            failed.append(name)
            raise OSError(5, "Input/output error")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, failing)
    return failed


def test_after_a_failed_fsync_every_write_is_refused_until_a_restart(tmp_path, monkeypatch):
    """Linux reports a failed fsync once: a later one that succeeds proves nothing."""
    store = Store(str(tmp_path))
    directory = store.create_directory("Contoso")
    fail_once(monkeypatch, store_module.os, "fsync")
    with pytest.raises(StoreFailed, match="fsync failed"):
        store.create_user(directory["id"], user("ana@contoso.example"), "t")
    with pytest.raises(StoreFailed, match="until it is restarted"):
        store.create_user(directory["id"], user("bo@contoso.example"), "t")
    with pytest.raises(StoreFailed):
        store.backup(str(tmp_path / "backup.json"))
    with pytest.raises(StoreFailed):
        store.compact()
    assert isinstance(StoreFailed("x"), StoreClosed)  # SCIM and the pages answer 503
    store.close()  # no compaction from memory: the next start replays the journal
    reopened = Store(str(tmp_path))
    assert reopened.find_user_by_user_name(directory["id"], "bo@contoso.example") is None
    reopened.create_user(directory["id"], user("bo@contoso.example"), "t")
    reopened.close()


def test_a_journal_write_that_fails_changes_nothing_and_the_next_write_is_tried(
    tmp_path, monkeypatch
):
    store = Store(str(tmp_path))
    directory = store.create_directory("Contoso")
    fail_once(monkeypatch, store_module.os, "write")
    with pytest.raises(StoreUnavailable, match="could not be written"):
        store.create_user(directory["id"], user("ana@contoso.example"), "t")
    assert store.find_user_by_user_name(directory["id"], "ana@contoso.example") is None
    store.create_user(directory["id"], user("ana@contoso.example"), "t")
    store._folder.release()  # as if killed: the journal alone holds ana, once
    reopened = Store(str(tmp_path))
    assert reopened.count_users(directory["id"]) == 1
    reopened.close()


def test_a_failed_fsync_at_shutdown_still_gives_up_the_data_folder(tmp_path, monkeypatch):
    store = Store(str(tmp_path))
    store.create_directory("Contoso")
    fail_once(monkeypatch, store_module.os, "fsync")
    with pytest.raises(StoreFailed):
        store.close()
    Store(str(tmp_path)).close()  # not DataFolderBusy: the lock was released


def test_recording_a_keys_use_never_fails_the_request_that_uses_it(tmp_path, monkeypatch):
    store = Store(str(tmp_path))
    directory = store.create_directory("Contoso")
    key = store.create_key(directory["id"], "Entra", "hash", "t")
    fail_once(monkeypatch, store_module.os, "fsync")
    store.touch_key(key["id"])  # its write fails: the read that asked goes on
    with pytest.raises(StoreFailed):
        store.create_user(directory["id"], user("ana@contoso.example"), "t")
    store.close()


def test_a_change_half_applied_in_memory_stops_writes_and_the_journal_is_the_truth(
    tmp_path, monkeypatch
):
    store = Store(str(tmp_path))
    directory = store.create_directory("Contoso")
    fail_once(monkeypatch, store, "_apply")
    with pytest.raises(StoreFailed, match="half applied"):
        store.create_user(directory["id"], user("ana@contoso.example"), "t")
    with pytest.raises(StoreFailed):
        store.create_user(directory["id"], user("bo@contoso.example"), "t")
    store.close()
    reopened = Store(str(tmp_path))
    ana = reopened.find_user_by_user_name(directory["id"], "ana@contoso.example")
    assert ana is not None  # journalled before memory failed, so it was on disk
    assert reopened.find_user_by_user_name(directory["id"], "bo@contoso.example") is None
    assert reopened.count_users(directory["id"]) == 1
    reopened.close()


def test_a_journal_switch_that_fails_leaves_no_spare_journal_to_mistake_for_the_live_one(
    tmp_path, monkeypatch
):
    store = Store(str(tmp_path))
    directory = store.create_directory("Contoso")
    store.create_user(directory["id"], user("ana@contoso.example"), "t")
    before = journal_files(tmp_path)
    failed = fail_once(monkeypatch, store_module, "_fsync_folder")
    with pytest.raises(OSError, match="Input/output"):
        store.compact()
    assert failed and journal_files(tmp_path) == before
    store.compact()  # the same seq again: must switch, not take a spare for the live journal
    bo = store.create_user(directory["id"], user("bo@contoso.example"), "t")
    store._folder.release()  # as if killed: bo lives only in the live journal
    reopened = Store(str(tmp_path))
    assert reopened.get_user(directory["id"], bo["id"]) is not None
    reopened.close()


def test_a_closed_store_refuses_writes(tmp_path):
    store = Store(str(tmp_path))
    directory = store.create_directory("Contoso")
    store.close()
    with pytest.raises(StoreClosed):
        store.create_user(directory["id"], user("ana@contoso.example"), "t")


def test_non_ascii_text_survives_the_journal_and_the_snapshot(tmp_path):
    """A lone surrogate too: a body parsed by json may carry one, and orjson will not read it."""
    store = Store(str(tmp_path))
    directory = store.create_directory("Zürich")
    created = store.create_user(
        directory["id"], user("zoë@contoso.example", title="Señora 😀"), "t"
    )
    store.close()  # compacts: the snapshot is written
    reopened = Store(str(tmp_path))
    reopened.create_user(directory["id"], user("łukasz@contoso.example", title="\ud800 lone"), "t")
    reopened._folder.release()  # as a crash would: the last user lives only in the journal
    restarted = Store(str(tmp_path))
    assert restarted.get_user(directory["id"], created["id"])["title"] == "Señora 😀"
    assert restarted.find_user_by_user_name(directory["id"], "ŁUKASZ@contoso.example")
    restarted.close()  # the lone surrogate goes into the snapshot
    again = Store(str(tmp_path))
    lukasz = again.find_user_by_user_name(directory["id"], "łukasz@contoso.example")
    assert lukasz["title"] == "\ud800 lone"
    again.close()
    stored = TinyDB(str(tmp_path / DATABASE_FILE)).table("directories").all()
    assert [d["name"] for d in stored] == ["Zürich"]


@pytest.mark.parametrize(
    "text",
    ["plain", "Zürich", "Señora 😀 €", "\u2028 line separator", '\x7f\x00\n"\\', "\ud800 lone"],
)
def test_the_snapshot_is_ascii_json_that_reads_back_the_same(tmp_path, text):
    document = {"users": {"1": {"name": text, text: [text, 1.5, None, True]}}, text: {}}
    written = b"".join(snapshot_lines(document))
    assert written.isascii()
    assert json.loads(written) == document  # what TinyDB's JSONStorage reads it with
    assert _parse_snapshot_lines(io.BytesIO(written)) == document  # read in pieces, not whole
    (tmp_path / DATABASE_FILE).write_bytes(written)
    assert AtomicJSONStorage(str(tmp_path / DATABASE_FILE)).read() == document


def test_the_snapshot_holds_one_document_per_line(tmp_path):
    """Start-up reads it a line at a time, never the whole file at once."""
    store = Store(str(tmp_path))
    directory = store.create_directory("Contoso")
    for n in range(3):
        store.create_user(directory["id"], user(f"u{n}@c.example"), "t")
    store.close()
    lines = (tmp_path / DATABASE_FILE).read_bytes().splitlines()
    users = lines[lines.index(b'},"users":{') + 1 : lines.index(b'},"groups":{')]
    members = [json.loads(b"{" + line.removesuffix(b",") + b"}") for line in users]
    assert sorted(doc["resource"]["userName"] for m in members for doc in m.values()) == [
        "u0@c.example",
        "u1@c.example",
        "u2@c.example",
    ]
    assert [len(m) for m in members] == [1, 1, 1]
    assert lines[0] == b'{"directories":{' and lines[-1] == b"}}"


@pytest.mark.parametrize(
    "written",
    [
        lambda d: json.dumps(d),  # one line, as TinyDB's own JSONStorage writes it
        lambda d: json.dumps(d, indent=4),  # an operator's pretty copy
        lambda d: json.dumps(d, separators=(",", ":")).replace("},", "},\n"),  # lines elsewhere
        lambda d: b"".join(snapshot_lines(d)).decode() + "\n",  # a blank line after the end
        lambda d: b"".join(snapshot_lines(d)).decode().removesuffix("\n"),  # no newline at the end
        lambda d: b"".join(snapshot_lines(d)).decode().replace('":{\n"', '":{ \n"', 1),
        lambda d: b"".join(snapshot_lines(d)).decode().replace(",\n", "\n", 1),  # a comma lost
    ],
)
def test_a_snapshot_in_any_other_layout_is_read_whole(tmp_path, written):
    """Lines out of the writer's layout are not guessed at: the whole-file parse decides."""
    document = {
        "directories": {"1": {"id": "a", "name": "Zürich"}},
        "users": {"1": {"id": "u1"}, "2": {"id": "u2", "x": [1, {"y": None}]}},
        "keys": {},
    }
    text = written(document)
    assert _parse_snapshot_lines(io.BytesIO(text.encode())) is None
    (tmp_path / DATABASE_FILE).write_text(text, encoding="utf-8")
    try:
        expected = json.loads(text)
    except ValueError:
        with pytest.raises(ValueError):
            AtomicJSONStorage(str(tmp_path / DATABASE_FILE)).read()
        return
    assert AtomicJSONStorage(str(tmp_path / DATABASE_FILE)).read() == expected


@pytest.mark.parametrize("read_size", [1, 7, 64, 1 << 20])
def test_a_snapshot_reads_the_same_whatever_the_read_size(tmp_path, monkeypatch, read_size):
    """Runs of member lines are cut where the reads end; a cut must not change a value."""
    document = {
        "directories": {"1": {"id": "a"}},
        "users": {str(n): {"id": f"u{n}", "name": "Zoë " * n} for n in range(1, 40)},
        "groups": {},
        "keys": {"1": {"id": "k"}},
    }
    (tmp_path / DATABASE_FILE).write_bytes(b"".join(snapshot_lines(document)))
    monkeypatch.setattr(store_module, "_IO_BUFFER", read_size)
    with open(tmp_path / DATABASE_FILE, "rb") as handle:
        assert _parse_snapshot_lines(handle) == document


@pytest.mark.parametrize("cut", [10, 30, -20, -3, -2])
def test_a_snapshot_cut_anywhere_is_refused(tmp_path, cut):
    written = b"".join(snapshot_lines({"users": {"1": {"id": "u1"}, "2": {"id": "u2"}}}))
    (tmp_path / DATABASE_FILE).write_bytes(written[:cut])
    with pytest.raises(ValueError):
        Store(str(tmp_path))


def test_compact_json_falls_back_for_what_orjson_refuses():
    assert compact_json({"n": 10**30, "b": [1]}) == b'{"n":1000000000000000000000000000000,"b":[1]}'
    assert compact_json({"b": 1, "a": "é"}, sort_keys=True) == '{"a":"é","b":1}'.encode()


# -- group members -------------------------------------------------------------------------------


def group_body(name: str = "Team") -> dict:
    return {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": name}


def member_ids(store: Store, directory_id: str, group_id: str) -> list[str]:
    return [user_id for user_id, _name in store.group_members(directory_id, group_id)]


def memberships_in_snapshot(folder) -> list[dict]:
    return TinyDB(str(folder / DATABASE_FILE)).table("memberships").all()


def test_a_user_in_a_group_is_changed_under_their_stored_or_their_shown_version(store, directory):
    """SCIM shows a version that covers the user's groups; the HTML pages plan their edits
    from the stored one. If-Match accepts either, and a stale one names the shown version."""
    here = directory["id"]
    ana = store.create_user(here, user("ana@contoso.example"), "t")
    store.create_group(here, group_body(), [ana["id"]], "t")
    [(groups, manager_name)] = store.groups_and_manager_names(here, [ana])
    shown = shown_user_version(ana["meta"]["version"], groups, manager_name)
    assert shown != ana["meta"]["version"]

    def retitle(title):
        return lambda current: {**current, "title": title}

    stored = (ana["meta"]["version"].removeprefix("W/"),)
    after_stored = store.update_user(here, ana["id"], retitle("a"), "t", stored)
    [(groups, _)] = store.groups_and_manager_names(here, [after_stored])
    now_shown = shown_user_version(after_stored["meta"]["version"], groups, None)
    with pytest.raises(PreconditionFailed) as refused:
        store.update_user(here, ana["id"], retitle("b"), "t", (shown.removeprefix("W/"),))
    assert str(refused.value) == now_shown
    store.update_user(here, ana["id"], retitle("c"), "t", (now_shown.removeprefix("W/"),))
    assert store.get_user(here, ana["id"])["title"] == "c"


def test_renaming_a_member_gives_their_groups_a_new_version_in_every_write_path(store, directory):
    here = directory["id"]
    ana = store.create_user(here, user("ana@contoso.example"), "t")
    group, _ = store.create_group(here, group_body(), [ana["id"]], "t")
    versions = [store.get_group(here, group["id"])["meta"]["version"]]
    store.update_user(here, ana["id"], lambda u: {**u, "title": "Lead"}, "t")
    assert store.get_group(here, group["id"])["meta"]["version"] == versions[-1]
    store.update_user(here, ana["id"], lambda u: {**u, "displayName": "Ana B"}, "t")
    versions.append(store.get_group(here, group["id"])["meta"]["version"])
    current = store.get_user(here, ana["id"])
    renamed = {**current, "displayName": "Ana C"}
    store.import_users(here, [], [(ana["id"], current["meta"]["version"], renamed)], "t")
    versions.append(store.get_group(here, group["id"])["meta"]["version"])
    assert len(set(versions)) == 3


def test_an_import_that_hands_a_user_name_on_keeps_it_found_and_taken(store, directory):
    here = directory["id"]
    ana = store.create_user(here, user("x@c.example"), "t")
    bo = store.create_user(here, user("y@c.example"), "t")
    # ana takes bo's name while bo moves on: the order within the batch must not matter
    updates = [
        (person["id"], person["meta"]["version"], {**person, "userName": name})
        for person, name in ((ana, "y@c.example"), (bo, "z@c.example"))
    ]
    store.import_users(here, [], updates, "t")
    assert store.find_user_by_user_name(here, "Y@c.example")["id"] == ana["id"]
    assert store.find_user_by_user_name(here, "z@c.example")["id"] == bo["id"]
    assert store.find_user_by_user_name(here, "x@c.example") is None
    with pytest.raises(UniquenessError):
        store.create_user(here, user("Y@C.example"), "t")


def test_ids_that_are_no_users_of_the_directory_are_skipped_and_each_audited(store, directory):
    here = directory["id"]
    ana, bo, gone = (store.create_user(here, user(f"{n}@c.example"), "t")["id"] for n in "abc")
    store.delete_user(here, gone, "t")
    other = store.create_directory("Fabrikam")["id"]
    outsider = store.create_user(other, user("out@f.example"), "t")["id"]
    group, _ = store.create_group(here, group_body(), [ana], "t")
    _updated, skipped = store.update_group(
        here, group["id"], None, [("add", ["nobody", ana, outsider, bo, "nobody", gone])], "t"
    )
    assert skipped == ["nobody", outsider, gone]
    assert member_ids(store, here, group["id"]) == [ana, bo]
    audited = [e["target"] for e in store.list_audit(here) if e["action"] == "group.member_skipped"]
    assert sorted(audited) == sorted(skipped)
    assert store.groups_of_user(other, outsider) == []


def test_re_adding_members_stores_no_second_membership(tmp_path):
    store = Store(str(tmp_path))
    here = store.create_directory("Contoso")["id"]
    ana, bo = (store.create_user(here, user(f"{n}@c.example"), "t")["id"] for n in "ab")
    group, _ = store.create_group(here, group_body(), [ana, bo], "t")
    store.update_group(here, group["id"], None, [("add", [bo, ana, bo])], "t")
    assert member_ids(store, here, group["id"]) == [ana, bo]
    store.close()
    assert sorted(m["user_id"] for m in memberships_in_snapshot(tmp_path)) == sorted([ana, bo])


def test_members_added_in_batches_come_back_from_the_journal_and_the_snapshot(tmp_path):
    """New members are journaled as one batch per write; replay must number their documents
    as the live store did, or a later removal would delete another member's document."""
    store = Store(str(tmp_path))
    here = store.create_directory("Contoso")["id"]
    ids = [store.create_user(here, user(f"u{n}@c.example"), "t")["id"] for n in range(4)]
    group, _ = store.create_group(here, group_body(), ids[:3], "t")
    store.update_group(here, group["id"], None, [("remove", [ids[1]])], "t")
    store.update_group(here, group["id"], None, [("add", [ids[3], ids[0]])], "t")
    expected = [ids[0], ids[2], ids[3]]
    store._folder.release()  # as if killed: the journal alone holds the memberships

    replayed = Store(str(tmp_path))
    assert member_ids(replayed, here, group["id"]) == expected
    assert replayed.groups_of_user(here, ids[1]) == []
    assert replayed.groups_of_user(here, ids[3]) == [(group["id"], "Team")]
    replayed.update_group(here, group["id"], None, [("remove", [ids[2]])], "t")
    replayed.close()  # compacts: the snapshot now holds them

    documents = memberships_in_snapshot(tmp_path)
    assert sorted(documents, key=lambda d: d["user_id"]) == sorted(
        (
            {"id": f"{group['id']}:{user_id}", "group_id": group["id"], "user_id": user_id}
            for user_id in (ids[0], ids[3])
        ),
        key=lambda d: d["user_id"],
    )
    reopened = Store(str(tmp_path))
    assert member_ids(reopened, here, group["id"]) == [ids[0], ids[3]]
    reopened.close()


def test_a_thousand_new_members_cost_the_journal_about_an_id_each(tmp_path):
    store = Store(str(tmp_path))
    here = store.create_directory("Contoso")["id"]
    creates = [{**user(f"u{n}@c.example"), "id": str(uuid.uuid4())} for n in range(1000)]
    store.import_users(here, creates, [], "t")
    group, _ = store.create_group(here, group_body(), [], "t")
    before = sum(path.stat().st_size for path in journal_files(tmp_path))
    store.update_group(here, group["id"], None, [("add", [u["id"] for u in creates])], "t")
    grown = sum(path.stat().st_size for path in journal_files(tmp_path)) - before
    # An id is 36 characters; a membership document each would be about 200 bytes.
    assert grown < 1000 * 60
    assert len(member_ids(store, here, group["id"])) == 1000
    store.close()


def test_a_journal_written_before_member_batches_still_loads(tmp_path):
    """Journals of earlier versions hold one document per new member."""
    when = "2025-01-01T00:00:00.000Z"
    meta = {"created": when, "lastModified": when, "version": 'W/"0"'}

    def person(user_id: str) -> dict:
        resource = {**user(f"{user_id}@c.example"), "id": user_id}
        resource["meta"] = {"resourceType": "User", **meta}
        return {"id": user_id, "directory_id": "d1", "resource": resource}

    group = {"id": "g1", "directory_id": "d1", "revision": 1}
    group["resource"] = {**group_body(), "id": "g1", "meta": {"resourceType": "Group", **meta}}
    directory = {"id": "d1", "name": "Contoso", "description": "", "auth_method": "none"}
    lines = [
        [["directories", "1", {**directory, "created": when}]],
        [["users", str(n), person(f"u{n}")] for n in (1, 2, 3)],
        [
            ["groups", "1", group],
            ["memberships", "1", {"id": "g1:u1", "group_id": "g1", "user_id": "u1"}],
            ["memberships", "2", {"id": "g1:u2", "group_id": "g1", "user_id": "u2"}],
        ],
    ]
    (tmp_path / "journal-1.jsonl").write_text(
        "".join(json.dumps({"seq": n, "changes": c}) + "\n" for n, c in enumerate(lines, 1))
    )
    store = Store(str(tmp_path))
    assert member_ids(store, "d1", "g1") == ["u1", "u2"]
    store.update_group("d1", "g1", None, [("remove", ["u1"]), ("add", ["u3"])], "t")
    store._folder.release()
    replayed = Store(str(tmp_path))
    assert member_ids(replayed, "d1", "g1") == ["u2", "u3"]
    replayed.close()
    assert sorted(m["id"] for m in memberships_in_snapshot(tmp_path)) == ["g1:u2", "g1:u3"]


def test_deleted_users_groups_and_directories_leave_no_membership_behind(tmp_path):
    store = Store(str(tmp_path))
    here = store.create_directory("Contoso")["id"]
    there = store.create_directory("Fabrikam")["id"]
    ana, bo, cy = (store.create_user(here, user(f"{n}@c.example"), "t")["id"] for n in "abc")
    dee = store.create_user(there, user("dee@f.example"), "t")["id"]
    kept, _ = store.create_group(here, group_body("Kept"), [ana, bo, cy], "t")
    dropped, _ = store.create_group(here, group_body("Dropped"), [ana, bo], "t")
    store.create_group(there, group_body("Elsewhere"), [dee], "t")
    store.delete_user(here, ana, "t")
    store.delete_group(here, dropped["id"], "t")
    store.delete_directory(there, "t")
    store._folder.release()  # as if killed: the journal alone says what was deleted

    replayed = Store(str(tmp_path))
    assert member_ids(replayed, here, kept["id"]) == [bo, cy]
    assert replayed.groups_of_user(here, bo) == [(kept["id"], "Kept")]
    replayed.close()
    documents = memberships_in_snapshot(tmp_path)
    assert sorted(d["id"] for d in documents) == sorted(f"{kept['id']}:{u}" for u in (bo, cy))


def test_a_users_groups_keep_the_order_they_joined_them_across_a_restart(tmp_path):
    store = Store(str(tmp_path))
    here = store.create_directory("Contoso")["id"]
    ana, bo = (store.create_user(here, user(f"{n}@c.example"), "t")["id"] for n in "ab")
    first, _ = store.create_group(here, group_body("First"), [ana], "t")
    second, _ = store.create_group(here, group_body("Second"), [], "t")
    store.update_group(here, second["id"], None, [("add", [bo])], "t")
    store.update_group(here, first["id"], None, [("add", [bo])], "t")
    joined = [(second["id"], "Second"), (first["id"], "First")]
    assert store.groups_of_user(here, bo) == joined
    store.close()  # compacts: the snapshot alone holds the memberships
    reopened = Store(str(tmp_path))
    assert reopened.groups_of_user(here, bo) == joined
    assert member_ids(reopened, here, first["id"]) == [ana, bo]
    reopened.close()


def test_a_backup_holds_every_membership_as_a_tinydb_document(store, directory, tmp_path):
    here = directory["id"]
    ana, bo = (store.create_user(here, user(f"{n}@c.example"), "t")["id"] for n in "ab")
    group, _ = store.create_group(here, group_body(), [ana, bo], "t")
    store.update_group(here, group["id"], None, [("remove", [ana])], "t")
    store.backup(str(tmp_path / "backup.json"))
    memberships = TinyDB(str(tmp_path / "backup.json")).table("memberships").all()
    assert memberships == [{"id": f"{group['id']}:{bo}", "group_id": group["id"], "user_id": bo}]


def test_text_searches_through_the_folded_values_match_a_full_scan(store, directory):
    """displayName/userName co, sw, ew and eq narrowed by the folded values find exactly what
    the compiled filter finds over every user, in creation order, through renames and deletes."""
    names = ["Ana Berg", "Ben Ström", "Chloé Berg", "David Bergman", "ERIK BERG", "Farid Ali"]
    ids = [
        store.create_user(directory["id"], user(f"u{n}@c.example", displayName=name), "t")["id"]
        for n, name in enumerate(names)
    ]
    store.update_user(
        directory["id"], ids[1], lambda current: {**current, "displayName": "Ben Berg"}, "t"
    )
    store.delete_user(directory["id"], ids[2], "t")
    filters = [
        'displayName co "berg"',
        'displayName sw "ben"',
        'displayName ew "BERG"',
        'displayName eq "erik berg"',
        'userName co "U3@"',
        'displayName co "berg" and userName ew "4@c.example"',
        'displayName co "nobody"',
    ]
    for text in filters:
        parsed = parse_filter(text)
        matches = compile_filter(parsed, USER_RESOURCE)
        _total, narrowed = store.search_users(
            directory["id"], matches=matches, text_terms=text_terms(parsed, USER_RESOURCE)
        )
        _total, scanned = store.search_users(directory["id"], matches=matches)
        assert [u["id"] for u in narrowed] == [u["id"] for u in scanned], text
    _total, found = store.search_users(
        directory["id"],
        matches=compile_filter(parse_filter('displayName co "berg"'), USER_RESOURCE),
        text_terms=[("displayName", "co", "berg")],
    )
    assert [u["displayName"] for u in found] == [
        "Ana Berg",
        "Ben Berg",
        "David Bergman",
        "ERIK BERG",
    ]
