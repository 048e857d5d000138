"""Roster's persistence: the only module that touches TinyDB.

The data folder holds one TinyDB JSON database (``roster.json``) with the tables ``directories``,
``users``, ``groups``, ``keys`` and ``audit``. Each document carries the id the API hands out in
its ``id`` field, under TinyDB's own document numbers, so a stock ``TinyDB(path)`` opens the file
and ``table("users").get(where("id") == user_id)`` finds a user.

The live data is held in memory with indexes (by id, by case-folded userName and by externalId per
directory), so lookups never walk a table. Each change is written as a whole new file next to the
old one, flushed, fsynced and moved into place with ``os.replace``: a crash at any moment leaves
the old or the new file, never a torn one. A write from another process (the operator CLI while
the server runs) is picked up on the next operation, and writers of both processes take an
exclusive ``flock`` so neither overwrites the other's change.
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import os
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any

from tinydb import TinyDB
from tinydb.storages import Storage

from schemas import ENTERPRISE_USER_URN

DATABASE_FILE = "roster.json"
LOCK_FILE = "roster.lock"
TABLES = ("directories", "users", "groups", "keys", "audit")
AUTH_METHODS = ("none", "local", "microsoft")


class UniquenessError(Exception):
    """A write would give two resources of one directory the same unique name."""


class NotFoundError(Exception):
    """The record named by a write does not exist (or not in that directory)."""


def utc_now() -> str:
    """ISO 8601 UTC with milliseconds, the form RFC 7643 §2.3.5 dateTime values take."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_id() -> str:
    return str(uuid.uuid4())


def resource_version(resource: dict) -> str:
    """A weak ETag derived from the content, so it survives restarts (RFC 7644 §3.14)."""
    body = {k: v for k, v in resource.items() if k != "meta"}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:20]
    return f'W/"{digest}"'


