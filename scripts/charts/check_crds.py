#!/usr/bin/env python3
"""Prometheus Operator and cert-manager objects validated against their CRD schemas.

    check_crds.py MANIFEST.yaml...

kubernetes-validate knows only built-in kinds, so check.sh skips custom resources there.
This reads every `monitoring.coreos.com/v1` object (ServiceMonitor, PrometheusRule) and
every `cert-manager.io/v1` Certificate of the manifests through the models generated from
the Prometheus Operator's and cert-manager's CRDs (cloudcoil.models.prometheus-operator and
cloudcoil.models.cert-manager, pinned in install-tools.sh's venv-models: run it with
`python-models`). A value the schema refuses (a bad duration, a wrong type, a missing
required field) fails, and so does a key the schema does not know: the models ignore
unknown keys, so each object is written back and compared, as kubernetes-validate
--strict does for built-in kinds.
"""

import pathlib
import sys

import yaml
from cloudcoil.models.cert_manager import v1 as cert_manager
from cloudcoil.models.prometheus_operator import v1

KINDS = {
    "monitoring.coreos.com/v1": {"ServiceMonitor": v1.ServiceMonitor, "PrometheusRule": v1.PrometheusRule},
    "cert-manager.io/v1": {"Certificate": cert_manager.Certificate},
}


def dropped(src, out, path=""):
    if isinstance(src, dict) and isinstance(out, dict):
        for k, v in src.items():
            if k not in out:
                yield f"{path}.{k}"
            else:
                yield from dropped(v, out[k], f"{path}.{k}")
    elif isinstance(src, list) and isinstance(out, list):
        for i, (a, b) in enumerate(zip(src, out)):
            yield from dropped(a, b, f"{path}[{i}]")


def main() -> int:
    failures, counts = [], {}
    for f in map(pathlib.Path, sys.argv[1:]):
        for doc in yaml.safe_load_all(f.read_text()):
            if not doc or doc.get("apiVersion") not in KINDS:
                continue
            where = f"{f.parent.name}/{f.name}: {doc['kind']} {doc['metadata']['name']}"
            model = KINDS[doc["apiVersion"]].get(doc["kind"])
            if model is None:
                failures.append(f"{where}: no schema for this kind here")
                continue
            try:
                out = model.model_validate(doc).model_dump(mode="json", by_alias=True, exclude_unset=True)
            except Exception as e:  # pydantic's ValidationError names the field
                failures.append(f"{where}: refused by the CRD schema: {e}")
                continue
            for key in dropped(doc, out):
                failures.append(f"{where}: {key} is not in the CRD schema")
            counts[doc["kind"]] = counts.get(doc["kind"], 0) + 1
    for msg in failures:
        print(f"  FAIL {msg}")
    if not failures:
        summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no objects"
        print(f"  ok   {summary} valid against the Prometheus Operator (v0.80) and cert-manager (v1.17) CRD schemas, strict")
    return 1 if failures or not counts else 0


if __name__ == "__main__":
    sys.exit(main())
