"""Prometheus metrics: ``GET /metrics`` on the main app.

- HTTP: requests, response bytes and durations by route template (``/v2/{name}/blobs/{digest}``,
  never the raw path: repository names and digests would make a series each), method and
  status, measured by a pure ASGI middleware (streamed bodies pass through untouched).
- Garbage collection: read from the ``gc_runs`` table at scrape time, so every replica
  reports the same cluster-wide totals, whichever process ran the collection.
- Jobs: observed where they run (services/jobs.py), in this process's default registry.

With several server processes (``http.workers`` > 1), ``wharf serve`` points
prometheus_client at a shared directory (its multiprocess mode) before the workers start,
and a scrape of any worker adds up all of them.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .meta.gc import GCTotals

log = logging.getLogger(__name__)

# Set by the /v2 dispatcher: the template of the endpoint it matched.
ROUTE_KEY = "wharf.route"
UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# From a manifest HEAD (milliseconds) to a large layer streamed to a slow client (minutes).
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

HTTP_REQUESTS = Counter(
    "wharf_http_requests",
    "HTTP requests answered, by route template, method and status",
    ("route", "method", "status"),
)
HTTP_RESPONSE_BYTES = Counter(
    "wharf_http_response_bytes",
    "Bytes of HTTP response bodies sent, by route template, method and status",
    ("route", "method", "status"),
)
SCHEDULE_PASSES = Counter(
    "wharf_schedule_passes",
    "Times this process looked for due schedules (one a jobs.poll; its rise says the firing is alive)",
)
HTTP_DURATION = Histogram(
    "wharf_http_request_duration_seconds",
    "From the request's arrival to the last byte of the answer, by route template and method",
    ("route", "method"),
    buckets=DURATION_BUCKETS,
)


def route_template(scope: Scope, root_path: str) -> str:
    """The template of the route that answered: bounded, whatever the paths clients send."""
    template = scope.get(ROUTE_KEY)
    if template is not None:
        return str(template)
    route = scope.get("route")
    path_format = getattr(route, "path_format", None)
    if path_format is None:
        return UNMATCHED
    if isinstance(route, Mount):  # a mount that matched nothing inside: /api/v0/{path}
        return str(path_format)
    # Inside a mount, the route's template is relative to it; the mount's prefix went to root_path.
    return str(scope.get("root_path", ""))[len(root_path) :] + str(path_format)


class MetricsMiddleware:
    """Counts every HTTP request once its answer has been sent (or has failed)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._durations: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        root_path = scope.get("root_path", "")
        status = 500  # what the client gets when the app fails before answering
        sent = 0
        start_headers: Iterable[tuple[bytes, bytes]] = ()

        async def counting_send(message: Message) -> None:
            nonlocal status, sent, start_headers
            kind = message["type"]
            if kind == "http.response.body":
                sent += len(message.get("body", b""))
            elif kind == "http.response.start":
                status = message["status"]
                start_headers = message.get("headers", ())
            elif kind == "http.response.pathsend":  # the server sends the file: its length was announced
                sent += next((int(v) for k, v in start_headers if k.lower() == b"content-length"), 0)
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            self._observe(scope, root_path, status, sent, time.perf_counter() - started)

    def _observe(self, scope: Scope, root_path: str, status: int, sent: int, seconds: float) -> None:
        route = route_template(scope, root_path)
        method = scope["method"] if scope["method"] in METHODS else "other"
        series = self._series.get((route, method, status))
        if series is None:
            labels = (route, method, str(status))
            series = HTTP_REQUESTS.labels(*labels), HTTP_RESPONSE_BYTES.labels(*labels)
            self._series[(route, method, status)] = series
        duration = self._durations.get((route, method))
        if duration is None:
            duration = self._durations[(route, method)] = HTTP_DURATION.labels(route, method)
        series[0].inc()
        if sent:
            series[1].inc(sent)
        duration.observe(seconds)


class GCCollector(Collector):
    """Garbage collection as recorded in the database (all replicas, all runs ever)."""

    def __init__(self, totals: list[GCTotals]) -> None:
        self.totals = totals

    def collect(self) -> Iterator[Metric]:
        runs = CounterMetricFamily(
            "wharf_gc_runs", "Garbage collections ended, by status and dry run", labels=("status", "dry_run")
        )
        blobs = CounterMetricFamily("wharf_gc_blobs_deleted", "Blobs deleted by garbage collection")
        manifests = CounterMetricFamily(
            "wharf_gc_manifests_deleted", "Manifests deleted by garbage collection"
        )
        freed = CounterMetricFamily("wharf_gc_bytes_freed", "Bytes of storage freed by garbage collection")
        last = GaugeMetricFamily(
            "wharf_gc_last_success_timestamp_seconds",
            "When the last garbage collection that ran to the end (not a dry run) ended",
        )
        deleted = [0, 0, 0]
        last_success = None
        for row in self.totals:
            if row.status != "running":  # a running row's status changes: it is not a total yet
                runs.add_metric((row.status, str(row.dry_run).lower()), row.runs)
            if row.dry_run:
                continue
            # Stopped, failed and running collections freed what they freed, too.
            deleted[0] += row.blobs_deleted
            deleted[1] += row.manifests_deleted
            deleted[2] += row.bytes_freed
            if row.status == "done" and row.last_ended_at is not None:
                last_success = max(last_success or row.last_ended_at, row.last_ended_at)
        blobs.add_metric((), deleted[0])
        manifests.add_metric((), deleted[1])
        freed.add_metric((), deleted[2])
        yield from (runs, blobs, manifests, freed)
        if last_success is not None:
            last.add_metric((), last_success.timestamp())
            yield last


class _Scrape(Collector):
    def __init__(self, *parts: Collector) -> None:
        self.parts = parts

    def collect(self) -> Iterator[Metric]:
        for part in self.parts:
            yield from part.collect()


def process_registry() -> Collector:
    """This process's metrics, or every worker's when prometheus_client's multiprocess mode is on."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


async def metrics(request: Request) -> Response:
    """The Prometheus exposition (or OpenMetrics, when the scraper asks for it)."""
    parts: list[Collector] = [process_registry()]
    try:
        parts.append(GCCollector(await request.app.state.registry.meta.gc.totals()))
    except Exception:  # the rest is still worth scraping; /readyz says what is wrong
        log.warning("metrics: reading garbage collection totals failed", exc_info=True)
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encoder(_Scrape(*parts)), headers={"Content-Type": content_type})