class AtomicJSONStorage(Storage):
    """TinyDB storage whose writes replace the file atomically and durably.

    TinyDB's own JSONStorage truncates the file and writes into it, so a crash mid-write leaves a
    half-written database. Here the new content goes to a temp file in the same folder, which is
    fsynced and then renamed over the old one; the folder is fsynced so the rename itself survives
    power loss.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def read(self) -> dict[str, dict[str, Any]] | None:
        try:
            with open(self.path, encoding="utf-8") as handle:
                text = handle.read()
        except FileNotFoundError:
            return None
        return json.loads(text) if text.strip() else None

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        folder = os.path.dirname(os.path.abspath(self.path))
        fd, temp_path = tempfile.mkstemp(prefix=".roster-", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, separators=(",", ":"), ensure_ascii=False)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp_path, self.path)
        except BaseException:
            with suppress(OSError):
                os.unlink(temp_path)
            raise
        _fsync_folder(folder)


def _fsync_folder(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _UserIndex:
    """Per-directory lookups of users that must not scan: case-folded userName and externalId.

    userName is caseExact false (RFC 7643 §4.1.1), so it is compared casefolded; externalId is
    caseExact true (RFC 7643 §3.1) and not unique, so it maps to a set of ids.
    """

    def __init__(self) -> None:
        self.by_user_name: dict[tuple[str, str], str] = {}
        self.by_external_id: dict[tuple[str, str], set[str]] = {}
        self.by_directory: dict[str, dict[str, None]] = {}
        self.by_manager: dict[str, set[str]] = {}

    def add(self, record: dict) -> None:
        directory_id, resource = record["directory_id"], record["resource"]
        user_id = resource["id"]
        self.by_user_name[(directory_id, resource["userName"].casefold())] = user_id
        external_id = resource.get("externalId")
        if external_id:
            self.by_external_id.setdefault((directory_id, external_id), set()).add(user_id)
        self.by_directory.setdefault(directory_id, {})[user_id] = None
        manager_id = manager_of(resource)
        if manager_id:
            self.by_manager.setdefault(manager_id, set()).add(user_id)

    def remove(self, record: dict) -> None:
        directory_id, resource = record["directory_id"], record["resource"]
        user_id = resource["id"]
        self.by_user_name.pop((directory_id, resource["userName"].casefold()), None)
        external_id = resource.get("externalId")
        if external_id:
            ids = self.by_external_id.get((directory_id, external_id), set())
            ids.discard(user_id)
            if not ids:
                self.by_external_id.pop((directory_id, external_id), None)
        self.by_directory.get(directory_id, {}).pop(user_id, None)
        manager_id = manager_of(resource)
        if manager_id:
            reports = self.by_manager.get(manager_id, set())
            reports.discard(user_id)
            if not reports:
                self.by_manager.pop(manager_id, None)


def manager_of(resource: dict) -> str | None:
    return resource.get(ENTERPRISE_USER_URN, {}).get("manager", {}).get("value")


class Store:
    """The narrow verbs Roster needs, each one atomic under one lock.

    Callers get deep copies, never the stored objects, so nothing outside this module can change
    stored state without going through a verb.
    """

    def __init__(self, data_dir: str) -> None:
        os.makedirs(data_dir, exist_ok=True)
        self.data_dir = data_dir
        self.path = os.path.join(data_dir, DATABASE_FILE)
        self._lock = threading.RLock()
        self._lock_path = os.path.join(data_dir, LOCK_FILE)
        self._db = TinyDB(self.path, storage=AtomicJSONStorage)
        self._file_state: tuple | None = None
        self._load()

    # -- loading and writing -------------------------------------------------------------------

    def _stat_file(self) -> tuple | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _load(self) -> None:
        """Read the file into memory, keyed by our ids, and build the indexes.

        TinyDB numbers its documents itself; our ids live inside the documents, so a stock
        ``TinyDB(path)`` reads the file, and ``_doc_keys`` remembers which number each id has.
        """
        self._file_state = self._stat_file()
        raw = self._db.storage.read() or {}
        self._tables: dict[str, dict[str, dict]] = {}
        self._doc_keys: dict[str, dict[str, str]] = {}
        self._next_doc_key: dict[str, int] = {}
        for name in TABLES:
            documents = raw.get(name, {})
            self._tables[name] = {doc["id"]: doc for doc in documents.values()}
            self._doc_keys[name] = {doc["id"]: key for key, doc in documents.items()}
            self._next_doc_key[name] = max(map(int, documents), default=0) + 1
        self._users = _UserIndex()
        for record in self._tables["users"].values():
            self._users.add(record)
        self._keys_by_hash = {k["token_hash"]: key_id for key_id, k in self._tables["keys"].items()}

    def _tinydb_layout(self) -> dict[str, dict[str, dict]]:
        return {
            name: {self._doc_keys[name][doc_id]: doc for doc_id, doc in documents.items()}
            for name, documents in self._tables.items()
        }

    def _refresh_if_changed(self) -> None:
        """Reload when another process (the CLI) replaced the file since we last saw it."""
        if self._stat_file() != self._file_state:
            self._load()

    @contextmanager
    def _reading(self) -> Iterator[None]:
        with self._lock:
            self._refresh_if_changed()
            yield

    @contextmanager
    def _writing(self) -> Iterator[dict[tuple[str, str], dict | None]]:
        """Collect changes as (table, id) -> new document (None deletes) and write them at once.

        One file write per operation keeps a change and its audit entry together. If the write
        fails, memory is rolled back to what is on disk.
        """
        changes: dict[tuple[str, str], dict | None] = {}
        with self._lock, open(self._lock_path, "a") as lock_handle:
            fcntl.flock(lock_handle, fcntl.LOCK_EX)
            self._refresh_if_changed()
            yield changes
            if not changes:
                return
            previous = {key: self._tables[key[0]].get(key[1]) for key in changes}
            self._apply(changes)
            try:
                self._db.storage.write(self._tinydb_layout())
            except BaseException:
                self._apply(previous)
                raise
            self._file_state = self._stat_file()

    def _apply(self, changes: dict[tuple[str, str], dict | None]) -> None:
        for (table, doc_id), document in changes.items():
            old = self._tables[table].get(doc_id)
            if table == "users" and old is not None:
                self._users.remove(old)
            if table == "keys" and old is not None:
                self._keys_by_hash.pop(old["token_hash"], None)
            if document is None:
                self._tables[table].pop(doc_id, None)
                self._doc_keys[table].pop(doc_id, None)
            else:
                self._tables[table][doc_id] = document
                if doc_id not in self._doc_keys[table]:
                    self._doc_keys[table][doc_id] = str(self._next_doc_key[table])
                    self._next_doc_key[table] += 1
                if table == "users":
                    self._users.add(document)
                if table == "keys":
                    self._keys_by_hash[document["token_hash"]] = doc_id

    def close(self) -> None:
        self._db.close()

    # -- directories ---------------------------------------------------------------------------

    def create_directory(self, name: str, description: str = "", auth_method: str = "none") -> dict:
        with self._writing() as changes:
            if self._directory_id_by_name(name):
                raise UniquenessError(f'a directory named "{name}" already exists')
            directory = {
                "id": new_id(),
                "name": name,
                "description": description,
                "auth_method": auth_method,
                "created": utc_now(),
            }
            changes[("directories", directory["id"])] = directory
        return copy.deepcopy(directory)

    def _directory_id_by_name(self, name: str) -> str | None:
        wanted = name.casefold()
        for directory_id, directory in self._tables["directories"].items():
            if directory["name"].casefold() == wanted:
                return directory_id
        return None

    def get_directory(self, directory_id: str) -> dict | None:
        with self._reading():
            return copy.deepcopy(self._tables["directories"].get(directory_id))

    def find_directory_by_name(self, name: str) -> dict | None:
        with self._reading():
            directory_id = self._directory_id_by_name(name)
            return copy.deepcopy(self._tables["directories"].get(directory_id or ""))

    def list_directories(self) -> list[dict]:
        with self._reading():
            directories = copy.deepcopy(list(self._tables["directories"].values()))
        return sorted(directories, key=lambda d: d["name"].casefold())

    def delete_directory(self, directory_id: str, actor: str) -> int:
        """Delete a directory with its users, groups and keys; returns how many users went."""
        with self._writing() as changes:
            if directory_id not in self._tables["directories"]:
                raise NotFoundError(directory_id)
            user_ids = list(self._users.by_directory.get(directory_id, {}))
            for user_id in user_ids:
                changes[("users", user_id)] = None
            for table in ("groups", "keys"):
                for doc_id, doc in self._tables[table].items():
                    if doc["directory_id"] == directory_id:
                        changes[(table, doc_id)] = None
            changes[("directories", directory_id)] = None
            self._audit(changes, None, actor, "directory.delete", directory_id)
        return len(user_ids)

    # -- users ---------------------------------------------------------------------------------

    def create_user(self, directory_id: str, resource: dict, actor: str) -> dict:
        """Store a new user; assigns ``id`` and ``meta`` (RFC 7643 §3.1: both are the server's)."""
        now = utc_now()
        resource = copy.deepcopy(resource)
        resource["id"] = new_id()
        with self._writing() as changes:
            self._check_directory(directory_id)
            self._check_user_name_free(directory_id, resource["userName"], None)
            resource["meta"] = {"resourceType": "User", "created": now, "lastModified": now}
            resource["meta"]["version"] = resource_version(resource)
            record = {"id": resource["id"], "directory_id": directory_id, "resource": resource}
            changes[("users", resource["id"])] = record
            self._audit(changes, directory_id, actor, "user.create", resource["id"])
        return copy.deepcopy(resource)

    def get_user(self, directory_id: str, user_id: str) -> dict | None:
        with self._reading():
            record = self._user_record(directory_id, user_id)
            return copy.deepcopy(record["resource"]) if record else None

    def replace_user(self, directory_id: str, user_id: str, resource: dict, actor: str) -> dict:
        return self.update_user(directory_id, user_id, lambda _current: resource, actor)

    def update_user(
        self, directory_id: str, user_id: str, change: Callable[[dict], dict], actor: str
    ) -> dict:
        """Store ``change(current)`` as the user's new state, all under the lock (no lost update).

        ``change`` gets a copy of the stored resource and may raise to abandon the write;
        id and meta.created stay the server's.
        """
        with self._writing() as changes:
            record = self._user_record(directory_id, user_id)
            if record is None:
                raise NotFoundError(user_id)
            old_resource = record["resource"]
            resource = copy.deepcopy(change(copy.deepcopy(old_resource)))
            self._check_user_name_free(directory_id, resource["userName"], user_id)
            resource["id"] = user_id
            resource["meta"] = {
                "resourceType": "User",
                "created": old_resource["meta"]["created"],
                "lastModified": utc_now(),
            }
            resource["meta"]["version"] = resource_version(resource)
            changes[("users", user_id)] = {**record, "resource": resource}
            self._audit(changes, directory_id, actor, "user.update", user_id)
        return copy.deepcopy(resource)

    def delete_user(self, directory_id: str, user_id: str, actor: str) -> None:
        """Delete a user; their direct reports lose the dangling manager in the same write."""
        with self._writing() as changes:
            if self._user_record(directory_id, user_id) is None:
                raise NotFoundError(user_id)
            changes[("users", user_id)] = None
            self._audit(changes, directory_id, actor, "user.delete", user_id)
            for report_id in self._users.by_manager.get(user_id, ()):
                changes[("users", report_id)] = self._without_manager(report_id)

    def _without_manager(self, user_id: str) -> dict:
        record = self._tables["users"][user_id]
        resource = copy.deepcopy(record["resource"])
        enterprise = resource[ENTERPRISE_USER_URN]
        del enterprise["manager"]
        if not enterprise:
            del resource[ENTERPRISE_USER_URN]
            resource["schemas"] = [s for s in resource["schemas"] if s != ENTERPRISE_USER_URN]
        resource["meta"] = {**resource["meta"], "lastModified": utc_now()}
        resource["meta"]["version"] = resource_version(resource)
        return {**record, "resource": resource}

    def direct_reports(self, directory_id: str, manager_id: str) -> list[dict]:
        with self._reading():
            ids = self._users.by_manager.get(manager_id, ())
            return [
                copy.deepcopy(r["resource"])
                for i in ids
                if (r := self._user_record(directory_id, i))
            ]

    def count_users(self, directory_id: str) -> int:
        with self._reading():
            return len(self._users.by_directory.get(directory_id, {}))

    def search_users(
        self,
        directory_id: str,
        matches: Callable[[dict], bool] | None = None,
        equal_terms: dict[str, str] | None = None,
        sort_key: Callable[[dict], Any] | None = None,
        descending: bool = False,
        start_index: int = 1,
        count: int | None = None,
    ) -> tuple[int, list[dict]]:
        """Count the users that match and return one page of them (RFC 7644 §3.4.2.4).

        ``equal_terms`` are the filter's top-level ``eq`` terms (lower-case attribute path ->
        value); an id, userName or externalId term narrows the candidates through an index, and
        ``matches`` then checks the whole filter. Only the page is copied.
        """
        with self._reading():
            candidates = self._user_candidates(directory_id, equal_terms or {})
            found = [r for r in candidates if matches is None or matches(r)]
            total = len(found)
            if sort_key is not None:
                found.sort(key=sort_key, reverse=descending)
            begin = max(start_index, 1) - 1
            end = None if count is None else begin + max(count, 0)
            return total, copy.deepcopy(found[begin:end])

    def _user_candidates(self, directory_id: str, equal_terms: dict[str, str]) -> list[dict]:
        users = self._tables["users"]
        if "id" in equal_terms:
            ids: Any = [equal_terms["id"]]
        elif "username" in equal_terms:
            found = self._users.by_user_name.get((directory_id, equal_terms["username"].casefold()))
            ids = [found] if found else []
        elif "externalid" in equal_terms:
            ids = self._users.by_external_id.get((directory_id, equal_terms["externalid"]), ())
        else:
            ids = self._users.by_directory.get(directory_id, {})
        records = (users.get(user_id) for user_id in ids)
        return [r["resource"] for r in records if r and r["directory_id"] == directory_id]

    def _user_record(self, directory_id: str, user_id: str) -> dict | None:
        record = self._tables["users"].get(user_id)
        if record is None or record["directory_id"] != directory_id:
            return None
        return record

    def _check_user_name_free(self, directory_id: str, user_name: str, own_id: str | None) -> None:
        holder = self._users.by_user_name.get((directory_id, user_name.casefold()))
        if holder is not None and holder != own_id:
            raise UniquenessError(f'userName "{user_name}" is already taken in this directory')

    def _check_directory(self, directory_id: str) -> None:
        if directory_id not in self._tables["directories"]:
            raise NotFoundError(directory_id)

    # -- directory keys ------------------------------------------------------------------------

    def create_key(self, directory_id: str, name: str, token_hash: str, actor: str) -> dict:
        key = {
            "id": new_id(),
            "directory_id": directory_id,
            "name": name,
            "token_hash": token_hash,
            "created": utc_now(),
            "last_used": None,
        }
        with self._writing() as changes:
            self._check_directory(directory_id)
            changes[("keys", key["id"])] = key
            self._audit(changes, directory_id, actor, "key.create", key["id"])
        return copy.deepcopy(key)

    def find_key_by_token_hash(self, token_hash: str) -> dict | None:
        """Keys are found by the hash of their token, never by the token itself."""
        with self._reading():
            key_id = self._keys_by_hash.get(token_hash)
            return copy.deepcopy(self._tables["keys"].get(key_id or ""))

    def list_keys(self, directory_id: str | None = None) -> list[dict]:
        with self._reading():
            keys = [
                k
                for k in self._tables["keys"].values()
                if directory_id is None or k["directory_id"] == directory_id
            ]
            return sorted(copy.deepcopy(keys), key=lambda k: k["created"])

    def delete_key(self, key_id: str, actor: str) -> None:
        with self._writing() as changes:
            key = self._tables["keys"].get(key_id)
            if key is None:
                raise NotFoundError(key_id)
            changes[("keys", key_id)] = None
            self._audit(changes, key["directory_id"], actor, "key.delete", key_id)

    def touch_key(self, key_id: str, minimum_interval_seconds: int = 60) -> None:
        """Record a key's last use, at most once a minute so reads do not turn into writes."""
        with self._writing() as changes:
            key = self._tables["keys"].get(key_id)
            if key is None:
                return
            last = key.get("last_used")
            now = datetime.now(UTC)
            if last and (now - _parse_time(last)).total_seconds() < minimum_interval_seconds:
                return
            changes[("keys", key_id)] = {**key, "last_used": utc_now()}

    # -- audit log -----------------------------------------------------------------------------

    def _audit(self, changes: dict, directory_id: str | None, actor: str, action: str, target: str):
        """Queue an audit entry in the same write as the change it records (no payloads)."""
        entry = {
            "id": new_id(),
            "time": utc_now(),
            "directory_id": directory_id,
            "actor": actor,
            "action": action,
            "target": target,
        }
        changes[("audit", entry["id"])] = entry

    def record_audit(self, directory_id: str | None, actor: str, action: str, target: str) -> None:
        with self._writing() as changes:
            self._audit(changes, directory_id, actor, action, target)

    def list_audit(self, directory_id: str | None = None) -> list[dict]:
        """Newest first."""
        with self._reading():
            entries = [
                e
                for e in self._tables["audit"].values()
                if directory_id is None or e["directory_id"] == directory_id
            ]
            return sorted(copy.deepcopy(entries), key=lambda e: e["time"], reverse=True)


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
