"""The report: one table row per phase, then each target of the issue with PASS or FAIL.

A Roster row with non-2xx answers shows their count in the table and its samples below it, and a
target measured on such a row fails: fast errors must never pass for fast answers.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from bench.load import Measurement
from bench.phases import Row

SAME_COST = 1.25  # "costs the same": within 25 %, above the noise of 10 ms CPU clock ticks


@dataclass
class Target:
    text: str
    shown: str  # the measured figure, formatted
    verdict: str  # PASS, FAIL, FAIL (errors), NOT SERVED, not run


def ratio(row: Row) -> float:
    return row.roster.rate / row.limit.rate if row.limit.rate else 0.0


def cpu_ratio(row: Row) -> float:
    limit = row.limit.cpu_ms_per_request
    return row.roster.cpu_ms_per_request / limit if limit else float("inf")


def per_request_growth(small: Row, large: Row) -> float:
    """Roster's CPU per request on the large case over the small one."""
    return large.roster.cpu_ms_per_request / max(small.roster.cpu_ms_per_request, 1e-9)


REFERENCE = "groups_ref_get"  # the ordinary request: a GET of one user by id, one client
BIG_OPERATIONS = ("groups_add_1000", "groups_get_big")


def in_ordinary_requests(reference: Row, row: Row) -> tuple[float, float]:
    """Roster's cost of one request of ``row`` as a count of ordinary requests: CPU, p50."""
    cpu = row.roster.cpu_ms_per_request / max(reference.roster.cpu_ms_per_request, 1e-9)
    p50 = row.roster.percentile_ms(0.5) / max(reference.roster.percentile_ms(0.5), 1e-9)
    return cpu, p50


def ordinary_request_lines(rows: list[Row]) -> list[str]:
    """Issue 4's figures: each big group operation priced in ordinary requests on Roster."""
    by_name = {row.name: row for row in rows}
    reference = by_name.get(REFERENCE)
    if reference is None or reference.roster is None or not reference.roster.requests:
        return []
    lines = [
        f"Cost in ordinary requests (Roster; ordinary = {REFERENCE}, "
        f"{reference.roster.cpu_ms_per_request:.2f} CPU ms, "
        f"p50 {reference.roster.percentile_ms(0.5):.1f} ms):"
    ]
    for name in BIG_OPERATIONS:
        row = by_name.get(name)
        if row is None or row.roster is None or not row.roster.requests:
            continue
        cpu, p50 = in_ordinary_requests(reference, row)
        lines.append(
            f"  {name:<18}{row.roster.cpu_ms_per_request:>9.2f} CPU ms = {cpu:6.1f} by CPU"
            f"{row.roster.percentile_ms(0.5):>9.1f} ms p50 = {p50:6.1f} by p50"
        )
    return lines


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def latency(measurement: Measurement) -> str:
    return f"{measurement.percentile_ms(0.5):.1f}/{measurement.percentile_ms(0.95):.1f}"


def table(rows: list[Row]) -> list[str]:
    header = (
        f"{'phase':<18}{'roster req/s':>13}{'ratio':>7}{'limit req/s':>12}"
        f"{'p50/p95 ms roster':>19}{'limit':>13}{'CPU ms/req R/L':>16}"
        f"{'flat R/L':>11}{'non-2xx':>9}  note"
    )
    return [header, "-" * len(header), *(table_line(row) for row in rows)]


