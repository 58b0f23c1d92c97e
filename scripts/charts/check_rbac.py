#!/usr/bin/env python3
"""RBAC assertions over rendered manifests (no cluster needed).

Usage: check_rbac.py --team NAMESPACE=TEAM_RENDER.yaml[,APP_RENDER.yaml...] ... [--other FILE ...]
                     [--instructions FILE ...]

For each team: the rendered team-namespace chart, then the rendered app charts that team
deploys (so the CI deployer's Role can be checked against what `helm upgrade --install`
of those charts really creates). --other adds rendered files that must hold no RBAC at all.

Asserts:
  * no ClusterRole or ClusterRoleBinding anywhere, and no RBAC objects in the app charts;
  * every Role and RoleBinding sits in its team's namespace, and bindings refer to a Role
    (never a ClusterRole) of that namespace;
  * no wildcard in apiGroups, resources, verbs or resourceNames, and no rights that let a
    subject escalate (RBAC objects, escalate/bind/impersonate, exec/attach, tokens, nodes,
    namespaces);
  * each team's groups and deployer are bound in their own namespace only, never in
    another team's;
  * the deployer may create/update/delete every kind its team's charts render, plus the
    Secrets in which helm keeps its releases;
  * the team's people may run `helm test --logs`: every kind the apps' test hooks create,
    with the verbs helm uses on it;
  * the team's people may do what the apps' NOTES.txt and READMEs tell them to do
    (--instructions: NOTES, READMEs, runbooks): `helm test`, `kubectl port-forward`, `kubectl create job --from`,
    `kubectl logs`; and nothing those files ask for is beyond the team Role (no exec).
The admission policies the team chart renders (cluster-scoped, bound to the namespace) are
checked by check_admission.py.
"""
from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict

import yaml

