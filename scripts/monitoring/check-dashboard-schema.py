#!/usr/bin/env python3
"""The dashboards read through Grafana's dashboard schema lose nothing.

    check-dashboard-schema.py DASHBOARD.json...

Runs on the Python of scripts/charts/install-tools.sh's venv-models (`python-models`),
which holds grafana-foundation-sdk: models generated from Grafana's own schemas for the
dashboard, each panel kind's options and field config, and the Prometheus query. Each
dashboard is parsed into those models and written back; a key the schema does not know
(a misspelt `gridPos`, `unit`, `expr`, an option of another panel kind) does not survive
the round trip and is reported, as is a value the models refuse.
"""

import json
import pathlib
import sys

from grafana_foundation_sdk.cog import plugins
from grafana_foundation_sdk.models import dashboard


def dropped(src, out, path=""):
    """Keys of src missing from out, recursively."""
    if isinstance(src, dict) and isinstance(out, dict):
        for k, v in src.items():
            if k not in out:
                yield f"{path}.{k}"
            else:
                yield from dropped(v, out[k], f"{path}.{k}")
    elif isinstance(src, list) and isinstance(out, list):
        if len(src) != len(out):
            yield f"{path} ({len(src)} items, {len(out)} after the schema)"
        for i, (a, b) in enumerate(zip(src, out)):
            yield from dropped(a, b, f"{path}[{i}]")


def to_plain(obj):
    return obj.to_json() if hasattr(obj, "to_json") else str(obj)


def main() -> int:
    plugins.register_default_plugins()
    failed = False
    for path in map(pathlib.Path, sys.argv[1:]):
        src = json.loads(path.read_text())
        try:
            model = dashboard.Dashboard.from_json(src)
            out = json.loads(json.dumps(model.to_json(), default=to_plain))
        except Exception as e:  # the models refused a value
            print(f"  FAIL {path.name}: Grafana's dashboard schema refuses it: {e!r}")
            failed = True
            continue
        lost = list(dropped(src, out))
        for key in lost:
            print(f"  FAIL {path.name}: {key} is not in Grafana's dashboard schema")
        if lost:
            failed = True
        else:
            print(f"  ok   {path.name}: every key known to Grafana's dashboard schema (grafana-foundation-sdk)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