def table_line(row: Row) -> str:
    if row.value is not None:
        return f"{row.name:<18}{fmt(row.value, 2) + ' ' + row.unit:>13}  {row.note}"
    limit = row.limit
    if row.roster is None:
        return (
            f"{row.name:<18}{'-':>13}{'-':>7}{limit.rate:>12.0f}{'-':>19}{latency(limit):>13}"
            f"{'-/' + fmt(limit.cpu_ms_per_request, 2):>16}{'-':>11}{'-':>9}  {row.note}"
        )
    roster = row.roster
    cpu = f"{roster.cpu_ms_per_request:.2f}/{limit.cpu_ms_per_request:.2f}"
    flat = f"{fmt(roster.flat(), 2)}/{fmt(limit.flat(), 2)}"
    return (
        f"{row.name:<18}{roster.rate:>13.0f}{ratio(row):>6.2f}x{limit.rate:>12.0f}"
        f"{latency(roster):>19}{latency(limit):>13}{cpu:>16}{flat:>11}"
        f"{roster.failures:>9}  {row.note}"
    )


PROFILED = ("provision",)  # phases long enough for their tenths to say something


def tenths_lines(rows: list[Row]) -> list[str]:
    """Each tenth of a long phase over its first tenth, on both servers: where flat was lost."""
    lines = []
    for row in rows:
        if row.name not in PROFILED or row.roster is None or row.limit is None:
            continue
        for server, measurement in (("Roster", row.roster), ("limit", row.limit)):
            shown = " ".join(f"{share:.2f}" for share in measurement.tenths())
            lines.append(f"{row.name} by tenths, {server + ':':<7} {shown or '-'}")
    return lines


def failures(rows: list[Row]) -> list[str]:
    """Every Roster row with non-2xx answers: the statuses and a few samples."""
    lines = []
    for row in rows:
        if row.roster is None or not row.roster.failures:
            continue
        statuses = ", ".join(
            f"{status}x{count}" for status, count in sorted(row.roster.statuses.items())
        )
        lines.append(
            f"{row.name}: {row.roster.failures} non-2xx of {row.roster.requests} ({statuses})"
        )
        lines.extend(f"    {sample}" for sample in row.roster.error_samples)
    return lines


def client_cpu_ms(measurement: Measurement) -> float:
    if not measurement.requests:
        return 0.0
    return 1000 * measurement.client_cpu_seconds / measurement.requests


def context_line(rows: list[Row], load_average: float, quiet_wait: float) -> str:
    """How busy the load generator and the machine were: a low limit may be their doing."""
    measured = [row for row in rows if row.limit is not None and row.limit.requests]
    spent = sum(row.limit.client_cpu_seconds for row in measured)
    sent = sum(row.limit.requests for row in measured)
    per_request = f"{1000 * spent / sent:.2f}" if sent else "-"
    return (
        f"load generator CPU ms/req on the limit runs: {per_request}; "
        f"1-minute load average at start: {load_average:.2f} on {os.cpu_count()} CPUs; "
        f"{quiet_wait:.0f} s waited for Roster to finish background work before slices"
    )


