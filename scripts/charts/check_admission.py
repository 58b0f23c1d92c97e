#!/usr/bin/env python3
"""The team namespaces' ValidatingAdmissionPolicies, evaluated offline with real CEL.

Usage:
  check_admission.py --policies TEAM_RENDER.yaml... --cases CASES.yaml
                     [--app NAMESPACE=APP_RENDER.yaml ...] [--refused-app NAMESPACE=APP_RENDER.yaml ...]

The policies and bindings come from the rendered team-namespace chart. Each request in
CASES.yaml (scripts/charts/fixtures/admission-cases.yaml) goes through what the API server
does with them: the bindings whose namespaceSelector matches the request's namespace, the
policies whose matchConstraints match its resource and operation, then the policy's
variables and validations, evaluated by two independent CEL implementations
(`common-expression-language`, Rust-based, and `cel-python`, pure Python). Both must agree,
no expression may fail to evaluate, and the verdict (admit, or refuse by a named policy)
must be the expected one.

--app adds the pods the app charts really create (Deployment and CronJob pod templates,
helm test pods) and their Services as CREATE requests in their namespace: each must be
admitted.
--refused-app does the same for a render whose serving pods must be refused (a second
invoice-app release whose ServiceAccount the team has not allowed to wear the label).
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

import cel
import celpy
import yaml

failures = 0


# The app labels that other teams' NetworkPolicies trust (team-namespace ci values).
APP_LABELS = ("invoice-app", "payment-provider")


def fail(msg: str) -> None:
    global failures
    failures += 1
    print(f"  FAIL {msg}")


def load(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [d for d in yaml.safe_load_all(fh) if isinstance(d, dict) and d.get("kind")]


class Engines:
    """Evaluates one expression with both CEL implementations; returns (value, error)."""

    def __init__(self) -> None:
        self.env = celpy.Environment()
        self.programs: dict[str, Any] = {}

    def rust(self, expr: str, ctx: dict) -> Any:
        return cel.evaluate(expr, ctx)

    def python(self, expr: str, ctx: dict) -> Any:
        if expr not in self.programs:
            self.programs[expr] = self.env.program(self.env.compile(expr))
        activation = {k: celpy.json_to_cel(v) for k, v in ctx.items()}
        result = self.programs[expr].evaluate(activation)
        if isinstance(result, Exception):
            raise result
        return plain(result)

    def evaluate(self, expr: str, ctx: dict) -> tuple[Any, str | None]:
        results = []
        for name, run in (("common-expression-language", self.rust), ("cel-python", self.python)):
            try:
                results.append(plain(run(expr, ctx)))
            except Exception as err:  # an evaluation error is a failure of the policy
                return None, f"{name}: {type(err).__name__}: {err}"
        if results[0] != results[1]:
            return None, f"the implementations disagree: {results[0]!r} != {results[1]!r}"
        return results[0], None


def plain(value: Any) -> Any:
    """celpy's CEL types as plain Python values, to compare both implementations."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, celpy.celtypes.BoolType):
        return bool(value)
    if isinstance(value, (celpy.celtypes.IntType, celpy.celtypes.UintType)):
        return int(value)
    if isinstance(value, (str, celpy.celtypes.StringType)):
        return str(value)
    if isinstance(value, (list, celpy.celtypes.ListType)):
        return [plain(v) for v in value]
    if isinstance(value, (dict, celpy.celtypes.MapType)):
        return {plain(k): plain(v) for k, v in value.items()}
    return value


def selector_matches(selector: dict | None, labels: dict) -> bool:
    if selector is None:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def rule_matches(rule: dict, request: dict) -> bool:
    def has(field: str, value: str) -> bool:
        allowed = rule.get(field) or []
        return "*" in allowed or value in allowed
    return (has("apiGroups", request["group"]) and has("apiVersions", request["version"])
            and has("resources", request["resource"]) and has("operations", request["operation"]))


class Admission:
    def __init__(self, team_docs: list[dict]) -> None:
        self.policies = {d["metadata"]["name"]: d for d in team_docs
                         if d["kind"] == "ValidatingAdmissionPolicy"}
        self.bindings = [d for d in team_docs if d["kind"] == "ValidatingAdmissionPolicyBinding"]
        self.engines = Engines()

    def review(self, request: dict) -> tuple[str, str | None, str]:
        """('admit'|'refuse'|'error', policy, message) for one request."""
        ns_labels = {"kubernetes.io/metadata.name": request["namespace"]}
        for binding in self.bindings:
            spec = binding["spec"]
            match = spec.get("matchResources") or {}
            if not selector_matches(match.get("namespaceSelector"), ns_labels):
                continue
            policy = self.policies.get(spec["policyName"])
            if policy is None:
                return "error", spec["policyName"], "binding names a policy that is not rendered"
            pspec = policy["spec"]
            if not any(rule_matches(r, request) for r in pspec["matchConstraints"]["resourceRules"]):
                continue
            ctx = {
                "object": request["object"],
                "oldObject": request.get("oldObject"),
                "request": {"operation": request["operation"], "namespace": request["namespace"]},
            }
            variables: dict[str, Any] = {}
            for var in pspec.get("variables") or []:
                value, err = self.engines.evaluate(var["expression"], {**ctx, "variables": variables})
                if err:
                    return "error", spec["policyName"], f"variable {var['name']}: {err}"
                variables[var["name"]] = value
            for validation in pspec["validations"]:
                value, err = self.engines.evaluate(validation["expression"], {**ctx, "variables": variables})
                if err:
                    return "error", spec["policyName"], err
                if value is not True:
                    if "Deny" not in spec.get("validationActions", []):
                        return "error", spec["policyName"], "binding does not deny"
                    return "refuse", spec["policyName"], " ".join(validation.get("message", "").split())
        return "admit", None, ""


