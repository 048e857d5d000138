"""Roster's persistence: the only module that touches TinyDB's files.

The data folder holds a TinyDB JSON database (``roster.json``, tables ``directories``, ``users``,
``groups``, ``memberships`` (one document per group member), ``keys``, ``audit``, and
``roster`` (the journal position the snapshot holds)) and a journal of the changes made since
it was written. Each
document carries the id the API hands out in its ``id`` field, under TinyDB's own document
numbers, so a stock ``TinyDB(path)`` opens the file and
``table("users").get(where("id") == user_id)`` finds a user.

The server owns the folder (a lock file) and keeps the live data in memory with indexes (by id,
by case-folded userName and by externalId per directory, by manager), so lookups never walk a
table and a write costs one appended, fsynced journal line whatever the size of the data. The
journal is folded into a new snapshot in the background, and at shutdown.
"""

from __future__ import annotations

import codecs
import errno
import fcntl
import gc
import hashlib
import json
import logging
import math
import mmap
import os
import re
import tempfile
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import orjson
from tinydb.storages import Storage

from schemas import ENTERPRISE_USER_URN
from scimlang import copy_json

_log = logging.getLogger("roster.store")

DATABASE_FILE = "roster.json"
LOCK_FILE = "roster.lock"
META_TABLE = "roster"
TEMP_PREFIX = ".roster-"
CREATE_ONCE_ATTEMPTS = 5
NO_HARD_LINKS = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS)
COMPACT_MIN_BYTES = 16 * 1024 * 1024
FREEZE_EVERY_WRITES = 5_000  # see _collect_and_freeze
TABLES = ("directories", "users", "groups", "memberships", "keys", "audit")
DEFAULT_DIRECTORY = "Default"  # created on first start; the first administrator lives there
AUTH_METHODS = ("none", "local", "microsoft", "oidc")  # how a directory's people sign in
# The provider settings each OpenID Connect method keeps, under the directory's field of the
# method's name; "client_secret" is stored encrypted (by signin.py, which holds the key).
SIGN_IN_FIELDS = {
    "microsoft": ("tenant", "client_id", "client_secret"),
    "oidc": ("configuration_url", "client_id", "client_secret", "logout_url"),
}
SIGN_IN_OPTIONAL = ("logout_url",)
SIGN_IN_VALUE_MAX = 2000
TENANT_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,99}")  # a tenant id, domain or alias
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
ROLES = ("administrator", "user")  # a user record without a role is a "user"
DIRECTORY_NAME_MAX = 100  # the hosted product's limits
DIRECTORY_DESCRIPTION_MAX = 250
KEY_NAME_MAX = 100
SYSTEM_ACTOR = "roster"  # the audit log's actor for changes Roster makes on its own (first start)
Versions = tuple[str, ...]  # the opaque tags an If-Match accepts ("*" for any)


class StoreClosed(Exception):
    """The store takes no writes now: it is closing (the server is shutting down), or see the
    subclasses. SCIM and the pages answer 503 with the message."""


class StoreUnavailable(StoreClosed):
    """This write could not be journalled (a full disk) and changed nothing; later writes
    are tried again."""


class StoreFailed(StoreClosed):
    """A journal line could not be made durable (a failed fsync or write, a change half
    applied in memory): no more writes until a restart, which rebuilds memory from disk.

    Linux reports a failed fsync once and may then drop the unwritten pages, so a later fsync
    that succeeds proves nothing about earlier lines: answering writes after one would
    acknowledge data a power cut could lose.
    """


class PreconditionFailed(Exception):
    """If-Match named a version that is no longer current (RFC 7644 §3.14)."""


class UniquenessError(Exception):
    """A write would give two resources of one directory the same unique name."""


class NotFoundError(Exception):
    """The record named by a write does not exist (or not in that directory)."""


class InvalidValueError(ValueError):
    """A write would store a value its field's rule refuses; the message names both."""


class AdministratorRenamed(Exception):
    """An administrator's userName changed since the role was given, before their first
    OpenID Connect sign-in: see :meth:`Store.record_oid`."""


class BrokenReferenceError(Exception):
    """A write refers to a record that is not there, e.g. a manager who is no user of the
    directory; checked under the store's lock so a concurrent delete cannot slip between."""


def utc_now() -> str:
    """ISO 8601 UTC with milliseconds, the form RFC 7643 §2.3.5 dateTime values take.

    The date and time of day are formatted once a second and shared by every thread: each
    write stamps two times (lastModified and its audit entry), and ``datetime.isoformat`` took
    about 4 µs a call, against 1.6 µs this way.
    """
    global _utc_second
    now = time.time()
    second = int(now)
    formatted = _utc_second
    if formatted[0] != second:
        formatted = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        _utc_second = formatted
    return f"{formatted[1]}.{int((now - second) * 1000):03d}Z"


_utc_second: tuple[int, str] = (-1, "")  # the last whole second utc_now formatted, and its text


def new_id() -> str:
    """A random (version 4) UUID in its usual text form, as ``str(uuid.uuid4())`` gives but
    without building a UUID object, which cost ten times the random bytes: every write makes
    one, for its audit entry."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # the RFC 4122 variant
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _holding(record: dict, resource: dict) -> dict:
    """The user record with ``resource`` as its new state.

    Deactivating a user also ends their sessions. A signed-in user is refused while
    inactive anyway, but without a new epoch a cookie from before would work again on
    reactivation: a stolen one too, or a session Entra meant to end by disabling the user.
    """
    updated = {**record, "resource": resource}
    old = record.get("resource")
    if old is not None and old.get("active") is not False and resource.get("active") is False:
        updated = _with_next_session_epoch(updated)
    return updated


def _with_role(record: dict, role: str) -> dict:
    """The user record with ``role``; an administrator's also keeps the userName they had
    when made one (see :func:`_renamed_since_made_administrator`)."""
    updated = {k: v for k, v in record.items() if k != "role_user_name"}
    updated["role"] = role
    if role == "administrator":
        updated["role_user_name"] = record["resource"]["userName"].casefold()
    return updated


def _administrator_name_confirmed(record: dict) -> dict:
    """The record with an administrator's current userName as the one their first sign-in
    needs: for changes an administrator made, on the admin pages."""
    if record.get("role") != "administrator":
        return record
    return {**record, "role_user_name": record["resource"]["userName"].casefold()}


def _renamed_since_made_administrator(record: dict) -> bool:
    """Whether a first OpenID Connect sign-in must not claim this administrator.

    That sign-in finds the account by userName, which a directory key may change. Renaming
    an administrator who has not signed in yet, to a name the key's holder can sign in as,
    would hand them the whole of Roster, beyond the one directory the key is for. So the
    first sign-in needs the name the account had when it was made an administrator, or was
    given since by an administrator; giving the role again accepts the new one too. Records
    from before this rule have no such name.
    """
    granted_to = record.get("role_user_name")
    return (
        record.get("role") == "administrator"
        and granted_to is not None
        and record["resource"]["userName"].casefold() != granted_to
    )


def _with_next_session_epoch(record: dict) -> dict:
    """The user record with its sessions ended (see :meth:`Store.end_sessions`)."""
    return {**record, "session_epoch": record.get("session_epoch", 0) + 1}


def version_matches(version: str, expected: Versions) -> bool:
    """Weak comparison (RFC 9110 §8.8.3.2) of a stored version with opaque tags; "*" is any."""
    opaque = version[2:] if version.startswith("W/") else version
    return "*" in expected or opaque in expected


def resource_version(resource: dict) -> str:
    """A weak ETag derived from the content, so it survives restarts (RFC 7644 §3.14)."""
    body = {k: v for k, v in resource.items() if k != "meta"}
    digest = hashlib.sha256(compact_json(body, sort_keys=True)).hexdigest()[:20]
    return f'W/"{digest}"'


def settings_version(directory: dict) -> str:
    """A directory's settings as a form saw them: a second administrator's form, opened
    before the first one saved, must not silently put the old settings back."""
    return resource_version(directory)


def shown_user_version(
    version: str, groups: list[tuple[str, str]], manager_name: str | None
) -> str:
    """The version a user is shown with: the stored one, folded with what the rendering adds
    from other resources (their groups and the groups' names, the manager's name), so the ETag
    changes whenever the representation does (RFC 7644 §3.14), as a cache relies on. The
    groups are sorted, so the version survives a restart that reorders them."""
    if not groups and manager_name is None:
        return version
    digest = hashlib.sha256(compact_json([version, sorted(groups), manager_name])).hexdigest()
    return f'W/"{digest[:20]}"'


def compact_json(value: Any, sort_keys: bool = False) -> bytes:
    """JSON without spaces, by orjson (an order of magnitude faster than json for the
    documents a write journals and hashes); json for what orjson refuses (integers beyond
    64 bits)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else None)
    except TypeError:
        return json.dumps(value, sort_keys=sort_keys, separators=(",", ":")).encode()


