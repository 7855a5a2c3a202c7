"""Every etcd key cronmesh uses, in one place (docs/etcd-layout.md describes them for operators).

Values are JSON so ``etcdctl get --prefix /cronmesh/…`` is readable. Run ids are fixed-width
snowflakes, so a range scan over run keys is chronological.
"""

from __future__ import annotations

from dataclasses import dataclass

ELECTION_SCHEDULER = "scheduler"


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "/cronmesh"

    def __post_init__(self) -> None:
        if not self.prefix.startswith("/") or self.prefix.endswith("/"):
            raise ValueError("key prefix must start with '/' and not end with '/'")

    # membership
    def nodes(self) -> str:
        return f"{self.prefix}/nodes/"

    def node(self, node_id: str) -> str:
        """The live record of a node, bound to its lease: present means up."""
        return f"{self.prefix}/nodes/{node_id}"

    def node_infos(self) -> str:
        return f"{self.prefix}/node-info/"

    def node_info(self, node_id: str) -> str:
        """The last known record of a node, kept after it goes down."""
        return f"{self.prefix}/node-info/{node_id}"

    def machine_ids(self) -> str:
        return f"{self.prefix}/machine-ids/"

    def machine_id(self, n: int) -> str:
        return f"{self.prefix}/machine-ids/{n:04d}"

    def node_loads(self) -> str:
        return f"{self.prefix}/node-load/"

    def node_load(self, node_id: str) -> str:
        """What a node uses now (its runs' CPU and memory, D257), bound to its lease."""
        return f"{self.prefix}/node-load/{node_id}"

    def node_states(self) -> str:
        return f"{self.prefix}/node-state/"

    def node_state(self, node_id: str) -> str:
        """Operator's wishes for a node (enabled/disabled/draining, disconnect); permanent."""
        return f"{self.prefix}/node-state/{node_id}"

    # placement
    def groups(self) -> str:
        return f"{self.prefix}/groups/"

    def group(self, name: str) -> str:
        return f"{self.prefix}/groups/{name}"

    def bindings(self, group: str | None = None) -> str:
        return f"{self.prefix}/bindings/" + (f"{group}/" if group else "")

    def binding(self, group: str, name: str) -> str:
        """One binding of a group to a node, with its weight."""
        return f"{self.prefix}/bindings/{group}/{name}"

    # budgets (D274): documents, held concurrency slots, start windows; one watch covers all
    def budget_all(self) -> str:
        return f"{self.prefix}/budget"

    def budgets(self) -> str:
        return f"{self.prefix}/budgets/"

    def budget(self, name: str) -> str:
        return f"{self.prefix}/budgets/{name}"

    def budget_slots(self, name: str | None = None) -> str:
        return f"{self.prefix}/budget-slots/" + (f"{name}/" if name else "")

    def budget_slot(self, name: str, index: int) -> str:
        """One of a budget's ``concurrent`` slots: value the run id, bound to the holder's lease."""
        return f"{self.prefix}/budget-slots/{name}/{index:04d}"

    def budget_starts(self, name: str) -> str:
        """The budget's current start window ``{"start": epoch s, "count": n}``."""
        return f"{self.prefix}/budget-starts/{name}"

    # election
    def election(self, name: str = ELECTION_SCHEDULER) -> str:
        return f"{self.prefix}/election/{name}/"

    def candidate(self, lease_id: int, name: str = ELECTION_SCHEDULER) -> str:
        return f"{self.prefix}/election/{name}/{lease_id:016x}"

    # metadata
    def projects(self) -> str:
        return f"{self.prefix}/projects/"

    def project(self, project: str) -> str:
        return f"{self.prefix}/projects/{project}"

    def doc_sizes(self, project: str) -> str:
        return f"{self.prefix}/doc-sizes/{project}/"

    def doc_size(self, project: str, kind: str, name: str) -> str:
        """Bytes of a job's or workflow's document (``kind`` job|workflow), written in the same
        transaction as the document: the project's byte quota sums these (D162)."""
        return f"{self.prefix}/doc-sizes/{project}/{kind}/{name}"

    def history_sizes(self, project: str) -> str:
        return f"{self.prefix}/history-sizes/{project}/"

    def history_size(self, project: str, kind: str, name: str) -> str:
        """The run history a job or workflow may keep at its worst (``cluster.quotas``), written
        in the same transaction as the document: the run-history quota sums these (D210)."""
        return f"{self.prefix}/history-sizes/{project}/{kind}/{name}"

    def history_charges(self, project: str | None = None) -> str:
        return f"{self.prefix}/history-charges/" + (f"{project}/" if project else "")

    def history_charge(self, project: str, record_id: str) -> str:
        """The bytes one run or execution record is charged to its project's run-history quota,
        written in every transaction that creates, finishes or deletes the record (D318)."""
        return f"{self.prefix}/history-charges/{project}/{record_id}"

    def history_used(self, project: str) -> str:
        """The sum of the project's ``history_charge`` keys as the leader last counted (D318)."""
        return f"{self.prefix}/history-used/{project}/bytes"

    def jobs(self, project: str | None = None) -> str:
        return f"{self.prefix}/jobs/" + (f"{project}/" if project else "")

    def job(self, project: str, job: str) -> str:
        return f"{self.prefix}/jobs/{project}/{job}"

    def schedule_states(self) -> str:
        return f"{self.prefix}/schedule-state/"

    def schedule_state(self, project: str, job: str) -> str:
        return f"{self.prefix}/schedule-state/{project}/{job}"

    def ticks(self, project: str, job: str) -> str:
        return f"{self.prefix}/ticks/{project}/{job}/"

    def tick(self, project: str, job: str, schedule: str, epoch_ms: int) -> str:
        """The idempotency key of one tick of one schedule: written once, by whoever fires it."""
        return f"{self.prefix}/ticks/{project}/{job}/{epoch_ms:015d}-{schedule}"

    # slot outcomes (D230): open slots the leader watches, alarms, notifications to send
    def open_slots(self, project: str | None = None, job: str | None = None) -> str:
        base = f"{self.prefix}/open-slots/"
        if project is None:
            return base
        return f"{base}{project}/" if job is None else f"{base}{project}/{job}/"

    def open_slot(self, project: str, job: str, name: str) -> str:
        """A slot with deadlines not yet settled; ``name`` is its tick key's last part."""
        return f"{self.prefix}/open-slots/{project}/{job}/{name}"

    def waitings(self, project: str | None = None, job: str | None = None) -> str:
        base = f"{self.prefix}/waiting/"
        if project is None:
            return base
        return f"{base}{project}/" if job is None else f"{base}{project}/{job}/"

    def waiting(self, project: str, job: str, name: str) -> str:
        """A slot waiting on its upstreams (depends_on, D294): the run to create when they are
        met; ``name`` is its tick key's last part."""
        return f"{self.prefix}/waiting/{project}/{job}/{name}"

    def slot_alarms(self) -> str:
        return f"{self.prefix}/slot-alarms/"

    def slot_alarm(self, project: str, job: str) -> str:
        """Present while the job's last watched slot ended ``deadline_missed`` (for
        ``recovered``)."""
        return f"{self.prefix}/slot-alarms/{project}/{job}"

    def slot_outbox(self, entry: str | None = None) -> str:
        """Slot notifications written with their outcome, deleted once delivered."""
        return f"{self.prefix}/slot-outbox/" + (entry or "")

    # runs
    def runs(self, project: str | None = None) -> str:
        return f"{self.prefix}/runs/" + (f"{project}/" if project else "")

    def run(self, project: str, run_id: str) -> str:
        return f"{self.prefix}/runs/{project}/{run_id}"

    def job_runs(self, project: str | None = None, job: str | None = None) -> str:
        if project is None:
            return f"{self.prefix}/job-runs/"
        return f"{self.prefix}/job-runs/{project}/" + (f"{job}/" if job else "")

    def job_run(self, project: str, job: str, run_id: str) -> str:
        """Index of a job's runs (value: status when created), for per-job listing and pruning."""
        return f"{self.prefix}/job-runs/{project}/{job}/{run_id}"

    def actives(self, project: str | None = None, job: str | None = None) -> str:
        if project is None:
            return f"{self.prefix}/active/"
        return f"{self.prefix}/active/{project}/" + (f"{job}/" if job else "")

    def active(self, project: str, job: str, run_id: str) -> str:
        """Present from creation until the run is finished: the set of pending and running runs."""
        return f"{self.prefix}/active/{project}/{job}/{run_id}"

    def queue(self) -> str:
        return f"{self.prefix}/queue/"

    def queue_entry(self, priority: int, run_id: str) -> str:
        """Queue order: higher priority first (the segment sorts ascending), then oldest run."""
        return f"{self.prefix}/queue/{1000 - priority:04d}/{run_id}"

    def claims(self) -> str:
        return f"{self.prefix}/claims/"

    def claim(self, run_id: str) -> str:
        return f"{self.prefix}/claims/{run_id}"

    def slots(self, project: str, job: str) -> str:
        return f"{self.prefix}/slots/{project}/{job}/"

    def slot(self, project: str, job: str, index: int) -> str:
        """One of a job's ``max_parallel`` execution slots, bound to the lease of the holder."""
        return f"{self.prefix}/slots/{project}/{job}/{index:04d}"

    def controls(self) -> str:
        return f"{self.prefix}/control/"

    def control(self, run_id: str) -> str:
        return f"{self.prefix}/control/{run_id}"

    # identity and access (issue 6)
    def users(self) -> str:
        return f"{self.prefix}/users/"

    def user(self, name: str) -> str:
        return f"{self.prefix}/users/{name}"

    def tokens(self) -> str:
        return f"{self.prefix}/tokens/"

    def token(self, token_id: str) -> str:
        """A token's record (user, kind, expiry, SHA-256 digest); the id is the digest's head."""
        return f"{self.prefix}/tokens/{token_id}"

    def user_tokens(self, user: str) -> str:
        """A user's tokens, indexed (D514): what a creation counts, without every user's."""
        return f"{self.prefix}/user-tokens/{user}/"

    def user_token(self, user: str, token_id: str) -> str:
        """A token's record without its digest, written and deleted with ``token``."""
        return f"{self.prefix}/user-tokens/{user}/{token_id}"

    def user_tokens_indexed(self) -> str:
        """Written once the tokens from before the index have their entries (D514)."""
        return f"{self.prefix}/identity/user-tokens-indexed"

    def audits(self) -> str:
        return f"{self.prefix}/audit/"

    def audit(self, entry_id: str) -> str:
        """One audit entry; snowflake ids, so the prefix reads oldest first."""
        return f"{self.prefix}/audit/{entry_id}"

    def audits_own(self) -> str:
        """Logins and changes of users to their own tokens and password: their own budget
        (D202)."""
        return f"{self.prefix}/audit-own/"

    def audits_denied(self) -> str:
        """Refused requests and failed password checks: their own budget (D168)."""
        return f"{self.prefix}/audit-denied/"

    def audit_denied(self, entry_id: str) -> str:
        return f"{self.prefix}/audit-denied/{entry_id}"

    def audit_export_cursor(self) -> str:
        """The id of the newest audit entry exported to the log store."""
        return f"{self.prefix}/audit-export/cursor"

    def bootstrapped(self) -> str:
        """Written once, with the first admin, by the node that wins the bootstrap."""
        return f"{self.prefix}/identity/bootstrapped"

    def peer_secret(self) -> str:
        """The cluster's shared HMAC secret for node-to-node calls, when none is configured."""
        return f"{self.prefix}/identity/peer-secret"

    # workflows (docs/workflows.md)
    def workflows(self, project: str | None = None) -> str:
        return f"{self.prefix}/workflows/" + (f"{project}/" if project else "")

    def workflow(self, project: str, workflow: str) -> str:
        return f"{self.prefix}/workflows/{project}/{workflow}"

    def executions(self, project: str | None = None) -> str:
        return f"{self.prefix}/executions/" + (f"{project}/" if project else "")

    def execution(self, project: str, exec_id: str) -> str:
        """A DAG execution: snapshot of the workflow plus per-task state (CAS target)."""
        return f"{self.prefix}/executions/{project}/{exec_id}"

    def workflow_executions(self, project: str | None = None, workflow: str = "") -> str:
        if project is None:
            return f"{self.prefix}/workflow-executions/"
        return f"{self.prefix}/workflow-executions/{project}/{workflow}/"

    def workflow_execution(self, project: str, workflow: str, exec_id: str) -> str:
        """Index of a workflow's executions, for per-workflow listing and pruning."""
        return f"{self.prefix}/workflow-executions/{project}/{workflow}/{exec_id}"

    def workflow_schedule_state(self, project: str, workflow: str) -> str:
        return f"{self.prefix}/workflow-schedule-state/{project}/{workflow}"

    def workflow_ticks(self, project: str, workflow: str) -> str:
        return f"{self.prefix}/workflow-ticks/{project}/{workflow}/"

    def workflow_tick(self, project: str, workflow: str, schedule: str, epoch_ms: int) -> str:
        """Idempotency key of one workflow tick: written once, with the execution it created."""
        return f"{self.prefix}/workflow-ticks/{project}/{workflow}/{epoch_ms:015d}-{schedule}"

    # secrets (docs/security.md, "Secrets")
    def secrets(self, project: str | None = None) -> str:
        return f"{self.prefix}/secrets/" + (f"{project}/" if project else "")

    def secret(self, project: str, name: str) -> str:
        """One sealed secret value (AES-GCM; never the plaintext) and its metadata."""
        return f"{self.prefix}/secrets/{project}/{name}"

    # incoming hooks (issue 24 item 2, D268-D273)
    def hooks(self, project: str | None = None) -> str:
        return f"{self.prefix}/hooks/" + (f"{project}/" if project else "")

    def hook(self, project: str, name: str) -> str:
        """A named hook: its target, mapping, limits and sealed secret."""
        return f"{self.prefix}/hooks/{project}/{name}"

    def hook_deliveries(self, project: str, hook: str | None = None) -> str:
        return f"{self.prefix}/hook-deliveries/{project}/" + (f"{hook}/" if hook else "")

    def hook_delivery(self, project: str, hook: str, digest: str) -> str:
        """The run an ``Idempotency-Key`` started (on a lease: forgotten after a day)."""
        return f"{self.prefix}/hook-deliveries/{project}/{hook}/{digest}"

    # notifications
    def notification_defaults(self, project: str) -> str:
        """A project's default notification rules (for jobs that set none)."""
        return f"{self.prefix}/notify-defaults/{project}"

    def project_data(self, project: str) -> list[str]:
        """Prefixes of what a project keeps besides its record, jobs and workflows: removed with
        the project, so a new project of the same name starts empty (D201)."""
        p = self.prefix
        return [
            f"{p}/doc-sizes/{project}/",
            f"{p}/history-sizes/{project}/",
            f"{p}/history-charges/{project}/",
            f"{p}/history-used/{project}/",
            f"{p}/secrets/{project}/",
            f"{p}/hooks/{project}/",
            f"{p}/hook-deliveries/{project}/",
            f"{p}/runs/{project}/",
            f"{p}/job-runs/{project}/",
            f"{p}/schedule-state/{project}/",
            f"{p}/ticks/{project}/",
            f"{p}/open-slots/{project}/",
            f"{p}/waiting/{project}/",
            f"{p}/slot-alarms/{project}/",
            f"{p}/slots/{project}/",
            f"{p}/executions/{project}/",
            f"{p}/workflow-executions/{project}/",
            f"{p}/workflow-schedule-state/{project}/",
            f"{p}/workflow-ticks/{project}/",
            f"{p}/calendars/{project}/",
            f"{p}/blackouts/{project}/",
        ]

    def notifier_cursor(self) -> str:
        """The etcd revision up to which the leader has handled finished runs' notifications."""
        return f"{self.prefix}/notifier/cursor"

    # cluster settings and per-project limits (D170, D173)
    def webhook_settings(self) -> str:
        """Where webhooks may go besides public addresses: the SSRF allow-list (cluster admin)."""
        return f"{self.prefix}/settings/webhooks"

    def run_limits(self) -> str:
        """Cluster defaults for the caps on manual runs (rate, pending runs)."""
        return f"{self.prefix}/settings/run-limits"

    def run_admissions(self, project: str) -> str:
        """Manual runs admitted under the project's cap and not yet written (D512)."""
        return f"{self.prefix}/run-admissions/{project}"

    def project_run_limits(self, project: str) -> str:
        """A project's overrides of the run limits (set by a cluster admin)."""
        return f"{self.prefix}/run-limits/{project}"

    # calendars, blackout windows, freeze (issue 21; scope: a project, or "*" for the cluster)
    def calendars(self, scope: str | None = None) -> str:
        return f"{self.prefix}/calendars/" + (f"{scope}/" if scope else "")

    def calendar(self, scope: str, name: str) -> str:
        """A named calendar of a project or (scope ``*``) of the cluster (D236)."""
        return f"{self.prefix}/calendars/{scope}/{name}"

    def blackouts(self, scope: str | None = None) -> str:
        return f"{self.prefix}/blackouts/" + (f"{scope}/" if scope else "")

    def blackout(self, scope: str, name: str) -> str:
        """A blackout window of a project or (scope ``*``) of the cluster (D237)."""
        return f"{self.prefix}/blackouts/{scope}/{name}"

    def scheduler_shards(self) -> str:
        """``{"shards": K}``: how many shards the scheduling loop is split into (D300)."""
        return f"{self.prefix}/settings/scheduler-shards"

    def shard_elections(self) -> list[str]:
        """Prefixes of every shard election (shard 0: ``scheduler``, shard i: ``scheduler-i``)."""
        return [self.election(ELECTION_SCHEDULER), f"{self.prefix}/election/{ELECTION_SCHEDULER}-"]

    def freeze(self) -> str:
        """Present while the cluster is frozen: its note, who and when (D239)."""
        return f"{self.prefix}/settings/freeze"

    def rules_marker(self) -> str:
        """Written in the transaction of every change to a calendar, a blackout window or the
        freeze; tick transactions compare its revision with the leader's snapshot (D339)."""
        return f"{self.prefix}/settings/rules-changed"

    # parsing helpers
    def tail(self, key: str, base: str) -> list[str]:
        """The path segments of ``key`` below ``base``."""
        if not key.startswith(base):
            raise ValueError(f"{key!r} is not under {base!r}")
        return key[len(base) :].split("/")