RBAC_GROUP = "rbac.authorization.k8s.io"
CLUSTER_KINDS = {"ClusterRole", "ClusterRoleBinding"}
RBAC_KINDS = CLUSTER_KINDS | {"Role", "RoleBinding"}
# Rights that would let a namespace-scoped subject widen its own reach.
FORBIDDEN_RESOURCES = {
    (RBAC_GROUP, "roles"), (RBAC_GROUP, "rolebindings"),
    (RBAC_GROUP, "clusterroles"), (RBAC_GROUP, "clusterrolebindings"),
    ("", "pods/exec"), ("", "pods/attach"), ("", "pods/portforward"),
    ("", "serviceaccounts/token"), ("", "nodes"), ("", "nodes/proxy"), ("", "namespaces"),
    ("", "resourcequotas"), ("", "limitranges"),
}
READ_ONLY_OK = {("", "resourcequotas"), ("", "limitranges")}
# The team's people (not the deployer) may port-forward to their own pods: the NOTES use it.
PEOPLE_ONLY = {("", "pods/portforward")}
FORBIDDEN_VERBS = {"escalate", "bind", "impersonate", "*"}
# Cluster-scoped objects the team chart may render: its admission policies.
ADMISSION_KINDS = {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
# helm creates its test pods, watches them to the end, reads them and deletes them
# (hook-delete-policy); it never updates them.
HOOK_VERBS = {"get", "list", "watch", "create", "delete"}
# What a documented command needs of the team Role: (apiGroup, resource) -> verbs.
INSTRUCTIONS = [
    (re.compile(r"\bhelm test\b"), "helm test",
     {("", "pods"): HOOK_VERBS, ("", "secrets"): {"get", "list"}}),
    (re.compile(r"\bhelm test\b.*--logs"), "helm test --logs", {("", "pods/log"): {"get"}}),
    (re.compile(r"\bkubectl\b.*\bport-forward\b"), "kubectl port-forward",
     {("", "pods/portforward"): {"create"}, ("", "pods"): {"get", "list"}, ("", "services"): {"get"}}),
    (re.compile(r"\bkubectl\b.*\bcreate job\b.*--from=cronjob/"), "kubectl create job --from",
     {("batch", "jobs"): {"create"}, ("batch", "cronjobs"): {"get"}}),
    (re.compile(r"\bkubectl\b.*\blogs\b"), "kubectl logs", {("", "pods/log"): {"get"}}),
    (re.compile(r"\bkubectl\b.*\b(exec|attach|debug)\b"), "kubectl exec/attach/debug",
     {("", "pods/exec"): {"create"}}),
    # What the runbooks (docs/runbooks/) have people run to confirm and fix an alert.
    (re.compile(r"\bkubectl\b.*\bget\b.*\bpods\b"), "kubectl get pods", {("", "pods"): {"list"}}),
    (re.compile(r"\bkubectl\b.*\bdescribe pod\b"), "kubectl describe pod",
     {("", "pods"): {"get"}, ("", "events"): {"list"}}),
    (re.compile(r"\bkubectl\b.*\bdelete pod\b"), "kubectl delete pod", {("", "pods"): {"delete"}}),
    (re.compile(r"\bkubectl\b.*\bget\b.*\bevents\b"), "kubectl get events", {("", "events"): {"list"}}),
    (re.compile(r"\bkubectl\b.*\bget\b.*\bendpoints\b"), "kubectl get endpoints", {("", "endpoints"): {"get"}}),
    (re.compile(r"\bkubectl\b.*\bget\b.*\bjobs\b"), "kubectl get jobs", {("batch", "jobs"): {"list"}}),
    (re.compile(r"\bkubectl\b.*\bget\b.*\bsecret\b"), "kubectl get secret", {("", "secrets"): {"get"}}),
    (re.compile(r"\bkubectl\b.*\bget\b.*\bconfigmap\b"), "kubectl get configmap", {("", "configmaps"): {"get"}}),
    (re.compile(r"\bkubectl\b.*\bget\b.*\bnetworkpolicy\b"), "kubectl get networkpolicy",
     {("networking.k8s.io", "networkpolicies"): {"list"}}),
    (re.compile(r"\bkubectl\b.*\bget\b.*\bdeploy\b"), "kubectl get deploy", {("apps", "deployments"): {"get"}}),
    (re.compile(r"\bkubectl\b.*\brollout restart\b"), "kubectl rollout restart",
     {("apps", "deployments"): {"get", "patch"}}),
]
DEPLOY_VERBS = {"get", "list", "create", "update", "patch", "delete"}
# kind -> (apiGroup, resource) for the kinds the app charts render.
KIND_RESOURCES = {
    "ConfigMap": ("", "configmaps"),
    "Secret": ("", "secrets"),
    "Service": ("", "services"),
    "ServiceAccount": ("", "serviceaccounts"),
    "PersistentVolumeClaim": ("", "persistentvolumeclaims"),
    "Pod": ("", "pods"),
    "Deployment": ("apps", "deployments"),
    "CronJob": ("batch", "cronjobs"),
    "Job": ("batch", "jobs"),
    "Ingress": ("networking.k8s.io", "ingresses"),
    "NetworkPolicy": ("networking.k8s.io", "networkpolicies"),
    "PodDisruptionBudget": ("policy", "poddisruptionbudgets"),
    "HorizontalPodAutoscaler": ("autoscaling", "horizontalpodautoscalers"),
    "ServiceMonitor": ("monitoring.coreos.com", "servicemonitors"),
    "PrometheusRule": ("monitoring.coreos.com", "prometheusrules"),
    "HTTPRoute": ("gateway.networking.k8s.io", "httproutes"),
    "Certificate": ("cert-manager.io", "certificates"),
}

failures: list[str] = []


def fail(msg: str) -> None:
    failures.append(msg)
    print(f"  FAIL {msg}")


def ok(msg: str) -> None:
    print(f"  ok   {msg}")


def load(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [d for d in yaml.safe_load_all(fh) if isinstance(d, dict) and d.get("kind")]


def is_test_hook(doc: dict) -> bool:
    return (doc.get("metadata", {}).get("annotations") or {}).get("helm.sh/hook") == "test"


def ident(doc: dict) -> str:
    meta = doc.get("metadata", {})
    return f"{doc['kind']} {meta.get('namespace', '-')}/{meta.get('name')}"


def grants(role: dict) -> dict[tuple[str, str], set[str]]:
    """(apiGroup, resource) -> verbs granted by a Role."""
    out: dict[tuple[str, str], set[str]] = defaultdict(set)
    for rule in role.get("rules") or []:
        for group in rule.get("apiGroups") or []:
            for res in rule.get("resources") or []:
                out[(group, res)].update(rule.get("verbs") or [])
    return out


def check_rule_shapes(role: dict, people: bool) -> None:
    name = ident(role)
    for i, rule in enumerate(role.get("rules") or []):
        for field in ("apiGroups", "resources", "verbs", "resourceNames"):
            if "*" in (rule.get(field) or []) or any("*" in str(v) for v in rule.get(field) or []):
                fail(f"{name} rule {i}: wildcard in {field}")
        if rule.get("nonResourceURLs"):
            fail(f"{name} rule {i}: nonResourceURLs are cluster-scoped")
        verbs = set(rule.get("verbs") or [])
        if verbs & FORBIDDEN_VERBS:
            fail(f"{name} rule {i}: forbidden verbs {sorted(verbs & FORBIDDEN_VERBS)}")
        for group in rule.get("apiGroups") or []:
            for res in rule.get("resources") or []:
                key = (group, res)
                if key in FORBIDDEN_RESOURCES:
                    if key in READ_ONLY_OK and verbs <= {"get", "list", "watch"}:
                        continue
                    if people and key in PEOPLE_ONLY:
                        continue
                    fail(f"{name} rule {i}: grants {sorted(verbs)} on {group or 'core'}/{res}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--team", action="append", required=True,
                        help="NAMESPACE=team-namespace.yaml[,app.yaml...]")
    parser.add_argument("--other", action="append", default=[],
                        help="rendered manifests that must contain no RBAC objects")
    parser.add_argument("--instructions", action="append", default=[],
                        help="NOTES.txt or README files whose commands the team must be able to run")
    args = parser.parse_args()

    teams: dict[str, dict] = {}
    for spec in args.team:
        ns, _, files = spec.partition("=")
        team_file, *app_files = files.split(",")
        teams[ns] = {"docs": load(team_file), "apps": [d for f in app_files for d in load(f)]}

    # Subject -> namespaces it is bound in, over every team.
    bound_in: dict[tuple[str, str], set[str]] = defaultdict(set)

    for ns, team in teams.items():
        print(f"RBAC of team namespace {ns}:")
        docs = team["docs"]
        namespaces = [d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"]
        if namespaces != [ns]:
            fail(f"expected exactly Namespace {ns}, found {namespaces}")
        for doc in docs:
            if doc["kind"] in CLUSTER_KINDS:
                fail(f"{ident(doc)}: cluster-scoped RBAC")
            elif doc["kind"] in ADMISSION_KINDS:
                continue
            elif doc["kind"] != "Namespace" and doc["metadata"].get("namespace") != ns:
                fail(f"{ident(doc)}: not in namespace {ns}")
        roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Role"}
        bindings = [d for d in docs if d["kind"] == "RoleBinding"]
        if not roles or not bindings:
            fail(f"{ns}: no Role/RoleBinding rendered")
        people_roles = {rb.get("roleRef", {}).get("name") for rb in bindings
                        if any(sj.get("kind") == "Group" for sj in rb.get("subjects") or [])}
        for role in roles.values():
            check_rule_shapes(role, role["metadata"]["name"] in people_roles)
        deployer_grants: dict[tuple[str, str], set[str]] | None = None
        team_grants: dict[tuple[str, str], set[str]] | None = None
        for rb in bindings:
            ref = rb.get("roleRef", {})
            if ref.get("kind") != "Role" or ref.get("name") not in roles:
                fail(f"{ident(rb)}: roleRef {ref} is not a Role of {ns}")
                continue
            for subj in rb.get("subjects") or []:
                kind = subj.get("kind")
                if kind == "ServiceAccount":
                    if subj.get("namespace") != ns:
                        fail(f"{ident(rb)}: ServiceAccount of namespace {subj.get('namespace')}")
                    key = ("ServiceAccount", f"{subj.get('namespace')}/{subj['name']}")
                    deployer_grants = grants(roles[ref["name"]])
                elif kind == "Group":
                    if subj["name"].startswith("system:"):
                        fail(f"{ident(rb)}: binds system group {subj['name']}")
                    key = ("Group", subj["name"])
                    team_grants = grants(roles[ref["name"]])
                else:
                    fail(f"{ident(rb)}: unexpected subject kind {kind}")
                    continue
                bound_in[key].add(ns)
        ok(f"{len(roles)} Role(s), {len(bindings)} RoleBinding(s), all in {ns}, no wildcards")

        # The deployer can install what the team's charts render, and helm's release Secrets.
        if deployer_grants is None:
            fail(f"{ns}: no ServiceAccount (CI deployer) is bound")
            continue
        needed = {("", "secrets")}
        for doc in team["apps"]:
            if doc["kind"] in RBAC_KINDS:
                fail(f"{ident(doc)}: app charts must not render RBAC objects")
            elif doc["kind"] not in KIND_RESOURCES:
                fail(f"{ident(doc)}: kind unknown to the RBAC check; add it to KIND_RESOURCES")
            else:
                needed.add(KIND_RESOURCES[doc["kind"]])
                if doc["metadata"].get("namespace") != ns:
                    fail(f"{ident(doc)}: app object outside namespace {ns}")
        for key in sorted(needed):
            wanted = HOOK_VERBS if key == ("", "pods") else DEPLOY_VERBS
            missing = wanted - deployer_grants.get(key, set())
            if missing:
                fail(f"{ns}: deployer lacks {sorted(missing)} on {key[0] or 'core'}/{key[1]}")
        ok(f"deployer can install {len(needed)} kinds of the team's charts "
           "(incl. helm's release Secrets)")

        # The team's people run the same apps by hand; logs and events are read-only.
        if team_grants is None:
            fail(f"{ns}: no Group (the team) is bound")
            continue
        for key in sorted(needed - {("", "pods")}):
            missing = DEPLOY_VERBS - team_grants.get(key, set())
            if missing:
                fail(f"{ns}: team lacks {sorted(missing)} on {key[0] or 'core'}/{key[1]}")
        for key in (("", "pods/log"), ("", "events"), ("events.k8s.io", "events")):
            verbs = team_grants.get(key, set())
            if "get" not in verbs or not verbs <= {"get", "list", "watch"}:
                fail(f"{ns}: team should read {key[1]} and no more, has {sorted(verbs)}")
        ok("team group manages the same kinds; logs and events read-only")

        # `helm test` run by the team's people: every kind the tests create, with what helm
        # does to it, and the pods' logs (--logs). The test pods' ServiceAccounts and projected
        # tokens need no right of the caller (the admission policies judge the pods).
        tests = [d for d in team["apps"] if is_test_hook(d)]
        for key in sorted({KIND_RESOURCES.get(d["kind"], ("?", d["kind"])) for d in tests}):
            missing = HOOK_VERBS - team_grants.get(key, set())
            if missing:
                fail(f"{ns}: `helm test` creates {key[1]}, but the team Role lacks {sorted(missing)}")
        if "get" not in team_grants.get(("", "pods/log"), set()):
            fail(f"{ns}: `helm test --logs` reads pods/log, which the team Role does not allow")
        ok(f"team group can run `helm test --logs`: {len(tests)} test hook(s) "
           f"({', '.join(sorted({d['kind'] for d in tests}))}) within the team Role")

        # What the apps' instructions ask of the team's people.
        asked = 0
        for path in args.instructions:
            with open(path, encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, 1):
                    for pattern, what, needs in INSTRUCTIONS:
                        if not pattern.search(line):
                            continue
                        asked += 1
                        for key, verbs in needs.items():
                            missing = verbs - team_grants.get(key, set())
                            if missing:
                                fail(f"{ns}: {path}:{lineno} says `{what}`, but the team Role lacks "
                                     f"{sorted(missing)} on {key[0] or 'core'}/{key[1]}")
        if args.instructions:
            ok(f"team group can run the {asked} documented commands (helm test, port-forward, ...)")

    print("RBAC across teams:")
    for (kind, name), namespaces in sorted(bound_in.items()):
        if len(namespaces) != 1:
            fail(f"{kind} {name} is bound in several namespaces: {sorted(namespaces)}")
        elif kind == "ServiceAccount" and name.split("/")[0] not in namespaces:
            fail(f"{kind} {name} is bound in another namespace: {sorted(namespaces)}")
        else:
            ok(f"{kind} {name}: rights in {next(iter(namespaces))} only")

    for path in args.other:
        for doc in load(path):
            if doc["kind"] in RBAC_KINDS:
                fail(f"{path}: {ident(doc)}: app charts must not render RBAC objects")

    if failures:
        print(f"RBAC check: {len(failures)} failure(s)")
        return 1
    print("RBAC check: all assertions hold")
    return 0


if __name__ == "__main__":
    sys.exit(main())
