#!/usr/bin/env python3
"""Verifies the committed pacts against a running payment-provider binary with a verifier
that is not this repository's code: pact-python's Verifier (the Pact foundation's FFI),
setting provider states over HTTP as any verifier would (`PACT_PROVIDER_STATES=on`).

    scripts/pact/verify-standalone.py     # or: make pact-standalone

Needs cargo and python3; installs pact-python into a cached venv
(PACT_VENV, default ~/.cache/invoice-platform/pact-venv) on first use.
"""

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

PACT_PYTHON = "pact-python==4.2.0"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV = os.environ.get("PACT_VENV", os.path.expanduser("~/.cache/invoice-platform/pact-venv"))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))


def venv_python():
    python = os.path.join(VENV, "bin", "python")
    stamp = os.path.join(VENV, ".stamp")
    if not (os.path.exists(stamp) and open(stamp).read() == PACT_PYTHON):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", PACT_PYTHON], check=True)
        with open(stamp, "w") as f:
            f.write(PACT_PYTHON)
    return python


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url, proc):
    for _ in range(100):
        if proc.poll() is not None:
            sys.exit(f"verify-standalone: payment-provider exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit("verify-standalone: payment-provider did not become ready")


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
    python = venv_python()
    subprocess.run(["cargo", "build", "--locked", "-q", "-p", "payment-provider"], cwd=ROOT, check=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as scratch:
        env = {"PATH": os.environ["PATH"], "LISTEN_ADDR": f"127.0.0.1:{port}",
               "DATABASE_URL": f"sqlite://{scratch}/pp.db", "SEED": "none",
               "PACT_PROVIDER_STATES": "on", "LOG_FORMAT": "json", "RUST_LOG": "warn"}
        with open(os.path.join(scratch, "provider.log"), "w") as log:
            proc = subprocess.Popen([os.path.join(TARGET, "debug", "payment-provider")],
                                    env=env, stdout=log, stderr=log)
        try:
            wait_ready(url, proc)
            done = subprocess.run([python, "-c", VERIFY, url, os.path.join(ROOT, "pacts")])
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        if done.returncode != 0:
            print(open(os.path.join(scratch, "provider.log")).read()[-4000:], file=sys.stderr)
            sys.exit("verify-standalone: the provider does not keep the committed pact")


if __name__ == "__main__":
    main()
