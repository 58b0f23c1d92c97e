#!/usr/bin/env python3
"""Verifies the committed pacts against a running payment-provider binary with a verifier
that is not this repository's code: pact-python's Verifier (the Pact foundation's FFI),
setting provider states over HTTP as any verifier would (`PACT_PROVIDER_STATES=on`).

    scripts/pact/verify-standalone.py     # or: make pact-standalone

Needs cargo and python3; installs pact-python into a cached venv
(~/.cache/invoice-platform/pact-venv) on first use.
"""

import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from services import ROOT, TARGET, Service, venv  # noqa: E402

PACT_PYTHON = "pact-python==4.2.0"

VERIFY = """
import sys
from pact import Verifier
url, pacts = sys.argv[1], sys.argv[2]
(Verifier("payment-provider", host="127.0.0.1")
    .add_transport(url=url)
    .add_source(pacts)
    .state_handler(url + "/_pact/provider-states", teardown=True, body=True)
    .verify())
print("verify-standalone: every interaction verified")
"""


def main():
    python = venv("pact-venv", PACT_PYTHON)
    subprocess.run(["cargo", "build", "--locked", "-q", "-p", "payment-provider"], cwd=ROOT, check=True)
    with tempfile.TemporaryDirectory() as scratch:
        log_path = os.path.join(scratch, "provider.log")
        with open(log_path, "w") as log:
            provider = Service(os.path.join(TARGET, "debug", "payment-provider"), {
                "DATABASE_URL": f"sqlite://{scratch}/pp.db", "SEED": "none",
                "PACT_PROVIDER_STATES": "on"}, log=log)
        try:
            done = subprocess.run([python, "-c", VERIFY, provider.url, os.path.join(ROOT, "pacts")])
        finally:
            provider.stop()
        if done.returncode != 0:
            print(open(log_path).read()[-4000:], file=sys.stderr)
            sys.exit("verify-standalone: the provider does not keep the committed pact")


if __name__ == "__main__":
    main()
