"""The phases: each replays one part of Entra's traffic on the limit and on Roster.

The two servers take turns within a phase (``Bench.measure``), so a noisy minute on the machine
hits both sides of a ratio. Every phase adds rows to ``Bench.rows``; a row holds one Measurement
per server, a single figure (restart, memory), or a note when Roster does not serve the endpoint.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import requests

from bench import entra
from bench.load import Client, Measurement, Step, run_load
from bench.servers import Server

FAKE_MANAGER_ID = "0f8fad5b-d9cb-469f-a165-70867728950e"
PAGE_SIZE = 100
ROUNDS = 5
GROUP_SIZE = 10_000
MAX_GROUP_REPEATS = 40


@dataclass
class Row:
    """One line of the report: the same requests measured on both servers."""

    name: str
    roster: Measurement | None
    limit: Measurement | None
    note: str = ""
    value: float | None = None  # a single figure for phases that are not throughput (s, MiB)
    unit: str = ""


@dataclass
class Bench:
    """Everything the phases share: the servers, the key, the users Roster now holds."""

    users: int
    clients: int
    sample: int
    data_dir: Path
    token: str
    roster: Server
    limit: Server
    ids: list[str | None] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    load_average: float = 0.0

    def measure(
        self,
        name: str,
        items: Sequence,
        step: Step,
        clients: int | None = None,
        note: str = "",
        roster_step: Step | None = None,
    ) -> None:
        """Run the same requests on the limit and on Roster, alternating, and add the row.

        The items go in ``ROUNDS`` slices, each run on the limit and then on Roster, so a burst
        of load from elsewhere on the machine lands on both sides of the ratio.
        """
        clients = clients or self.clients
        limit, roster = Measurement(), Measurement()
        rounds = min(ROUNDS, len(items)) or 1
        for number in range(rounds):
            part = items[number * len(items) // rounds : (number + 1) * len(items) // rounds]
            limit.append(run_load(self.limit, self.token, part, step, clients))
            roster.append(run_load(self.roster, self.token, part, roster_step or step, clients))
            if len(items) >= 10_000:
                self.progress(f"{name}: round {number + 1} of {rounds}")
        self.rows.append(Row(name, roster, limit, note))

    def progress(self, message: str) -> None:
        """Progress goes to stderr, so stdout holds only the report."""
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    def existing_sample(self, size: int) -> list[int]:
        """Indexes of provisioned users, spread over the whole directory."""
        known = [i for i, user_id in enumerate(self.ids) if user_id]
        return self.rng.sample(known, min(size, len(known)))

    def verify(self, what: str, passed: bool) -> None:
        """A spot check on Roster's answers, so a fast wrong answer cannot pass unnoticed."""
        self.checks.append(f"{'ok' if passed else 'WRONG'}: {what}")

    def roster_get(self, path: str) -> requests.Response:
        """One authenticated request outside any measurement (checks and probes)."""
        headers = {"Authorization": f"Bearer {self.token}"}
        return requests.get(f"{self.roster.url}/v2{path}", headers=headers, timeout=120)


# -- provisioning -------------------------------------------------------------------------------


def created_id(response: requests.Response | None) -> str | None:
    """The id of a 201, from the Location header (cheaper than parsing the body)."""
    if response is None or response.status_code != 201:
        return None
    location = response.headers.get("Location")
    return location.rsplit("/", 1)[-1] if location else response.json().get("id")


def provision_step(ids: list[str | None] | None):
    """Entra's create: query the matching attribute, get nothing back, POST the user.

    With ``ids`` (Roster) the 201's id is kept and later creates name their manager by it; the
    limit gets a fixed manager id so its bodies are the same size.
    """

    def step(client: Client, index: int) -> None:
        client.send("GET", f"/Users?{entra.user_name_query(index)}")
        manager = entra.manager_index(index)
        if manager is None:
            manager_id = None
        else:
            manager_id = ids[manager] if ids is not None else FAKE_MANAGER_ID
        response = client.send("POST", "/Users", entra.user_body(index, manager_id))
        if ids is not None:
            ids[index] = created_id(response)

    return step


def provision(bench: Bench, measured: bool = True) -> None:
    """Create every user; unmeasured (Roster only) when later phases just need the users."""
    bench.ids = [None] * bench.users
    users = range(bench.users)
    if measured:
        step, roster_step = provision_step(None), provision_step(bench.ids)
        bench.measure("provision", users, step, roster_step=roster_step)
    else:
        run_load(bench.roster, bench.token, users, provision_step(bench.ids), bench.clients)
    check_user_count(bench, "after provisioning")


