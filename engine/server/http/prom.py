"""Prometheus metrics: an engine listener that counts, and a renderer for the text format 0.0.4.

`PromMetrics` is handed to the engine (as its `EngineListener`) and, if wanted, to the APNs pool
(as its `PoolListener`); the HTTP front counts its requests through `api_request`. Every label set
is bounded so a misbehaving client cannot grow memory: event kinds, reasons and outcomes come from
closed enums, routes are route templates (never raw paths), HTTP statuses are three-digit codes.
Anything outside a known set is counted under `other`.

Listener calls happen synchronously on the engine's trio thread, so each is a dict increment.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Final

from engine.apns.reasons import Outcome, Reason
from engine.metrics import EngineListener
from engine.payload import EventKind
from engine.results import DeliveryResult, DeliveryStatus

__all__ = ["CONTENT_TYPE", "FORWARD_FAILURES", "LATENCY_BUCKETS", "PromMetrics", "render_text"]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
"""The content type of the Prometheus text exposition format."""

LATENCY_BUCKETS: Final[tuple[float, ...]] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Upper bounds (seconds) of the APNs answer latency histogram; `+Inf` is implied."""

OTHER: Final = "other"
_KINDS: Final = frozenset(k.value for k in EventKind)
_REASONS: Final = frozenset(r.value for r in Reason)
_OUTCOMES: Final = frozenset({Outcome.TRANSPORT.value, Outcome.UNPROCESSED.value})
FORWARD_FAILURES: Final = ("unreachable", "no_answer", "no_owner")
"""Why a call that belongs to another node got a 503: its owner could not be reached (nothing
was sent), did not answer (the call may have run), or there was no owner to send it to."""
_GAUGE_NAME: Final = re.compile(r"[^a-zA-Z0-9_]")

Labels = tuple[tuple[str, str], ...]


class _Counter:
    """One counter family: label values -> count."""

    __slots__ = ("help", "label_names", "name", "values")

    def __init__(self, name: str, help_: str, label_names: tuple[str, ...]) -> None:
        self.name, self.help, self.label_names = name, help_, label_names
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, *label_values: str, by: float = 1.0) -> None:
        self.values[label_values] = self.values.get(label_values, 0.0) + by

    def get(self, *label_values: str) -> float:
        return self.values.get(label_values, 0.0)

    def lines(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} counter"
        for values, count in sorted(self.values.items()):
            yield f"{self.name}{_labels(zip(self.label_names, values, strict=True))} {_num(count)}"


