"""The OpenAPI document describes every route, its docs page works offline, and schemathesis
finds no server error and no answer outside the document, against a live service with a real
worker (the bundled model's tiny stand-in)."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from services.api.openapi.document import documented_rules, undeclared_routes
from tests.support import REPO_ROOT

# Examples per operation and phase: enough to reach every branch of the bodies' schemas
# in about a minute on two cores.
MAX_EXAMPLES = 12
CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance"


def test_every_route_is_in_the_document(app: Flask, client: FlaskClient) -> None:
    assert undeclared_routes(app) == set()
    document = client.get("/openapi.json").get_json()
    assert document["openapi"] == "3.1.0"
    operations = [op for path in document["paths"].values() for op in path.values()]
    assert len(operations) == len(documented_rules(app))
    assert len({op["operationId"] for op in operations}) == len(operations)
    assert all("401" in op["responses"] for op in operations if op.get("security") != [])
    create = document["paths"]["/v1/jobs"]["post"]
    assert set(create["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    assert {p["name"] for p in create["parameters"]} == {"Prefer", "Idempotency-Key"}
    assert create["responses"]["202"]["links"]["GetJob"]["operationId"] == "getJob"
    assert "Location" in create["responses"]["202"]["headers"]


def test_the_docs_page_is_served_with_its_own_assets(client: FlaskClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.get_data(as_text=True))
    assert assets and not [url for url in assets if "://" in url]  # no CDN
    for asset in assets:
        answer = client.get(asset)
        assert answer.status_code == 200, asset
        assert len(answer.get_data()) > 100
    assert client.get("/docs/assets/../../secrets").status_code == 404


@pytest.mark.slow
@pytest.mark.usefixtures("worker", "background_worker")
def test_schemathesis_finds_no_server_error_and_no_answer_off_the_document(
    live_server: str, api_key: str, tmp_path: Path
) -> None:
    with urllib.request.urlopen(f"{live_server}/openapi.json", timeout=10) as response:
        assert response.status == 200
    report = tmp_path / "schemathesis.txt"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{live_server}/openapi.json",
            "--checks",
            CHECKS,
            "--header",
            f"Authorization: Bearer {api_key}",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--request-timeout",
            "60",
            # One thread: CPython 3.11's ast.parse is not thread-safe, and hypothesis
            # parses lambdas while describing strategies ("AST constructor recursion
            # depth mismatch" with two workers).
            "--workers",
            "1",
            "--seed",
            "1",
            "--suppress-health-check",
            "all",
            "--no-color",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = done.stdout + done.stderr
    report.write_text(output)
    print(output[-3000:])
    assert done.returncode == 0, output[-8000:]
