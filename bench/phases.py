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
MAX_GROUP_REPEATS = 100  # batches to empty groups and to the big one: 10,000 grows to 15,000
ONE_PATCH_MEMBERS = 1_000  # issue 4: 1,000 members added in one PATCH
ONE_PATCH_REPEATS = 10  # each on a fresh empty group
BIG_GET_REPEATS = 200  # GETs of the big group with excludedAttributes=members
REFERENCE_GETS = 500  # ordinary requests (GET of a user by id) measured alongside them


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
    quiet_wait: float = 0.0  # seconds spent waiting for Roster's background work

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
        of load from elsewhere on the machine lands on both sides of the ratio. Each slice starts
        once Roster is quiet: a compaction started by the previous slice's writes would
        otherwise land on whichever slice came next.
        """
        clients = clients or self.clients
        limit, roster = Measurement(), Measurement()
        rounds = min(ROUNDS, len(items)) or 1
        for number in range(rounds):
            part = one_round(items, number, rounds)
            self.quiet_wait += self.roster.wait_until_quiet()
            limit.append(run_load(self.limit, self.token, part, step, clients))
            self.quiet_wait += self.roster.wait_until_quiet()
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


def one_round(items: Sequence, number: int, rounds: int = ROUNDS) -> Sequence:
    """The ``number``-th of ``rounds`` consecutive slices of ``items``, as even as they come."""
    return items[number * len(items) // rounds : (number + 1) * len(items) // rounds]


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
    """Pages of 100 at the start and at the end of the directory, then a walk through all.

    The first three are the targets: a page costs at most 3x the limit's CPU, and its cost must
    not grow with its offset. Page 1 alone cannot show the latter: its users are the 100 that
    ``entra.manager_index`` leaves without a manager, so its body is about 12 % smaller than
    any other page's. The offset is judged on page 2 against the last page, which hold users
    of the same shape. The walk is what a client listing the whole directory does.

    A few hundred requests per page, so that one pass of the garbage collector over 100,000
    users (tenths of a second of CPU) cannot double a figure measured over 0.2 s.
    """
    repeats = max(20, bench.sample // 4)
    last_start = max(1, bench.users - PAGE_SIZE + 1)
    pages = [("page_first", 1), ("page_second", 1 + PAGE_SIZE), ("page_last", last_start)]
    for name, start in pages:
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

    The first target compares one batch added to an empty group with one added to a group of
    10,000 (or as many as this run's users allow); both are sent by one client, one batch at a
    time, as Entra sends a group's batches, in alternating rounds that each start once Roster is
    quiet: one background pass during a short single-client slice would swing the ratio. Both
    sides add the same new users (batch k joins empty group k and the big group), each side
    first every other round: users already in the caches join a group measurably cheaper.

    Then the two big operations of issue 4, each priced in ordinary requests (a GET of one
    user by id, measured alongside them, also by one client): 1,000 members added in one PATCH
    to a fresh empty group, and a GET of the big group with ``excludedAttributes=members``.
    """
    members = [user_id for user_id in bench.ids if user_id]
    repeats = max(1, min(MAX_GROUP_REPEATS, len(members) // 100))
    fill = min(GROUP_SIZE, max(0, len(members) - repeats * entra.MEMBER_BATCH))
    one_patch = members[:ONE_PATCH_MEMBERS]
    reference = [f"/Users/{bench.ids[i]}" for i in bench.existing_sample(REFERENCE_GETS)]
    reference = (reference * (REFERENCE_GETS // max(1, len(reference)) + 1))[:REFERENCE_GETS]
    big_size = fill + repeats * entra.MEMBER_BATCH
    whole = ""
    if len(one_patch) < ONE_PATCH_MEMBERS:
        whole = f" (all this run's users: fewer than {ONE_PATCH_MEMBERS:,})"
    rows = {
        "groups_create": "",
        "groups_add_empty": "50 to an empty group",
        "groups_add_full": f"50 to a group of {fill:,} (it grows to {big_size:,})",
        "groups_ref_get": "1 client: GET /Users/{id}, the ordinary request",
        "groups_add_1000": f"1 client: {len(one_patch):,} in one Add to an empty group{whole}",
        "groups_get_big": f"1 client: group of {big_size:,}, excludedAttributes=members",
    }
    plan = GroupPlan(repeats, fill, one_patch, reference)
    limit = group_measurements(bench, bench.limit, plan)
    if bench.roster_get(f"/Groups?{entra.group_query(0)}").status_code == 404:
        for name in rows:
            bench.rows.append(Row(name, None, limit[name], note="Roster: not served (404)"))
        return
    roster = group_measurements(bench, bench.roster, plan)
    for name, note in rows.items():
        bench.rows.append(Row(name, roster[name], limit[name], note))
    check_groups(bench, plan, big_size)


@dataclass
class GroupPlan:
    """The same work for both servers: how many batches, how full, which users and GETs."""

    repeats: int
    fill: int
    one_patch: list[str]
    reference: list[str]
    group_ids: dict[int, str] = field(default_factory=dict)


def group_measurements(bench: Bench, server: Server, plan: GroupPlan) -> dict[str, Measurement]:
    """Create groups, add a batch to each empty one, then a batch at a time to a big one; then
    the big operations, in rounds alternating with the ordinary GETs so that both see the same
    load from elsewhere on the machine.
    """
    group_ids: dict[int, str] = {}
    plan.group_ids = group_ids  # the last server's ids, for the checks

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

    def add_at_once(client: Client, index: int) -> None:
        if index in group_ids:
            client.send("PATCH", f"/Groups/{group_ids[index]}", one_patch_body)

    def get_big(client: Client, _number: int) -> None:
        if big in group_ids:
            client.send("GET", f"/Groups/{group_ids[big]}?excludedAttributes=members")

    members = [user_id for user_id in bench.ids if user_id]
    repeats, fill = plan.repeats, plan.fill
    big = repeats  # groups 0..repeats-1 stay small; this one grows
    created = run_load(server, bench.token, range(repeats + 1), create, bench.clients)
    filling = [(big, start) for start in range(0, fill, entra.MEMBER_BATCH)]
    run_load(server, bench.token, filling, add, 1)  # setup, not measured
    batches = range(fill, fill + repeats * entra.MEMBER_BATCH, entra.MEMBER_BATCH)
    to_empty_items = list(enumerate(batches))  # batch k joins empty group k and the big one
    to_big_items = [(big, start) for start in batches]
    to_empty, to_big = Measurement(), Measurement()
    for number in range(ROUNDS):  # alternating, each once Roster is quiet: same conditions
        sides = [(to_empty, to_empty_items), (to_big, to_big_items)]
        for measured, items in sides if number % 2 else reversed(sides):
            bench.quiet_wait += bench.roster.wait_until_quiet()
            measured.append(run_load(server, bench.token, one_round(items, number), add, 1))

    fresh = range(big + 1, big + 1 + ONE_PATCH_REPEATS)  # empty groups for the 1,000 at once
    run_load(server, bench.token, fresh, create, 1)  # setup, not measured
    one_patch_body = entra.add_members_body(plan.one_patch)
    reference, at_once, big_reads = Measurement(), Measurement(), Measurement()
    for number in range(ROUNDS):
        part = one_round(plan.reference, number)
        reference.append(run_load(server, bench.token, part, get_step, 1))
        at_once.append(run_load(server, bench.token, one_round(fresh, number), add_at_once, 1))
        reads = range(BIG_GET_REPEATS // ROUNDS)
        big_reads.append(run_load(server, bench.token, reads, get_big, 1))
    return {
        "groups_create": created,
        "groups_add_empty": to_empty,
        "groups_add_full": to_big,
        "groups_ref_get": reference,
        "groups_add_1000": at_once,
        "groups_get_big": big_reads,
    }


def check_groups(bench: Bench, plan: GroupPlan, size: int) -> None:
    """Roster's big group holds every member added, and its GET without members names none."""
    big = plan.group_ids.get(plan.repeats)
    first_fresh = plan.group_ids.get(plan.repeats + 1)
    if big is None or first_fresh is None:
        bench.verify("groups: Roster created the big group and the fresh ones", False)
        return
    whole = bench.roster_get(f"/Groups/{big}").json()
    bench.verify(
        f"groups: the big group lists {size:,} members", len(whole.get("members", [])) == size
    )
    bare = bench.roster_get(f"/Groups/{big}?excludedAttributes=members").json()
    bench.verify(
        "groups: excludedAttributes=members leaves members out",
        bare.get("id") == big and "members" not in bare,
    )
    fresh = bench.roster_get(f"/Groups/{first_fresh}").json()
    listed = {member.get("value") for member in fresh.get("members", [])}
    bench.verify(
        f"groups: one PATCH added all {len(plan.one_patch):,} members",
        listed == set(plan.one_patch),
    )


# -- restart ------------------------------------------------------------------------------------


def restart(bench: Bench) -> None:
    """Stop Roster and start it on the same data folder: seconds until a lookup finds a user."""
    known = bench.existing_sample(1)
    if not known:
        bench.checks.append("restart skipped: Roster holds no users to look up")
        return
    query = f"/Users?{entra.user_name_query(known[0])}"
    run_peak = Row("memory_peak_run", None, None, value=bench.roster.peak_rss_mib(), unit="MiB")
    run_peak.note = "Roster's peak (VmHWM) over every phase before the restart"
    bench.roster.stop()
    bench.roster.launch()
    seconds = bench.roster.wait_until_answering(lambda: answers(bench, query))
    row = Row("restart", None, None, value=seconds, unit="s")
    row.note = f"RSS after restart {bench.roster.rss_mib():.0f} MiB"
    start_peak = Row("memory_peak_start", None, None, value=bench.roster.peak_rss_mib(), unit="MiB")
    start_peak.note = "Roster's peak (VmHWM) while it started, until it answered"
    bench.rows.extend([row, run_peak, start_peak])
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
