"""schemathesis against the API's own OpenAPI document on the running server (a short run of
every phase, the stateful one included: accounts it creates and top-ups it makes feed later
calls): no 5xx, every response's status, content type, headers and body as documented."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_headers_conformance,response_schema_conformance")


def test_the_api_conforms_to_its_openapi_document(make_api, tmp_path):
    env = make_api()
    # the served document, with the plans this server's catalog has: so the stateful phase
    # creates accounts (a plan it makes up is a 422) and goes on to top them up, read them...
    with env.http() as http:
        doc = http.get("/openapi.json").json()
    doc["components"]["schemas"]["AccountCreate"]["properties"]["plan"]["enum"] = \
        ["PREPAID_S"]
    schema = tmp_path / "openapi.json"
    schema.write_text(json.dumps(doc))
    cli = Path(sys.executable).with_name("schemathesis")
    args = [str(cli), "run", str(schema), "--url", env.url, "--checks", CHECKS,
            "-H", f"Authorization: Bearer {env.keys['admin']}",
            "--max-examples", "10", "--seed", "17", "--workers", "1",
            "--generation-database", "none", "--request-timeout", "10",
            "--max-time", "15", "--no-color", "--report", "junit",
            "--report-dir", str(tmp_path)]
    res = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false"})
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-6000:]
    assert "passed" in out
