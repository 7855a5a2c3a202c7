"""The chart rendered by the real Helm library, offline, and validated against the Kubernetes
schemas with kubernetes-validate.

helm-sdkpy has no ``template`` action, only ``install`` against a cluster. So the test gives it a
cluster: a minimal fake Kubernetes API (discovery, release Secrets, object creation) on
127.0.0.1. Helm renders the chart, maps the kinds through discovery and POSTs every object; the
fake records them, and they are validated (strict: unknown fields are errors) and checked for the
properties the chart promises (probes, grace period, stable ids, selectors, Secrets).
"""

from __future__ import annotations

import base64
import json
import tempfile
from pathlib import Path
from typing import Any

import helm_sdkpy as helm  # installed by .ci/bootstrap (see there why not by pip -e)
import kubernetes_validate
import pytest
from aiohttp import web

from cluster.secretbox import KeyRing
from nodes.embedded import free_port
from tests.conftest import ROOT
from tests.unit.test_helm_chart import ETCD_ENABLED

CHART = ROOT / "helm" / "cronmesh"
K8S_VERSION = "1.31.0"
NAMESPACE = "jobs"
RESOURCES: dict[tuple[str, str], list[tuple[str, str]]] = {
    ("", "v1"): [
        ("services", "Service"),
        ("secrets", "Secret"),
        ("serviceaccounts", "ServiceAccount"),
        ("configmaps", "ConfigMap"),
    ],
    ("apps", "v1"): [("statefulsets", "StatefulSet"), ("deployments", "Deployment")],
    ("policy", "v1"): [("poddisruptionbudgets", "PodDisruptionBudget")],
    ("networking.k8s.io", "v1"): [("networkpolicies", "NetworkPolicy")],
    ("monitoring.coreos.com", "v1"): [("servicemonitors", "ServiceMonitor")],
}
PLURALS = {name for items in RESOURCES.values() for name, _ in items}


class FakeKubernetes:
    """Just enough of the Kubernetes API for `helm install` to create a release."""

    def __init__(self) -> None:
        self.port = free_port()
        self.objects: dict[str, dict[str, Any]] = {}
        self.created: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None

    @staticmethod
    def _not_found() -> web.Response:
        status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound"}
        return web.json_response({**status, "code": 404, "message": "not found"}, status=404)

    @staticmethod
    def _resource_list(group: str, version: str) -> dict[str, Any]:
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": [
                {
                    "name": name,
                    "singularName": kind.lower(),
                    "namespaced": True,
                    "kind": kind,
                    "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                }
                for name, kind in RESOURCES[(group, version)]
            ],
        }

    async def _handle(self, request: web.Request) -> web.Response:
        path, body = request.path, await request.read()
        parts = path.strip("/").split("/")
        protobuf = "protobuf" in request.headers.get("Content-Type", "")
        if path == "/version":
            return web.json_response({"major": "1", "minor": "31", "gitVersion": "v1.31.0"})
        if path == "/api":
            return web.json_response({"kind": "APIVersions", "versions": ["v1"]})
        if path == "/apis":
            groups = [
                {
                    "name": g,
                    "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                    "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v},
                }
                for g, v in RESOURCES
                if g
            ]
            return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        if path == "/api/v1":
            return web.json_response(self._resource_list("", "v1"))
        if parts[0] == "apis" and len(parts) == 3:
            return web.json_response(self._resource_list(parts[1], parts[2]))
        if request.method == "GET":
            if path in self.objects:
                return web.json_response(self.objects[path])
            if parts[-1] in PLURALS:  # a list (Helm looks for existing releases)
                items = [o for k, o in self.objects.items() if k.rsplit("/", 1)[0] == path]
                meta = {"resourceVersion": "1"}
                return web.json_response({"kind": "List", "metadata": meta, "items": items})
            return self._not_found()
        if request.method == "POST":
            if protobuf:  # Helm's own release record: kept opaque
                obj = {"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "release"}}
            else:
                obj = json.loads(body)
                self.created.append(json.loads(body))
            obj.setdefault("metadata", {})["resourceVersion"] = "1"
            self.objects[f"{path}/{obj['metadata']['name']}"] = obj
            return web.json_response(obj, status=201)
        if request.method in ("PUT", "PATCH"):
            obj = self.objects.get(path) or {"kind": "Secret", "metadata": {"name": parts[-1]}}
            return web.json_response(obj)
        return self._not_found()

    async def __aenter__(self) -> FakeKubernetes:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def kubeconfig(self, folder: Path) -> str:
        path = folder / "kubeconfig"
        path.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters: [{{name: fake, cluster: {{server: 'http://127.0.0.1:{self.port}'}}}}]\n"
            "users: [{name: u, user: {token: t}}]\n"
            f"contexts: [{{name: fake, context: {{cluster: fake, user: u, namespace: {NAMESPACE}}}}}]\n"
            "current-context: fake\n"
        )
        return str(path)


