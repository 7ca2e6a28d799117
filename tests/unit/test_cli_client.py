"""The CLI's client: settings resolution, SigV4 signing with botocore's signer, the local
identity header, retries of what is safe to repeat, and API errors as one line and an exit code."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from lsstctl.cli.client import ApiError, Client, CliError, Settings, exit_code_for, read_config, write_config


class Recorder(BaseHTTPRequestHandler):
    """A stand-in API: records each request; answers from a script of (status, body, headers)."""

    seen: list[dict[str, Any]] = []
    script: list[tuple[int, Any, dict[str, str]]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        Recorder.seen.append({"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body})
        status, answer, headers = Recorder.script.pop(0) if Recorder.script else (200, {"ok": True}, {})
        data = json.dumps(answer).encode()
        self.send_response(status)
        for k, v in {"Content-Type": "application/json", "Content-Length": str(len(data)), **headers}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def server():
    Recorder.seen, Recorder.script = [], []
    httpd = HTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


def test_requests_are_signed_with_sigv4_for_execute_api_in_the_region(server, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token-1")
    client = Client(Settings(endpoint=server + "/api", region="eu-west-2"))
    client.request("POST", "/clusters", {"name": "x"})
    client.request("POST", "/clusters", {"name": "y"})
    first, second = (r["headers"] for r in Recorder.seen)
    assert first["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-2/execute-api/aws4_request" in first["Authorization"]
    assert "SignedHeaders=" in first["Authorization"] and "host" in first["Authorization"]
    assert first["X-Amz-Security-Token"] == "token-1" and first["X-Amz-Date"]
    assert "X-Lsst-Principal" not in first
    # The body is part of the signature; each POST carries its own Idempotency-Key
    assert first["Authorization"].split("Signature=")[1] != second["Authorization"].split("Signature=")[1]
    assert first["Idempotency-Key"] != second["Idempotency-Key"]
    assert Recorder.seen[0]["path"] == "/api/clusters"


def test_the_region_comes_from_api_gateways_host_name():
    from lsstctl.cli.client import _region_of

    assert _region_of("https://a1b2c3.execute-api.ap-southeast-2.amazonaws.com/api") == "ap-southeast-2"
    assert _region_of("http://127.0.0.1:8000") is None


def test_locally_the_caller_names_itself_and_nothing_is_signed(server):
    client = Client(Settings(endpoint=server, principal="alice"))
    client.request("GET", "/clusters", query={"owner": None, "tail": 5})
    headers = Recorder.seen[0]["headers"]
    assert headers["X-Lsst-Principal"] == "alice" and "Authorization" not in headers
    assert "Idempotency-Key" not in headers and Recorder.seen[0]["path"] == "/clusters?tail=5"


def test_unavailable_answers_are_retried_after_retry_after_with_the_same_key(server):
    Recorder.script = [(503, {"error": {"code": "aws_unavailable", "message": "x"}}, {"Retry-After": "0"})] * 2
    answer = Client(Settings(endpoint=server, principal="alice")).request("DELETE", "/clusters/a")
    assert answer == {"ok": True} and len(Recorder.seen) == 3
    assert len({r["headers"]["Idempotency-Key"] for r in Recorder.seen}) == 1  # the API does it once


def test_api_errors_become_one_line_and_an_exit_code(server):
    Recorder.script = [
        (400, {"error": {"code": "validation_error", "message": "too small", "field": "budget_usd"}}, {})
    ]
    with pytest.raises(ApiError) as raised:
        Client(Settings(endpoint=server, principal="alice")).request("POST", "/clusters", {})
    assert raised.value.message == "validation_error (400): too small [budget_usd]"
    assert raised.value.exit_code == 4 and raised.value.body["error"]["field"] == "budget_usd"
    assert [exit_code_for(s) for s in (404, 401, 403, 409, 422, 429, 500, 503)] == [3, 5, 5, 4, 4, 6, 6, 6]


def test_settings_come_from_flags_then_environment_then_the_config_file(tmp_path, monkeypatch):
    config = tmp_path / "config.toml"
    monkeypatch.setenv("LSSTCTL_CONFIG", str(config))
    for name in ("LSSTCTL_ENDPOINT", "LSSTCTL_PRINCIPAL", "AWS_PROFILE", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(CliError) as raised:
        Settings.resolve()
    assert raised.value.exit_code == 2 and "no API endpoint" in raised.value.message
    write_config({"endpoint": "https://from-file", "principal": "bob"})
    assert read_config() == {"endpoint": "https://from-file", "principal": "bob"}
    assert Settings.resolve().endpoint == "https://from-file"
    monkeypatch.setenv("LSSTCTL_ENDPOINT", "https://from-env")
    assert Settings.resolve().endpoint == "https://from-env"
    assert Settings.resolve(endpoint="https://from-flag").endpoint == "https://from-flag"
    config.write_text("endpoint = [broken")
    with pytest.raises(CliError):
        read_config()


def test_new_log_lines_are_those_after_what_was_printed():
    from lsstctl.cli.commands import _new_lines

    assert _new_lines([], ["a", "b"]) == ["a", "b"]
    assert _new_lines(["a", "b"], ["a", "b", "c"]) == ["c"]
    assert _new_lines(["a", "b", "c"], ["b", "c", "d", "e"]) == ["d", "e"]  # the tail moved on
    assert _new_lines(["a", "b"], ["a", "b"]) == []
    assert _new_lines(["x"], ["y", "z"]) == ["y", "z"]  # more lines than the tail: none lost twice


def test_up_sends_the_preset_unless_a_spec_file_of_its_own_is_given(server, tmp_path, monkeypatch):
    from lsstctl.cli.commands import main

    monkeypatch.setenv("LSSTCTL_CONFIG", str(tmp_path / "none.toml"))
    accepted = (202, {"cluster": {"state": "requested"}, "status_url": "/clusters/x"}, {})
    spec = tmp_path / "spec.yaml"
    spec.write_text("queues:\n  - {name: q, instance_types: [c5.large], max_nodes: 2}\nbudget_usd: 9\n")
    Recorder.script = [accepted] * 3
    base = ["--endpoint", server, "--as", "alice", "up", "x"]
    assert main([*base, "--budget", "5"]) == 0
    assert main([*base, "--spec", str(spec)]) == 0
    assert main([*base, "--spec", str(spec), "--preset", "medium", "--budget", "7"]) == 0
    bodies = [json.loads(r["body"]) for r in Recorder.seen]
    assert bodies[0] == {"name": "x", "budget_usd": 5, "preset": "small"}
    assert "preset" not in bodies[1] and bodies[1]["budget_usd"] == 9 and bodies[1]["queues"][0]["name"] == "q"
    assert bodies[2]["preset"] == "medium" and bodies[2]["budget_usd"] == 7
    assert main([*base]) == 2 and len(Recorder.seen) == 3  # no budget anywhere: usage, nothing sent
