"""schemathesis hooks of scripts/api/fuzz-openapi.py (loaded through SCHEMATHESIS_HOOKS).

POST /invoices takes an Idempotency-Key, and the same key with another body is a 422
(idempotency_key_reused). The document can say what a key looks like, not that it must be
fresh for a new body, so the generated keys repeat across bodies (the coverage phase uses a
few values over and over) and schemathesis would read the 422 as valid data refused. In the
cases it means to be valid, the key gets the body's digest appended: the same key and body
still replay (those answers are checked against the document too), another body is another
key. Negative cases keep their keys, so the 400s are still fuzzed (and a reused key there
is one more refusal, as a negative case expects)."""

import hashlib
import json
import re

import schemathesis

HEADER = "idempotency-key"
VALID = re.compile(r"[!-~]{1,255}")
TAIL = 17  # "." and 16 hex digits


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    # Positive cases only: schemathesis judges an edited case again, and a negative one (say,
    # sent without Authorization) would turn positive and go out with the credential.
    meta = case.meta
    if not case.headers or meta is None or not meta.generation.mode.is_positive:
        return
    for name, value in list(case.headers.items()):
        if name.lower() != HEADER or not isinstance(value, str) or not VALID.fullmatch(value):
            continue
        body = json.dumps(case.body, sort_keys=True, default=str)
        digest = hashlib.sha256(body.encode()).hexdigest()[:TAIL - 1]
        case.headers[name] = f"{value[:255 - TAIL]}.{digest}"
