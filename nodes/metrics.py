"""Prometheus metrics of a node (served at /metrics)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

from logstore import metrics as logstore_metrics

REGISTRY = CollectorRegistry(auto_describe=True)

_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 0.6, 1, 2, 5, 10, 30)

RUNS = Counter(
    "cronmesh_runs_finished",
    "Runs finished by this node (or reaped as lost by the leader)",
    ["status"],
    registry=REGISTRY,
)
TICKS = Counter(
    "cronmesh_ticks", "Ticks handled by the leader, by fate", ["fate"], registry=REGISTRY
)
FIRE_LAG = Histogram(
    "cronmesh_fire_lag_seconds",
    "Tick time to run creation",
    buckets=_LAG_BUCKETS,
    registry=REGISTRY,
)
START_LAG = Histogram(
    "cronmesh_start_lag_seconds",
    "Tick time to process start (scheduled runs)",
    buckets=_LAG_BUCKETS,
    registry=REGISTRY,
)
SLOT_OUTCOMES = Counter(
    "cronmesh_slot_outcomes",
    "Slots settled by the leader, by project, job and outcome (cluster/outcomes.py, D231); "
    "bounded by the job quotas times the outcome vocabulary",
    ["project", "job", "outcome"],
    registry=REGISTRY,
)
SLOT_LATENESS = Histogram(
    "cronmesh_slot_lateness_seconds",
    "Slot instant to its run's start, for the slots the leader watches (jobs with deadlines); "
    "catch-up slots to their run's creation",
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 86400),
    registry=REGISTRY,
)
WAITING_SLOTS = Gauge(
    "cronmesh_waiting_slots",
    "Slots waiting on their upstreams (depends_on, not_before) on the leader, by project (D294)",
    ["project"],
    registry=REGISTRY,
)
CLAIMS = Counter("cronmesh_claims", "Claim attempts by outcome", ["outcome"], registry=REGISTRY)
PLACED = Counter(
    "cronmesh_placement_claims",
    "Runs claimed by this node as their preferred node, or handed off after the delay",
    ["via"],
    registry=REGISTRY,
)
RUNNING = Gauge("cronmesh_running_runs", "Runs executing on this node", registry=REGISTRY)


class _StatesCollector:
    """``cronmesh_executions{state}``: the executions ``cronmesh_running_runs`` counts, by state
    (``nodes.worker.attempt.states``), counted when scraped (nothing per run). ``source`` is set
    by the node while it has a worker."""

    def __init__(self) -> None:
        self.source: Callable[[], Mapping[str, int]] | None = None
        self.states: tuple[str, ...] = ()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "cronmesh_executions", "Executions this node holds, by state", labels=["state"]
        )
        counts = self.source() if self.source is not None else {}
        for state in (*self.states, *sorted(set(counts) - set(self.states))):
            family.add_metric([state], counts.get(state, 0))
        yield family


EXECUTIONS = _StatesCollector()
REGISTRY.register(EXECUTIONS)
BUDGET_IN_USE = Gauge(
    "cronmesh_budget_in_use",
    "Slots of a budget held cluster-wide, as this node's watch sees them (D277)",
    ["budget"],
    registry=REGISTRY,
)
BUDGET_WAITING = Gauge(
    "cronmesh_budget_waiting",
    "Queued runs this node would claim but a budget holds back, at its last look (D277)",
    ["budget"],
    registry=REGISTRY,
)
LEADER = Gauge("cronmesh_is_leader", "1 while this node leads the scheduler", registry=REGISTRY)
LEADER_CHANGES = Counter(
    "cronmesh_leadership_acquired",
    "Times this node became the scheduler leader",
    registry=REGISTRY,
)
SHARDS = Gauge(
    "cronmesh_scheduler_shards",
    "The scheduler_shards setting this node campaigns under (D300)",
    registry=REGISTRY,
)
SHARD_LEADER = Gauge(
    "cronmesh_shard_leader",
    "1 while this node leads the scheduler shard (D303)",
    ["shard"],
    registry=REGISTRY,
)
SPAWN = Histogram(
    "cronmesh_spawn_seconds",
    "Time to spawn a job process",
    registry=REGISTRY,
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5),
)
CGROUP_MODE = Gauge(
    "cronmesh_cgroup_mode",
    "1 for the cgroup layout this node runs its jobs in (v2, v2+v1, v1, none)",
    ["mode"],
    registry=REGISTRY,
)
OOM_KILLS = Counter(
    "cronmesh_oom_killed_runs", "Attempts ended by the out-of-memory killer", registry=REGISTRY
)
LIMITS_NOT_APPLIED = Counter(
    "cronmesh_limits_not_applied",
    "Resource limits a run asked for that this node could not apply",
    ["resource"],
    registry=REGISTRY,
)
TXN_BATCH = Histogram(
    "cronmesh_worker_txn_batch_size",
    "Claims and completions sent to etcd together in one transaction (D137)",
    registry=REGISTRY,
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
OUTCOME_UNKNOWN = Counter(
    "cronmesh_outcome_unknown",
    "Writes to etcd whose outcome this node could not know (the reply was lost), by writer; "
    "each is resolved by reading back, never by a blind retry",
    ["where"],
    registry=REGISTRY,
)
COMPLETIONS_FENCED = Counter(
    "cronmesh_completions_fenced",
    "Completions etcd refused because the claim they compared was no longer theirs (the "
    "attempt's result was discarded: only the current claim finishes a run)",
    registry=REGISTRY,
)
ETCD_ERRORS = Counter(
    "cronmesh_etcd_errors", "etcd calls that failed", ["where"], registry=REGISTRY
)
ETCD_SWITCHES = Gauge(
    "cronmesh_etcd_member_switches",
    "Times this node's etcd client left a member that timed out or was unreachable",
    registry=REGISTRY,
)
JOB_RUNS = Counter(
    "cronmesh_job_runs_finished",
    "Runs finished by this node (or reaped as lost by the leader), by job and status",
    ["project", "job", "status"],
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "cronmesh_queue_depth",
    "Runs waiting in the queue, as this node's watch sees it",
    registry=REGISTRY,
)
WATCH_EVENTS = Gauge(
    "cronmesh_watch_events",
    "etcd watch events this node received (and decoded) since it started, by the watched key's "
    "family (its first segment below the key prefix, D348)",
    ["family"],
    registry=REGISTRY,
)
WATCH_RESPONSES = Gauge(
    "cronmesh_watch_responses",
    "etcd watch responses holding events this node received since it started, by the watched "
    "key's family (each is one gRPC message read and one wake-up of the loop, D421)",
    ["family"],
    registry=REGISTRY,
)
RUN_SNAPSHOTS = Gauge(
    "cronmesh_run_snapshots",
    "Job snapshots of the run records this node decoded since it started: validated (content "
    "not seen before) or reused (the same content validated before, D450)",
    ["outcome"],
    registry=REGISTRY,
)
ETCD_LATENCY = Histogram(
    "cronmesh_etcd_request_seconds",
    "etcd unary requests by method and outcome (ok or the gRPC status)",
    ["method", "outcome"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
NOTIFICATIONS = Counter(
    "cronmesh_notifications",
    "Notifications by channel (webhook, email) and outcome (sent, failed, refused, dropped)",
    ["channel", "outcome"],
    registry=REGISTRY,
)

WORKFLOW_EXECUTIONS = Counter(
    "cronmesh_workflow_executions_finished",
    "Workflow executions finished, by status (leader)",
    ["status"],
    registry=REGISTRY,
)
WORKFLOW_TASKS_STARTED = Counter(
    "cronmesh_workflow_tasks_started",
    "Task runs created by the workflow engine (leader)",
    registry=REGISTRY,
)
DAG_ADVANCE_LAG = Histogram(
    "cronmesh_dag_advance_seconds",
    "Upstream task run finished to its downstream runs created (leader)",
    buckets=_LAG_BUCKETS,
    registry=REGISTRY,
)


# Label children looked up once (D403): ``labels()`` takes a lock and checks every value, ~7 µs
# each, several times per run. No series is ever removed, so a kept child stays the live one; at
# most CHILDREN_KEPT are kept (forgotten all at once beyond: looked up again, still counted).
_CHILDREN: dict[tuple[int, tuple[str, ...]], Any] = {}
CHILDREN_KEPT = 16384


def child(metric: Any, *values: str) -> Any:
    """``metric.labels(*values)``, kept."""
    key = (id(metric), values)
    found = _CHILDREN.get(key)
    if found is None:
        found = metric.labels(*values)
        if len(_CHILDREN) >= CHILDREN_KEPT:
            _CHILDREN.clear()
        _CHILDREN[key] = found
    return found


def run_finished(status: str, project: str, job: str) -> None:
    """Count one finished run, in total and per job."""
    child(RUNS, status).inc()
    child(JOB_RUNS, project, job, status).inc()


for _collector in logstore_metrics.COLLECTORS:  # log shipping's metrics, served with the node's
    REGISTRY.register(_collector)

# incoming hooks (issue 24 item 2): per node; outcome started / replayed / refused, status the
# HTTP status answered (a bounded set: no hook or project names, which strangers choose)
HOOK_DELIVERIES = Counter(
    "cronmesh_hook_deliveries",
    "Hook deliveries this node answered, by outcome and HTTP status",
    ["outcome", "status"],
    registry=REGISTRY,
)

# peer requests refused (D511): by reason, signing.verify's fixed set with "_" for spaces
PEER_REJECTED = Counter(
    "cronmesh_peer_requests_rejected",
    "Requests to /internal/v1 this node refused, by reason (one warning per reason a minute)",
    ["reason"],
    registry=REGISTRY,
)
