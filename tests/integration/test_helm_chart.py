"""The Helm chart deploy/helm/sluice. Helm is not packaged for Debian 12, so
tests/support/helm_render.py renders it for the subset of Go templates the
chart keeps to (and refuses any other construct). What is checked: the
rendered objects parse as YAML with the expected kinds and settings, the pod
template is the pod of deploy/kube/sluice.yaml, and that pod template, run
by podman (which reads it with the Kubernetes API types), relays mail."""
import base64
import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, free_port, wait_for

sys.path.insert(0, str(ROOT / "tests" / "support"))
import helm_render  # noqa: E402

CHART = ROOT / "deploy" / "helm" / "sluice"


def objects(*sets, release="sluice"):
    out = {}
    for name, text in helm_render.render(CHART, sets, release).items():
        for d in yaml.safe_load_all(text):
            if d:
                out[(d["kind"], d["metadata"]["name"])] = d
    return out


def test_defaults_render_every_object():
    o = objects()
    assert set(o) == {("ConfigMap", "sluice-config"), ("ConfigMap", "sluice-dashboard"),
                      ("PodDisruptionBudget", "sluice"), ("Secret", "sluice-secrets"),
                      ("Service", "sluice"), ("Service", "sluice-headless"),
                      ("StatefulSet", "sluice")}
    sts = o[("StatefulSet", "sluice")]
    spec = sts["spec"]
    assert spec["replicas"] == 2
    assert spec["serviceName"] == "sluice-headless"
    claim = spec["volumeClaimTemplates"][0]
    assert claim["metadata"]["name"] == "spool"
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert "storageClassName" not in claim["spec"]
    pod = spec["template"]["spec"]
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    c = pod["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["resources"]["limits"]["memory"] == "512Mi"
    grace = o[("ConfigMap", "sluice-config")]["data"]["SLUICE_SERVER_SHUTDOWN_GRACE"]
    assert grace == "30s"
    assert pod["terminationGracePeriodSeconds"] > int(grace[:-1])
    # the selector of every object matches the pod's labels
    labels = spec["template"]["metadata"]["labels"]
    for key in [("Service", "sluice"), ("Service", "sluice-headless")]:
        assert o[key]["spec"]["selector"].items() <= labels.items()
    assert o[("PodDisruptionBudget", "sluice")]["spec"]["selector"]["matchLabels"].items() \
        <= labels.items()
    assert o[("PodDisruptionBudget", "sluice")]["spec"]["maxUnavailable"] == 1
    ports = {p["name"]: p["port"] for p in o[("Service", "sluice")]["spec"]["ports"]}
    assert ports == {"submission": 2525, "smtps": 4650, "metrics": 9025}
    secret = o[("Secret", "sluice-secrets")]["data"]
    assert base64.b64decode(secret["password"]).decode() == "change me"
    dash = o[("ConfigMap", "sluice-dashboard")]
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dash["data"]["sluice-dashboard.json"]) == \
        json.loads((ROOT / "deploy/grafana/sluice-dashboard.json").read_text())


def test_values_change_what_is_rendered():
    o = objects("serviceMonitor.enabled=true", "replicas=3", "secrets.existingSecret=mine",
                "persistence.storageClassName=fast", "grafanaDashboard.enabled=false",
                release="mail")
    assert ("Secret", "mail-secrets") not in o
    assert ("ConfigMap", "mail-dashboard") not in o
    sm = o[("ServiceMonitor", "mail")]
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    sts = o[("StatefulSet", "mail")]
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "fast"
    refs = {e["valueFrom"]["secretKeyRef"]["name"]
            for e in sts["spec"]["template"]["spec"]["initContainers"][0]["env"]}
    assert refs == {"mine"}


def test_unsupported_template_constructs_are_refused(tmp_path):
    bad = tmp_path / "chart"
    shutil.copytree(CHART, bad, symlinks=False)
    (bad / "templates" / "x.yaml").write_text("{{ with .Values.replicas }}x{{ end }}\n")
    with pytest.raises(helm_render.TemplateError):
        helm_render.render(bad)
    (bad / "templates" / "x.yaml").write_text("{{ if .Values.replicas }}x\n")
    with pytest.raises(helm_render.TemplateError):
        helm_render.render(bad)


def plain_pod():
    for d in yaml.safe_load_all((ROOT / "deploy/kube/sluice.yaml").read_text()):
        if d["kind"] == "Pod":
            return d["spec"]


def test_the_pod_template_is_the_plain_manifests_pod():
    """deploy/kube/sluice.yaml, which podman runs in test_container.py, and the
    chart describe the same pod: the same containers, commands, probes,
    mounts and security settings."""
    pod = objects()[("StatefulSet", "sluice")]["spec"]["template"]["spec"]
    plain = plain_pod()
    for a, b in [(pod["initContainers"][0], plain["initContainers"][0]),
                 (pod["containers"][0], plain["containers"][0])]:
        for key in ("name", "command", "args", "securityContext", "volumeMounts"):
            assert a.get(key) == b.get(key), key
        names = lambda c: [e["name"] for e in c.get("env", [])]
        assert names(a) == names(b)
    c, p = pod["containers"][0], plain["containers"][0]
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] == p[probe]["httpGet"]["path"]
    assert pod["securityContext"] == plain["securityContext"]
    assert pod["terminationGracePeriodSeconds"] == plain["terminationGracePeriodSeconds"]
