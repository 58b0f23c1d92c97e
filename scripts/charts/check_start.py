#!/usr/bin/env python3
"""Every value set of the service charts starts the real binary (no cluster needed).

Usage: check_start.py --bin-dir DIR [--postgres URL] VALUES.yaml...

Each VALUES.yaml is a value set of charts/<chart>/ci/ (invoice-app or payment-provider).
For each, the chart is rendered with `helm template` (release and namespace as check.sh
installs it) and every pod template that runs the app is started as the kubelet would
start it, with the binary built from this tree instead of the image:

  * the environment: `envFrom` ConfigMaps and Secrets, then `env` (literal values,
    `secretKeyRef`, `configMapKeyRef`, `fieldRef`), in Kubernetes' order of precedence;
  * the files: every volume the container mounts (Secret, ConfigMap, projected sources,
    emptyDir, PersistentVolumeClaim) written under a temporary root, and every variable
    that names a mounted path (`*_FILE`, `sqlite:///data/...`) pointed there;
  * the container's `args`.

Only what must be local is changed: the port of LISTEN_ADDR and METRICS_ADDR (a free one,
on the address the chart renders: 0.0.0.0 stays 0.0.0.0, so the rules that hold only on
loopback are tested as in a pod), and the database: a fresh SQLite file, or with
--postgres (TEST_DATABASE_URL) a fresh PostgreSQL database for a set that renders a
PostgreSQL URL. What a set takes from a Secret or ConfigMap it does not render (managed by
the operator: `existingSecret`, `kube-root-ca.crt`) and the kubelet's projected
ServiceAccount tokens get stand-ins that the binary accepts (a random API key digest, a
random caller token, a self-signed certificate as CA or TLS pair, a placeholder PostgreSQL
URL replaced as above, an unsigned JWT), each named in the output. Without --postgres a
set that renders a PostgreSQL URL starts on SQLite, and says so.

The serving Deployment passes when its readinessProbe (path and scheme as rendered; HTTPS
unverified, as the kubelet probes) answers 200 on LISTEN_ADDR; the pay-run CronJob's container
runs `migrate` instead of `pay` (which would charge) and passes when it exits 0, so its
configuration and database are those of a real run. A set that renders but does not
start fails with the binary's last line on stderr. PAYMENT_PROVIDER_URL stays as
rendered (unreachable here): readiness reads the own database only, and the URL decides
which credentials the binary accepts.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml

# Where check.sh installs each chart, and under which release name.
NAMESPACE = {"invoice-app": "invoices", "payment-provider": "payments"}
READY_TIMEOUT = 60
UNVERIFIED = ssl._create_unverified_context()  # noqa: S323 (probes do not verify either)
STOP_TIMEOUT = 30


@dataclass
class Start:
    """One pod template's container, resolved into a command, an environment and files."""
    what: str
    args: list[str]
    env: dict[str, str]
    probe: dict | None  # the readinessProbe's httpGet, as the kubelet calls it
    files: dict[str, bytes] = field(default_factory=dict)  # absolute path in the pod -> content
    dirs: set[str] = field(default_factory=set)  # mount paths of emptyDir/PVC volumes
    stand_ins: list[str] = field(default_factory=list)


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def self_signed() -> tuple[bytes, bytes]:
    """A self-signed certificate and its key (PEM): a CA bundle, or a server's TLS pair."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", f"{tmp}/key.pem", "-out", f"{tmp}/cert.pem", "-days", "2",
                        "-subj", "/CN=chart start check stand-in", "-addext", "subjectAltName=DNS:localhost"],
                       check=True, capture_output=True)
        return Path(f"{tmp}/cert.pem").read_bytes(), Path(f"{tmp}/key.pem").read_bytes()


TLS_PAIR = self_signed()


def stand_in(var: str | None, path: str) -> bytes:
    """Content the binary accepts for a file whose source the chart does not render."""
    name = var or ""
    if name == "TLS_KEY_FILE" or path.endswith(("tls.key", ".key")):
        return TLS_PAIR[1]
    if name == "TLS_CERT_FILE" or path.endswith("tls.crt"):
        return TLS_PAIR[0]
    if name == "API_KEYS_FILE":
        digest = hashlib.sha256(secrets.token_hex(24).encode()).hexdigest()
        return json.dumps([{"client": "stand-in", "scopes": ["invoices:read"], "sha256": digest}]).encode()
    if name == "DATABASE_URL_FILE" or path.endswith("database-url"):
        # An operator's PostgreSQL (e.g. CloudNativePG's app Secret): replaced by a local one.
        return b"postgres://stand-in@stand-in.invalid:5432/stand-in"
    if name == "CALLER_TOKENS_FILE":
        return f"invoice-app:stand-in-{secrets.token_hex(16)}".encode()
    if name.endswith("CA_FILE") or path.endswith((".crt", ".pem")):
        return TLS_PAIR[0]
    # A projected ServiceAccount token, or a static token: a well-formed, unsigned JWT.
    now = int(time.time())
    claims = {"iss": "stand-in", "sub": "system:serviceaccount:stand-in:stand-in", "aud": "stand-in",
              "iat": now, "exp": now + 3600}
    return f"{b64(json.dumps({'alg': 'RS256', 'typ': 'JWT'}))}.{b64(json.dumps(claims))}.{b64('stand-in')}".encode()


class Rendered:
    def __init__(self, docs: list[dict]) -> None:
        self.docs = docs

    def find(self, kind: str, name: str) -> dict | None:
        for d in self.docs:
            if d["kind"] == kind and d["metadata"]["name"] == name:
                return d
        return None

    def data(self, kind: str, name: str) -> dict[str, bytes] | None:
        """The keys of a rendered ConfigMap or Secret, as bytes; None when not rendered."""
        obj = self.find(kind, name)
        if obj is None:
            return None
        out = {k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()}
        if kind == "Secret":
            out.update({k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()})
            out.update({k: str(v).encode() for k, v in (obj.get("stringData") or {}).items()})
        else:
            out.update({k: str(v).encode() for k, v in (obj.get("data") or {}).items()})
        return out


def resolve(rendered: Rendered, pod: dict, container: dict, what: str) -> Start:
    env: dict[str, str] = {}
    start = Start(what=what, args=list(container.get("args") or []), env=env,
                  probe=(container.get("readinessProbe") or {}).get("httpGet"))
    unknown: list[tuple[str, str]] = []  # (path, "Kind name/key") of sources not rendered

    def source(kind: str, name: str, key: str | None, optional: bool) -> bytes | None:
        data = rendered.data(kind, name)
        if data is None or (key is not None and key not in data):
            return None if optional else b""
        return data[key] if key is not None else None

    for ref in container.get("envFrom") or []:
        kind, sel = ("ConfigMap", ref["configMapRef"]) if "configMapRef" in ref else ("Secret", ref["secretRef"])
        data = rendered.data(kind, sel["name"])
        if data is None:
            if not sel.get("optional"):
                raise SystemExit(f"{what}: envFrom {kind} {sel['name']} is not rendered: its variables are unknown")
            continue
        for k, v in data.items():
            env[ref.get("prefix", "") + k] = v.decode()
    for item in container.get("env") or []:
        name = item["name"]
        if "value" in item:
            env[name] = str(item["value"])
            continue
        vf = item.get("valueFrom") or {}
        if "fieldRef" in vf:
            env[name] = {"metadata.name": "start-check", "metadata.namespace": "start-check"}.get(
                vf["fieldRef"]["fieldPath"], "stand-in")
            continue
        for kind, key in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
            if key in vf:
                ref = vf[key]
                data = rendered.data(kind, ref["name"])
                if data is not None and ref["key"] in data:
                    env[name] = data[ref["key"]].decode()
                elif not ref.get("optional"):
                    env[name] = stand_in(name, "").decode()
                    start.stand_ins.append(f"{name} from {kind} {ref['name']}/{ref['key']}")

    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        vol = volumes[mount["name"]]
        root = mount["mountPath"].rstrip("/")
        files: dict[str, bytes | None] = {}  # path under the volume -> content (None: stand-in)
        origin: dict[str, str] = {}

        def add_object(kind: str, spec: dict) -> None:
            name = spec.get("name") or spec.get("secretName")
            data = rendered.data(kind, name)
            items = spec.get("items")
            if items is None:
                if data is None and not spec.get("optional"):
                    raise SystemExit(f"{what}: {kind} {name} is not rendered and mounted whole: its keys are unknown")
                for k, v in (data or {}).items():
                    files[k] = v
                return
            for item in items:
                if data is not None and item["key"] in data:
                    files[item["path"]] = data[item["key"]]
                elif not spec.get("optional"):
                    files[item["path"]] = None
                    origin[item["path"]] = f"{kind} {name}/{item['key']}"

        if "secret" in vol:
            add_object("Secret", vol["secret"])
        elif "configMap" in vol:
            add_object("ConfigMap", vol["configMap"])
        elif "projected" in vol:
            for src in vol["projected"]["sources"]:
                if "secret" in src:
                    add_object("Secret", src["secret"])
                elif "configMap" in src:
                    add_object("ConfigMap", src["configMap"])
                elif "serviceAccountToken" in src:
                    path = src["serviceAccountToken"]["path"]
                    files[path] = None
                    origin[path] = "projected ServiceAccount token"
                elif "downwardAPI" in src:
                    for item in src["downwardAPI"].get("items") or []:
                        files[item["path"]] = b"stand-in"
        elif "emptyDir" in vol or "persistentVolumeClaim" in vol:
            start.dirs.add(root)
            continue
        else:
            raise SystemExit(f"{what}: volume {mount['name']}: a kind this check does not know: {sorted(vol)}")
        sub = mount.get("subPath")
        for path, content in files.items():
            if sub and path != sub:
                continue
            full = root if sub else f"{root}/{path}"
            start.files[full] = content  # type: ignore[assignment]
            if content is None:
                unknown.append((full, origin[path]))
    # Stand-ins, chosen by the variable that names each file.
    for full, where in unknown:
        var = next((k for k, v in env.items() if v == full), None)
        start.files[full] = stand_in(var, full)
        start.stand_ins.append(f"{full.rsplit('/', 1)[-1]} ({where})")
    return start


def app_pods(rendered: Rendered, chart: str) -> list[tuple[str, dict, dict]]:
    """(label, pod spec, container) of the Deployment and any CronJob running the app."""
    out = []
    for d in rendered.docs:
        if d["kind"] == "Deployment":
            pod = d["spec"]["template"]["spec"]
        elif d["kind"] == "CronJob":
            pod = d["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        else:
            continue
        containers = pod["containers"]
        main = next((c for c in containers if c["name"] == chart), containers[0])
        out.append((f"{d['kind']} {d['metadata']['name']}", pod, main))
    return out


def free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, 0))
        return s.getsockname()[1]


def split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def psql(url: str, sql: str) -> subprocess.CompletedProcess:
    return subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", sql],
                          capture_output=True, text=True)


def with_db(server: str, name: str) -> str:
    base, _, query = server.partition("?")
    base = re.sub(r"(//[^/]*)(/.*)?$", rf"\1/{name}", base)
    return base + (f"?{query}" if query else "")


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(nothing)"


class Runner:
    def __init__(self, bin_dir: Path, postgres: str | None) -> None:
        self.bin_dir = bin_dir
        self.postgres = postgres
        self.failures: list[str] = []

    def run(self, chart: str, set_name: str, start: Start) -> None:
        label = f"{chart} {set_name}: {start.what}"
        with tempfile.TemporaryDirectory(prefix="chart-start-") as tmp:
            root = Path(tmp) / "pod"
            database: str | None = None
            try:
                env, notes, database, ready_url = self.prepare(start, root, chart, set_name)
                self.start(chart, label, start, env, notes, ready_url, Path(tmp))
            except StartFailure as e:
                self.fail(f"{label}: {e}")
            finally:
                if database:
                    psql(with_db(self.postgres or "", "postgres"), f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE);')

    def prepare(self, start: Start, root: Path, chart: str, set_name: str):
        notes: list[str] = []
        # Files and directories of the pod, under the temporary root.
        for d in start.dirs:
            (root / d.lstrip("/")).mkdir(parents=True, exist_ok=True)
        for path, content in start.files.items():
            target = root / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        mounts = sorted(start.dirs | {p.rsplit("/", 1)[0] for p in start.files} | set(start.files), key=len, reverse=True)

        def local(value: str) -> str:
            for prefix in ("sqlite://", ""):
                if value.startswith(prefix):
                    path = value[len(prefix):]
                    if any(path == m or path.startswith(m + "/") for m in mounts):
                        return prefix + str(root / path.lstrip("/"))
            return value

        env = {k: local(v) for k, v in start.env.items()}
        env["HOSTNAME"] = f"{chart}-start-check"
        # The ports: free ones, on the host the chart renders.
        ready_url = None
        for var in ("LISTEN_ADDR", "METRICS_ADDR"):
            if var not in env:
                continue
            host, _ = split_addr(env[var])
            port = free_port(host)
            env[var] = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            if var == "LISTEN_ADDR" and start.probe:
                connect = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
                scheme = start.probe.get("scheme", "HTTP").lower()
                ready_url = f"{scheme}://{f'[{connect}]' if ':' in connect else connect}:{port}{start.probe['path']}"
        if "LISTEN_ADDR" in env:
            notes.append(f"LISTEN_ADDR {split_addr(env['LISTEN_ADDR'])[0]}")
        # The database: what the set renders, made local.
        database = None
        url_file = env.get("DATABASE_URL_FILE")
        rendered_url = Path(url_file).read_text().strip() if url_file and Path(url_file).exists() else env.get("DATABASE_URL", "")
        if rendered_url.startswith(("postgres://", "postgresql://")):
            if self.postgres:
                database = f"chart_start_{uuid.uuid4().hex[:12]}"
                res = psql(with_db(self.postgres, "postgres"), f'CREATE DATABASE "{database}";')
                if res.returncode:
                    raise StartFailure(f"cannot create a PostgreSQL database: {last_line(res.stderr)}")
                local_url = with_db(self.postgres, database)
                notes.append("a fresh PostgreSQL database")
            else:
                local_url = f"sqlite://{root}/stand-in.db"
                notes.append("SQLite for its PostgreSQL (set TEST_DATABASE_URL for PostgreSQL)")
            if url_file:
                Path(url_file).write_text(local_url)
            else:
                env["DATABASE_URL"] = local_url
        elif rendered_url:
            notes.append("a fresh SQLite file")
        if start.stand_ins:
            notes.append("stand-ins: " + ", ".join(start.stand_ins))
        return env, notes, database, ready_url

    def start(self, chart: str, label: str, start: Start, env: dict, notes: list[str], ready_url: str | None,
              tmp: Path) -> None:
        binary = self.bin_dir / chart
        serving = ready_url is not None and start.args[:1] in ([], ["serve"])
        args = start.args if serving else ["migrate"]
        out, err = open(tmp / "stdout", "w+b"), open(tmp / "stderr", "w+b")
        began = time.monotonic()
        proc = subprocess.Popen([str(binary), *args], env=env, stdout=out, stderr=err, cwd=tmp,
                                start_new_session=True)
        try:
            status = self.wait(proc, ready_url if serving else None)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        took = time.monotonic() - began
        err.seek(0)
        out.seek(0)
        stderr, stdout = err.read().decode(errors="replace"), out.read().decode(errors="replace")
        said = last_line(stderr) if stderr.strip() else last_line(stdout)
        how = f"{' '.join(args)}; " + "; ".join(notes)
        if status == "ready":
            print(f"  ok   {label} ready in {took:.1f}s ({ready_url} 200) [{how}]")
        elif status == "exited" and not serving and proc.returncode == 0:
            print(f"  ok   {label} configuration and database accepted in {took:.1f}s [{how}]")
        elif status == "exited":
            before = " before it was ready" if serving else ""
            raise StartFailure(f"exited with {proc.returncode}{before} [{how}]: {said}")
        else:
            raise StartFailure(f"not ready within {READY_TIMEOUT}s [{how}]: {said}")

    @staticmethod
    def wait(proc: subprocess.Popen, ready_url: str | None) -> str:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return "exited"
            if ready_url:
                try:
                    # As the kubelet probes: a certificate is not verified.
                    with urllib.request.urlopen(ready_url, timeout=2, context=UNVERIFIED) as resp:
                        if resp.status == 200:
                            return "ready"
                except (urllib.error.URLError, http.client.HTTPException, OSError):
                    pass
            time.sleep(0.2)
        return "timeout"

    def fail(self, msg: str) -> None:
        print(f"  FAIL {msg}")
        self.failures.append(msg)


class StartFailure(Exception):
    pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin-dir", required=True, type=Path, help="where the built binaries are (target/debug)")
    ap.add_argument("--postgres", default=os.environ.get("TEST_DATABASE_URL") or None,
                    help="PostgreSQL server for sets that render a PostgreSQL URL (default TEST_DATABASE_URL)")
    ap.add_argument("values", nargs="+", type=Path, help="charts/<chart>/ci/<set>-values.yaml")
    opts = ap.parse_args()
    runner = Runner(opts.bin_dir, opts.postgres)
    for values in opts.values:
        chart_dir = values.resolve().parent.parent
        chart = chart_dir.name
        set_name = values.name.removesuffix(".yaml").removesuffix("-values")
        if chart not in NAMESPACE:
            runner.fail(f"{values}: not a value set of {' or '.join(NAMESPACE)}")
            continue
        binary = opts.bin_dir / chart
        if not os.access(binary, os.X_OK):
            runner.fail(f"{binary} not found: build it first (cargo build --locked --bins)")
            continue
        res = subprocess.run(["helm", "template", chart, str(chart_dir), "-n", NAMESPACE[chart], "-f", str(values)],
                             capture_output=True, text=True)
        if res.returncode:
            runner.fail(f"{chart} {set_name}: does not render: {last_line(res.stderr)}")
            continue
        rendered = Rendered([d for d in yaml.safe_load_all(res.stdout) if isinstance(d, dict) and d.get("kind")])
        pods = app_pods(rendered, chart)
        if not pods:
            runner.fail(f"{chart} {set_name}: renders no Deployment")
        for what, pod, container in pods:
            try:
                start = resolve(rendered, pod, container, what)
            except SystemExit as e:
                runner.fail(f"{chart} {set_name}: {e}")
                continue
            runner.run(chart, set_name, start)
    if runner.failures:
        print(f"  {len(runner.failures)} pod template(s) render but do not start: the pods would crash-loop")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
