"""The load generator: concurrent keep-alive clients replaying steps, and what one run measured.

Each client thread owns one ``requests.Session`` (one keep-alive connection, as Entra's
provisioning workers hold theirs) and takes the next item from a shared iterator, so a slow request
never leaves another client idle. Per request only two floats are kept (latency and completion
time), which keeps a 200,000-request phase to a few megabytes.
"""

from __future__ import annotations

import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import pairwise

import requests

from bench.entra import SCIM_JSON
from bench.servers import Server

ERROR_SAMPLES = 3


@dataclass
class Measurement:
    """What one phase did on one server."""

    requests: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    client_cpu_seconds: float = 0.0  # the load generator's own CPU, to see if it was the bottleneck
    latencies: array = field(default_factory=lambda: array("d"))
    completions: array = field(default_factory=lambda: array("d"))
    statuses: Counter = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * self.cpu_seconds / self.requests if self.requests else 0.0

    @property
    def failures(self) -> int:
        """Answers outside 2xx, and requests that got no answer at all (status 0)."""
        return sum(n for status, n in self.statuses.items() if not 200 <= status < 300)

    def percentile_ms(self, fraction: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    def flat(self) -> float | None:
        """Throughput of the last tenth of the requests over that of the first tenth.

        Below 1 the server slows down as the phase goes on (e.g. as the store grows during
        provisioning). Tenths are by request count, so the last tenth is the last tenth of the work.
        """
        count = len(self.completions)
        tenth = count // 10
        if tenth < 2:
            return None
        ordered = sorted(self.completions)
        first = ordered[tenth - 1]
        last = ordered[-1] - ordered[-tenth - 1]
        return first / last if last > 0 and first > 0 else None

    def tenths(self) -> list[float]:
        """Throughput of each tenth of the requests over that of the first tenth.

        ``flat`` compares only the two ends; this shows whether a phase slows down steadily
        (the store growing) or in one tenth (a compaction, a noisy minute on the machine).
        """
        tenth = len(self.completions) // 10
        if tenth < 2:
            return []
        ordered = sorted(self.completions)
        ends = [ordered[k * tenth - 1] for k in range(1, 10)] + [ordered[-1]]
        spans = [ends[0]] + [later - earlier for earlier, later in pairwise(ends)]
        return [spans[0] / span if span > 0 else 0.0 for span in spans]

    def append(self, later: Measurement) -> None:
        """Add a later round of the same phase; its clock continues where this one stopped."""
        offset = self.seconds
        self.completions.extend(moment + offset for moment in later.completions)
        self.latencies.extend(later.latencies)
        self.statuses.update(later.statuses)
        room = ERROR_SAMPLES - len(self.error_samples)
        self.error_samples.extend(later.error_samples[:room])
        self.requests += later.requests
        self.seconds += later.seconds
        self.cpu_seconds += later.cpu_seconds
        self.client_cpu_seconds += later.client_cpu_seconds

    def absorb(self, client: Client) -> None:
        self.latencies.extend(client.latencies)
        self.completions.extend(client.completions)
        self.statuses.update(client.statuses)
        room = ERROR_SAMPLES - len(self.error_samples)
        self.error_samples.extend(client.error_samples[:room])
        self.requests += len(client.latencies)


class Client:
    """One keep-alive connection that times every request it sends."""

    def __init__(self, base_url: str, token: str, started: float) -> None:
        self.base = f"{base_url}/v2"
        self.started = started
        self.session = requests.Session()
        # No proxy or .netrc lookups from the environment on every request: on this machine they
        # cost the client more CPU than the limit spends answering, and the target is loopback.
        self.session.trust_env = False
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.session.headers["Content-Type"] = f"{SCIM_JSON}; charset=utf-8"
        self.latencies = array("d")
        self.completions = array("d")
        self.statuses: Counter = Counter()
        self.error_samples: list[str] = []

    def send(self, method: str, path: str, body: bytes | None = None) -> requests.Response | None:
        """One request; a refused or broken connection counts as status 0, never raises."""
        begin = time.perf_counter()
        try:
            response = self.session.request(method, self.base + path, data=body, timeout=120)
        except requests.RequestException as error:
            response = None
            self.statuses[0] += 1
            self._note_failure(0, method, path, repr(error))
        end = time.perf_counter()
        self.latencies.append(end - begin)
        self.completions.append(end - self.started)
        if response is not None:
            self.statuses[response.status_code] += 1
            if not 200 <= response.status_code < 300:
                self._note_failure(response.status_code, method, path, response.text[:200])
        return response

    def _note_failure(self, status: int, method: str, path: str, detail: str) -> None:
        if len(self.error_samples) < ERROR_SAMPLES:
            self.error_samples.append(f"{status} {method} {path[:80]}: {detail}")

    def close(self) -> None:
        self.session.close()


Step = Callable[[Client, object], None]


def run_load(server: Server, token: str, items: Iterable, step: Step, clients: int) -> Measurement:
    """Run ``step(client, item)`` for every item on ``clients`` threads; time the server's CPU.

    The wall clock runs from the moment the threads are released to the last completion, and
    the server's CPU time is read just outside that window.
    """
    source = iter(items)
    lock = threading.Lock()
    measurement = Measurement()
    cpu_before = server.cpu_sample()
    client_cpu_before = time.process_time()
    started = time.perf_counter()
    workers = [Client(server.url, token, started) for _ in range(clients)]

    def work(client: Client) -> None:
        while True:
            with lock:
                item = next(source, StopIteration)
            if item is StopIteration:
                return
            step(client, item)

    threads = [threading.Thread(target=work, args=(client,)) for client in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    measurement.seconds = time.perf_counter() - started
    measurement.cpu_seconds = cpu_before.seconds_until(server.cpu_sample())
    measurement.client_cpu_seconds = time.process_time() - client_cpu_before
    for client in workers:
        measurement.absorb(client)
        client.close()
    return measurement
