#!/usr/bin/env python3
"""Run with `bash deploy/k8s/validate.sh` (which renders the overlays and sets up the tools).

Checks the rendered manifests of every overlay, offline:
1. every Kubernetes object against the Kubernetes JSON schemas bundled in the PyPI package
   `kubernetes-validate`, strict (unknown fields are errors), for each version in K8S_VERSIONS;
2. every KEDA object with `validate_keda.mjs` (the npm package `@kubernetes-models/keda`, schemas
   generated from KEDA's Go API types: types, required fields, enums, but not unknown fields), and
   here: the fields KEDA's ScaledObject and TriggerAuthentication have, the documented parameters
   of the `rabbitmq` and `cron` triggers, and the HPA `behavior` block against the strict
   Kubernetes schema of autoscaling/v2;
3. what a schema cannot see: references between objects, the configuration file against the keys
   CONFIG.md documents, the autoscaling numbers against deploy/sim/results.json, and a few rules
   of the design (grace periods, probes, security context).

Usage: validate.py RENDERED_DIR NPM_PREFIX
  RENDERED_DIR: one OVERLAY.yaml per overlay (validate.sh renders them with kustomize);
  NPM_PREFIX: where `npm install @kubernetes-models/keda` put its node_modules.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
import zoneinfo
from pathlib import Path

import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
# The oldest version the manifests need (lifecycle.preStop.sleep is on by default from 1.30) and
# the newest the schema package bundles.
K8S_VERSIONS = ("1.30.0", "1.37.0")
KEDA_KINDS = {"ScaledObject", "TriggerAuthentication"}
# The overlay -> the simulated kind whose chosen numbers it must carry (deploy/sim/results.json).
OVERLAY_KIND = {"cpu": "cpu-mini", "gpu": "gpu-h100", "cpu-hpa": "cpu-mini", "gpu-hpa": "gpu-h100"}
# Keys the configuration may use beyond CONFIG.md's tables (none today; for a key not yet documented).
EXTRA_CONFIG_KEYS: set[str] = set()

# KEDA v2 (keda.sh/v1alpha1) fields, from its documentation (concepts/scaling-deployments,
# concepts/authentication) and the Go API types the npm package is generated from.
SCALEDOBJECT_SPEC = {"scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod",
                     "idleReplicaCount", "minReplicaCount", "maxReplicaCount", "fallback", "advanced", "triggers"}
SCALE_TARGET = {"apiVersion", "kind", "name", "envSourceContainerName"}
ADVANCED = {"restoreToOriginalReplicaCount", "horizontalPodAutoscalerConfig", "scalingModifiers"}
HPA_CONFIG = {"name", "behavior"}
TRIGGER = {"type", "name", "metadata", "authenticationRef", "metricType", "useCachedMetrics"}
AUTH_REF = {"name", "kind"}
TRIGGER_AUTH_SPEC = {"podIdentity", "secretTargetRef", "env", "hashiCorpVault", "azureKeyVault",
                     "awsSecretManager", "gcpSecretManager", "configMapTargetRef", "boundServiceAccountToken"}
SECRET_TARGET_REF = {"parameter", "name", "key"}
# The rabbitmq trigger's parameters (keda.sh/docs/2.16/scalers/rabbitmq-queue).
RABBITMQ_METADATA = {"host", "protocol", "mode", "value", "activationValue", "queueName", "vhostName",
                     "hostFromEnv", "usernameFromEnv", "passwordFromEnv", "unsafeSsl", "useRegex", "pageSize",
                     "operation", "timeout", "excludeUnacknowledged", "queueLength"}
CRON_METADATA = {"timezone", "start", "end", "desiredReplicas"}
# Queue names of the fleet (CONFIG.md, queue_prefix) and which trigger must count them.
QUEUES = {
    "rapid.jobs": "interactive",
    "rapid.jobs.interactive.acme": "interactive",
    "rapid.jobs.interactive.globex-eu": "interactive",
    "rapid.jobs.batch.acme": "batch",
    "rapid.jobs.batch.globex-eu": "batch",
    "rapid.jobs.dead": None,
    "rapid.jobs.retry.2000": None,
    "rapid.callbacks": None,
    "rapid.callbacks.dead": None,
}


class Report:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.lines: list[str] = []

    def ok(self, what: str) -> None:
        self.lines.append(f"ok    {what}")

    def fail(self, what: str) -> None:
        self.errors.append(what)
        self.lines.append(f"FAIL  {what}")


def load(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def kn(o: dict) -> str:
    return f"{o['kind']}/{o['metadata']['name']}"


# --- 1. Kubernetes schemas ------------------------------------------------------------------------


def check_schemas(overlay: str, objs: list[dict], rep: Report) -> None:
    for o in objs:
        if o["kind"] in KEDA_KINDS:
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(o, version, strict=True)
                rep.ok(f"{overlay}: {kn(o)} ({o['apiVersion']}) against Kubernetes {version} strict schema")
            except kubernetes_validate.ValidationError as e:
                rep.fail(f"{overlay}: {kn(o)} against Kubernetes {version}: {e.message} at "
                         f"{'/'.join(str(p) for p in e.path)}")
            except kubernetes_validate.SchemaNotFoundError:
                rep.fail(f"{overlay}: {kn(o)}: no Kubernetes {version} schema for {o['apiVersion']}")


# --- 2. KEDA ----------------------------------------------------------------------------------------


def keys_within(rep: Report, where: str, obj: dict | None, allowed: set[str]) -> None:
    if obj is None:
        return
    extra = set(obj) - allowed
    if extra:
        rep.fail(f"{where}: unknown field(s) {sorted(extra)}")


def check_keda(overlay: str, objs: list[dict], rep: Report, node_results: dict) -> None:
    for o in objs:
        if o["kind"] not in KEDA_KINDS:
            continue
        where = f"{overlay}: {kn(o)}"
        verdict = node_results.get(f"{overlay}/{kn(o)}")
        if verdict == "valid":
            rep.ok(f"{where} against @kubernetes-models/keda (KEDA Go API types)")
        else:
            rep.fail(f"{where} against @kubernetes-models/keda: {verdict}")
        before = len(rep.errors)
        if o["apiVersion"] != "keda.sh/v1alpha1":
            rep.fail(f"{where}: apiVersion {o['apiVersion']}")
        keys_within(rep, where, o, {"apiVersion", "kind", "metadata", "spec"})
        spec = o["spec"]
        if o["kind"] == "TriggerAuthentication":
            keys_within(rep, f"{where} spec", spec, TRIGGER_AUTH_SPEC)
            for ref in spec.get("secretTargetRef", []):
                keys_within(rep, f"{where} secretTargetRef", ref, SECRET_TARGET_REF)
        else:
            keys_within(rep, f"{where} spec", spec, SCALEDOBJECT_SPEC)
            keys_within(rep, f"{where} scaleTargetRef", spec["scaleTargetRef"], SCALE_TARGET)
            adv = spec.get("advanced", {})
            keys_within(rep, f"{where} advanced", adv, ADVANCED)
            hpa = adv.get("horizontalPodAutoscalerConfig", {})
            keys_within(rep, f"{where} horizontalPodAutoscalerConfig", hpa, HPA_CONFIG)
            if "behavior" in hpa:
                probe = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                         "metadata": {"name": "probe"},
                         "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "x"}, "maxReplicas": 1,
                                  "behavior": hpa["behavior"]}}
                for version in K8S_VERSIONS:
                    try:
                        kubernetes_validate.validate(probe, version, strict=True)
                    except kubernetes_validate.ValidationError as e:
                        rep.fail(f"{where}: behavior against autoscaling/v2 {version}: {e.message}")
            lo, hi = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
            if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi):
                rep.fail(f"{where}: minReplicaCount {lo!r} and maxReplicaCount {hi!r}")
            for t in spec["triggers"]:
                keys_within(rep, f"{where} trigger {t['type']}", t, TRIGGER)
                keys_within(rep, f"{where} authenticationRef", t.get("authenticationRef"), AUTH_REF)
                md = t["metadata"]
                if any(not isinstance(v, str) for v in md.values()):
                    rep.fail(f"{where} trigger {t['type']}: metadata values must be strings")
                if t["type"] == "rabbitmq":
                    check_rabbitmq(where, md, rep)
                elif t["type"] == "cron":
                    check_cron(where, md, rep)
                else:
                    rep.fail(f"{where}: trigger type {t['type']} not expected here")
        if len(rep.errors) == before:
            rep.ok(f"{where}: fields within KEDA's documented set; triggers' parameters; behavior against "
                   f"autoscaling/v2 strict ({', '.join(K8S_VERSIONS)})")


def check_rabbitmq(where: str, md: dict, rep: Report) -> None:
    keys_within(rep, f"{where} rabbitmq metadata", md, RABBITMQ_METADATA)
    if md.get("mode") != "QueueLength":
        rep.fail(f"{where}: mode must be QueueLength")
    if md.get("useRegex") == "true" and md.get("protocol") != "http":
        rep.fail(f"{where}: useRegex needs protocol http")
    if md.get("operation", "sum") not in {"sum", "max", "avg"}:
        rep.fail(f"{where}: operation {md.get('operation')}")
    if not re.fullmatch(r"\d+", md.get("value", "")):
        rep.fail(f"{where}: QueueLength value must be a whole number, got {md.get('value')!r}")
    if md.get("excludeUnacknowledged") not in {"true", "false", None}:
        rep.fail(f"{where}: excludeUnacknowledged must be \"true\" or \"false\"")
    try:
        rx = re.compile(md["queueName"])
    except re.error as e:
        rep.fail(f"{where}: queueName is not a regex: {e}")
        return
    # The RabbitMQ management API matches names with this regex (Erlang re, PCRE): the pattern
    # uses nothing Python's re reads differently.
    pool = "interactive" if "interactive" in where else "batch"
    for name, owner in QUEUES.items():
        if bool(rx.search(name)) != (owner == pool):
            rep.fail(f"{where}: queueName {md['queueName']!r} {'matches' if rx.search(name) else 'misses'} {name}")


def check_cron(where: str, md: dict, rep: Report) -> None:
    keys_within(rep, f"{where} cron metadata", md, CRON_METADATA)
    try:
        zoneinfo.ZoneInfo(md["timezone"])
    except Exception:
        rep.fail(f"{where}: cron timezone {md.get('timezone')!r} is not an IANA zone")
    for k in ("start", "end"):
        if len(md.get(k, "").split()) != 5:
            rep.fail(f"{where}: cron {k} must have 5 fields")
    if not md.get("desiredReplicas", "").isdigit():
        rep.fail(f"{where}: cron desiredReplicas must be a whole number")


# --- 3. Lint: what no schema sees ------------------------------------------------------------------


def config_keys_from_doc() -> list[str]:
    """Dotted key patterns documented in CONFIG.md's tables (`<name>` matches any one part)."""
    section, out = None, []
    for line in (ROOT / "CONFIG.md").read_text().splitlines():
        m = re.match(r"## `\[\[?([a-z0-9_]+)\]\]?`", line)
        if m:
            section = m.group(1)
            continue
        if section and line.startswith("| `"):
            cell = line.split("|")[1]
            prev = None
            for key in re.findall(r"`([^`]+)`", cell):
                if key.startswith(".") and prev:
                    key = prev.rsplit(".", 1)[0] + key
                out.append(f"{section}.{key}")
                prev = key
    return out


