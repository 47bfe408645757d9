"""The project's own files agree with the code: .env.example, docker-compose.yml."""

from __future__ import annotations

import re

import yaml
from click.testing import CliRunner

from services.core.config import Settings
from tests.support import REPO_ROOT
from vlmq.cli import main


def test_env_example_lists_every_setting_with_its_default() -> None:
    text = (REPO_ROOT / ".env.example").read_text()
    listed = dict(re.findall(r"^#?\s*(VLMQ_[A-Z_]+)=(.*)$", text, re.M))
    for name in Settings.model_fields:
        variable = f"VLMQ_{name.upper()}"
        assert variable in listed, f"{variable} missing from .env.example"


def test_compose_services_run_real_cli_commands() -> None:
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"api", "worker", "redis", "postgres", "migrate"} <= set(services)
    runner = CliRunner()
    for name in ("api", "worker", "migrate"):
        command = services[name]["command"]
        argv = command.split() if isinstance(command, str) else list(command)
        assert argv[0] == "vlmq", name
        # The subcommand exists and accepts these options.
        result = runner.invoke(main, [*argv[1:], "--help"])
        assert result.exit_code == 0, (name, result.output)
    gpu = services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]
    for name in ("api", "worker", "migrate"):
        env = services[name]["environment"]
        assert env["VLMQ_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["VLMQ_REDIS_URL"].startswith("redis://")
    assert "create_server" in (REPO_ROOT / "vlmq" / "cli.py").read_text()
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert (
        "pip install" in dockerfile
        and "torch==2.14.1" in (REPO_ROOT / "pyproject.toml").read_text()
    )


def test_the_monitoring_profile_scrapes_every_process_and_provisions_the_dashboard() -> None:
    services = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
        for volume in services[name]["volumes"]:
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (REPO_ROOT / source).exists(), volume
    scrape = yaml.safe_load((REPO_ROOT / "deploy" / "monitoring" / "prometheus.yml").read_text())
    targets = {
        config["names"][0]: config["port"]
        for job in scrape["scrape_configs"]
        for config in job["dns_sd_configs"]
    }
    assert targets["api"] == int(services["api"]["environment"]["VLMQ_PORT"])
    for name in ("worker", "webhooks", "batches"):
        assert targets[name] == int(services[name]["environment"]["VLMQ_METRICS_PORT"])
    provisioned = REPO_ROOT / "deploy" / "monitoring" / "grafana" / "provisioning"
    datasource = yaml.safe_load((provisioned / "datasources" / "prometheus.yml").read_text())
    dashboard = (REPO_ROOT / "deploy/monitoring/grafana/dashboards/vlmq.json").read_text()
    assert f'"uid": "{datasource["datasources"][0]["uid"]}"' in dashboard