def check_bindings(team_docs: list[dict]) -> None:
    """Every policy is bound, to exactly its team's namespace, with Deny and failurePolicy Fail."""
    namespaces = [d["metadata"]["name"] for d in team_docs if d["kind"] == "Namespace"]
    for ns in namespaces:
        policies = [d for d in team_docs if d["kind"] == "ValidatingAdmissionPolicy"]
        bindings = {d["spec"]["policyName"]: d for d in team_docs
                    if d["kind"] == "ValidatingAdmissionPolicyBinding"}
        if not policies:
            fail(f"{ns}: no admission policy rendered")
        for policy in policies:
            name = policy["metadata"]["name"]
            binding = bindings.get(name)
            selector = ((binding or {}).get("spec", {}).get("matchResources") or {}).get("namespaceSelector")
            if not name.startswith(f"{ns}-"):
                fail(f"policy {name}: cluster-scoped names must start with {ns}- (one release per team)")
            if policy["spec"].get("failurePolicy") != "Fail":
                fail(f"policy {name}: failurePolicy must be Fail")
            if binding is None:
                fail(f"policy {name}: not bound")
            elif selector != {"matchLabels": {"kubernetes.io/metadata.name": ns}}:
                fail(f"binding {name}: must select namespace {ns} alone, has {selector}")
            elif binding["spec"].get("validationActions") != ["Deny"]:
                fail(f"binding {name}: validationActions must be [Deny]")
        print(f"  ok   {ns}: {len(policies)} policies, each bound to {ns} alone, Deny, failurePolicy Fail")


def app_pods(path: str, namespace: str) -> list[tuple[str, dict]]:
    """The pods an app render creates, as the API server would receive them."""
    pods = []
    for doc in load(path):
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind == "Pod":
            template = doc
        elif kind == "Deployment":
            template = doc["spec"]["template"]
        elif kind == "CronJob":
            template = doc["spec"]["jobTemplate"]["spec"]["template"]
        else:
            continue
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {**template.get("metadata", {}), "name": f"{name}-pod", "namespace": namespace},
               "spec": {"serviceAccountName": "default", **template["spec"]}}
        pods.append((f"{kind} {namespace}/{name}", pod))
    return pods


def pod_request(namespace: str, pod: dict) -> dict:
    return {"namespace": namespace, "group": "", "version": "v1", "resource": "pods",
            "operation": "CREATE", "object": pod}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--policies", nargs="+", required=True)
    parser.add_argument("--cases", required=True)
    parser.add_argument("--app", action="append", default=[])
    parser.add_argument("--refused-app", action="append", default=[])
    args = parser.parse_args()

    team_docs = [d for path in args.policies for d in load(path)]
    print("Admission policies (ValidatingAdmissionPolicy, CEL with two implementations):")
    for path in args.policies:
        check_bindings(load(path))
    admission = Admission(team_docs)

    with open(args.cases, encoding="utf-8") as fh:
        cases = yaml.safe_load(fh)
    for case in cases:
        request = {"group": "", "version": "v1", "operation": "CREATE", **case["request"]}
        verdict, policy, message = admission.review(request)
        want = case["expect"]
        want_verdict = "admit" if want == "admit" else "refuse"
        want_policy = None if want == "admit" else want
        label = f"{case['name']} ({request['operation']} {request['resource']} in {request['namespace']})"
        if verdict == "error":
            fail(f"{label}: {policy}: {message}")
        elif verdict != want_verdict or policy != want_policy:
            fail(f"{label}: expected {want}, got {verdict}{f' by {policy}' if policy else ''}")
        elif verdict == "admit":
            print(f"  ok   admitted: {label}")
        else:
            print(f"  ok   refused by {policy}: {label}")

    for spec, expect in [(s, "admit") for s in args.app] + [(s, "refuse") for s in args.refused_app]:
        namespace, _, path = spec.partition("=")
        for what, pod in app_pods(path, namespace):
            verdict, policy, message = admission.review(pod_request(namespace, pod))
            # The pods wearing the app's name label (serving, pay runs, the helm test that goes
            # the app's way) are the ones the label policy judges; the other tests are admitted.
            wears_app_label = pod["metadata"].get("labels", {}).get("app.kubernetes.io/name") in APP_LABELS
            want = expect if wears_app_label else "admit"
            sa = pod["spec"]["serviceAccountName"]
            if verdict == "error":
                fail(f"{what}: {policy}: {message}")
            elif verdict != want:
                fail(f"{what} (ServiceAccount {sa}): expected {want}, got {verdict} {policy or ''} {message}")
            else:
                print(f"  ok   {verdict}: the pods of {what} (ServiceAccount {sa}, {path.split('/')[-1]})"
                      + (f" by {policy}" if policy else ""))

    # The apps' own Services (the externalIPs policy must not refuse what the charts create).
    for spec in args.app:
        namespace, _, path = spec.partition("=")
        for doc in load(path):
            if doc["kind"] != "Service":
                continue
            request = {"namespace": namespace, "group": "", "version": "v1", "resource": "services",
                       "operation": "CREATE", "object": doc}
            verdict, policy, message = admission.review(request)
            what = f"Service {namespace}/{doc['metadata']['name']} ({path.split('/')[-1]})"
            if verdict != "admit":
                fail(f"{what}: expected admit, got {verdict} {policy or ''} {message}")
            else:
                print(f"  ok   admit: {what}")

    if failures:
        print(f"Admission check: {failures} failure(s)")
        return 1
    print("Admission check: all assertions hold")
    return 0


if __name__ == "__main__":
    sys.exit(main())