def parse_json(data: bytes) -> Any:
    """What :func:`compact_json` wrote, read back: by orjson, or by json for what orjson
    refuses. json writes a lone surrogate (which a request body parsed by json may carry) as a
    ``\\ud800`` escape that orjson will not read; a data folder holding one must still open."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def snapshot_lines(database: dict[str, dict[str, Any]]) -> Iterator[bytes]:
    """A TinyDB database as one JSON object, laid out one document per line.

    ``{"users":{`` opens the first table and ``},"keys":{`` each next one; every line between
    is one ``"number":{...}`` member, with a comma unless it is its table's last; ``}}`` closes
    the last table. TinyDB reads it as any JSON; Roster writes it a document at a time and
    reads it back a megabyte at a time (:func:`_parse_snapshot_lines`), never holding the whole
    file or a parse of it: at 100,000 users that was 150 MB of text and 300 MB of orjson's
    parse tree, on top of the data.
    """
    if not database:
        yield b"{}\n"
        return
    opening = b"{"
    for name, table in database.items():
        yield opening + _ascii(compact_json(name)) + b":{\n"
        opening = b"},"
        last = len(table) - 1
        for number, (key, document) in enumerate(table.items()):
            member = compact_json({key: document})[1:-1]
            yield _ascii(member) + (b",\n" if number < last else b"\n")
    yield b"}}\n"


def _ascii(data: bytes) -> bytes:
    """Compact JSON in ASCII alone, non-ASCII text as ``\\u`` escapes, as ``json.dumps`` writes
    it: TinyDB opens its file in the locale's encoding."""
    return data if data.isascii() else data.decode().encode("ascii", _JSON_ESCAPE)


def _json_escapes(error: UnicodeEncodeError) -> tuple[str, int]:
    """The ``\\uXXXX`` escapes of a run of non-ASCII characters, which orjson only ever writes
    inside strings; a character beyond U+FFFF becomes its surrogate pair, as JSON spells it."""
    escapes = []
    for char in error.object[error.start : error.end]:
        code = ord(char)
        if code > 0xFFFF:
            code -= 0x10000
            escapes.append(f"\\u{0xD800 | code >> 10:04x}\\u{0xDC00 | code & 0x3FF:04x}")
        else:
            escapes.append(f"\\u{code:04x}")
    return "".join(escapes), error.end


_JSON_ESCAPE = "roster-json-escape"
codecs.register_error(_JSON_ESCAPE, _json_escapes)


class AtomicJSONStorage(Storage):
    """TinyDB storage for Roster's snapshot file: reads it whole, writes it atomically.

    TinyDB's own JSONStorage truncates the file and writes into it, so a crash mid-write leaves
    a half-written database; this one writes a temp file and renames it into place.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def read(self) -> dict[str, dict[str, Any]] | None:
        """Roster's own snapshots in pieces; any other JSON (TinyDB's, an operator's) whole,
        from a mapping of the file, never a copy of it. Mapping is safe because the
        snapshot is only ever replaced by a rename, never rewritten in place, so it cannot
        shrink under the parse."""
        try:
            with open(self.path, "rb", buffering=_IO_BUFFER) as handle:
                if os.fstat(handle.fileno()).st_size == 0:
                    return None
                database = _parse_snapshot_lines(handle)
                if database is not None:
                    return database
                with (
                    mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped,
                    memoryview(mapped) as text,
                ):
                    return _parse_database(text)
        except FileNotFoundError:
            return None

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        write_json_atomically(self.path, data)


_IO_BUFFER = 1 << 20
_HEAD_MAX = 4096  # a first line longer than any table name is another layout
_QUOTE = ord('"')
_FIRST_TABLE = re.compile(rb'\{("(?:[^"\\\n]|\\.)*"):\{\n')
_NEXT_TABLE = re.compile(rb'\},("(?:[^"\\\n]|\\.)*"):\{\n')


def _parse_snapshot_lines(handle: BinaryIO) -> dict[str, dict[str, Any]] | None:
    """The database, if the file has :func:`snapshot_lines`' layout; None if it has not.

    Every line must be where that layout puts it, so what this returns is what parsing the
    whole file returns; at the first line out of place (another layout, a cut file) it gives
    up, and the whole-file parse decides, with its own error for a file that is not JSON.
    """
    try:
        return _snapshot_tables(handle)
    except ValueError:
        return None


def _snapshot_tables(handle: BinaryIO) -> dict[str, dict[str, Any]] | None:
    head = handle.readline(_HEAD_MAX)
    pieces = _snapshot_pieces(handle)
    if head == b"{}\n":
        return {} if next(pieces, None) is None else None
    opening = _FIRST_TABLE.fullmatch(head)
    if opening is None:
        return None
    database: dict[str, dict[str, Any]] = {}
    table = database[parse_json(opening[1])] = {}
    member_next, close_next = True, True  # what may follow: member lines, a closing line
    for piece in pieces:
        if member_next and piece.startswith(b'"') and piece.endswith(b"\n"):
            more = piece.endswith(b",\n")
            table.update(parse_json(b"{" + piece[: -2 if more else -1] + b"}"))
            member_next, close_next = more, not more
        elif close_next and piece == b"}}\n":
            return database if next(pieces, None) is None else None
        elif close_next and (opening := _NEXT_TABLE.fullmatch(piece)):
            table = database[parse_json(opening[1])] = {}
            member_next, close_next = True, True
        else:
            return None
    return None


def _snapshot_pieces(handle: BinaryIO) -> Iterator[bytes]:
    """The rest of the file, a megabyte at a time, as runs of member lines (each parsed by one
    orjson call, not one per line) and single other lines."""
    pending = b""
    while chunk := handle.read(_IO_BUFFER):
        block = pending + chunk
        cut = block.rfind(b"\n") + 1
        pending = block[cut:]
        yield from _block_pieces(block, cut)
    if pending:
        yield pending  # an unterminated tail: not the layout, or a cut file


def _block_pieces(block: bytes, size: int) -> Iterator[bytes]:
    """Split the whole lines before ``size`` where a member line (opening with a quote) meets
    any other line."""
    start = 0
    while start < size:
        if block[start] == _QUOTE:
            end = block.find(b"\n}", start, size)
            end = size if end < 0 else end + 1
        else:
            end = block.index(b"\n", start) + 1
        yield block[start:end]
        start = end


def _parse_database(text: memoryview) -> dict[str, dict[str, Any]] | None:
    """A file of whitespace alone is an empty database, as an empty one is; what orjson
    refuses, json decides, as in :func:`parse_json`."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        whole = bytes(text)
        return json.loads(whole) if whole.strip() else None


def write_json_atomically(path: str, document: dict) -> None:
    """Temp file in the same folder, fsync, ``os.replace``, fsync the folder."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, temp_path = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb", buffering=_IO_BUFFER) as handle:
            handle.writelines(snapshot_lines(document))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_path, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(temp_path)
        raise
    _fsync_folder(folder)


def create_file_once(path: str, data: bytes) -> bytes:
    """Put ``data`` at ``path`` unless the file already holds something; return what it holds.

    Written whole or not at all (temp file, fsync, then a hard link, which fails rather than
    overwrite when another process got there first), so a crash never leaves the file empty
    (except on a file system without hard links: see ``_create_exclusively``). An empty file,
    from a version that wrote in place, is replaced. A server that starts meanwhile sweeps
    away temp files it takes for a crash's leftovers; the link then finds none, and the whole
    step runs again.
    """
    folder = os.path.dirname(os.path.abspath(path))
    for _attempt in range(CREATE_ONCE_ATTEMPTS):
        existing = _read_if_any(path)
        if existing:
            return existing
        try:
            _put_whole(path, folder, data, replace=existing == b"")
        except FileNotFoundError:
            continue
        _fsync_folder(folder)
        return _read_if_any(path) or data
    raise OSError(f"{path}: its temp file vanished {CREATE_ONCE_ATTEMPTS} times in a row")


def _put_whole(path: str, folder: str, data: bytes, replace: bool) -> None:
    """``data`` at ``path`` through an fsynced temp file: renamed over it with ``replace``,
    else hard-linked, so that the first of two racing processes wins."""
    fd, temp_path = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(temp_path, path)
            return
        try:
            os.link(temp_path, path)
        except FileExistsError:
            pass
        except OSError as error:
            if error.errno not in NO_HARD_LINKS:
                raise
            _create_exclusively(path, data)
    finally:
        with suppress(FileNotFoundError):
            os.unlink(temp_path)


def _create_exclusively(path: str, data: bytes) -> None:
    """For file systems without hard links (FAT, some network shares): create-if-absent and
    write in place. A crash in between can leave the file empty, which the next start
    replaces."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _read_if_any(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read().strip()
    except FileNotFoundError:
        return None


def _fsync_folder(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DataFolderBusy(Exception):
    """Another Roster process owns the data folder; writing beside it would corrupt it."""


class CorruptDataError(Exception):
    """The journal has a gap or an unreadable line before its end: refuse to guess."""


class _DataFolder:
    """The files of one data folder: lock, TinyDB snapshot, journals.

    ``roster.json`` is a TinyDB database holding every table as of journal sequence number
    ``last_seq`` (kept in its ``roster`` table). ``journal-<first seq>.jsonl`` files hold one JSON
    line per operation after that. A write appends its line and fsyncs before it is answered, so
    it costs the same at 100 users as at 100,000; compaction writes a new snapshot beside the
    old one and renames it into place, then drops the journals it covers. Whatever moment a crash
    hits, start-up finds a whole snapshot and a journal whose only damage can be a torn last line.
    """

    def __init__(self, data_dir: str, read_only: bool) -> None:
        os.makedirs(data_dir, exist_ok=True)
        self.data_dir = data_dir
        self.read_only = read_only
        self.snapshot_path = os.path.join(data_dir, DATABASE_FILE)
        self._lock_handle = None if read_only else self._take_lock()
        self._journal_fd: int | None = None
        self.journal_bytes = 0
        self._sync = threading.Condition()
        self._syncing = False
        self._appended_seq = 0
        self._durable_seq = 0
        self._journal_path: str | None = None
        self.failure: str | None = None  # set once; every later write refuses with it

    def _take_lock(self):
        handle = open(os.path.join(self.data_dir, LOCK_FILE), "a+")  # noqa: SIM115 - held for life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            handle.close()
            raise DataFolderBusy(
                f"another Roster process (pid {owner}) is using the data folder "
                f"{os.path.abspath(self.data_dir)}; stop it first, or point ROSTER_DATA_DIR "
                "elsewhere"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        return handle

    def release(self) -> None:
        with self._sync:
            while self._syncing:  # a writer's fsync must not meet a closed descriptor
                self._sync.wait()
            if self._journal_fd is not None:
                os.close(self._journal_fd)
                self._journal_fd = None
                self.journal_bytes = 0  # nothing left to compact: a second close is a no-op
        if self._lock_handle is not None:
            self._lock_handle.close()
            self._lock_handle = None

    # -- reading -------------------------------------------------------------------------------

    def load(self) -> tuple[dict[str, dict[str, dict]], int]:
        """Snapshot plus journal replay: every table keyed by TinyDB number, and the last seq.

        A reader without the lock (a CLI command while the server runs) may race a compaction
        that swaps the snapshot and deletes journals under it; a gap in the sequence tells, and
        the read starts over.
        """
        for _attempt in range(20):
            try:
                return self._load_once()
            except _RaceWithCompaction:
                time.sleep(0.05)
        raise CorruptDataError("the data folder kept changing while it was read; try again")

    def _load_once(self) -> tuple[dict[str, dict[str, dict]], int]:
        if not self.read_only:
            self._remove_stray_temp_files()
        snapshot_before = _file_identity(self.snapshot_path)
        raw = AtomicJSONStorage(self.snapshot_path).read() or {}
        last_seq = int(raw.get(META_TABLE, {}).get("1", {}).get("last_seq", 0))
        tables = {name: raw.get(name, {}) for name in TABLES}
        journals = self._journal_paths()
        seq = last_seq
        try:
            for number, path in enumerate(journals):
                is_last = number == len(journals) - 1
                seq = self._replay(path, tables, seq, is_last)
        except FileNotFoundError:
            if self.read_only:  # the owner compacted and dropped a journal under us
                raise _RaceWithCompaction from None
            raise
        if self.read_only and _file_identity(self.snapshot_path) != snapshot_before:
            raise _RaceWithCompaction  # the snapshot changed while the journals were read
        if not self.read_only:
            self._open_journal(journals[-1] if journals else None, seq)
        return tables, seq

    def _replay(self, path: str, tables: dict, seq: int, is_last: bool) -> int:
        """Apply a journal's lines past ``seq``; cut a torn last line (it was never answered).

        Read a line at a time: a journal may grow as large as the snapshot before it is folded.
        """
        good_end = 0
        with open(path, "rb", buffering=_IO_BUFFER) as handle:
            for line in handle:
                if not line.endswith(b"\n"):
                    break  # an unterminated tail: a write that was never answered
                try:
                    entry = parse_json(line)
                except ValueError:
                    if is_last and not _any_readable_line(handle):
                        break  # garbage to the end: an unsynced tail after a power cut
                    raise CorruptDataError(f"{path}: unreadable line at byte {good_end}") from None
                good_end += len(line)
                if entry["seq"] <= seq:
                    continue
                if entry["seq"] != seq + 1:
                    if self.read_only:
                        raise _RaceWithCompaction
                    jump = f"journal jumps from seq {seq} to {entry['seq']}"
                    raise CorruptDataError(f"{path}: {jump}")
                _apply_to_layout(tables, entry["changes"])
                seq = entry["seq"]
            torn = good_end < handle.tell()
        if torn:
            if not is_last:
                raise CorruptDataError(f"{path}: a torn line before the last journal's end")
            if not self.read_only:
                cut = os.path.getsize(path) - good_end
                _log.warning("%s: cut %d bytes of a write that was never answered", path, cut)
                os.truncate(path, good_end)
        return seq

    def _journal_paths(self) -> list[str]:
        names = [n for n in os.listdir(self.data_dir) if _JOURNAL_NAME.fullmatch(n)]
        names.sort(key=lambda n: int(_JOURNAL_NAME.fullmatch(n).group(1)))
        return [os.path.join(self.data_dir, n) for n in names]

    def _remove_stray_temp_files(self) -> None:
        """Temp files left by a compaction or backup that a crash interrupted."""
        for name in os.listdir(self.data_dir):
            if name.startswith(TEMP_PREFIX):
                with suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.data_dir, name))

    # -- writing -------------------------------------------------------------------------------

    def _open_journal(self, path: str | None, seq: int) -> None:
        if path is None:
            path = os.path.join(self.data_dir, f"journal-{seq + 1}.jsonl")
        self._journal_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._journal_path = path
        self.journal_bytes = os.fstat(self._journal_fd).st_size
        _fsync_folder(self.data_dir)

    def fail(self, reason: str) -> StoreFailed:
        """Refuse every write from now on (see :class:`StoreFailed`); the first reason stays.

        Logged at once: the operator has to restart Roster, and find out why (disk full,
        failing disk) before they do.
        """
        with self._sync:
            if self.failure is None:
                self.failure = reason
                _log.critical("Roster refuses writes until restarted: %s", reason)
            self._sync.notify_all()
        return StoreFailed(f"Roster refuses writes until it is restarted: {self.failure}")

    def append(self, seq: int, changes: list) -> None:
        """Write one operation's line; :meth:`wait_durable` then makes it survive a crash.

        Called under the store's lock, so lines go out in sequence order. A failed or short
        write is cut off again, so no torn line is ever followed by a good one.
        """
        if self._journal_fd is None:
            raise DataFolderBusy("this store is a read-only view: the data folder has an owner")
        if self.failure is not None:
            raise self.fail(self.failure)
        line = compact_json({"seq": seq, "changes": changes}) + b"\n"
        try:
            written = os.write(self._journal_fd, line)
            if written != len(line):
                raise OSError(f"short write to the journal ({written} of {len(line)} bytes)")
        except BaseException as error:
            try:
                os.ftruncate(self._journal_fd, self.journal_bytes)
            except OSError as cut_error:  # a torn line stays: the next line must not follow it
                reason = f"a failed journal write could not be cut off: {cut_error}"
                raise self.fail(reason) from error
            if isinstance(error, OSError):  # e.g. a full disk: nothing changed, try again later
                raise StoreUnavailable(f"the journal could not be written: {error}") from error
            raise
        self.journal_bytes += len(line)
        self._appended_seq = seq

    def wait_durable(self, seq: int) -> None:
        """Return once the line of ``seq`` is fsynced: group commit.

        Called outside the store's lock. One thread fsyncs for every line written so far while
        the others wait for it, so concurrent writers share one fsync and readers never wait
        behind the disk.
        """
        with self._sync:
            while self._durable_seq < seq:
                if self.failure is not None:
                    raise self.fail(self.failure)
                if self._syncing:
                    self._sync.wait()
                    continue
                if self._journal_fd is None:
                    raise StoreClosed("the journal was closed before this write was synced")
                self._syncing = True
                target, fd = self._appended_seq, self._journal_fd
                self._sync.release()
                error, synced = None, False
                try:
                    os.fsync(fd)
                    synced = True
                except OSError as fsync_error:
                    error = fsync_error
                finally:  # anything else (a signal's exception) leaves the lines unsynced
                    self._sync.acquire()
                    self._syncing = False
                    if synced:
                        self._durable_seq = max(self._durable_seq, target)
                    self._sync.notify_all()
                if error is not None:  # the Condition's lock is an RLock: fail() may take it
                    raise self.fail(f"the journal's fsync failed: {error}") from error

    def start_new_journal(self, next_seq: int) -> list[str]:
        """Switch appends to a fresh journal (under the store's lock, so no append runs);
        returns the older journals a snapshot will cover.

        The new journal is opened before the old one is closed, so a failure to open leaves
        appends going where they went, and a half-made new journal is removed again: left
        behind, a later switch would take it for the live one and drop the journal in use.
        When nothing was appended since the last switch, the live journal already is the fresh
        one and nothing changes.
        """
        target = os.path.join(self.data_dir, f"journal-{next_seq}.jsonl")
        with self._sync:
            while self._syncing:
                self._sync.wait()
            if self.failure is not None:
                raise self.fail(self.failure)
            try:
                os.fsync(self._journal_fd)
            except OSError as error:
                raise self.fail(f"the journal's fsync failed: {error}") from error
            self._durable_seq = self._appended_seq
            if self._journal_path == target:
                return [path for path in self._journal_paths() if path != target]
            covered = [path for path in self._journal_paths() if path != target]
            new_fd = self._create_journal(target)
            old_fd, self._journal_fd, self.journal_bytes = self._journal_fd, new_fd, 0
            self._journal_path = target
            os.close(old_fd)
        return covered

    def _create_journal(self, path: str) -> int:
        """An empty journal at ``path``, its name durable in the folder; on failure, no file."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        if os.fstat(fd).st_size:  # never ours to delete: refuse to guess
            os.close(fd)
            raise CorruptDataError(f"{path}: a journal nothing was written to is not empty")
        try:
            _fsync_folder(self.data_dir)
        except BaseException:
            os.close(fd)
            with suppress(OSError):
                os.unlink(path)
            raise
        return fd

    def write_snapshot(self, layout: dict, last_seq: int, path: str | None = None) -> None:
        """A TinyDB database of ``layout`` as of ``last_seq``, written atomically."""
        document = {**layout, META_TABLE: {"1": {"last_seq": last_seq}}}
        AtomicJSONStorage(path or self.snapshot_path).write(document)


def _any_readable_line(handle: BinaryIO) -> bool:
    """Whether a whole JSON line follows in ``handle``.

    An fsync makes everything before it durable, so after a power cut unreadable bytes (a
    filesystem without a journal may show zeros where unsynced data was due) can only trail
    the last line ever answered: if nothing readable comes after them, they are a torn tail.
    A readable line after them means damage inside acknowledged data: refuse to guess.
    """
    for line in handle:
        if line.endswith(b"\n"):
            with suppress(ValueError):
                parse_json(line)
                return True
    return False


class _RaceWithCompaction(Exception):
    pass


_JOURNAL_NAME = re.compile(r"journal-(\d+)\.jsonl")


def _matching_page(
    candidates: Iterable[dict],
    matches: Callable[[dict], bool] | None,
    sort_key: Callable[[dict], Any] | None,
    descending: bool,
    begin: int,
    end: int | None,
) -> tuple[int, list[dict]]:
    """Filter, sort and slice: the total that matched and the page asked for."""
    found = [r for r in candidates if matches is None or matches(r)]
    if sort_key is not None:
        found.sort(key=sort_key, reverse=descending)
    return len(found), found[begin:end]


def _file_identity(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


def _apply_to_layout(tables: dict[str, dict[str, dict]], changes: list) -> None:
    """Replay one journal entry onto TinyDB-layout tables ({number: document})."""
    for change in changes:
        if len(change) == 2:  # [table, batch]: a group's joining members (_MemberChanges)
            table, batch = change
            _expand_new_members(tables[table], batch)
            continue
        table, doc_key, document = change
        if document is None:
            tables[table].pop(doc_key, None)
        else:
            tables[table][doc_key] = document


# Unicode categories: control characters, and for a name also the invisible ones (format
# characters such as a zero-width space, line and paragraph separators). Not str.isprintable,
# which also refuses a no-break space, common in pasted text.
INVISIBLE_IN_TEXT = ("Cc",)
INVISIBLE_IN_NAMES = ("Cc", "Cf", "Zl", "Zp")


def _invisible_characters(text: str, categories: tuple[str, ...] = INVISIBLE_IN_TEXT) -> bool:
    return any(unicodedata.category(char) in categories for char in text)


def _checked_directory_updates(updates: dict[str, Any]) -> dict[str, Any]:
    """The settings a directory may change, each checked against its rule."""
    settable = {"name", "description", "auth_method", "my_account", *SIGN_IN_FIELDS}
    unknown = sorted(set(updates) - settable)
    if unknown:
        raise InvalidValueError(f"{', '.join(unknown)}: not a directory setting")
    checked = dict(updates)
    if "name" in checked:
        name = checked["name"]
        if not isinstance(name, str) or not 1 <= len(name.strip()) <= DIRECTORY_NAME_MAX:
            raise InvalidValueError(f"name: 1 to {DIRECTORY_NAME_MAX} characters")
        if _invisible_characters(name, INVISIBLE_IN_NAMES):  # the login page's list, the CLI's
            raise InvalidValueError("name: no line breaks, tabs or other non-printing characters")
        checked["name"] = name.strip()
    description = checked.get("description", "")
    if not isinstance(description, str) or len(description) > DIRECTORY_DESCRIPTION_MAX:
        raise InvalidValueError(f"description: at most {DIRECTORY_DESCRIPTION_MAX} characters")
    if _invisible_characters(description.replace("\n", "").replace("\r", "").replace("\t", "")):
        raise InvalidValueError("description: no control characters")
    if "auth_method" in checked and checked["auth_method"] not in AUTH_METHODS:
        raise InvalidValueError(f"auth_method: one of {', '.join(AUTH_METHODS)}")
    if "my_account" in checked and not isinstance(checked["my_account"], bool):
        raise InvalidValueError("my_account: true or false")
    for method in SIGN_IN_FIELDS:
        if method in checked:
            problems = sign_in_problems(method, checked[method])
            if problems:
                field, message = next(iter(problems.items()))
                raise InvalidValueError(f"{method}_{field}: {message}")
            checked[method] = {k: v.strip() for k, v in checked[method].items() if v.strip()}
    return checked


def sign_in_problems(method: str, settings: Any) -> dict[str, str]:
    """What is wrong with an OpenID Connect method's provider settings, by field (without the
    method's prefix); the form shows each next to its field."""
    if not isinstance(settings, dict) or not all(isinstance(v, str) for v in settings.values()):
        return {"settings": "an object of strings"}
    fields = SIGN_IN_FIELDS[method]
    problems = {name: "not a setting of this method" for name in settings if name not in fields}
    for name in fields:
        value = settings.get(name, "").strip()
        if not value:
            if name not in SIGN_IN_OPTIONAL:
                problems[name] = "required"
        elif len(value) > SIGN_IN_VALUE_MAX or any(c.isspace() for c in value):
            problems[name] = f"at most {SIGN_IN_VALUE_MAX} characters, without spaces"
        elif name == "tenant" and not TENANT_PATTERN.fullmatch(value):
            problems[name] = (
                "a tenant id (a GUID), a domain such as contoso.onmicrosoft.com, or organizations"
            )
        elif name.endswith("_url") and not _is_provider_url(value):
            problems[name] = "an https:// address (http:// only on this machine, for tests)"
    return problems


def _is_provider_url(url: str) -> bool:
    """Provider endpoints carry tokens and secrets: TLS, except to a loopback address."""
    if url.startswith("https://") and len(url) > len("https://"):
        return True
    host = url.removeprefix("http://").split("/", 1)[0].rsplit(":", 1)[0]
    is_loopback = host.startswith("127.") or host in LOOPBACK_HOSTS
    return url.startswith("http://") and is_loopback


def directory_setting_problems(settings: dict[str, Any]) -> dict[str, str]:
    """Every rule the settings break, by setting, so a form can show each next to its field
    (the store's verbs stop at the first)."""
    problems = {}
    for name, value in settings.items():
        if name in SIGN_IN_FIELDS:
            for field, message in sign_in_problems(name, value).items():
                problems[f"{name}_{field}"] = f"{name}_{field}: {message}"
            continue
        try:
            _checked_directory_updates({name: value})
        except InvalidValueError as error:
            problems[name] = str(error)
    return problems


def _people_matcher(text: str, department: str | None, title: str | None) -> Callable[[dict], bool]:
    """The test :meth:`Store.search_people` applies to each user's resource."""
    words = text.casefold().split()
    department_part = (department or "").strip().casefold()
    title_part = (title or "").strip().casefold()

    def matches(resource: dict) -> bool:
        user_department = resource.get(ENTERPRISE_USER_URN, {}).get("department", "").casefold()
        user_title = resource.get("title", "").casefold()
        if department_part not in user_department or title_part not in user_title:
            return False
        if not words:
            return True
        phones = [p.get("value", "") for p in resource.get("phoneNumbers", ())]
        texts = [
            resource.get("displayName", ""),
            resource["userName"],
            *(e.get("value", "") for e in resource.get("emails", ())),
            *phones,
            user_title,
            user_department,
        ]
        haystack = "\n".join(texts).casefold()
        phone_digits = "\n".join(_digits(p) for p in phones)
        return all(
            word in haystack or (_is_phone_part(word) and _digits(word) in phone_digits)
            for word in words
        )

    return matches


_PHONE_CHARACTERS = re.compile(r"[0-9+()./-]+")


def _is_phone_part(word: str) -> bool:
    """Three digits or more, written the way phone numbers are."""
    return bool(_PHONE_CHARACTERS.fullmatch(word)) and len(_digits(word)) >= 3


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def _people_order(record: dict) -> tuple[str, str, str]:
    resource = record["resource"]
    return (
        resource.get("displayName", "").casefold(),
        resource["userName"].casefold(),
        record["id"],
    )


class _UserIndex:
    """Per-directory lookups of users that must not scan.

    userName is caseExact false (RFC 7643 §4.1.1), so it is compared casefolded; externalId is
    caseExact true (RFC 7643 §3.1) and not unique, so it maps to a set of ids. ``by_directory``
    keeps creation order, and ``ordered_ids`` a list of it, so any page of an unfiltered list is
    a slice, as cheap at startIndex 99,901 as at 1. ``administrators`` holds the ids of records
    whose role is administrator, so first-run can tell at start whether one exists.

    ``folded`` keeps, per directory and for each attribute of ``FOLDED_ATTRIBUTES``, every
    user's case-folded value in creation order: a ``co``/``sw``/``ew`` search scans those
    strings instead of the documents (about 25 times fewer Python steps). Both attributes are
    required, so every user has one and the order stays the creation order.
    """

    FOLDED_ATTRIBUTES = ("displayName", "userName")

    def __init__(self) -> None:
        self.by_user_name: dict[tuple[str, str], str] = {}
        self.by_external_id: dict[tuple[str, str], set[str]] = {}
        self.by_directory: dict[str, dict[str, None]] = {}
        self.by_manager: dict[str, set[str]] = {}
        self.administrators: set[str] = set()
        self.folded: dict[tuple[str, str], dict[str, str]] = {}
        self._ordered: dict[str, list[str]] = {}

    def add(self, record: dict) -> None:
        directory_id, user_id = record["directory_id"], record["id"]
        self.by_directory.setdefault(directory_id, {})[user_id] = None
        if directory_id in self._ordered:
            self._ordered[directory_id].append(user_id)
        self._add_lookups(record)
        self._fold(record)

    def remove(self, record: dict) -> None:
        directory_id, user_id = record["directory_id"], record["id"]
        self.by_directory.get(directory_id, {}).pop(user_id, None)
        self._ordered.pop(directory_id, None)  # rebuilt on the next unfiltered list
        self._remove_lookups(record)
        for attribute in self.FOLDED_ATTRIBUTES:
            self.folded.get((directory_id, attribute), {}).pop(user_id, None)

    def replace(self, old: dict, new: dict) -> None:
        """An update keeps the user's place in the creation order (a dict keeps a key's place
        when its value changes). One that leaves every indexed value as it was, as Entra's
        disables and most of its updates do, has nothing to change here."""
        if _indexed_values(old) == _indexed_values(new):
            return
        self._remove_lookups(old)
        self._add_lookups(new)
        self._fold(new)

    def _fold(self, record: dict) -> None:
        resource = record["resource"]
        for attribute in self.FOLDED_ATTRIBUTES:
            value = resource.get(attribute)
            values = self.folded.setdefault((record["directory_id"], attribute), {})
            if isinstance(value, str):
                folded = value.casefold()
                values[record["id"]] = value if folded == value else folded  # one string, not two
            else:
                values.pop(record["id"], None)

    def ids_with_text(self, directory_id: str, attribute: str, op: str, needle: str) -> list[str]:
        """Ids of the directory's users whose folded ``attribute`` passes ``op`` with
        ``needle`` (already case-folded), in creation order."""
        values = self.folded.get((directory_id, attribute), {})
        if op == "co":
            return [user_id for user_id, value in values.items() if needle in value]
        if op == "sw":
            return [user_id for user_id, value in values.items() if value.startswith(needle)]
        if op == "ew":
            return [user_id for user_id, value in values.items() if value.endswith(needle)]
        return [user_id for user_id, value in values.items() if value == needle]

    def ordered_ids(self, directory_id: str) -> list[str]:
        if directory_id not in self._ordered:
            self._ordered[directory_id] = list(self.by_directory.get(directory_id, {}))
        return self._ordered[directory_id]

    def _add_lookups(self, record: dict) -> None:
        """Files the user under what ``_indexed_values`` lists: a new lookup goes there too,
        or :meth:`replace` would leave it stale."""
        directory_id, resource = record["directory_id"], record["resource"]
        user_id = resource["id"]
        self.by_user_name[(directory_id, resource["userName"].casefold())] = user_id
        external_id = resource.get("externalId")
        if external_id:
            self.by_external_id.setdefault((directory_id, external_id), set()).add(user_id)
        manager_id = manager_of(resource)
        if manager_id:
            self.by_manager.setdefault(manager_id, set()).add(user_id)
        if record.get("role") == "administrator":
            self.administrators.add(user_id)

    def _remove_lookups(self, record: dict) -> None:
        directory_id, resource = record["directory_id"], record["resource"]
        user_id = resource["id"]
        user_name_key = (directory_id, resource["userName"].casefold())
        if self.by_user_name.get(user_name_key) == user_id:  # a rename in the same batch
            del self.by_user_name[user_name_key]  # may have handed the name on already
        external_id = resource.get("externalId")
        if external_id:
            _discard(self.by_external_id, (directory_id, external_id), user_id)
        manager_id = manager_of(resource)
        if manager_id:
            _discard(self.by_manager, manager_id, user_id)
        self.administrators.discard(user_id)


class _GroupIndex:
    """Groups by case-folded displayName per directory, and memberships both ways.

    Memberships live here and nowhere else in memory: ``members`` maps each group to its
    members in the order they were added, each with the TinyDB number of its membership
    document (the journal names a removed document by it). The documents themselves are
    written from here at compaction (:func:`membership_documents`) rather than kept, one dict
    per member, for it: adding 1,000 members costs two dict updates instead of 1,000 dicts in
    two tables, and a membership a quarter of the memory. Insertion-ordered dicts, so adding
    or removing one member costs the same in a group of 10,000 as in an empty one.
    """

    def __init__(self) -> None:
        self.by_display_name: dict[tuple[str, str], str] = {}
        self.by_directory: dict[str, dict[str, None]] = {}
        self.members: dict[str, dict[str, int]] = {}  # group -> user -> TinyDB number
        self.groups_of: dict[str, dict[str, None]] = {}

    def index_group(self, old: dict | None, new: dict | None) -> None:
        if old is not None:
            name = old["resource"]["displayName"].casefold()
            self.by_display_name.pop((old["directory_id"], name), None)
            if new is None:
                self.by_directory.get(old["directory_id"], {}).pop(old["id"], None)
        if new is not None:
            name = new["resource"]["displayName"].casefold()
            self.by_display_name[(new["directory_id"], name)] = new["id"]
            self.by_directory.setdefault(new["directory_id"], {})[new["id"]] = None

    def load_memberships(self, documents: dict[str, dict]) -> None:
        """Take in a data folder's membership documents (TinyDB number -> document)."""
        members, groups_of = self.members, self.groups_of
        for number, document in documents.items():
            group_id, user_id = document["group_id"], document["user_id"]
            members.setdefault(group_id, {})[user_id] = int(number)
            groups_of.setdefault(user_id, {})[group_id] = None

    def add_members(self, group_id: str, user_ids: list[str], first_key: int) -> None:
        """Users who are not yet members, numbered from ``first_key``: the group's side in
        one update."""
        numbers = range(first_key, first_key + len(user_ids))
        self.members.setdefault(group_id, {}).update(zip(user_ids, numbers, strict=True))
        groups_of = self.groups_of
        for user_id in user_ids:  # most users are in a group already: no spare dict for them
            try:
                groups_of[user_id][group_id] = None
            except KeyError:
                groups_of[user_id] = {group_id: None}

    def remove_members(self, group_id: str, user_ids: list[str]) -> None:
        """Members who leave; a group or user left with none drops out of the index."""
        members = self.members.get(group_id, {})
        for user_id in user_ids:
            members.pop(user_id, None)
            groups = self.groups_of.get(user_id)
            if groups is not None:
                groups.pop(group_id, None)
                if not groups:
                    del self.groups_of[user_id]
        if not members:
            self.members.pop(group_id, None)

    def copy_members(self) -> dict[str, dict[str, int]]:
        """For :func:`membership_documents` outside the lock: 1 ms per 100,000 members,
        where writing their documents takes 200."""
        return {group_id: dict(members) for group_id, members in self.members.items()}


def membership_id(group_id: str, user_id: str) -> str:
    return f"{group_id}:{user_id}"


def membership_document(group_id: str, user_id: str) -> dict:
    """A membership as the ``memberships`` table of a snapshot holds it."""
    return {"id": membership_id(group_id, user_id), "group_id": group_id, "user_id": user_id}


def membership_documents(members: dict[str, dict[str, int]]) -> dict[str, dict]:
    """Every membership of a copy of the group index as the TinyDB document a snapshot holds,
    by its number.

    In number order, which is the order they were made: loading them in that order gives each
    user's groups back in the order the user joined them. Each group's numbers rise already,
    so the sort merges runs.
    """
    numbered = sorted(
        (number, group_id, user_id)
        for group_id, numbers in members.items()
        for user_id, number in numbers.items()
    )
    return {
        str(number): membership_document(group_id, user_id)
        for number, group_id, user_id in numbered
    }


@dataclass(frozen=True)
class _MemberChanges:
    """One write's changes to one group's members: the one form a membership change takes
    (a write holds at most one per group, under the key ``("memberships", group id)``).

    ``leaving`` must be members and ``joining`` must not. In the journal each leaving member
    is the usual deletion of its document by number; the joining ones are one item holding
    each id once (about 40 bytes a member, where a document each would be about 200), whose
    documents take consecutive TinyDB numbers from the first one, so replay rebuilds them
    exactly as they were numbered live.
    """

    group_id: str
    joining: list[str] = field(default_factory=list)
    leaving: list[str] = field(default_factory=list)

    def joining_item(self, table: str, first_key: str) -> list:
        """Two elements where a document's item has three, so no reader can take it for one."""
        batch = {"group_id": self.group_id, "first_key": first_key, "user_ids": self.joining}
        return [table, batch]


def _expand_new_members(table: dict[str, dict], batch: dict) -> None:
    """A journal's batch of new members as TinyDB documents, numbered as they were live."""
    group_id = batch["group_id"]
    first = int(batch["first_key"])
    numbers = map(str, range(first, first + len(batch["user_ids"])))
    table.update(
        (number, membership_document(group_id, user_id))
        for number, user_id in zip(numbers, batch["user_ids"], strict=True)
    )


def _indexed_values(record: dict) -> tuple:
    """What :class:`_UserIndex` files a user under: a change elsewhere leaves it as it is."""
    resource = record["resource"]
    return (
        resource["userName"],
        resource.get("displayName"),
        resource.get("externalId"),
        manager_of(resource),
        record.get("role"),
    )


def _discard(index: dict, key: Any, user_id: str) -> None:
    ids = index.get(key)
    if ids is not None:
        ids.discard(user_id)
        if not ids:
            del index[key]


def manager_of(resource: dict) -> str | None:
    return resource.get(ENTERPRISE_USER_URN, {}).get("manager", {}).get("value")


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Loading makes millions of small dicts and strings and no cycle; with the cyclic
    collector running, each of its passes walks all that was made so far, which at 100,000
    users tripled the time parsing takes."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()  # what was loaded lives as long as the process: no collector pass walks it
        if was_enabled:
            gc.enable()


def _collect_and_freeze() -> None:
    """Collect the cycles among what was made since the last freeze, and freeze the rest.

    What the writes keep (documents, index entries) lives long and holds no cycle, but each
    full pass of the cyclic collector, a pause of every thread, walks all of it that is not
    frozen; the passes come as that grows by a quarter, so they grew with the directory:
    160 ms after 20,000 creates on top of 100,000 users, 260 ms in a bench run. Frozen every
    few thousand writes, a pass walks only what the last few thousand made (tens of ms).
    """
    gc.collect()
    gc.freeze()


class Store:
    """The narrow verbs Roster needs, each one atomic under one lock.

    The live data is in memory (``_tables``: table -> our id -> document) with indexes, so no
    lookup walks a table; memberships are in the group index alone (:class:`_GroupIndex`).
    Stored documents are replaced, never changed in place, which lets a compaction take a
    consistent snapshot with shallow copies, and lets a new version share the values it keeps
    with the old one. Reads for pages (``get_user``...) hand out deep copies; the API's hot
    paths (``read_user``, list pages, write verbs' results) hand out the stored documents
    themselves, which callers must not change.

    ``read_only=True`` opens a view of a folder another process owns (operator commands while
    the server runs): reads work, writes raise :class:`DataFolderBusy`.
    """

    def __init__(self, data_dir: str, read_only: bool = False) -> None:
        self.data_dir = data_dir
        self._lock = threading.RLock()
        self._compaction_lock = threading.Lock()
        self._compaction_thread: threading.Thread | None = None
        self._keys_touched: dict[str, float] = {}
        self._writes_since_freeze = 0
        self._closed = False
        self._folder = _DataFolder(data_dir, read_only)
        self.read_only = read_only
        try:
            self._load()
        except BaseException:
            self._folder.release()
            raise

    @classmethod
    def open_or_view(cls, data_dir: str) -> Store:
        """Own the folder if free, else a read-only view (for operator commands)."""
        try:
            return cls(data_dir)
        except DataFolderBusy as busy:
            view = cls(data_dir, read_only=True)
            view.busy_reason = str(busy)
            return view

    # -- loading and writing -------------------------------------------------------------------

    def _load(self) -> None:
        """Read snapshot and journal into memory, keyed by our ids, and build the indexes.

        TinyDB numbers its documents itself; our ids live inside the documents, so a stock
        ``TinyDB(path)`` reads the snapshot, and ``_doc_keys`` remembers each id's number.
        """
        with _cyclic_gc_paused():
            self._build_from(*self._folder.load())

    def _build_from(self, layout: dict[str, dict[str, dict]], seq: int) -> None:
        self._seq = seq
        self._tables: dict[str, dict[str, dict]] = {}
        self._doc_keys: dict[str, dict[str, str]] = {}
        self._next_doc_key: dict[str, int] = {}
        for name in TABLES:
            documents = layout[name]
            self._tables[name] = {doc["id"]: doc for doc in documents.values()}
            self._doc_keys[name] = {doc["id"]: key for key, doc in documents.items()}
            self._next_doc_key[name] = max(map(int, documents), default=0) + 1
        self._users = _UserIndex()
        for record in self._tables["users"].values():
            self._users.add(record)
        self._groups = _GroupIndex()
        for record in self._tables["groups"].values():
            self._groups.index_group(None, record)
        self._groups.load_memberships(layout["memberships"])
        self._tables["memberships"], self._doc_keys["memberships"] = {}, {}  # the index has them
        self._keys_by_hash = {k["token_hash"]: key_id for key_id, k in self._tables["keys"].items()}
        self._snapshot_bytes = _file_size(self._folder.snapshot_path)

    def _tinydb_layout(self) -> Callable[[], dict[str, dict[str, dict]]]:
        """Taken under the lock, called outside it: the TinyDB layout of the current state.

        Under the lock only shallow copies are made; the membership documents, which memory
        does not keep, are written from a copy of the group index when the result is called.
        """
        layout = {
            name: {self._doc_keys[name][doc_id]: doc for doc_id, doc in documents.items()}
            for name, documents in self._tables.items()
        }
        members = self._groups.copy_members()
        return lambda: {**layout, "memberships": membership_documents(members)}

    @contextmanager
    def _reading(self) -> Iterator[None]:
        with self._lock:
            yield

    @contextmanager
    def _writing(self) -> Iterator[dict[tuple[str, str], dict | None]]:
        """Collect changes as (table, id) -> new document (None deletes); journal them at once.

        One journal line per operation keeps a change and its audit entry together. Memory
        changes once the line is written, and the caller returns (and answers its client) only
        once the line is fsynced. A failed write leaves everything as it was. A failed fsync
        raises, and the change may or may not survive a crash, as with any database; from then
        on every write refuses (:class:`StoreFailed`), as it does after a change that reached
        the journal but failed half-way into memory.
        """
        changes: dict[tuple[str, str], dict | None] = {}
        with self._lock:
            yield changes
            if not changes:
                return
            if self.read_only:
                raise DataFolderBusy(getattr(self, "busy_reason", "this store is read-only"))
            if self._closed:
                raise StoreClosed("Roster is shutting down; try again in a moment")
            doc_keys, next_keys = self._doc_keys_for(changes)
            entries = self._journal_items(changes, doc_keys)
            self._folder.append(self._seq + 1, entries)
            self._seq += 1
            try:
                self._apply(changes, doc_keys)
            except BaseException as error:  # the journal has it, memory only part of it
                reason = f"a journalled change was half applied: {error!r}"
                raise self._folder.fail(reason) from error
            self._next_doc_key = next_keys
            seq = self._seq
            self._writes_since_freeze += 1
            freeze_due = self._writes_since_freeze >= FREEZE_EVERY_WRITES
            if freeze_due:
                self._writes_since_freeze = 0
        self._folder.wait_durable(seq)
        if freeze_due:
            _collect_and_freeze()
        self._compact_in_background_when_due()

    def _doc_keys_for(self, changes: dict) -> tuple[dict[tuple[str, str], str], dict[str, int]]:
        """TinyDB document numbers for the changed documents, and the next free numbers; a
        group's joining members get the first of as many consecutive numbers as they are."""
        keys = {}
        next_keys = dict(self._next_doc_key)
        for (table, doc_id), document in changes.items():
            if isinstance(document, _MemberChanges):
                keys[(table, doc_id)] = str(next_keys[table])
                next_keys[table] += len(document.joining)
                continue
            if table == "memberships":  # the index holds them: a document here would be lost
                raise TypeError("membership changes are _MemberChanges, not documents")
            key = self._doc_keys[table].get(doc_id)
            if key is None:
                key = str(next_keys[table])
                next_keys[table] += 1
            keys[(table, doc_id)] = key
        return keys, next_keys

    def _journal_items(self, changes: dict, doc_keys: dict[tuple[str, str], str]) -> list:
        """The journal line's items: [table, number, document or null] per document, and for
        a group's members a deletion per leaving member and one item for the joining ones."""
        items = []
        for (table, doc_id), document in changes.items():
            if not isinstance(document, _MemberChanges):
                items.append([table, doc_keys[(table, doc_id)], document])
                continue
            numbers = self._groups.members.get(document.group_id, {})
            items.extend([table, str(numbers[user_id]), None] for user_id in document.leaving)
            if document.joining:
                items.append(document.joining_item(table, doc_keys[(table, doc_id)]))
        return items

    def _apply(self, changes: dict, doc_keys: dict[tuple[str, str], str]) -> None:
        for (table, doc_id), document in changes.items():
            if isinstance(document, _MemberChanges):
                self._groups.remove_members(document.group_id, document.leaving)
                first_key = int(doc_keys[(table, doc_id)])
                self._groups.add_members(document.group_id, document.joining, first_key)
                continue
            old = self._tables[table].get(doc_id)
            if table == "users":
                self._index_user(old, document)
            elif table == "groups":
                self._groups.index_group(old, document)
            if table == "keys" and old is not None:
                self._keys_by_hash.pop(old["token_hash"], None)
            if document is None:
                self._tables[table].pop(doc_id, None)
                self._doc_keys[table].pop(doc_id, None)
                continue
            self._tables[table][doc_id] = document
            self._doc_keys[table][doc_id] = doc_keys[(table, doc_id)]
            if table == "keys":
                self._keys_by_hash[document["token_hash"]] = doc_id

    def _index_user(self, old: dict | None, new: dict | None) -> None:
        if old is not None and new is not None:
            self._users.replace(old, new)
        elif old is not None:
            self._users.remove(old)
        elif new is not None:
            self._users.add(new)

    # -- compaction and backup -----------------------------------------------------------------

    def _compact_in_background_when_due(self) -> None:
        """Compact once the journal outgrows the snapshot, so replay stays short and the
        amortised cost of a write stays constant."""
        due = self._folder.journal_bytes > max(COMPACT_MIN_BYTES, self._snapshot_bytes)
        if not due:
            return
        with self._lock:  # one check-and-start at a time
            if self._closed or (self._compaction_thread and self._compaction_thread.is_alive()):
                return
            self._compaction_thread = threading.Thread(
                target=self.compact, name="roster-compaction", daemon=True
            )
            self._compaction_thread.start()

    def compact(self) -> None:
        """Fold the journal into a new TinyDB snapshot; writes go on meanwhile.

        Under the lock: shallow copies of the tables and a switch to a fresh journal. Outside
        it: the slow part, writing the snapshot. A crash before the rename keeps the old
        snapshot and both journals; after it, the covered journal lines are skipped on replay.
        """
        with self._compaction_lock:
            with self._lock:
                if self.read_only:
                    return
                last_seq = self._seq
                covered = self._folder.start_new_journal(last_seq + 1)  # refuses after a failure
                layout = self._tinydb_layout()
            self._folder.write_snapshot(layout(), last_seq)
            for path in covered:
                os.unlink(path)
            self._snapshot_bytes = _file_size(self._folder.snapshot_path)
            del layout  # its shallow copies are garbage now: not to be frozen below
            # What a snapshot holds is long-lived: freezing it keeps the collector's full passes
            # (each one a pause of all threads) proportional to what changed since, not to the
            # whole directory. Compactions come as the data doubles, so this is rare.
            gc.freeze()

    def backup(self, path: str) -> int:
        """Write a consistent TinyDB snapshot of the current state to ``path``; returns its seq."""
        with self._lock:
            if self._folder.failure is not None:  # memory may hold what the disk does not
                raise self._folder.fail(self._folder.failure)
            layout = self._tinydb_layout()
            last_seq = self._seq
        self._folder.write_snapshot(layout(), last_seq, path)
        return last_seq

    def close(self) -> None:
        """Refuse further writes, compact (so the next start reads one file), and give up the
        data folder. Waitress may still be serving while this runs at exit."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        # After a failure memory may hold what the journal does not: the next start replays
        # the journal instead of trusting memory.
        try:
            if not self.read_only and self._folder.journal_bytes and self._folder.failure is None:
                self.compact()
        finally:
            self._folder.release()

    # -- directories ---------------------------------------------------------------------------

    def create_directory(
        self,
        name: str,
        description: str = "",
        auth_method: str = "none",
        actor: str = SYSTEM_ACTOR,
        my_account: bool = False,
        **sign_in: dict[str, str],
    ) -> dict:
        """A new directory, under the rules of :meth:`update_directory`; ``sign_in`` holds the
        provider settings by method (``microsoft=...``, ``oidc=...``)."""
        checked = _checked_directory_updates(
            {
                "name": name,
                "description": description,
                "auth_method": auth_method,
                "my_account": my_account,
                **sign_in,
            }
        )
        with self._writing() as changes:
            if self._directory_id_by_name(checked["name"]):
                raise UniquenessError(f'a directory named "{checked["name"]}" already exists')
            directory = {"id": new_id(), **checked, "created": utc_now()}
            changes[("directories", directory["id"])] = directory
            self._audit(changes, directory["id"], actor, "directory.create", directory["id"])
        return copy_json(directory)

    def _directory_id_by_name(self, name: str) -> str | None:
        wanted = name.casefold()
        for directory_id, directory in self._tables["directories"].items():
            if directory["name"].casefold() == wanted:
                return directory_id
        return None

    def get_directory(self, directory_id: str) -> dict | None:
        with self._reading():
            return copy_json(self._tables["directories"].get(directory_id))

    def find_directory_by_name(self, name: str) -> dict | None:
        with self._reading():
            directory_id = self._directory_id_by_name(name)
            return copy_json(self._tables["directories"].get(directory_id or ""))

    def list_directories(self) -> list[dict]:
        with self._reading():
            directories = copy_json(list(self._tables["directories"].values()))
        return sorted(directories, key=lambda d: d["name"].casefold())

    def update_directory(
        self,
        directory_id: str,
        updates: dict[str, Any],
        actor: str,
        expected_version: str | None = None,
    ) -> dict:
        """Change a directory's settings: ``name`` (1-100 characters, unique ignoring case),
        ``description`` (at most 250), ``auth_method`` (one of :data:`AUTH_METHODS`),
        ``my_account`` (whether its users may edit their own profile; absent means no) and the
        provider settings of ``microsoft`` and ``oidc`` (:data:`SIGN_IN_FIELDS`), each kept
        while another method is chosen, so switching back does not lose the secret.
        With ``expected_version`` (:func:`settings_version`), a directory changed since is
        refused with :class:`PreconditionFailed`."""
        checked = _checked_directory_updates(updates)
        with self._writing() as changes:
            directory = self._tables["directories"].get(directory_id)
            if directory is None:
                raise NotFoundError(directory_id)
            if expected_version is not None and settings_version(directory) != expected_version:
                raise PreconditionFailed(directory_id)
            if "name" in checked:
                holder = self._directory_id_by_name(checked["name"])
                if holder is not None and holder != directory_id:
                    raise UniquenessError(f'a directory named "{checked["name"]}" already exists')
            changes[("directories", directory_id)] = {**directory, **checked}
            self._audit(changes, directory_id, actor, "directory.update", directory_id)
        return copy_json(changes[("directories", directory_id)])

    def set_sign_in(
        self, directory_id: str, method: str, settings: dict[str, str] | None, actor: str
    ) -> dict:
        """Switch a directory's sign-in to ``method`` and, for an OpenID Connect method, store
        its provider settings (the ``client_secret`` already encrypted by the caller), in one
        write."""
        updates: dict[str, Any] = {"auth_method": method}
        if method in SIGN_IN_FIELDS:
            updates[method] = settings or {}
        return self.update_directory(directory_id, updates, actor)

    def delete_directory(
        self, directory_id: str, actor: str, expected_users: int | None = None
    ) -> int:
        """Delete a directory with its users, groups and keys; returns how many users went.

        Refused while it holds every administrator, so the pages keep someone who can
        administer them (as :meth:`set_role` keeps the last one). With ``expected_users``
        (the count a confirmation showed), a directory that has gained or lost users since is
        refused with :class:`PreconditionFailed`: nobody confirmed deleting those."""
        with self._writing() as changes:
            if directory_id not in self._tables["directories"]:
                raise NotFoundError(directory_id)
            user_ids = list(self._users.by_directory.get(directory_id, {}))
            if expected_users is not None and len(user_ids) != expected_users:
                raise PreconditionFailed(directory_id)
            if self._users.administrators and self._users.administrators <= set(user_ids):
                raise InvalidValueError(
                    "directory: it holds every administrator; make someone in another "
                    "directory an administrator first"
                )
            for user_id in user_ids:
                changes[("users", user_id)] = None
            for group_id in self._groups.by_directory.get(directory_id, {}):
                changes[("groups", group_id)] = None
                self._remove_all_members(changes, group_id)
            for key_id, key in self._tables["keys"].items():
                if key["directory_id"] == directory_id:
                    changes[("keys", key_id)] = None
            changes[("directories", directory_id)] = None
            self._audit(changes, None, actor, "directory.delete", directory_id)
        return len(user_ids)

    # -- users ---------------------------------------------------------------------------------

    def create_user(self, directory_id: str, resource: dict, actor: str) -> dict:
        """Store a new user; assigns ``id`` and ``meta`` (RFC 7643 §3.1: both are the server's).

        Like every write verb, it takes ownership of the values it is given and returns the
        stored document: a caller changes neither afterwards (copying a user on the way in
        and out cost a tenth of a create).
        """
        resource = {**resource, "id": new_id()}
        with self._writing() as changes:
            changes[("users", resource["id"])] = self._new_user_record(directory_id, resource)
            self._audit(changes, directory_id, actor, "user.create", resource["id"])
        return resource

    def _new_user_record(self, directory_id: str, resource: dict) -> dict:
        """The checks and ``meta`` of a new user (under the lock); ``resource`` has its id."""
        self._check_directory(directory_id)
        self._check_user_name_free(directory_id, resource["userName"], None)
        self._check_manager_exists(directory_id, resource)
        now = utc_now()
        resource["meta"] = {"resourceType": "User", "created": now, "lastModified": now}
        resource["meta"]["version"] = resource_version(resource)
        return {"id": resource["id"], "directory_id": directory_id, "resource": resource}

    def get_user(self, directory_id: str, user_id: str) -> dict | None:
        with self._reading():
            record = self._user_record(directory_id, user_id)
            return copy_json(record["resource"]) if record else None

    def read_user(self, directory_id: str, user_id: str) -> dict | None:
        """The stored user itself, not a copy, as list pages are served: for the API's GET,
        which only renders it. Callers must not change it.

        It takes no lock: one dict lookup of a document that writes replace, never change,
        cannot tear, and a GET must not queue behind a write's journal line.
        """
        record = self._user_record(directory_id, user_id)
        return record["resource"] if record else None

    def replace_user(
        self,
        directory_id: str,
        user_id: str,
        resource: dict,
        actor: str,
        expected_version: Versions | None = None,
    ) -> dict:
        return self.update_user(
            directory_id, user_id, lambda _current: resource, actor, expected_version
        )

    def update_user(
        self,
        directory_id: str,
        user_id: str,
        change: Callable[[dict], dict],
        actor: str,
        expected_version: Versions | None = None,
        by_administrator: bool = False,
    ) -> dict:
        """Store ``change(current)`` as the user's new state, all under the lock (no lost update).

        ``change`` gets the stored resource, which it must not modify (it builds a new one,
        which may share the values it keeps), and may raise to abandon the write;
        id and meta.created stay the server's. Returns the stored document (see create_user).
        ``by_administrator`` is for the admin pages: a new userName they give an administrator
        is one that administrator's first sign-in may claim, unlike a directory key's.
        """
        with self._writing() as changes:
            record = self._user_record(directory_id, user_id)
            if record is None:
                raise NotFoundError(user_id)
            self._check_user_version(directory_id, record["resource"], expected_version)
            old_resource = record["resource"]
            resource = dict(change(old_resource))
            self._check_user_name_free(directory_id, resource["userName"], user_id)
            self._check_manager_exists(directory_id, resource)
            resource["id"] = user_id
            resource["meta"] = {
                "resourceType": "User",
                "created": old_resource["meta"]["created"],
                "lastModified": utc_now(),
            }
            resource["meta"]["version"] = resource_version(resource)
            updated = _holding(record, resource)
            if by_administrator:
                updated = _administrator_name_confirmed(updated)
            changes[("users", user_id)] = updated
            if resource.get("displayName") != old_resource.get("displayName"):
                self._renew_groups_of(changes, user_id)
            self._audit(changes, directory_id, actor, "user.update", user_id)
        return resource

    def delete_user(
        self,
        directory_id: str,
        user_id: str,
        actor: str,
        expected_version: Versions | None = None,
    ) -> None:
        """Delete a user with their group memberships (each group gets a new version); their
        direct reports lose the dangling manager, all in the same write."""
        with self._writing() as changes:
            record = self._user_record(directory_id, user_id)
            if record is None:
                raise NotFoundError(user_id)
            self._check_user_version(directory_id, record["resource"], expected_version)
            changes[("users", user_id)] = None
            for group_id in self._groups.groups_of.get(user_id, {}):
                changes[("memberships", group_id)] = _MemberChanges(group_id, leaving=[user_id])
            self._renew_groups_of(changes, user_id)
            self._audit(changes, directory_id, actor, "user.delete", user_id)
            for report_id in self._users.by_manager.get(user_id, ()):
                changes[("users", report_id)] = self._without_manager(report_id)
                self._audit(changes, directory_id, actor, "user.manager_removed", report_id)

    def _renew_groups_of(self, changes: dict, user_id: str) -> None:
        """A new version for each group of the user: a group shows its members' names, and
        their version must change with what it shows (RFC 7644 §3.14)."""
        for group_id in self._groups.groups_of.get(user_id, {}):
            if ("groups", group_id) not in changes:
                group = self._tables["groups"][group_id]
                resource = copy_json(group["resource"])
                changes[("groups", group_id)] = self._group_record(group, resource, resource)

    def _without_manager(self, user_id: str) -> dict:
        record = self._tables["users"][user_id]
        resource = copy_json(record["resource"])
        enterprise = resource[ENTERPRISE_USER_URN]
        del enterprise["manager"]
        if not enterprise:
            del resource[ENTERPRISE_USER_URN]
            resource["schemas"] = [s for s in resource["schemas"] if s != ENTERPRISE_USER_URN]
        resource["meta"] = {**resource["meta"], "lastModified": utc_now()}
        resource["meta"]["version"] = resource_version(resource)
        return {**record, "resource": resource}

    def display_name_of(self, directory_id: str, user_id: str) -> str | None:
        """A user's displayName without copying the user; None when there is no such user."""
        with self._reading():
            return self._display_name(directory_id, user_id)

    def _display_name(self, directory_id: str, user_id: str) -> str | None:
        record = self._user_record(directory_id, user_id)
        return record["resource"].get("displayName", "") if record else None

    def direct_reports(self, directory_id: str, manager_id: str) -> list[dict]:
        with self._reading():
            ids = self._users.by_manager.get(manager_id, ())
            return [
                copy_json(r["resource"]) for i in ids if (r := self._user_record(directory_id, i))
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
        text_terms: list[tuple[str, str, str]] | None = None,
    ) -> tuple[int, list[dict]]:
        """Count the users that match and return one page of them (RFC 7644 §3.4.2.4).

        ``equal_terms`` are the filter's top-level ``eq`` terms (lower-case attribute path ->
        value); an id, userName or externalId term narrows the candidates through an index.
        Else a ``text_terms`` entry (attribute, op, folded literal; see scimlang.text_terms) on
        displayName or userName narrows them by scanning the folded values alone. ``matches``
        then checks the whole filter.

        The page holds the stored documents themselves, not copies: a list of 100 users is the
        hottest read there is, and stored documents are never changed in place (a write
        replaces them), so a caller that only reads them, as a response does, is safe. A caller
        must not change them.
        """
        with self._reading():
            begin = max(start_index, 1) - 1
            end = None if count is None else begin + max(count, 0)
            if matches is None and sort_key is None and not equal_terms:
                ordered = self._users.ordered_ids(directory_id)
                users = self._tables["users"]
                page = [users[user_id]["resource"] for user_id in ordered[begin:end]]
                return len(ordered), page
            candidates = self._user_candidates(directory_id, equal_terms or {}, text_terms or [])
            return _matching_page(candidates, matches, sort_key, descending, begin, end)

    def _user_candidates(
        self, directory_id: str, equal_terms: dict[str, str], text_terms: list
    ) -> Iterable[dict]:
        """The users a filter can match: through an index when it has an id, userName or
        externalId term, or through the folded values when it has a text term on one of
        theirs; else the whole directory, yielded without building a list first."""
        users = self._tables["users"]
        if not equal_terms.keys() & {"id", "username", "externalid"}:
            for attribute, op, needle in text_terms:
                if attribute in _UserIndex.FOLDED_ATTRIBUTES:
                    ids = self._users.ids_with_text(directory_id, attribute, op, needle)
                    return [users[user_id]["resource"] for user_id in ids]
            # The directory index holds only this directory's users: no per-record check.
            return (users[user_id]["resource"] for user_id in self._users.ordered_ids(directory_id))
        if "id" in equal_terms:
            ids: Any = [equal_terms["id"]]
        elif "username" in equal_terms:
            found = self._users.by_user_name.get((directory_id, equal_terms["username"].casefold()))
            ids = [found] if found else []
        else:
            ids = self._users.by_external_id.get((directory_id, equal_terms["externalid"]), ())
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

    def _check_manager_exists(self, directory_id: str, resource: dict) -> None:
        manager_id = manager_of(resource)
        if manager_id and self._user_record(directory_id, manager_id) is None:
            raise BrokenReferenceError(f"manager: no user with id {manager_id} in this directory")

    def _check_directory(self, directory_id: str) -> None:
        if directory_id not in self._tables["directories"]:
            raise NotFoundError(directory_id)

    def import_users(
        self,
        directory_id: str,
        creates: list[dict],
        updates: list[tuple[str, str, dict]],
        actor: str,
    ) -> None:
        """Create and update many users in one write: all of them, or none when any check
        fails, so an import never stops half-way.

        ``creates`` carry ids from :func:`new_id`, so a user's manager may be another user of
        the same batch. ``updates`` are (user id, the ``meta.version`` the caller planned from,
        new resource); a user changed since is refused with :class:`PreconditionFailed`.
        userNames must be unique (ignoring case) in the directory as the batch leaves it.
        Imports come from the admin pages, so an administrator's new userName is confirmed
        as :meth:`update_user` does ``by_administrator``.
        """
        with self._writing() as changes:
            self._check_directory(directory_id)
            batch: dict[str, dict] = {}
            for resource in creates:
                if resource["id"] in self._tables["users"] or resource["id"] in batch:
                    raise UniquenessError(f"id {resource['id']} is already taken")
                batch[resource["id"]] = copy_json(resource)
            for user_id, version, resource in updates:
                record = self._user_record(directory_id, user_id)
                if record is None or user_id in batch:
                    raise NotFoundError(user_id)
                self._check_version(record["resource"], (version.removeprefix("W/"),))
                batch[user_id] = {**copy_json(resource), "id": user_id}
            claimed: dict[str, str] = {}
            for user_id, resource in batch.items():
                user_name = resource["userName"]
                holder = claimed.setdefault(user_name.casefold(), user_id)
                indexed = self._users.by_user_name.get((directory_id, user_name.casefold()))
                taken = indexed is not None and indexed != user_id and indexed not in batch
                if holder != user_id or taken:
                    raise UniquenessError(f'userName "{user_name}" is already taken')
                manager_id = manager_of(resource)
                known = manager_id in batch or self._user_record(directory_id, manager_id)
                if manager_id and not known:
                    raise BrokenReferenceError(
                        f"manager: no user with id {manager_id} in this directory"
                    )
            now = utc_now()
            for user_id, resource in batch.items():
                record = self._tables["users"].get(user_id)
                created = record["resource"]["meta"]["created"] if record else now
                resource["meta"] = {"resourceType": "User", "created": created, "lastModified": now}
                resource["meta"]["version"] = resource_version(resource)
                if record is None:
                    record = {"id": user_id, "directory_id": directory_id}
                elif resource.get("displayName") != record["resource"].get("displayName"):
                    self._renew_groups_of(changes, user_id)
                updated = _administrator_name_confirmed(_holding(record, resource))
                changes[("users", user_id)] = updated
                action = "user.update" if "resource" in record else "user.create"
                self._audit(changes, directory_id, actor, action, user_id)

    # -- accounts: sign-in data beside the SCIM resource ---------------------------------------
    #
    # ``role``, ``password_hash``, ``oid`` and ``session_epoch`` are top-level fields of the user
    # record, never inside ``resource``, so SCIM neither shows nor replaces them: a PUT or PATCH
    # builds a new resource and the record keeps its other fields.

    def create_first_administrator(
        self, directory_id: str, resource: dict, password_hash: str, actor: str
    ) -> dict:
        """First run: the user, their administrator role and password, and the directory
        switched to local accounts, in one write. Refused (:class:`UniquenessError`) once any
        administrator exists, checked under the lock, so two setup forms sent at once cannot
        both succeed."""
        resource = copy_json(resource)
        resource["id"] = new_id()
        user_id = resource["id"]
        with self._writing() as changes:
            if self._users.administrators:
                raise UniquenessError("an administrator already exists")
            record = self._new_user_record(directory_id, resource)
            changes[("users", user_id)] = {
                **_with_role(record, "administrator"),
                "password_hash": password_hash,
            }
            directory = self._tables["directories"][directory_id]
            changes[("directories", directory_id)] = {**directory, "auth_method": "local"}
            self._audit(changes, directory_id, actor, "user.create", user_id)
            self._audit(changes, directory_id, actor, "user.role", user_id)
            self._audit(changes, directory_id, actor, "user.password", user_id)
            self._audit(changes, directory_id, actor, "directory.update", directory_id)
        return copy_json(resource)

    def set_password(
        self, directory_id: str, user_id: str, password_hash: str | None, actor: str
    ) -> int:
        """Store a user's password hash (``None`` removes the password: no local sign-in).

        A new password also ends every session the user has (see :meth:`end_sessions`): one
        opened with the old password, perhaps by whoever learnt it, must not outlive it.
        Returns the new session epoch, for the session that set the password to go on.
        """
        with self._writing() as changes:
            record = self._user_record(directory_id, user_id)
            if record is None:
                raise NotFoundError(user_id)
            updated = {k: v for k, v in record.items() if k != "password_hash"}
            if password_hash is not None:
                updated["password_hash"] = password_hash
            updated = _with_next_session_epoch(updated)
            changes[("users", user_id)] = updated
            self._audit(changes, directory_id, actor, "user.password", user_id)
        return updated["session_epoch"]

    def end_sessions(self, directory_id: str, user_id: str, actor: str) -> None:
        """Sign a user out everywhere: every session opened before now is refused from now on.

        A session is a signed cookie, which the server cannot take back from a browser, or
        from whoever copied it. So each cookie names the user's ``session_epoch`` at sign-in,
        and :func:`auth.current_account` refuses one that names an older epoch.
        """
        with self._writing() as changes:
            record = self._user_record(directory_id, user_id)
            if record is None:
                return  # deleted: their sessions have ended already
            changes[("users", user_id)] = _with_next_session_epoch(record)
            self._audit(changes, directory_id, actor, "user.sign_out", user_id)

    def record_oid(self, directory_id: str, user_id: str, oid: str, actor: str) -> None:
        """Pin the user to the provider's object id of their first OpenID Connect sign-in.

        ``preferred_username`` and ``email`` are not stable across tenants (the "nOAuth"
        takeover); the oid is, so a later sign-in with another oid is refused. Refused here
        too (:class:`InvalidValueError`) when another oid is already recorded, checked under
        the lock, so two first sign-ins at once cannot both pin.
        """
        with self._writing() as changes:
            record = self._user_record(directory_id, user_id)
            if record is None:
                raise NotFoundError(user_id)
            if record.get("oid") == oid:
                return
            if record.get("oid") is not None:
                raise InvalidValueError("oid: another account is already recorded for this user")
            if _renamed_since_made_administrator(record):
                raise AdministratorRenamed(record["resource"]["userName"])
            changes[("users", user_id)] = {**record, "oid": oid}
            self._audit(changes, directory_id, actor, "user.oid", user_id)

    def oid_of(self, directory_id: str, user_id: str) -> str | None:
        """The provider object id recorded at the user's first OpenID Connect sign-in."""
        with self._reading():
            record = self._user_record(directory_id, user_id)
            return record.get("oid") if record else None

    def set_role(self, directory_id: str, user_id: str, role: str, actor: str) -> None:
        """Make a user an administrator or a plain user. The last administrator stays one, so
        the pages always have someone who can administer them."""
        if role not in ROLES:
            raise InvalidValueError(f"role: one of {', '.join(ROLES)}")
        with self._writing() as changes:
            record = self._user_record(directory_id, user_id)
            if record is None:
                raise NotFoundError(user_id)
            if role != "administrator" and self._users.administrators == {user_id}:
                raise InvalidValueError("role: the last administrator cannot become a user")
            changes[("users", user_id)] = _with_role(record, role)
            self._audit(changes, directory_id, actor, "user.role", user_id)

    def account(self, directory_id: str, user_id: str) -> dict | None:
        """What the pages need to know of a signed-in user: ``id``, ``directory_id``,
        ``resource``, ``role``, ``has_password`` and ``session_epoch``; never the password
        hash."""
        with self._reading():
            record = self._user_record(directory_id, user_id)
            if record is None:
                return None
            return {
                "id": user_id,
                "directory_id": directory_id,
                "resource": copy_json(record["resource"]),
                "role": record.get("role", "user"),
                "has_password": bool(record.get("password_hash")),
                "session_epoch": record.get("session_epoch", 0),
            }

    def password_hash_of(self, directory_id: str, user_id: str) -> str | None:
        """For checking a password only: the stored hash, or None without a local password."""
        with self._reading():
            record = self._user_record(directory_id, user_id)
            return record.get("password_hash") if record else None

    def find_user_by_user_name(self, directory_id: str, user_name: str) -> dict | None:
        """The user with this userName in the directory, ignoring case (RFC 7643 §4.1.1)."""
        with self._reading():
            user_id = self._users.by_user_name.get((directory_id, user_name.casefold()))
            record = self._user_record(directory_id, user_id) if user_id else None
            return copy_json(record["resource"]) if record else None

    def count_administrators(self) -> int:
        """Administrators in all directories, active or not."""
        with self._reading():
            return len(self._users.administrators)

    # -- people search -------------------------------------------------------------------------

    def search_people(
        self,
        text: str = "",
        directory_id: str | None = None,
        department: str | None = None,
        title: str | None = None,
        manager_id: str | None = None,
        start_index: int = 1,
        count: int = 20,
    ) -> tuple[int, list[dict]]:
        """The people search of the pages, across directories: how many matched, and one page
        of ``{"directory_id", "resource"}`` sorted by displayName.

        Each word of ``text`` must appear, ignoring case, in the displayName, userName, an
        email, a phone number (also compared digits only, so "5550100" finds "+1 555-0100"),
        the title or the department. ``department`` and ``title`` are parts of those
        attributes, ``manager_id`` the id of the people's manager. Deactivated users are found
        too. It scans: only the candidate list is taken under the lock, and since stored
        documents are replaced, never changed in place, the scan itself runs outside it.
        """
        with self._reading():
            users = self._tables["users"]
            if manager_id:
                ids: Any = self._users.by_manager.get(manager_id, ())
            elif directory_id:
                ids = self._users.by_directory.get(directory_id, {})
            else:
                ids = users
            records = [users[i] for i in ids if i in users]
        matches = _people_matcher(text, department, title)
        found = [
            r
            for r in records
            if (directory_id is None or r["directory_id"] == directory_id)
            and matches(r["resource"])
        ]
        found.sort(key=_people_order)
        begin = max(start_index, 1) - 1
        page = found[begin : begin + max(count, 0)]
        return len(found), [
            {"directory_id": r["directory_id"], "resource": copy_json(r["resource"])} for r in page
        ]

    # -- groups --------------------------------------------------------------------------------

    def create_group(
        self, directory_id: str, resource: dict, member_ids: list[str], actor: str
    ) -> tuple[dict, list[str]]:
        """Store a new group and its members; returns it and the member ids that were skipped.

        A member id that is no user of the directory is skipped, not refused, so one stale id
        cannot block Entra's whole batch; the skip is audited.
        """
        resource = copy_json(resource)
        resource["id"] = new_id()
        with self._writing() as changes:
            self._check_directory(directory_id)
            self._check_group_name_free(directory_id, resource["displayName"], None)
            record = {"id": resource["id"], "directory_id": directory_id, "revision": 0}
            skipped = self._edit_members(changes, record, [("add", member_ids)], actor)
            changes[("groups", resource["id"])] = self._group_record(record, resource, None)
            self._audit(changes, directory_id, actor, "group.create", resource["id"])
        return copy_json(changes[("groups", resource["id"])]["resource"]), skipped

    def get_group(self, directory_id: str, group_id: str) -> dict | None:
        """The group without its members (see :meth:`group_members`)."""
        with self._reading():
            record = self._group_in(directory_id, group_id)
            return copy_json(record["resource"]) if record else None

    def group_members(self, directory_id: str, group_id: str) -> list[tuple[str, str]]:
        """(user id, displayName) of each member, in the order they were added."""
        with self._reading():
            users = self._tables["users"]
            return [
                (user_id, users[user_id]["resource"].get("displayName", ""))
                for user_id in self._groups.members.get(group_id, {})
                if user_id in users and users[user_id]["directory_id"] == directory_id
            ]

    def group_member_count(self, directory_id: str, group_id: str) -> int:
        """How many members a group has, from the membership index (no copies); 0 for a group
        that is not in the directory."""
        with self._reading():
            if self._group_in(directory_id, group_id) is None:
                return 0
            return len(self._groups.members.get(group_id, {}))

    def groups_of_user(self, directory_id: str, user_id: str) -> list[tuple[str, str]]:
        """(group id, displayName) of each group the user is a direct member of."""
        with self._reading():
            return self._groups_of(directory_id, user_id)

    def _groups_of(self, directory_id: str, user_id: str) -> list[tuple[str, str]]:
        groups = self._tables["groups"]
        return [
            (group_id, groups[group_id]["resource"]["displayName"])
            for group_id in self._groups.groups_of.get(user_id, ())
            if groups[group_id]["directory_id"] == directory_id
        ]

    def groups_and_manager_names(
        self, directory_id: str, resources: list[dict]
    ) -> list[tuple[list[tuple[str, str]], str | None]]:
        """For each user: their groups (as :meth:`groups_of_user`) and their manager's
        displayName (as :meth:`display_name_of`, None without a manager). One lock for a whole
        page: what rendering a page of users reads besides the users themselves."""
        with self._lock:
            return [self._groups_and_manager_name(directory_id, r) for r in resources]

    def _groups_and_manager_name(
        self, directory_id: str, resource: dict
    ) -> tuple[list[tuple[str, str]], str | None]:
        manager_id = manager_of(resource)
        manager_name = self._display_name(directory_id, manager_id) if manager_id else None
        return self._groups_of(directory_id, resource["id"]), manager_name

    def search_groups(
        self,
        directory_id: str,
        matches: Callable[[dict], bool] | None = None,
        equal_terms: dict[str, str] | None = None,
        sort_key: Callable[[dict], Any] | None = None,
        descending: bool = False,
        start_index: int = 1,
        count: int | None = None,
        with_members: bool = False,
    ) -> tuple[int, list[dict]]:
        """Like :meth:`search_users`; ``with_members`` adds ``members`` (value only) to each
        group the filter sees, for filters that look at members."""
        with self._reading():
            groups = self._tables["groups"]
            if "id" in (equal_terms or {}):
                ids: Any = [equal_terms["id"]]
            elif "displayname" in (equal_terms or {}):
                key = (directory_id, equal_terms["displayname"].casefold())
                found = self._groups.by_display_name.get(key)
                ids = [found] if found else []
            else:
                ids = self._groups.by_directory.get(directory_id, {})
            candidates = [
                groups[i]["resource"]
                for i in ids
                if i in groups and groups[i]["directory_id"] == directory_id
            ]
            if with_members:
                candidates = [
                    {**r, "members": [{"value": m} for m in self._groups.members.get(r["id"], {})]}
                    for r in candidates
                ]
            begin = max(start_index, 1) - 1
            end = None if count is None else begin + max(count, 0)
            return _matching_page(candidates, matches, sort_key, descending, begin, end)

    def update_group(
        self,
        directory_id: str,
        group_id: str,
        change: Callable[[dict], dict] | None,
        member_edits: list[tuple],
        actor: str,
        expected_version: Versions | None = None,
    ) -> tuple[dict, list[str]]:
        """Change a group's attributes (``change(current)``) and members in one atomic write.

        ``member_edits`` are ("add", ids), ("remove", ids), ("replace", ids) or ("clear",),
        applied in order. Each costs in proportion to the ids it names, not to the group's
        size: memberships are documents of their own, so adding 50 members to a group of
        10,000 writes 50 small documents and the group's new version.
        """
        with self._writing() as changes:
            record = self._group_in(directory_id, group_id)
            if record is None:
                raise NotFoundError(group_id)
            self._check_version(record["resource"], expected_version)
            old = record["resource"]
            resource = copy_json(change(old)) if change else copy_json(old)
            self._check_group_name_free(directory_id, resource["displayName"], group_id)
            skipped = self._edit_members(changes, record, member_edits, actor)
            changes[("groups", group_id)] = self._group_record(record, resource, old)
            self._audit(changes, directory_id, actor, "group.update", group_id)
        return copy_json(changes[("groups", group_id)]["resource"]), skipped

    def delete_group(
        self,
        directory_id: str,
        group_id: str,
        actor: str,
        expected_version: Versions | None = None,
    ) -> None:
        """Delete a group and its memberships; its users stay."""
        with self._writing() as changes:
            record = self._group_in(directory_id, group_id)
            if record is None:
                raise NotFoundError(group_id)
            self._check_version(record["resource"], expected_version)
            self._remove_all_members(changes, group_id)
            changes[("groups", group_id)] = None
            self._audit(changes, directory_id, actor, "group.delete", group_id)

    def _remove_all_members(self, changes: dict, group_id: str) -> None:
        members = list(self._groups.members.get(group_id, {}))
        if members:
            changes[("memberships", group_id)] = _MemberChanges(group_id, leaving=members)

    def _group_in(self, directory_id: str, group_id: str) -> dict | None:
        record = self._tables["groups"].get(group_id)
        if record is None or record["directory_id"] != directory_id:
            return None
        return record

    def _group_record(self, record: dict, resource: dict, old: dict | None) -> dict:
        """The group's next stored form: a new revision, so meta.version changes with members."""
        revision = record["revision"] + 1
        now = utc_now()
        resource["id"] = record["id"]
        resource["meta"] = {
            "resourceType": "Group",
            "created": old["meta"]["created"] if old else now,
            "lastModified": now,
        }
        resource["meta"]["version"] = resource_version({**resource, "revision": revision})
        return {**record, "revision": revision, "resource": resource}

    def _edit_members(
        self, changes: dict, record: dict, member_edits: list[tuple], actor: str
    ) -> list[str]:
        """Queue the membership changes of ``member_edits`` (one :class:`_MemberChanges`);
        returns the skipped ids. Whether an id is a user of the directory is one lookup in the
        directory's index.
        """
        group_id, directory_id = record["id"], record["directory_id"]
        before = self._groups.members.get(group_id, {})
        users_here = self._users.by_directory.get(directory_id, {})
        added: dict[str, None] = {}
        removed: set[str] = set()
        cleared = False
        skipped: list[str] = []
        for verb, *rest in member_edits:
            ids = rest[0] if rest else []
            if verb in ("clear", "replace"):
                cleared, added, removed = True, {}, set()
            if verb in ("add", "replace"):
                known = [user_id for user_id in ids if user_id in users_here]
                if len(known) < len(ids):
                    skipped.extend(user_id for user_id in ids if user_id not in users_here)
                added.update(dict.fromkeys(known))
                removed.difference_update(known)
            elif verb == "remove":
                for user_id in ids:
                    added.pop(user_id, None)
                    removed.add(user_id)
        if cleared:
            leaving = [user_id for user_id in before if user_id not in added]
        else:
            leaving = [user_id for user_id in removed if user_id in before]
        joining = [user_id for user_id in added if user_id not in before]
        if leaving or joining:
            changes[("memberships", group_id)] = _MemberChanges(group_id, joining, leaving)
        for user_id in dict.fromkeys(skipped):
            self._audit(changes, directory_id, actor, "group.member_skipped", user_id)
        return list(dict.fromkeys(skipped))

    def _check_group_name_free(self, directory_id: str, name: str, own_id: str | None) -> None:
        """Entra requires displayName unique per directory, compared case-insensitively
        (caseExact false, RFC 7643 §4.2)."""
        holder = self._groups.by_display_name.get((directory_id, name.casefold()))
        if holder is not None and holder != own_id:
            raise UniquenessError(f'a group named "{name}" already exists in this directory')

    @staticmethod
    def _check_version(resource: dict, expected: Versions | None) -> None:
        """RFC 7644 §3.14 If-Match: a stale version refuses the change."""
        if expected is not None and not version_matches(resource["meta"]["version"], expected):
            raise PreconditionFailed(resource["meta"]["version"])

    def _check_user_version(
        self, directory_id: str, resource: dict, expected: Versions | None
    ) -> None:
        """If-Match for a user: the version SCIM shows (see :func:`shown_user_version`), or
        the stored one, which the HTML pages plan their edits from."""
        if expected is None or version_matches(resource["meta"]["version"], expected):
            return
        shown = shown_user_version(
            resource["meta"]["version"], *self._groups_and_manager_name(directory_id, resource)
        )
        if not version_matches(shown, expected):
            raise PreconditionFailed(shown)

    # -- directory keys ------------------------------------------------------------------------

    def create_key(self, directory_id: str, name: str, token_hash: str, actor: str) -> dict:
        """A new key (``name`` 1-100 printable characters); the audit log names a key's SCIM
        changes by its name, and the request log each request it verifies, so a newline in a
        name could forge a log line."""
        if not isinstance(name, str) or not 1 <= len(name.strip()) <= KEY_NAME_MAX:
            raise InvalidValueError(f"name: 1 to {KEY_NAME_MAX} characters")
        if not name.isprintable():
            raise InvalidValueError("name: no line breaks, tabs or other non-printing characters")
        key = {
            "id": new_id(),
            "directory_id": directory_id,
            "name": name.strip(),
            "token_hash": token_hash,
            "created": utc_now(),
            "last_used": None,
        }
        with self._writing() as changes:
            self._check_directory(directory_id)
            changes[("keys", key["id"])] = key
            self._audit(changes, directory_id, actor, "key.create", key["id"])
        return copy_json(key)

    def find_key_by_token_hash(self, token_hash: str) -> dict | None:
        """Keys are found by the hash of their token, never by the token itself.

        Every SCIM request asks this, so it hands out the stored key itself, not a copy
        (documents are replaced, never changed in place): callers must not change it. Nor
        does it take the lock (see :meth:`read_user`): a key deleted between the two lookups
        is simply not found.
        """
        key_id = self._keys_by_hash.get(token_hash)
        return self._tables["keys"].get(key_id or "")

    def list_keys(self, directory_id: str | None = None) -> list[dict]:
        with self._reading():
            keys = [
                k
                for k in self._tables["keys"].values()
                if directory_id is None or k["directory_id"] == directory_id
            ]
            return sorted(copy_json(keys), key=lambda k: k["created"])

    def delete_key(self, key_id: str, actor: str) -> None:
        with self._writing() as changes:
            key = self._tables["keys"].get(key_id)
            if key is None:
                raise NotFoundError(key_id)
            changes[("keys", key_id)] = None
            self._audit(changes, key["directory_id"], actor, "key.delete", key_id)

    def touch_key(self, key_id: str, minimum_interval_seconds: int = 60) -> None:
        """Record a key's last use, at most once a minute per key and process.

        Every SCIM request calls this, so the common case (touched recently) takes no lock
        and writes nothing.
        """
        now = time.monotonic()
        if now - self._keys_touched.get(key_id, -math.inf) < minimum_interval_seconds:
            return
        if self._closed or self._folder.failure is not None:
            return  # bookkeeping: a key's reads go on while writes are refused
        self._keys_touched[key_id] = now
        with suppress(StoreClosed), self._writing() as changes:
            key = self._tables["keys"].get(key_id)
            if key is not None:
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
        """Newest first; entries written in the same millisecond, the later write first."""
        with self._reading():
            total = len(self._tables["audit"])
        return self.audit_page(directory_id, 1, total)[1]

    def audit_page(
        self, directory_id: str | None, start_index: int, count: int
    ) -> tuple[int, list[dict]]:
        """One page of :meth:`list_audit` (``start_index`` from 1, as in SCIM): the number of
        entries and the page, newest first.

        Entries are appended in time order, so the reversed table is already (nearly) sorted
        and the stable sort costs one pass; equal times keep the later write first. Only the
        page is copied.
        """
        with self._reading():
            entries = [
                e
                for e in reversed(self._tables["audit"].values())
                if directory_id is None or e["directory_id"] == directory_id
            ]
            entries.sort(key=lambda e: e["time"], reverse=True)
            begin = max(start_index, 1) - 1
            return len(entries), copy_json(entries[begin : begin + max(count, 0)])