def check_user_count(bench: Bench, when: str) -> None:
    total = bench.roster_get("/Users?count=0").json().get("totalResults")
    created = sum(1 for user_id in bench.ids if user_id)
    verdict = "ok" if total == bench.users == created else "MISMATCH"
    bench.checks.append(
        f"{verdict}: Roster lists {total} users {when}; {created} of {bench.users} POSTs gave 201"
    )


def memory(bench: Bench) -> None:
    """Resident memory of each server process, read after provisioning."""
    row = Row("memory", None, None, value=bench.roster.rss_mib(), unit="MiB")
    row.note = f"limit {bench.limit.rss_mib():.0f} MiB"
    bench.rows.append(row)


# -- updates and disables -----------------------------------------------------------------------


def update(bench: Bench) -> None:
    """An incremental cycle's change: read the user by id, PATCH one Replace per attribute."""
    sample = bench.existing_sample(bench.sample)

    def step(client: Client, index: int) -> None:
        path = f"/Users/{bench.ids[index]}"
        client.send("GET", path)
        client.send("PATCH", path, entra.update_body(index))

    bench.measure("update", sample, step)
    user = bench.roster_get(f"/Users/{bench.ids[sample[0]]}").json() if sample else {}
    expected = entra.TITLES[(sample[0] + 1) % len(entra.TITLES)] if sample else None
    bench.verify("update: a patched user reads back its new title", user.get("title") == expected)


def disable(bench: Bench) -> None:
    """Unassigned or disabled in Entra: PATCH ``active`` to the string "False"."""
    sample = bench.existing_sample(bench.sample)

    def step(client: Client, index: int) -> None:
        client.send("PATCH", f"/Users/{bench.ids[index]}", entra.DISABLE_BODY)

    bench.measure("disable", sample, step)
    user = bench.roster_get(f"/Users/{bench.ids[sample[0]]}").json() if sample else {}
    bench.verify("disable: a disabled user reads back active false", user.get("active") is False)


# -- lookups ------------------------------------------------------------------------------------


def lookup_filter(bench: Bench) -> None:
    """Entra matching an existing user: ``userName eq``, one result."""
    sample = bench.existing_sample(bench.sample)
    paths = [f"/Users?{entra.user_name_query(i)}" for i in sample]
    bench.measure("lookup_filter", paths, get_step)
    found = bench.roster_get(paths[0]).json().get("Resources", []) if paths else []
    ids = [user.get("id") for user in found]
    bench.verify(
        "lookup_filter: userName eq finds exactly that user", ids == [bench.ids[sample[0]]]
    )


def lookup_id(bench: Bench) -> None:
    """Entra reading a user by the id it cached from the 201."""
    paths = [f"/Users/{bench.ids[i]}" for i in bench.existing_sample(bench.sample)]
    bench.measure("lookup_id", paths, get_step)


# -- paging and search --------------------------------------------------------------------------


def get_step(client: Client, path: str) -> None:
    """The step of the read-only phases, whose items are ready-made paths."""
    client.send("GET", path)


