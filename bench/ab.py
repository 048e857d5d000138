"""Two builds of Roster side by side: is B faster than A, beyond the machine's noise?

    python -m bench.ab --b /path/to/other/checkout [--a .] [--users 6000] [--rounds 20]
                       [--shape disable] [--env-b "NAME=value ..."]

A full ``bench.run`` compares Roster with the limit; a change worth 5 % drowns there in the
spread between runs (10 % and more on this shared machine). Here both builds serve the same
users at once, and each round runs one slice of requests on A and the next on B (in turn
which goes first), so a noisy minute hits both. It prints B's speed over A's per round and
their median; two runs of the same build give about 1.00 (0.99 here over 20 rounds), but the
median of one pair moves by about 5 % from run to run: run a change both ways round (--a and
--b swapped) before believing a few per cent.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from bench import entra
from bench.load import run_load
from bench.phases import one_round, provision_step
from bench.run import start
from bench.servers import REPO, Server, create_key

SHAPES = {
    "disable": lambda ids: lambda c, i: c.send("PATCH", f"/Users/{ids[i]}", entra.DISABLE_BODY),
    "update": lambda ids: lambda c, i: c.send("PATCH", f"/Users/{ids[i]}", entra.update_body(i)),
    "get": lambda ids: lambda c, i: c.send("GET", f"/Users/{ids[i]}"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n")[0])
    parser.add_argument("--a", type=Path, default=REPO, help="checkout A (this one)")
    parser.add_argument("--b", type=Path, required=True, help="checkout B")
    parser.add_argument("--users", type=int, default=6000, help="users each server holds (6000)")
    parser.add_argument("--rounds", type=int, default=20, help="slices taken in turn (20)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="disable")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--env-a", default="", help="extra environment for A: NAME=value ...")
    parser.add_argument("--env-b", default="", help="extra environment for B")
    args = parser.parse_args(argv)
    if args.rounds < 2 or args.users < args.rounds:
        parser.error("--rounds must be at least 2 and at most --users")
    if any("=" not in pair for pair in f"{args.env_a} {args.env_b}".split()):
        parser.error("--env-a and --env-b take NAME=value pairs, separated by spaces")
    return args


class Side:
    """One build: its server on a fresh data folder, its key and the ids of its users."""

    def __init__(self, name: str, repo: Path, env: str, work: Path) -> None:
        data_dir = work / name / "data"
        data_dir.mkdir(parents=True)
        self.token = create_key(data_dir, repo.resolve())
        extra = dict(pair.split("=", 1) for pair in env.split())
        self.server = Server(
            name,
            "app:create_app",
            work / f"{name}.log",
            {"ROSTER_DATA_DIR": str(data_dir), **extra},
            repo=repo.resolve(),
        )
        self.ids: list[str | None] = []

    def provision(self, users: int, clients: int) -> None:
        self.ids = [None] * users
        run_load(self.server, self.token, range(users), provision_step(self.ids), clients)

    def run_slice(self, shape: str, part, clients: int) -> tuple[float, float]:
        """Requests per second and server CPU ms per request over one slice."""
        self.server.wait_until_quiet()
        measured = run_load(self.server, self.token, part, SHAPES[shape](self.ids), clients)
        return measured.rate, measured.cpu_ms_per_request


def compare(args: argparse.Namespace, a: Side, b: Side) -> list[float]:
    """B's speed over A's, per round; which side goes first alternates."""
    ratios, cpu = [], {"A": [], "B": []}
    for number in range(args.rounds):
        part = one_round(range(args.users), number, args.rounds)
        order = (a, b) if number % 2 == 0 else (b, a)
        rates = {}
        for side in order:
            rates[side.server.name], used = side.run_slice(args.shape, part, args.clients)
            cpu[side.server.name].append(used)
        ratios.append(rates["B"] / rates["A"])
        print(
            f"round {number + 1:2d}: A {rates['A']:5.0f}/s  B {rates['B']:5.0f}/s  "
            f"B/A {ratios[-1]:.3f}",
            flush=True,
        )
    print(
        f"{args.shape}: median B/A {statistics.median(ratios):.3f} "
        f"(quartiles {statistics.quantiles(ratios, n=4)[0]:.3f}-"
        f"{statistics.quantiles(ratios, n=4)[2]:.3f}); server CPU ms per request, medians: "
        f"A {statistics.median(cpu['A']):.2f}, B {statistics.median(cpu['B']):.2f}"
    )
    return ratios


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="roster-ab-"))
    sides = [Side("A", args.a, args.env_a, work), Side("B", args.b, args.env_b, work)]
    try:
        for side in sides:
            start(side.server)
        for side in sides:
            side.provision(args.users, args.clients)
            print(f"{side.server.name}: {args.users} users provisioned", file=sys.stderr)
        compare(args, *sides)
    finally:
        for side in sides:
            side.server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
