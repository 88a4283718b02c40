"""Prometheus metrics of one sidecar process, in a registry of its own."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from sidecar.store import CommitOutcome, ReserveOutcome


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.reservations = Counter(
            "iron_sidecar_reservations", "Reserve calls by outcome.", ["outcome"], registry=registry
        )
        self.commits = Counter(
            "iron_sidecar_commits", "Usage charged, by outcome.", ["outcome"], registry=registry
        )
        # every outcome's series exists from the start; the hot path only increments (no label lookup)
        self.reserved = {o: self.reservations.labels(o.value) for o in ReserveOutcome}
        self.committed = {o: self.commits.labels(o.value) for o in CommitOutcome}
        self.lease_remaining = Gauge(
            "iron_sidecar_lease_remaining_usd", "Lease budget not spent or held.", registry=registry
        )
        self.journal_depth = Gauge(
            "iron_sidecar_journal_depth",
            "Usage events not yet acknowledged by the control plane.",
            registry=registry,
        )
        self.flushed = Counter(
            "iron_sidecar_flushed_events", "Usage events the control plane took.", registry=registry
        )
        self.flush_seconds = Histogram(
            "iron_sidecar_flush_seconds",
            "Time to ship one batch to the control plane.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )
        self.control_plane_up = Gauge(
            "iron_sidecar_control_plane_up",
            "1 when the last call to the control plane succeeded.",
            registry=registry,
        )
        self.lease_refreshes = Counter(
            "iron_sidecar_lease_refreshes",
            "Lease handshakes and top-ups, by result.",
            ["result"],
            registry=registry,
        )
        self.control_plane_up.set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)
