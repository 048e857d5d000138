"""Roster's benchmark: Entra's provisioning traffic against Roster and against the limit.

    python -m bench.run --users 1000 [--clients 4] [--phases provision,lookup_id] [--json out.json]

One run starts both servers under waitress (Roster on a fresh temp data folder, the limit being
a bare Flask app with canned answers, see bench/limit_app.py), replays each phase on the limit and
then on Roster, and prints req/s, the ratio to the limit, p50/p95 latency, server CPU per request
and "flat" per phase, followed by the issue's targets with PASS or FAIL.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import requests

from bench import phases, report
from bench.phases import Bench
from bench.servers import Server, create_key


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=1000, help="users to provision (1000)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent keep-alive clients (4)")
    parser.add_argument(
        "--phases",
        default=",".join(phases.PHASES),
        help="comma-separated, from: " + ", ".join(phases.PHASES),
    )
    parser.add_argument(
        "--sample", type=int, default=2000, help="users touched by update/disable/lookups (2000)"
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temp data folder and logs")
    args = parser.parse_args(argv)
    args.phases = [name.strip() for name in args.phases.split(",") if name.strip()]
    unknown = sorted(set(args.phases) - set(phases.PHASES))
    if unknown:
        parser.error(f"unknown phases {', '.join(unknown)}; choose from {', '.join(phases.PHASES)}")
    if args.users < 1 or args.clients < 1:
        parser.error("--users and --clients must be at least 1")
    return args


def prepare_servers(work: Path) -> tuple[Server, Server, str]:
    """The key first (the CLI must write while no server holds the data folder), then servers."""
    data_dir = work / "data"
    data_dir.mkdir()
    token = create_key(data_dir)
    roster = Server(
        "Roster", "app:create_app", work / "roster.log", {"ROSTER_DATA_DIR": str(data_dir)}
    )
    limit = Server("limit", "bench.limit_app:create_limit_app", work / "limit.log")
    return roster, limit, token


def start(server: Server) -> None:
    server.launch()
    url = f"{server.url}/v2/ServiceProviderConfig"
    server.wait_until_answering(lambda: requests.get(url, timeout=2).status_code < 500)


def print_report(bench: Bench, args: argparse.Namespace) -> None:
    results = report.targets(bench.rows)
    priced = report.ordinary_request_lines(bench.rows)
    profiles = report.tenths_lines(bench.rows)
    lines = [
        f"Roster vs the limit: {args.users:,} users, {args.clients} clients, "
        f"sample {min(args.sample, args.users):,}",
        *report.table(bench.rows),
        "",
        *([*profiles, ""] if profiles else []),
        *([*priced, ""] if priced else []),
        *report.target_lines(results, args.users),
        "",
        report.context_line(bench.rows, bench.load_average, bench.quiet_wait),
        *bench.checks,
    ]
    errors = report.failures(bench.rows)
    lines.extend(
        ["Roster non-2xx answers:", *errors] if errors else ["Roster non-2xx answers: none"]
    )
    print("\n".join(lines), flush=True)
    if args.json:
        config = {
            "users": args.users,
            "clients": args.clients,
            "sample": args.sample,
            "load_average_at_start": bench.load_average,
            "seconds_waited_for_quiet": round(bench.quiet_wait, 1),
        }
        document = report.results_json(bench.rows, results, config, bench.checks)
        args.json.write_text(json.dumps(document, indent=2))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_average = os.getloadavg()[0]  # before our servers start: what else runs here
    work = Path(tempfile.mkdtemp(prefix="roster-bench-"))
    servers: list[Server] = []
    try:
        roster, limit, token = prepare_servers(work)
        servers = [roster, limit]
        for server in servers:
            start(server)
        bench = Bench(args.users, args.clients, args.sample, work / "data", token, roster, limit)
        bench.load_average = load_average
        phases.run_phases(bench, args.phases)
        print_report(bench, args)
    finally:
        for server in servers:
            server.stop()
        if args.keep:
            print(f"data folder and server logs kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