def flatten(value, prefix: str = "") -> list[str]:
    if isinstance(value, dict):
        keys = []
        for k, v in value.items():
            keys += flatten(v, f"{prefix}.{k}" if prefix else k)
        return keys
    if isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
        keys = []
        for x in value:
            keys += flatten(x, prefix)
        return keys
    return [prefix]


def key_allowed(key: str, patterns: list[str]) -> bool:
    for p in patterns:
        rx = "^" + re.escape(p).replace(re.escape("<name>"), "[^.]+").replace(re.escape("<part>"), "[^.]+") + "$"
        if re.match(rx, key):
            return True
    return key in EXTRA_CONFIG_KEYS


def check_lint(overlay: str, objs: list[dict], rep: Report, chosen: dict) -> None:
    by_kind: dict[str, dict[str, dict]] = {}
    for o in objs:
        by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
    before = len(rep.errors)
    namespaces = {o["metadata"].get("namespace") for o in objs if o["kind"] != "Namespace"}
    if len(namespaces) != 1 or None in namespaces:
        rep.fail(f"{overlay}: objects in namespaces {namespaces}")
    deployments = by_kind.get("Deployment", {})
    configmaps = by_kind.get("ConfigMap", {})
    secrets = by_kind.get("Secret", {})
    # References.
    for d in deployments.values():
        pod = d["spec"]["template"]
        if not all(pod["metadata"]["labels"].get(k) == v for k, v in d["spec"]["selector"]["matchLabels"].items()):
            rep.fail(f"{overlay}: {kn(d)} selector does not match its pod labels")
        for v in pod["spec"].get("volumes", []):
            if "configMap" in v and v["configMap"]["name"] not in configmaps:
                rep.fail(f"{overlay}: {kn(d)} mounts a missing ConfigMap {v['configMap']['name']}")
            if "persistentVolumeClaim" in v and v["persistentVolumeClaim"]["claimName"] not in by_kind.get(
                    "PersistentVolumeClaim", {}):
                rep.fail(f"{overlay}: {kn(d)} mounts a missing PVC")
        for c in pod["spec"]["containers"]:
            for ef in c.get("envFrom", []):
                if ef["secretRef"]["name"] not in secrets:
                    rep.fail(f"{overlay}: {kn(d)} reads a missing Secret")
            names = {p["name"] for p in c.get("ports", [])}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                pr = c.get(probe, {}).get("httpGet")
                if pr and pr["port"] not in names:
                    rep.fail(f"{overlay}: {kn(d)} {probe} names port {pr['port']}")
            sc = c.get("securityContext", {})
            if not (sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False):
                rep.fail(f"{overlay}: {kn(d)} container {c['name']} security context")
        psc = pod["spec"].get("securityContext", {})
        if not (psc.get("runAsNonRoot") and psc.get("runAsUser") == 10001):
            rep.fail(f"{overlay}: {kn(d)} must run as non-root uid 10001")
    for pdb in by_kind.get("PodDisruptionBudget", {}).values():
        sel = pdb["spec"]["selector"]["matchLabels"]
        hits = [d for d in deployments.values()
                if all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())]
        if len(hits) != 1:
            rep.fail(f"{overlay}: {kn(pdb)} selects {len(hits)} Deployments, not one")
    for svc in by_kind.get("Service", {}).values():
        sel = svc["spec"]["selector"]
        if not any(all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())
                   for d in deployments.values()):
            rep.fail(f"{overlay}: {kn(svc)} selects no pods")
    # Autoscaling: each worker Deployment has exactly one autoscaler, and leaves replicas to it.
    scalers = [(so["spec"]["scaleTargetRef"]["name"], kn(so)) for so in by_kind.get("ScaledObject", {}).values()]
    scalers += [(h["spec"]["scaleTargetRef"]["name"], kn(h)) for h in by_kind.get("HorizontalPodAutoscaler", {}).values()]
    for d in deployments.values():
        mine = [s for t, s in scalers if t == d["metadata"]["name"]]
        if d["metadata"]["name"].startswith("rapid-worker"):
            if len(mine) != 1:
                rep.fail(f"{overlay}: {kn(d)} has {len(mine)} autoscalers")
            if "replicas" in d["spec"]:
                rep.fail(f"{overlay}: {kn(d)} sets replicas, which its autoscaler owns")
    for t, s in scalers:
        if t not in deployments:
            rep.fail(f"{overlay}: {s} targets a missing Deployment {t}")
    for ta in by_kind.get("TriggerAuthentication", {}).values():
        for ref in ta["spec"].get("secretTargetRef", []):
            if ref["key"] not in secrets.get(ref["name"], {}).get("stringData", {}):
                rep.fail(f"{overlay}: {kn(ta)} reads a missing Secret key {ref['name']}/{ref['key']}")
    for so in by_kind.get("ScaledObject", {}).values():
        for t in so["spec"]["triggers"]:
            ref = t.get("authenticationRef", {}).get("name")
            if ref and ref not in by_kind.get("TriggerAuthentication", {}):
                rep.fail(f"{overlay}: {kn(so)} names a missing TriggerAuthentication {ref}")
    # The configuration file: TOML, keys documented, grace periods consistent.
    config = None
    for cm in configmaps.values():
        if "config.toml" in cm.get("data", {}):
            config = tomllib.loads(cm["data"]["config.toml"])
            patterns = config_keys_from_doc()
            for key in flatten(config):
                if not key_allowed(key, patterns):
                    rep.fail(f"{overlay}: config.toml key {key} is not in CONFIG.md")
    if config is None:
        rep.fail(f"{overlay}: no ConfigMap with config.toml")
        return
    grace = config["worker"].get("shutdown_grace_secs", 30)
    for d in deployments.values():
        if d["metadata"]["name"].startswith("rapid-worker"):
            tgp = d["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
            if tgp <= grace + 15:
                rep.fail(f"{overlay}: {kn(d)} terminationGracePeriodSeconds {tgp} leaves no time after the "
                         f"{grace}-s shutdown grace")
            limit = d["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"]
            if str(config["worker"].get("threads")) != str(limit):
                rep.fail(f"{overlay}: worker.threads {config['worker'].get('threads')} != CPU limit {limit}")
    if config["worker"].get("listen") != "0.0.0.0:9100":
        rep.fail(f"{overlay}: worker.listen must be 0.0.0.0:9100 for the probes")
    # The numbers: the simulation's chosen setting for this overlay's kind.
    check_numbers(overlay, by_kind, config, chosen, rep)
    if len(rep.errors) == before:
        rep.ok(f"{overlay}: references, config.toml keys (CONFIG.md), grace periods, probes, security context, "
               "and the autoscaling numbers against deploy/sim/results.json")


def check_numbers(overlay: str, by_kind: dict, config: dict, results: dict, rep: Report) -> None:
    kind = OVERLAY_KIND[overlay]
    res = results["results"][kind]
    hpa = overlay.endswith("-hpa")
    if hpa:
        chosen_name = res["hpa_chosen"]
        settings = next(r["settings"] for r in res["hpa_alternative"] if r["candidate"] == chosen_name)
    else:
        settings = res["chosen"]["settings"]

    def same(what: str, got, want) -> None:
        if got != want:
            rep.fail(f"{overlay}: {what} is {got!r}, deploy/sim/results.json chose {want!r}")

    same("scheduler.dispatch_ready_jobs", config["scheduler"].get("dispatch_ready_jobs"), settings["dispatch_ready_jobs"])
    for pool in ("interactive", "batch"):
        s = settings[pool]
        name = f"rapid-worker-{pool}"
        if hpa:
            h = by_kind["HorizontalPodAutoscaler"][name]["spec"]
            same(f"{name} minReplicas", h["minReplicas"], s["min_replicas"])
            same(f"{name} maxReplicas", h["maxReplicas"], s["max_replicas"])
            same(f"{name} averageValue", float(h["metrics"][0]["external"]["target"]["averageValue"]), s["value"])
            same(f"{name} scale-down window", h["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
                 s["down_window_s"])
            continue
        so = by_kind["ScaledObject"][name]["spec"]
        same(f"{name} minReplicaCount", so["minReplicaCount"], s["min_replicas"])
        same(f"{name} maxReplicaCount", so["maxReplicaCount"], s["max_replicas"])
        same(f"{name} pollingInterval", so["pollingInterval"], s["polling_s"])
        if s["min_replicas"] == 0:
            same(f"{name} cooldownPeriod", so["cooldownPeriod"], s["cooldown_s"])
        beh = so["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        same(f"{name} scale-down window", beh["scaleDown"]["stabilizationWindowSeconds"], s["down_window_s"])
        rabbit = [t for t in so["triggers"] if t["type"] == "rabbitmq"]
        same(f"{name} rabbitmq triggers", len(rabbit), 1)
        md = rabbit[0]["metadata"]
        same(f"{name} value", float(md["value"]), s["value"])
        excl = md.get("excludeUnacknowledged") == "true"
        same(f"{name} excludeUnacknowledged", excl, s["trigger"] != "jobs+interactive lanes, ready+unacked")
        cron = [t for t in so["triggers"] if t["type"] == "cron"]
        same(f"{name} cron desiredReplicas", int(cron[0]["metadata"]["desiredReplicas"]) if cron else 0,
             s["cron_replicas"])


def main() -> None:
    rendered, npm_prefix = Path(sys.argv[1]), sys.argv[2]
    results = json.loads((ROOT / "deploy/sim/results.json").read_text())
    overlays = {p.stem: load(p) for p in sorted(rendered.glob("*.yaml"))}
    keda = [dict(o, _overlay=name) for name, objs in overlays.items() for o in objs if o["kind"] in KEDA_KINDS]
    node = subprocess.run(["node", str(HERE / "validate_keda.mjs"), npm_prefix], input=json.dumps(keda), text=True,
                          capture_output=True)
    if node.returncode != 0:
        sys.exit(f"validate_keda.mjs failed: {node.stderr}")
    node_results = json.loads(node.stdout)
    rep = Report()
    for name, objs in overlays.items():
        check_schemas(name, objs, rep)
        check_keda(name, objs, rep, node_results)
        # The fleet's own lint (config, probes, autoscaling numbers) is for the fleet's overlays;
        # the Redis kustomization is checked against the schemas only.
        if name in OVERLAY_KIND:
            check_lint(name, objs, rep, results)
    print("\n".join(rep.lines))
    counted = sum(len(objs) for objs in overlays.values())
    print(f"\n{len(overlays)} kustomizations, {counted} objects: {len(rep.lines) - len(rep.errors)} passed, "
          f"{len(rep.errors)} failed")
    sys.exit(1 if rep.errors else 0)


if __name__ == "__main__":
    main()