class _Histogram:
    """A label-less histogram with fixed buckets."""

    __slots__ = ("bounds", "buckets", "count", "help", "name", "sum")

    def __init__(self, name: str, help_: str, bounds: tuple[float, ...]) -> None:
        self.name, self.help, self.bounds = name, help_, bounds
        self.buckets = [0] * len(bounds)  # per-bucket (not cumulative) counts
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.buckets[i] += 1
                return

    def lines(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        cumulative = 0
        for bound, n in zip(self.bounds, self.buckets, strict=True):
            cumulative += n
            yield f'{self.name}_bucket{{le="{_num(bound)}"}} {cumulative}'
        yield f'{self.name}_bucket{{le="+Inf"}} {self.count}'
        yield f"{self.name}_sum {_num(self.sum)}"
        yield f"{self.name}_count {self.count}"


class PromMetrics(EngineListener):
    """Counters and a latency histogram fed by engine events; gauges pulled at render time.

    `stats` (optional) returns the current gauge values (queue depths, activities, devices...);
    each key becomes the gauge `lockstep_<key>`.
    """

    def __init__(self, *, stats: Callable[[], Mapping[str, float]] | None = None) -> None:
        self.stats = stats
        self.submitted_total = _Counter(
            "lockstep_pushes_submitted_total", "Pushes accepted into the engine.", ("kind",)
        )
        self.attempts_total = _Counter(
            "lockstep_push_attempts_total", "Push attempts sent to APNs.", ("kind",)
        )
        self.answered_total = _Counter(
            "lockstep_pushes_answered_total",
            "APNs answers by HTTP status and reason (none when accepted).",
            ("status", "reason"),
        )
        self.settled_total = _Counter(
            "lockstep_pushes_settled_total",
            "Pushes that reached their end; superseded means coalesced into a newer state.",
            ("status",),
        )
        self.rejected_total = _Counter(
            "lockstep_pushes_rejected_total", "Pushes APNs refused for good.", ("reason",)
        )
        self.unanswered_total = _Counter(
            "lockstep_push_unanswered_total",
            "Attempts without an APNs answer (transport) or not processed (unprocessed).",
            ("outcome",),
        )
        self.api_requests_total = _Counter(
            "lockstep_api_requests_total",
            "HTTP API requests by route and status.",
            ("route", "status"),
        )
        self.forwarded_total = _Counter(
            "lockstep_forwarded_requests_total",
            "API requests forwarded to the node that owns their partition, by its answer's status.",
            ("status",),
        )
        self.forward_failures_total = _Counter(
            "lockstep_forward_failures_total",
            "API requests of another node's partition answered 503 here: the owner was "
            "unreachable, gave no answer, or there was no owner.",
            ("reason",),
        )
        self.connections_total = _Counter(
            "lockstep_apns_connection_events_total",
            "APNs connection events (opened, closed, failed, goaway).",
            ("event",),
        )
        self.latency = _Histogram(
            "lockstep_apns_latency_seconds",
            "Time from sending a push to the APNs answer.",
            LATENCY_BUCKETS,
        )
        # Known series start at zero so dashboards see them before the first event.
        for kind in sorted(_KINDS):
            self.submitted_total.inc(kind, by=0.0)
        for status in DeliveryStatus:
            self.settled_total.inc(status.value, by=0.0)

    # -- EngineListener ---------------------------------------------------------------------
    def submitted(self, kind: str) -> None:
        """Count an event accepted into the engine."""
        self.submitted_total.inc(kind if kind in _KINDS else OTHER)

    def dispatched(self, kind: str, attempt: int) -> None:
        """Count a push attempt sent to APNs."""
        self.attempts_total.inc(kind if kind in _KINDS else OTHER)

    def answered(self, status: int, reason: Reason | None, latency: float) -> None:
        """Count an APNs answer and record its latency."""
        self.answered_total.inc(_status_label(status), _reason_label(reason))
        self.latency.observe(max(latency, 0.0))

    def unanswered(self, outcome: str, detail: str) -> None:
        """Count an attempt that got no answer (the detail is free text: not a label)."""
        self.unanswered_total.inc(outcome if outcome in _OUTCOMES else OTHER)

    def settled(self, result: DeliveryResult) -> None:
        """Count a push's end; rejections also by reason."""
        self.settled_total.inc(result.status.value)
        if result.status is DeliveryStatus.REJECTED:
            self.rejected_total.inc(_reason_label(result.reason))

    # -- PoolListener -----------------------------------------------------------------------
    def connection_opened(self) -> None:
        """Count an APNs connection that came up."""
        self.connections_total.inc("opened")

    def connection_closed(self, reason: str | None) -> None:
        """Count an APNs connection that closed."""
        self.connections_total.inc("closed")

    def connect_failed(self, error: Exception) -> None:
        """Count a failed connect attempt."""
        self.connections_total.inc("connect_failed")

    def goaway(self, reason: str) -> None:
        """Count a GOAWAY from APNs."""
        self.connections_total.inc("goaway")

    # -- the HTTP front ---------------------------------------------------------------------
    def api_request(self, route: str, status: int) -> None:
        """Count one API request; `route` must be a route template (bounded), not a raw path."""
        self.api_requests_total.inc(route, _status_label(status))

    def forwarded(self, status: int) -> None:
        """Count a request the owner of its partition answered (with `status`)."""
        self.forwarded_total.inc(_status_label(status))

    def forward_failed(self, reason: str) -> None:
        """Count a request of another node's partition that got a 503 (`FORWARD_FAILURES`)."""
        self.forward_failures_total.inc(reason if reason in FORWARD_FAILURES else OTHER)

    # -- exposition -------------------------------------------------------------------------
    def render(self, gauges: Mapping[str, float] | None = None) -> bytes:
        """Everything in the Prometheus text format 0.0.4.

        `gauges` overrides the `stats` callback (the HTTP front passes `service.stats()`).
        """
        if gauges is None and self.stats is not None:
            gauges = self.stats()
        families: list[_Counter | _Histogram] = [
            self.submitted_total,
            self.attempts_total,
            self.answered_total,
            self.settled_total,
            self.rejected_total,
            self.unanswered_total,
            self.api_requests_total,
            self.forwarded_total,
            self.forward_failures_total,
            self.connections_total,
            self.latency,
        ]
        lines: list[str] = []
        for family in families:
            lines.extend(family.lines())
        lines.extend(_gauge_lines(gauges or {}))
        return render_text(lines)


def render_text(lines: Iterable[str]) -> bytes:
    """Join exposition lines; the format requires a final newline."""
    return ("\n".join(lines) + "\n").encode()


def _gauge_lines(gauges: Mapping[str, float]) -> Iterable[str]:
    for key in sorted(gauges):
        value = gauges[key]
        if not isinstance(value, (int, float)):  # bool is an int: it renders as 0 or 1
            continue  # a non-numeric stat has no gauge form
        name = "lockstep_" + _GAUGE_NAME.sub("_", key)
        yield f"# TYPE {name} gauge"
        yield f"{name} {_num(float(value))}"


def _status_label(status: int) -> str:
    return str(status) if 100 <= status <= 599 else OTHER


def _reason_label(reason: Reason | None) -> str:
    if reason is None:
        return "none"
    return reason.value if reason.value in _REASONS else OTHER


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return f"{{{body}}}" if body else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)