async def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    async with FakeKubernetes() as kube:
        with tempfile.TemporaryDirectory() as tmp:
            config = helm.Configuration(namespace=NAMESPACE, kubeconfig=kube.kubeconfig(Path(tmp)))
            await helm.Install(config).run("rel", str(CHART), values=values, wait=False, timeout=60)
        return kube.created


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def validate_all(objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        if obj["kind"] == "ServiceMonitor":  # a CRD: no schema in kubernetes-validate
            continue
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


async def test_default_values_render_valid_manifests():
    objects = await render({})
    validate_all(objects)
    assert sorted(o["kind"] for o in objects) == [
        "PodDisruptionBudget",
        "Secret",  # the generated first-admin password (D169)
        "Secret",  # the generated metrics token (D166)
        "Secret",  # the key ring of project secrets (secretsKey.create)
        "Service",
        "Service",
        "ServiceAccount",
        "StatefulSet",
    ]
    sts = by_kind(objects, "StatefulSet")["rel-cronmesh"]
    pod = sts["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert sts["spec"]["replicas"] == 3
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    env = env_of(container)
    assert env["CRONMESH_NODE_ID"] == "$(POD_NAME)"
    assert env["CRONMESH_ADVERTISE"] == "$(POD_NAME).rel-cronmesh-peers.$(POD_NAMESPACE).svc:8080"
    assert env["CRONMESH_ETCD"] == "http://etcd:2379"
    assert pod["spec"]["terminationGracePeriodSeconds"] > float(env["CRONMESH_DRAIN_TIMEOUT"])
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    services = by_kind(objects, "Service")
    assert services["rel-cronmesh-peers"]["spec"]["clusterIP"] == "None"
    assert sts["spec"]["serviceName"] == "rel-cronmesh-peers"
    labels = pod["metadata"]["labels"]
    for svc in services.values():
        assert svc["spec"]["selector"].items() <= labels.items()
    pdb = by_kind(objects, "PodDisruptionBudget")["rel-cronmesh"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert not any(k.startswith(("AWS_", "CRONMESH_PEER_SECRET", "CRONMESH_SMTP")) for k in env)
    assert "CRONMESH_ETCD_USER" not in env and "initContainers" not in pod["spec"]  # external etcd
    # no admin password given: a generated one in a Secret, to be changed at first login
    ref = env["CRONMESH_ADMIN_PASSWORD"]["secretKeyRef"]
    admin = by_kind(objects, "Secret")[ref["name"]]["stringData"][ref["key"]]
    assert len(admin) >= 20 and env["CRONMESH_ADMIN_MUST_CHANGE"] == "true"
    # project secrets: a generated key ring, kept across upgrades, mounted read-only as a file
    ring = by_kind(objects, "Secret")["rel-cronmesh-secrets-key"]
    assert ring["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert KeyRing.parse(base64.b64decode(ring["data"]["keys"]).decode()).current
    assert env["CRONMESH_SECRETS_KEY_FILE"] == "/etc/cronmesh/secrets-key/keys"
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "secrets-key")
    assert volume["secret"]["secretName"] == "rel-cronmesh-secrets-key"
    assert volume["secret"]["defaultMode"] == 0o400
    mount = next(m for m in container["volumeMounts"] if m["name"] == "secrets-key")
    assert mount["readOnly"] is True and mount["mountPath"] == "/etc/cronmesh/secrets-key"


async def test_an_existing_secrets_key_secret_is_mounted_and_none_is_created():
    objects = await render({"secretsKey": {"existingSecret": "my-ring", "secretKey": "ring"}})
    validate_all(objects)
    assert "rel-cronmesh-secrets-key" not in by_kind(objects, "Secret")  # (admin, metrics: D166/9)
    pod = by_kind(objects, "StatefulSet")["rel-cronmesh"]["spec"]["template"]
    env = env_of(pod["spec"]["containers"][0])
    assert env["CRONMESH_SECRETS_KEY_FILE"] == "/etc/cronmesh/secrets-key/ring"
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "secrets-key")
    assert volume["secret"]["secretName"] == "my-ring"


async def test_bundled_etcd_and_every_option_render_valid_manifests():
    objects = await render(ETCD_ENABLED)
    validate_all(objects)
    stses = by_kind(objects, "StatefulSet")
    etcd = stses["rel-cronmesh-etcd"]
    assert etcd["spec"]["replicas"] == 3
    args = etcd["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "--auto-compaction-mode=periodic" in args
    assert "--auto-compaction-retention=1h" in args
    cluster = next(a for a in args if a.startswith("--initial-cluster="))
    assert cluster.count("=https://rel-cronmesh-etcd-") == 3
    assert by_kind(objects, "PodDisruptionBudget")["rel-cronmesh-etcd"]["spec"]["minAvailable"] == 2

    node = stses["rel-cronmesh"]
    env = env_of(node["spec"]["template"]["spec"]["containers"][0])
    assert env["CRONMESH_ETCD"] == ",".join(
        f"https://rel-cronmesh-etcd-{i}.rel-cronmesh-etcd.{NAMESPACE}.svc:2379" for i in range(3)
    )
    assert env["CRONMESH_LOG_STORE"] == "s3://logs/cronmesh"
    assert env["AWS_ENDPOINT_URL_S3"] == "http://minio:9000"
    assert env["CRONMESH_SECURITY_LEVEL"] == "1"
    assert env["CRONMESH_PROPERTIES"] == "gpu=true,zone=a"
    secrets = by_kind(objects, "Secret")
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "CRONMESH_PEER_SECRET",
        "CRONMESH_ADMIN_USER",
        "CRONMESH_ADMIN_PASSWORD",
        "CRONMESH_METRICS_TOKEN",
    ):
        ref = env[name]["secretKeyRef"]
        assert ref["key"] in secrets[ref["name"]]["stringData"], name
    assert node["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    monitor = by_kind(objects, "ServiceMonitor")["rel-cronmesh"]
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    # /metrics needs a token (issue 19 item 17): the monitor sends the nodes' metrics token
    bearer = monitor["spec"]["endpoints"][0]["bearerTokenSecret"]
    assert bearer == env["CRONMESH_METRICS_TOKEN"]["secretKeyRef"]
    assert len(secrets[bearer["name"]]["stringData"]["token"]) >= 20


async def test_helm_refuses_values_the_schema_forbids():
    with pytest.raises(helm.HelmError):
        await render({"replicaCount": 0})


def test_validation_catches_a_bad_manifest():
    """The validator is not a rubber stamp: an unknown field in a Service is an error."""
    bad = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": 80}], "selectr": {}},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def containers_of(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


async def test_bundled_etcd_has_auth_tls_a_network_policy_and_locked_down_containers():
    """#18 item 6, #19 item 11: the bundled etcd demands TLS and a password, only cronmesh pods
    reach it, every pod and container runs under seccomp RuntimeDefault (D157)."""
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    objects = await render({"etcd": {"enabled": True}})
    validate_all(objects)
    stses = by_kind(objects, "StatefulSet")
    etcd_pod = stses["rel-cronmesh-etcd"]["spec"]["template"]
    node_pod = stses["rel-cronmesh"]["spec"]["template"]
    # seccomp everywhere; the etcd container locked down like the node's
    for pod in (etcd_pod, node_pod):
        assert pod["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in containers_of(pod["spec"]):
            sc = c["securityContext"]
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, c["name"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
            assert sc["readOnlyRootFilesystem"] is True
    # etcd: TLS for clients and members, members check each other
    etcd_args = etcd_pod["spec"]["containers"][0]["command"]
    assert "--listen-client-urls=https://0.0.0.0:2379" in etcd_args
    assert "--peer-client-cert-auth" in etcd_args
    assert next(a for a in etcd_args if a.startswith("--initial-cluster=")).count("=https://") == 3
    # the node logs in with its own password file and checks the server against the CA
    node = node_pod["spec"]["containers"][0]
    env = env_of(node)
    assert env["CRONMESH_ETCD"].startswith("https://")
    assert env["CRONMESH_ETCD_USER"] == "cronmesh"
    assert env["CRONMESH_ETCD_PASSWORD_FILE"] == "/etc/cronmesh/etcd-auth/node-password"
    assert env["CRONMESH_ETCD_CA"] == "/etc/cronmesh/etcd-ca/ca.crt"
    volumes = {v["name"]: v for v in node_pod["spec"]["volumes"]}
    mounted = {m["name"] for m in node["volumeMounts"]}
    # the node container never mounts the root password nor the TLS key
    assert "etcd-root" not in mounted
    assert volumes["etcd-auth"]["secret"]["items"] == [
        {"key": "node-password", "path": "node-password"}
    ]
    assert volumes["etcd-ca"]["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    init = node_pod["spec"]["initContainers"][0]
    assert init["args"][0] == "etcd-auth" and "--prefix=/cronmesh" in init["args"]
    assert {m["name"] for m in init["volumeMounts"]} >= {"etcd-root", "etcd-ca"}
    # generated secrets: random passwords; a CA and a certificate naming every member
    secrets = by_kind(objects, "Secret")
    auth = secrets["rel-cronmesh-etcd-auth"]["stringData"]
    assert len(auth["root-password"]) == 32 and auth["root-password"] != auth["node-password"]
    tls = secrets["rel-cronmesh-etcd-tls"]["stringData"]
    cert = x509.load_pem_x509_certificate(tls["tls.crt"].encode())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = names.get_values_for_type(x509.DNSName)
    for i in range(3):
        assert f"rel-cronmesh-etcd-{i}.rel-cronmesh-etcd.{NAMESPACE}.svc" in dns
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(usage)
    # only cronmesh pods (and members) reach the client port, only members the peer port
    policy = by_kind(objects, "NetworkPolicy")["rel-cronmesh-etcd"]
    assert (
        policy["spec"]["podSelector"]["matchLabels"].items()
        <= etcd_pod["metadata"]["labels"].items()
    )
    rules = {r["ports"][0]["port"]: r.get("from") for r in policy["spec"]["ingress"]}
    client_from = [f["podSelector"]["matchLabels"] for f in rules[2379]]
    assert node_pod["metadata"]["labels"].items() >= client_from[0].items()
    assert [f["podSelector"]["matchLabels"] for f in rules[2380]] == [client_from[1]]
    assert rules[2381] is None  # health and metrics only


async def test_bundled_etcd_with_user_supplied_certificates_and_passwords():
    objects = await render(
        {
            "etcd": {
                "enabled": True,
                "tls": {"existingSecret": "my-etcd-tls"},
                "auth": {"existingSecret": "my-etcd-auth"},
            }
        }
    )
    validate_all(objects)
    assert not [s for s in by_kind(objects, "Secret") if "etcd" in s]  # none generated
    pod = by_kind(objects, "StatefulSet")["rel-cronmesh"]["spec"]["template"]["spec"]
    volumes = {
        v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if v["name"].startswith("etcd")
    }
    assert volumes == {
        "etcd-root": "my-etcd-auth",
        "etcd-auth": "my-etcd-auth",
        "etcd-ca": "my-etcd-tls",
    }


@pytest.mark.parametrize(
    "values",
    [
        {"security": {"level": "auth"}},  # documented once, never worked
        {"security": {"level": 0}},  # refused by nodes listening beyond loopback
        {"etcd": {"tls": {"enabled": "yes"}}},
        {"etcd": {"auth": {"user": "bad user"}}},
    ],
)
async def test_helm_refuses_security_values_the_node_cannot_use(values):
    with pytest.raises(helm.HelmError):
        await render(values)


async def test_the_generated_etcd_certificate_serves_a_real_etcd(tmp_path):
    """The chart's CA and certificate (it names 127.0.0.1 too) work for a real etcd and for the
    `cronmesh etcd-auth` init container's etcdctl, which checks the server against the CA."""
    from nodes.embedded import EtcdProcess
    from nodes.etcd_auth import ensure_auth, etcdctl

    objects = await render({"etcd": {"enabled": True}})
    tls = by_kind(objects, "Secret")["rel-cronmesh-etcd-tls"]["stringData"]
    for name, text in tls.items():
        (tmp_path / name).write_text(text)
    metrics = free_port()
    server = EtcdProcess(
        tmp_path / "etcd",
        scheme="https",
        health_url=f"http://127.0.0.1:{metrics}/health",
        extra_args=[
            f"--cert-file={tmp_path / 'tls.crt'}",
            f"--key-file={tmp_path / 'tls.key'}",
            f"--listen-metrics-urls=http://127.0.0.1:{metrics}",
        ],
    ).start()
    try:
        ca = [f"--cacert={tmp_path / 'ca.crt'}"]
        did = ensure_auth(
            server.endpoint, root_password="r00t", user="cronmesh", password="pw", tls=ca
        )
        assert did == "enabled"
        res = etcdctl(
            server.endpoint, "put", "/cronmesh/x", "1", user="cronmesh", password="pw", tls=ca
        )
        assert res.returncode == 0, res.stderr
        assert (
            etcdctl(server.endpoint, "--dial-timeout=1s", "get", "/x").returncode != 0
        )  # no CA: untrusted server
    finally:
        server.stop()