def page(bench: Bench) -> None:
    """A page of 100 at the start and at the end of the directory, then a walk through all.

    The first two are the targets (the cost of a page must not grow with its offset); the walk
    is what a client listing the whole directory does.
    """
    repeats = max(20, bench.sample // 20)
    last_start = max(1, bench.users - PAGE_SIZE + 1)
    for name, start in (("page_first", 1), ("page_last", last_start)):
        path = f"/Users?startIndex={start}&count={PAGE_SIZE}"
        bench.measure(name, [path] * repeats, get_step, note=f"startIndex={start}")
    walk = [
        f"/Users?startIndex={start}&count={PAGE_SIZE}"
        for start in range(1, bench.users + 1, PAGE_SIZE)
    ]
    bench.measure("page_walk", walk, get_step, note=f"{len(walk)} pages")


def co_search(bench: Bench) -> None:
    """``displayName co "..."`` as a person searching the directory: one request at a time.

    The target is a response time, so one client: with several, a request would also wait for
    the others' searches and the figure would measure the queue, not the search.
    """
    searches = [
        f"/Users?{entra.display_name_search(index)}"
        for index in bench.existing_sample(max(20, bench.sample // 20))
    ]
    bench.measure("co_search", searches, get_step, clients=1, note="1 client")


# -- groups -------------------------------------------------------------------------------------


def groups(bench: Bench) -> None:
    """Entra's group sync: query, POST empty, PATCH ``Add`` members in batches of 50.

    The target compares one batch added to an empty group with one added to a group of 10,000
    (or as many as this run's users allow); both are sent by one client, one batch at a time, as
    Entra sends a group's batches.
    """
    members = [user_id for user_id in bench.ids if user_id]
    repeats = max(1, min(MAX_GROUP_REPEATS, len(members) // 100))
    fill = min(GROUP_SIZE, max(0, len(members) - repeats * entra.MEMBER_BATCH))
    names = ("groups_create", "groups_add_empty", "groups_add_full")
    notes = ("", "50 to an empty group", f"50 to a group of {fill}")
    limit = group_measurements(bench, bench.limit, members, repeats, fill)
    if bench.roster_get(f"/Groups?{entra.group_query(0)}").status_code == 404:
        for name, measurement in zip(names, limit, strict=True):
            bench.rows.append(Row(name, None, measurement, note="Roster: not served (404)"))
        return
    roster = group_measurements(bench, bench.roster, members, repeats, fill)
    for name, on_roster, on_limit, note in zip(names, roster, limit, notes, strict=True):
        bench.rows.append(Row(name, on_roster, on_limit, note))


def group_measurements(
    bench: Bench, server: Server, members: list[str], repeats: int, fill: int
) -> tuple[Measurement, Measurement, Measurement]:
    """Create groups, add a batch to each empty one, then a batch at a time to a big one."""
    group_ids: dict[int, str] = {}

    def create(client: Client, index: int) -> None:
        client.send("GET", f"/Groups?{entra.group_query(index)}")
        response = client.send("POST", "/Groups", entra.group_body(index))
        if response is not None and response.status_code == 201:
            group_ids[index] = response.json()["id"]

    def add(client: Client, item: tuple[int, int]) -> None:
        index, start = item
        if index in group_ids:
            batch = members[start : start + entra.MEMBER_BATCH]
            client.send("PATCH", f"/Groups/{group_ids[index]}", entra.add_members_body(batch))

    big = repeats  # groups 0..repeats-1 stay small; this one grows
    created = run_load(server, bench.token, range(repeats + 1), create, bench.clients)
    to_empty = run_load(server, bench.token, [(i, 0) for i in range(repeats)], add, 1)
    filling = [(big, start) for start in range(0, fill, entra.MEMBER_BATCH)]
    run_load(server, bench.token, filling, add, 1)
    batches = range(fill, fill + repeats * entra.MEMBER_BATCH, entra.MEMBER_BATCH)
    to_big = run_load(server, bench.token, [(big, start) for start in batches], add, 1)
    return created, to_empty, to_big


# -- restart ------------------------------------------------------------------------------------


def restart(bench: Bench) -> None:
    """Stop Roster and start it on the same data folder: seconds until a lookup finds a user."""
    known = bench.existing_sample(1)
    if not known:
        bench.checks.append("restart skipped: Roster holds no users to look up")
        return
    query = f"/Users?{entra.user_name_query(known[0])}"
    bench.roster.stop()
    bench.roster.launch()
    seconds = bench.roster.wait_until_answering(lambda: answers(bench, query))
    row = Row("restart", None, None, value=seconds, unit="s")
    row.note = f"RSS after restart {bench.roster.rss_mib():.0f} MiB"
    bench.rows.append(row)
    check_user_count(bench, "after restart")


def answers(bench: Bench, path: str) -> bool:
    """True once the server finds the user; a 5xx or an empty result is not an answer."""
    response = bench.roster_get(path)
    return response.status_code == 200 and json.loads(response.content).get("totalResults") == 1


def warm_up(bench: Bench) -> None:
    """A few requests to each server so first-request costs stay out of the first phase."""
    for server in (bench.limit, bench.roster):
        run_load(server, bench.token, ["/Users?count=1"] * 50, get_step, bench.clients)


PHASES: dict[str, Callable[[Bench], None]] = {
    "provision": provision,
    "memory": memory,
    "update": update,
    "disable": disable,
    "lookup_filter": lookup_filter,
    "lookup_id": lookup_id,
    "page": page,
    "co_search": co_search,
    "groups": groups,
    "restart": restart,
}


def run_phases(bench: Bench, selected: list[str]) -> None:
    """Provisioning always runs (the others need users); it is reported only when selected."""
    warm_up(bench)
    for name, phase in PHASES.items():
        if name == "provision" and name not in selected:
            bench.progress("provision (setup, not measured)")
            provision(bench, measured=False)
            continue
        if name not in selected:
            continue
        bench.progress(name)
        began = time.monotonic()
        phase(bench)
        bench.progress(f"{name} done in {time.monotonic() - began:.1f} s")
