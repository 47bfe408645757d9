"""docker-compose.yml renders under the Compose specification, defaults no secret, and keeps
the monitoring containers away from the data.

`docker compose config` is what an operator runs; this machine has no Compose, so the test
does what it does: interpolate the variables as Compose does (`${VAR:?err}` refuses to
render without VAR) and validate the result against the Compose specification's own JSON
schema (tests/data/compose-spec.json, from github.com/compose-spec/compose-spec).
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema_rs
import pytest
import yaml

from tests.support import REPO_ROOT

COMPOSE = REPO_ROOT / "docker-compose.yml"
ENV_EXAMPLE = REPO_ROOT / "deploy" / "compose.env.example"
SCHEMA = REPO_ROOT / "tests" / "data" / "compose-spec.json"
# `$$`, `${NAME}`, `${NAME<op><word>}` (op one of :- - :? ? :+ +), `$NAME`.
VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_]\w*)(?:(?P<op>:?[-?+])(?P<word>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_]\w*))"
)
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|KEY")


class MissingVariable(Exception):
    """A `${VAR:?err}` whose VAR is not set."""


def interpolate(value: Any, env: dict[str, str], missing: set[str]) -> Any:
    """`value` with its variables replaced as Compose does (the refusals collected)."""
    if isinstance(value, dict):
        return {key: interpolate(item, env, missing) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env, missing) for item in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["bare"]
        op, word = match["op"] or "", match["word"] or ""
        unset = name not in env or (op.startswith(":") and env[name] == "")
        if op.endswith("?") and unset:
            missing.add(name)
            return ""
        if op.endswith("-") and unset:
            return word
        if op.endswith("+"):
            return "" if unset else word
        return env.get(name, "")

    return VARIABLE.sub(replace, value)


def rendered(env: dict[str, str]) -> tuple[dict[str, Any], set[str]]:
    missing: set[str] = set()
    return interpolate(yaml.safe_load(COMPOSE.read_text()), env, missing), missing


def required_names() -> set[str]:
    """The variables deploy/compose.env.example asks the operator to fill."""
    return {
        line.split("=", 1)[0]
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    }


def test_compose_refuses_to_render_until_every_secret_is_set() -> None:
    _, missing = rendered({})
    assert missing == required_names()
    filled = {name: "s3cret-value" for name in required_names()}
    config, missing = rendered(filled)
    assert missing == set()
    errors = list(jsonschema_rs.validator_for(json.loads(SCHEMA.read_text())).iter_errors(config))
    assert errors == []
    # The filled values reach the services that need them.
    api = config["services"]["api"]["environment"]
    assert api["VLMQ_REDIS_URL"] == "redis://:s3cret-value@redis:6379/0"
    assert ":s3cret-value@postgres" in api["VLMQ_DATABASE_URL"]


def test_no_secret_has_a_default() -> None:
    for match in VARIABLE.finditer(COMPOSE.read_text()):
        name = match["braced"] or match["bare"]
        if name and SECRET_NAME.search(name):
            assert match["op"] in (":?", "?"), f"{match[0]} has a default or none required"
    assert "admin" not in {
        str(value)
        for value in yaml.safe_load(COMPOSE.read_text())["services"]["grafana"][
            "environment"
        ].values()
    }


@pytest.mark.parametrize("name", ["prometheus", "grafana"])
def test_monitoring_listens_on_loopback_and_cannot_reach_the_data(name: str) -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services, networks = compose["services"], compose["networks"]
    assert all(port.startswith("127.0.0.1:") for port in services[name]["ports"])
    data_networks = set(services["postgres"]["networks"]) | set(services["redis"]["networks"])
    assert data_networks.isdisjoint(services[name]["networks"])
    assert all(networks[network]["internal"] for network in data_networks)
