"""Issue 4's "1,000 members in one PATCH" in-process: the server's CPU per request, finely.

    python -m bench.member_add [--users 1200] [--rounds 8]

``bench.run`` prices ten such PATCHes on a waitress server, with its load generator and the
limit's server sharing the machine. This one calls the WSGI app in this process, with nothing
else of its own running, and times it with ``time.process_time``; each request's environ is
built before the clock starts, so what is timed is what the app spends: routing, the key check,
reading and parsing the body, the store write and its fsync, the response, the request log
(written to /dev/null here). It takes a minute, so two versions of the code can be compared
back to back.

Rounds of PATCHes (Entra's ``Add`` of 1,000 ``{"$ref": null, "value": id}`` to a fresh empty
group) alternate with rounds of the ordinary request (GET /Users/{id}), as in ``bench.run``. A
round's mean CPU per request is one figure; the report gives the best and the median round of
each, and the PATCH priced in ordinary requests both ways. The best rounds are the steadiest
figures on a busy machine: other load only ever adds CPU (cache misses), never takes it away.

The price in ordinary requests comes out higher here than in ``bench.run``: without waitress
there is no socket or HTTP parsing, which is a larger share of a GET than of the PATCH. Use this
to compare two versions of the code with each other, and ``bench.run`` for the issue's target.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr

from flask import Flask
from werkzeug.test import EnvironBuilder

from app import create_app
from auth import create_directory_key
from bench import entra

MEMBERS = 1_000
PATCHES_PER_ROUND = 10
GETS_PER_ROUND = 100
SCIM_JSON = "application/scim+json"

Request = tuple[str, str, bytes | None]  # method, path, body


def serve(app: Flask, environ: dict) -> tuple[int, bytes]:
    """One request through the WSGI app, as waitress would run it: status and body."""
    statuses = []

    def start_response(status: str, _headers: list, _exc_info=None) -> None:
        statuses.append(int(status.split()[0]))

    answer = app(environ, start_response)
    try:
        body = b"".join(answer)
    finally:
        if hasattr(answer, "close"):
            answer.close()
    return statuses[0], body


def round_cpu_ms(app: Flask, environs: list[dict], status: int) -> float:
    """Mean CPU milliseconds per request over one round (the whole process's CPU, so the
    request log's thread counts, as it does in a server)."""
    before = time.process_time()
    answers = [serve(app, environ) for environ in environs]
    spent = time.process_time() - before
    wrong = [answer for answer in answers if answer[0] != status]
    if wrong:
        raise SystemExit(f"expected {status}, got {wrong[0][0]}: {wrong[0][1][:300]!r}")
    return spent * 1000 / len(environs)


@contextmanager
def quiet_data_folder(prefix: str) -> Iterator[str]:
    """A temp data folder, removed after; the request log (stderr) goes to /dev/null meanwhile."""
    with (
        tempfile.TemporaryDirectory(prefix=prefix) as data_dir,
        open(os.devnull, "w") as request_log,
        redirect_stderr(request_log),
    ):
        yield data_dir


class InProcess:
    """Roster's WSGI app on a fresh data folder, with a directory key, called directly."""

    def __init__(self, data_dir: str) -> None:
        self.app = create_app({"DATA_DIR": data_dir, "PUBLIC_URL": "http://127.0.0.1/"})
        self.store = self.app.extensions["roster.store"]
        self.directory_id = self.store.list_directories()[0]["id"]
        _key, self.token = create_directory_key(self.store, self.directory_id, "bench", "bench")

    def environ(self, request: Request) -> dict:
        method, path, body = request
        headers = {"Authorization": f"Bearer {self.token}"}
        builder = EnvironBuilder(
            path=path, method=method, data=body, content_type=SCIM_JSON, headers=headers
        )
        return builder.get_environ()

    def created_id(self, request: Request) -> str:
        status, body = serve(self.app, self.environ(request))
        if status != 201:
            raise SystemExit(f"{request[0]} {request[1]}: {status} {body[:300]!r}")
        return json.loads(body)["id"]

    def send(self, request: Request, expected: int) -> None:
        status, body = serve(self.app, self.environ(request))
        if status != expected:
            raise SystemExit(f"{request[0]} {request[1]}: {status} {body[:300]!r}")


def measure(users: int, rounds: int, data_dir: str) -> tuple[list[float], list[float]]:
    """Create the users and empty groups, then the rounds: CPU ms per PATCH and per GET."""
    roster = InProcess(data_dir)
    app, store, directory_id = roster.app, roster.store, roster.directory_id
    environ, created_id = roster.environ, roster.created_id
    user_ids = [
        created_id(("POST", "/v2/Users", entra.user_body(index, None))) for index in range(users)
    ]
    group_ids = [
        created_id(("POST", "/v2/Groups", entra.group_body(index)))
        for index in range(rounds * PATCHES_PER_ROUND)
    ]
    body = entra.add_members_body(user_ids[:MEMBERS])
    patches: list[float] = []
    gets: list[float] = []
    for number in range(rounds):
        first = number * GETS_PER_ROUND
        reads = [
            environ(("GET", f"/v2/Users/{user_ids[(first + n) % len(user_ids)]}", None))
            for n in range(GETS_PER_ROUND)
        ]
        gets.append(round_cpu_ms(app, reads, 200))
        groups = group_ids[number * PATCHES_PER_ROUND : (number + 1) * PATCHES_PER_ROUND]
        writes = [environ(("PATCH", f"/v2/Groups/{group_id}", body)) for group_id in groups]
        patches.append(round_cpu_ms(app, writes, 204))
    filled = store.group_member_count(directory_id, group_ids[-1])
    store.close()
    if filled != MEMBERS:
        raise SystemExit(f"the last group has {filled} members, not {MEMBERS}")
    return patches, gets


def report(patches: list[float], gets: list[float]) -> None:
    rows: dict[str, tuple[list[float], int]] = {
        f"PATCH {MEMBERS:,} members": (patches, PATCHES_PER_ROUND),
        "GET /Users/{id}": (gets, GETS_PER_ROUND),
    }
    for name, (rounds, size) in rows.items():
        print(
            f"{name:20s} CPU ms/request: best round {min(rounds):5.2f}, "
            f"median round {statistics.median(rounds):5.2f} ({len(rounds)} rounds of {size})"
        )
    by_best = min(patches) / min(gets)
    by_median = statistics.median(patches) / statistics.median(gets)
    print(
        f"PATCH in ordinary requests (in-process): {by_best:.1f} by best rounds, "
        f"{by_median:.1f} by median rounds"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.member_add", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--users", type=int, default=1200, help="users to create (1200)")
    parser.add_argument("--rounds", type=int, default=8, help="rounds of each request (8)")
    args = parser.parse_args()
    if args.users < MEMBERS:
        parser.error(f"--users must be at least {MEMBERS}")
    with quiet_data_folder("roster-member-add-") as data_dir:
        patches, gets = measure(args.users, args.rounds, data_dir)
    report(patches, gets)


if __name__ == "__main__":
    main()
