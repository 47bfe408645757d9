"""The client commands explain a failure (the server's message and a hint), never with a
traceback: a refused key, an API that is not there, a missing key, the wrong file."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.request import Request

import pytest
from click.testing import CliRunner, Result

from tests.support import REPO_ROOT, chat_batch_input, free_port
from tests.webhook_receiver import Reply, WebhookReceiver
from vlmq.cli import main
from vlmq.client import opened

IMAGE = str(REPO_ROOT / "tests" / "data" / "red_circle.png")


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    """`vlmq <args>` in this process, with no VLMQ_URL or VLMQ_API_KEY of the developer's."""
    clean = {"VLMQ_URL": None, "VLMQ_API_KEY": None, "VLMQ_API_KEY_FILE": None, **(env or {})}
    return CliRunner().invoke(main, list(args), env=clean)  # type: ignore[arg-type]


def refused_cleanly(result: Result) -> str:
    """The output of a command that failed the way click reports errors (no exception left)."""
    assert result.exit_code in (1, 2), result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result.output


def test_a_refused_key_prints_the_servers_message_and_a_hint(
    live_server: str, tmp_path: Path
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("nope\n")
    output = refused_cleanly(
        run("ask", IMAGE, "what color?", "--url", live_server, "--key-file", str(key_file))
    )
    assert "HTTP 401" in output and "invalid_api_key" in output
    assert "hint:" in output and "vlmq keys" in output


def test_the_url_comes_from_vlmq_url_and_an_absent_api_says_so() -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    output = refused_cleanly(
        run("ask", IMAGE, "what color?", env={"VLMQ_URL": nowhere, "VLMQ_API_KEY": "k"})
    )
    assert f"cannot reach the API at {nowhere}" in output
    assert "VLMQ_URL" in output


@pytest.mark.parametrize("command", [["ask", IMAGE, "q"], ["batch", "submit", IMAGE]])
def test_a_missing_key_names_the_variable(command: list[str]) -> None:
    output = refused_cleanly(run(*command))
    assert "VLMQ_API_KEY" in output and "--key-file" in output


def test_batch_flagged_on_an_input_file_says_which_file_it_wants(tmp_path: Path) -> None:
    path = tmp_path / "input.jsonl"
    path.write_bytes(chat_batch_input(2))
    output = refused_cleanly(run("batch", "flagged", str(path)))
    assert "input.jsonl:1" in output and "output file" in output


def test_batch_flagged_reads_an_output_file(tmp_path: Path) -> None:
    line = {
        "custom_id": "cat.png",
        "response": {"body": {"results": [{"categories": {"violence": True, "sexual": False}}]}},
    }
    path = tmp_path / "output.jsonl"
    path.write_text(json.dumps(line) + "\n")
    result = run("batch", "flagged", str(path))
    assert result.exit_code == 0 and result.output == "cat.png\tviolence\n"


def test_the_key_goes_only_to_the_origin_it_was_given_for() -> None:
    home, elsewhere = WebhookReceiver(), WebhookReceiver()
    try:
        home.script("/v1/here", Reply(302, location=home.url("/v1/still-here")))
        home.script("/v1/away", Reply(302, location=elsewhere.url("/v1/there")))
        for path in ("/v1/here", "/v1/away"):
            request = Request(home.url(path), headers={"Authorization": "Bearer vlmq-secret"})
            with opened(request, 10) as response:
                assert response.read() == b"ok"
        [same] = home.requests("/v1/still-here")
        assert same.headers.get("authorization") == "Bearer vlmq-secret"
        [other] = elsewhere.requests("/v1/there")
        assert not any(name.lower() == "authorization" for name in other.headers)
    finally:
        home.close()
        elsewhere.close()


def test_no_command_takes_a_key_on_its_command_line() -> None:
    for command in (["ask", "--help"], ["batch", "submit", "--help"]):
        help_text = run(*command).output
        assert "--key-file" in help_text and "--key " not in help_text