def targets(rows: list[Row]) -> list[Target]:
    """The issue's targets, each judged on this run (some are set for 100,000 users)."""
    by_name = {row.name: row for row in rows}
    results = []

    def judge(text: str, names: tuple[str, ...], figure: Callable, passes, unit: str = ""):
        found = [by_name.get(name) for name in names]
        if any(row is None for row in found):
            results.append(Target(text, "-", "not run"))
        elif any(row.roster is None and row.value is None for row in found):
            results.append(Target(text, "-", "NOT SERVED"))
        else:
            value = figure(*found)
            failed = any(row.roster is not None and row.roster.failures for row in found)
            verdict = "FAIL (errors)" if failed else "PASS" if passes(value) else "FAIL"
            results.append(Target(text, f"{value:.2f}{unit}", verdict))

    for name in ("provision", "update", "disable"):
        judge(f"provisioning: {name} >= 0.6x limit", (name,), ratio, lambda v: v >= 0.6, "x")
    judge(
        "provision flat >= 0.9 (set for 100,000 users)",
        ("provision",),
        lambda row: row.roster.flat() or 0.0,
        lambda v: v >= 0.9,
    )
    for name in ("lookup_filter", "lookup_id"):
        judge(f"{name} >= 0.8x limit", (name,), ratio, lambda v: v >= 0.8, "x")
    for name in ("page_first", "page_last"):
        judge(f"{name}: CPU/req <= 3x limit's", (name,), cpu_ratio, lambda v: v <= 3, "x")
    judge(
        f"page CPU/req same at both ends (last/second <= {SAME_COST})",
        ("page_second", "page_last"),
        per_request_growth,
        lambda v: v <= SAME_COST,
    )
    judge(
        "co_search p95 <= 150 ms",
        ("co_search",),
        lambda row: row.roster.percentile_ms(0.95),
        lambda v: v <= 150,
        " ms",
    )
    judge(
        f"groups_add_full CPU/req same as groups_add_empty (<= {SAME_COST}x)",
        ("groups_add_empty", "groups_add_full"),
        lambda empty, full: per_request_growth(empty, full),
        lambda v: v <= SAME_COST,
        "x",
    )
    for name, text, limit in (
        ("groups_add_1000", "1,000 members in one PATCH costs", 5),
        ("groups_get_big", "GET big group ?excludedAttributes=members", 2),
    ):
        judge(
            f"{text} <= {limit} ordinary requests (CPU)",
            (REFERENCE, name),
            lambda reference, row: in_ordinary_requests(reference, row)[0],
            lambda v, limit=limit: v <= limit,
            " req",
        )
    judge("restart <= 5 s", ("restart",), lambda row: row.value, lambda v: v <= 5, " s")
    judge("memory <= 1024 MiB", ("memory",), lambda row: row.value, lambda v: v <= 1024, " MiB")
    judge(
        "peak memory, over the run and at start-up, <= 1024 MiB",
        ("memory_peak_run", "memory_peak_start"),
        lambda run, start: max(run.value, start.value),
        lambda v: v <= 1024,
        " MiB",
    )
    return results


def target_lines(results: list[Target], users: int) -> list[str]:
    lines = [f"Targets ({users:,} users this run):"]
    lines.extend(f"  {t.verdict:<13} {t.text:<70} {t.shown}" for t in results)
    return lines


def measurement_json(measurement: Measurement | None) -> dict | None:
    if measurement is None:
        return None
    return {
        "requests": measurement.requests,
        "seconds": round(measurement.seconds, 3),
        "req_per_s": round(measurement.rate, 1),
        "p50_ms": round(measurement.percentile_ms(0.5), 2),
        "p95_ms": round(measurement.percentile_ms(0.95), 2),
        "cpu_ms_per_request": round(measurement.cpu_ms_per_request, 3),
        "client_cpu_ms_per_request": round(client_cpu_ms(measurement), 3),
        "flat": measurement.flat(),
        "tenths": [round(share, 3) for share in measurement.tenths()],
        "statuses": {str(status): count for status, count in measurement.statuses.items()},
        "error_samples": measurement.error_samples,
    }


def results_json(rows: list[Row], results: list[Target], config: dict, checks: list[str]) -> dict:
    return {
        "config": config,
        "phases": [
            {
                "phase": row.name,
                "note": row.note,
                "value": row.value,
                "unit": row.unit,
                "ratio": ratio(row) if row.roster and row.limit else None,
                "roster": measurement_json(row.roster),
                "limit": measurement_json(row.limit),
            }
            for row in rows
        ],
        "targets": [vars(target) for target in results],
        "ordinary_requests": ordinary_request_json(rows),
        "checks": checks,
    }


def ordinary_request_json(rows: list[Row]) -> dict:
    by_name = {row.name: row for row in rows}
    reference = by_name.get(REFERENCE)
    if reference is None or reference.roster is None or not reference.roster.requests:
        return {}
    priced = {}
    for name in BIG_OPERATIONS:
        row = by_name.get(name)
        if row is not None and row.roster is not None and row.roster.requests:
            cpu, p50 = in_ordinary_requests(reference, row)
            priced[name] = {"by_cpu": round(cpu, 2), "by_p50": round(p50, 2)}
    return priced
