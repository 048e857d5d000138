"""Issue 3's "50 members added to a group of 10,000 cost what they cost added to an empty
group", in process: the server's CPU per request, finely.

    python -m bench.member_batch [--requests 200]

``bench.run`` judges this target on a waitress server from 100 single-client PATCHes a side,
half a second of CPU each, which a background pass or another process on the machine swings
by a third either way. This one calls the WSGI app in this process (see ``bench.member_add``)
and times each request with ``time.process_time``: each batch of 50 new users is added, by
Entra's ``Add``, to a fresh empty group and to one group that already holds 10,000, the two
requests back to back and each side first every other time. The report gives each side's
median and mean CPU per request and their ratios; the median shrugs off the odd request that a
collector pass lands on. It creates 20,000 users first (about a minute).

The same users on both sides matter: 50 users already in many groups (and in the CPU's
caches) joined an empty group 10 % cheaper than 50 new ones joined the full group.
"""

from __future__ import annotations

import argparse
import statistics

from bench import entra
from bench.member_add import InProcess, quiet_data_folder, round_cpu_ms

FILL = 10_000


def measure(requests: int, data_dir: str) -> tuple[list[float], list[float], int]:
    """CPU ms of each PATCH to an empty group and to the full one; the full one's final size."""
    roster = InProcess(data_dir)
    batch = entra.MEMBER_BATCH
    fresh_members = requests * batch
    user_ids = [
        roster.created_id(("POST", "/v2/Users", entra.user_body(index, None)))
        for index in range(FILL + fresh_members)
    ]
    empty_groups = [
        roster.created_id(("POST", "/v2/Groups", entra.group_body(index)))
        for index in range(requests)
    ]
    full_group = roster.created_id(("POST", "/v2/Groups", entra.group_body(len(empty_groups))))
    for start in range(0, FILL, 1_000):  # setup, not measured
        body = entra.add_members_body(user_ids[start : start + 1_000])
        roster.send(("PATCH", f"/v2/Groups/{full_group}", body), 204)
    to_empty: list[float] = []
    to_full: list[float] = []
    for number, group_id in enumerate(empty_groups):
        start = FILL + number * batch  # the same 50 new users join both groups
        body = entra.add_members_body(user_ids[start : start + batch])
        sides = [
            (to_empty, roster.environ(("PATCH", f"/v2/Groups/{group_id}", body))),
            (to_full, roster.environ(("PATCH", f"/v2/Groups/{full_group}", body))),
        ]
        for samples, environ in sides if number % 2 else reversed(sides):  # each goes first
            samples.append(round_cpu_ms(roster.app, [environ], 204))
    size = roster.store.group_member_count(roster.directory_id, full_group)
    roster.store.close()
    if size != FILL + fresh_members:
        raise SystemExit(f"the full group has {size} members, not {FILL + fresh_members}")
    return to_empty, to_full, size


def report(to_empty: list[float], to_full: list[float], size: int) -> None:
    rows = {"50 to an empty group": to_empty, f"50 to a group of {FILL:,}+": to_full}
    for name, samples in rows.items():
        print(
            f"{name:24s} CPU ms/request: median {statistics.median(samples):5.2f}, "
            f"mean {statistics.fmean(samples):5.2f} ({len(samples)} requests)"
        )
    by_median = statistics.median(to_full) / statistics.median(to_empty)
    by_mean = statistics.fmean(to_full) / statistics.fmean(to_empty)
    print(
        f"full / empty (the group grew from {FILL:,} to {size:,}): {by_median:.2f} by medians, "
        f"{by_mean:.2f} by means (target <= 1.25)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.member_batch", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--requests", type=int, default=200, help="PATCHes to each side (200)")
    args = parser.parse_args()
    with quiet_data_folder("roster-member-batch-") as data_dir:
        to_empty, to_full, size = measure(args.requests, data_dir)
    report(to_empty, to_full, size)


if __name__ == "__main__":
    main()
