"""urp_data.util.hub.check_model against a loopback emulation of the hub's model API, a closed
loopback port and the hub cache on disk: a missing model is named in one line, within a second,
after at most one request and none for a local-looking path."""

from __future__ import annotations

import json
import re
import socket
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import ClassVar

import pytest
import yaml
from servers import _running
from urp_data.errors import InputError
from urp_data.util import hub

REPO = Path(__file__).resolve().parents[3]


class Hub(BaseHTTPRequestHandler):
    """``GET /api/models/{org}/{name}[/revision/{rev}]`` as huggingface.co answers it: the model's JSON
    for ``known``, 403 ``GatedRepo`` for ``gated``, else 404 with ``X-Error-Code: RepoNotFound``."""

    known: ClassVar[set[str]] = {"urp-org/tiny"}
    gated: ClassVar[set[str]] = {"urp-org/gated"}
    log: ClassVar[list[str]] = []

    def do_GET(self):  # huggingface_hub may also fetch /api/agent-harnesses once a day (its telemetry)
        if self.path.startswith("/api/models/"):
            Hub.log.append(self.path)
        match = re.fullmatch(r"/api/models/([^/]+/[^/?]+)(?:/revision/[^?]+)?(?:\?.*)?", self.path)
        repo = match.group(1) if match else ""
        if repo in Hub.known:
            self._send(200, {"id": repo, "sha": "0" * 40}, {})
        elif repo in Hub.gated:
            self._send(403, {"error": "gated"}, {"X-Error-Code": "GatedRepo", "X-Error-Message": "gated"})
        else:
            self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})

    def _send(self, status: int, body: dict, headers: dict[str, str]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", "Content-Length": str(len(data)), **headers}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint(monkeypatch, tmp_path):
    """The emulated hub as HF_ENDPOINT, online, with an empty hub cache; the working folder is empty."""
    from huggingface_hub import constants

    Hub.log = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with _running(Hub) as url:
        monkeypatch.setattr(constants, "ENDPOINT", url)
        yield url


def _refusal(name: str, revision: str | None = None) -> str:
    start = time.monotonic()
    with pytest.raises(InputError) as info:
        hub.check_model(name, revision)
    assert time.monotonic() - start < 1.0
    message = str(info.value)
    assert "\n" not in message and repr(name) in message
    return message


def test_a_missing_local_folder_names_the_command_that_makes_it_and_asks_no_hub(endpoint):
    message = _refusal("runs/demo-warmstart")
    assert "looks like a local path" in message
    assert "`urp-train sft --config configs/train/warmstart_demo.yaml`" in message
    assert "looks like a local path" in _refusal("./somewhere/my-model") and "check the path" in _refusal("a/b/c")
    assert "urp-train tiny-model" in _refusal(str(Path.cwd() / "models" / "tiny-qwen2.5-vl"))
    Path("checkpoints").mkdir()  # an existing first part makes org/name a local path
    assert "looks like a local path" in _refusal("checkpoints/run-1")
    assert Hub.log == []


def test_folders_and_models_the_hub_knows_pass(endpoint, tmp_path):
    (tmp_path / "runs" / "demo-warmstart").mkdir(parents=True)
    hub.check_model("runs/demo-warmstart")
    hub.check_model(str(tmp_path / "runs" / "demo-warmstart"))
    assert Hub.log == []
    hub.check_model("urp-org/tiny")
    hub.check_model("urp-org/tiny", "v1")
    hub.check_model("urp-org/gated")  # it exists; loading it says what access it needs
    assert Hub.log == ["/api/models/urp-org/tiny", "/api/models/urp-org/tiny/revision/v1", "/api/models/urp-org/gated"]


def test_a_model_the_hub_does_not_know_is_named_after_one_request(endpoint):
    message = _refusal("urp-org/no-such-model")
    assert f"{endpoint} has no model of that name" in message
    assert Hub.log == ["/api/models/urp-org/no-such-model"]


def test_an_unreachable_hub_is_said_so_with_hf_hub_offline(monkeypatch, tmp_path):
    from huggingface_hub import constants

    with socket.socket() as sock:  # a loopback port that nothing listens on: connections are refused
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(constants, "ENDPOINT", closed)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    message = _refusal("urp-org/tiny")
    assert "could not be asked" in message and closed in message and "HF_HUB_OFFLINE=1" in message
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    message = _refusal("urp-org/tiny")
    assert "HF_HUB_OFFLINE is set" in message and str(tmp_path / "hub-cache") in message


def test_offline_a_model_in_the_hub_cache_passes(endpoint, monkeypatch, tmp_path):
    from huggingface_hub import constants

    snapshot = tmp_path / "hub-cache" / "models--urp-org--cached" / "snapshots" / ("1" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("1" * 40)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    hub.check_model("urp-org/cached")
    assert "HF_HUB_OFFLINE is set" in _refusal("urp-org/other")
    assert Hub.log == []


def test_a_file_is_not_a_model(endpoint, tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert "is a file" in _refusal("model.safetensors")


def test_the_commands_named_make_those_folders():
    """Each entry of MADE_BY is the output of the recipe or flag its command names."""
    for folder, command in hub.MADE_BY.items():
        if "--config" in command:
            recipe = yaml.safe_load((REPO / command.split("--config ")[1]).read_text())
            assert recipe["output_dir"] == folder, command
        else:
            assert command.endswith(f"--out {folder}"), command
