"""Session fixtures shared by the cross-package tests: a real demo build, a tiny offline VLM, a real browser,
and the vLLM processes the slow tests share, started early."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def demo_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `demo` region built offline from data/ (the same build as the README's first command)."""
    from urp_data.build.run import build_region

    return build_region("demo", out=tmp_path_factory.mktemp("builds"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight Qwen2.5-VL-shaped model with the real Qwen2.5 vocabulary, built offline."""
    from urp_train.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen2.5-vl")


# --------------------------------------------------------------------------- a real browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class RenderedPage:
    """What headless Chromium made of a page: its pixels, element boxes, errors and requests."""

    pixels: np.ndarray  # (H, W, 3) uint8, the whole page
    boxes: dict[str, list[tuple[int, int, int, int]]]  # CSS selector -> (x, y, width, height) in page px
    errors: list[str]  # console errors and uncaught exceptions
    requests: list[str]  # every URL the page asked for
    images_ok: bool  # every <img> decoded

    def crop(self, box: tuple[int, int, int, int]) -> np.ndarray:
        x, y, w, h = box
        return self.pixels[y:y + h, x:x + w]


class _DevTools:
    """A minimal Chrome DevTools Protocol client: one command at a time, events kept for later."""

    def __init__(self, url: str) -> None:
        import websocket

        self.ws = websocket.create_connection(url, timeout=60, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []

    def __call__(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]
            self.events.append(msg)


_BOXES_JS = """selectors => JSON.stringify(Object.fromEntries(selectors.map(s => [s,
    [...document.querySelectorAll(s)].map(e => { const r = e.getBoundingClientRect();
     return [Math.round(r.x + scrollX), Math.round(r.y + scrollY), Math.round(r.width), Math.round(r.height)]; })])))"""


def render_page(path: Path, selectors: list[str], tmp: Path, width: int = 1400, ready: str = "true") -> RenderedPage:
    """Open ``path`` from file:// in headless Chromium with every network request blocked.

    Outside hosts resolve to nothing and any proxy connection goes to a closed local port, so a page
    that needs the network shows it as errors and as entries in ``requests``. ``ready`` is a JS
    expression polled until true (e.g. plots drawn) before the screenshot.
    """
    import io

    from PIL import Image

    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", f"--user-data-dir={tmp / 'profile'}",
         "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND", f"--window-size={width},900",
         "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        port = None
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {proc.returncode}")
            if m := re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line):
                port = int(m.group(1))
        assert port, "chromium did not report its DevTools port within 60 s"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        targets = json.loads(opener.open(f"http://127.0.0.1:{port}/json/list", timeout=30).read())
        cdp = _DevTools(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Network", "Log"):
            cdp(f"{domain}.enable")
        cdp("Page.navigate", url=path.resolve().as_uri())
        state = None
        for _ in range(60):  # bounded: 30 s
            state = cdp("Runtime.evaluate", expression=f"document.readyState === 'complete' && ({ready})",
                        returnByValue=True)["result"].get("value")
            if state:
                break
            time.sleep(0.5)
        assert state, f"{path.name} was not ready within 30 s ({ready}); {_errors(cdp.events)}"
        height = cdp("Runtime.evaluate", expression="document.documentElement.scrollHeight",
                     returnByValue=True)["result"]["value"]
        cdp("Emulation.setDeviceMetricsOverride", width=width, height=int(height), deviceScaleFactor=1, mobile=False)
        time.sleep(0.5)  # let responsive plots relayout to the new viewport
        boxes = cdp("Runtime.evaluate", expression=f"({_BOXES_JS})({json.dumps(selectors)})",
                    returnByValue=True)["result"]["value"]
        images_ok = cdp("Runtime.evaluate", returnByValue=True, expression=(
            "[...document.images].every(i => i.complete && i.naturalWidth > 0)"))["result"]["value"]
        shot = cdp("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        events = cdp.events
        cdp.ws.close()
    finally:
        stop(proc, timeout=20)
    requests = [e["params"]["request"]["url"] for e in events if e.get("method") == "Network.requestWillBeSent"]
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(shot))).convert("RGB"))
    return RenderedPage(pixels, {k: [tuple(b) for b in v] for k, v in json.loads(boxes).items()}, _errors(events),
                        requests, bool(images_ok))


def _errors(events: list[dict]) -> list[str]:
    """Console errors, uncaught exceptions and failed loads among DevTools events."""
    return [json.dumps(e["params"])[:300] for e in events if e.get("method") == "Runtime.exceptionThrown"
            or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
            or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]


@pytest.fixture
def browser(tmp_path: Path):
    """:func:`render_page` in a fresh Chromium profile; skips where the Debian chromium package is missing."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run installs it)")
    return lambda path, selectors, **kw: render_page(path, selectors, tmp_path, **kw)


def stop(proc: subprocess.Popen, timeout: float) -> None:
    """Terminate a process the tests started, then kill it if it outlives ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------------- vLLM processes, started early

VLLM_PROCESS_TESTS = {"test_vllm_server.py": "server", "test_vllm_grpo.py": "colocate"}
"""Test files whose vLLM process starts with the first test under tests/, not when the file comes up.

Each process spends one to two minutes starting vLLM (imports, processor loading, the multimodal
warm-up), mostly on one core. Started early, that overlaps the other end-to-end tests here instead of
adding to the suite's time. Only the processes of the files this session runs are started."""


@dataclass
class VLLMProcess:
    """A vLLM process started in the background: the process, its log, and the port it serves (server only)."""

    proc: subprocess.Popen
    log: Path
    port: int = 0
    out: Path | None = None  # the colocate check's report folder

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(model: Path, tmp: Path) -> VLLMProcess:
    """TRL's ``vllm serve`` command for the tiny model on loopback (see test_vllm_server.py for the one change)."""
    from trl.scripts.vllm_serve import ScriptArguments, build_command

    port = _free_port()
    command = build_command(
        ScriptArguments(model=str(model), host="127.0.0.1", port=port, max_model_len=1024,
                        enforce_eager=True),  # no torch.compile at start-up: the test is about requests
        ["--mm-processor-kwargs", '{"min_pixels": 12544, "max_pixels": 12544}'])
    i = command.index("vllm.entrypoints.cli.main")
    assert command[i + 1] == "serve"
    command = [*command[:i], "vllm.entrypoints.openai.api_server", "--model", command[i + 2], *command[i + 3:]]
    log = tmp / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "VLLM_SERVER_DEV_MODE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"})
    return VLLMProcess(proc, log, port=port)


def _start_colocate(build: Path, model: Path, tmp: Path) -> VLLMProcess:
    """tests/vllm_grpo_check.py: two GRPO steps with vLLM colocated, in its own process (it initialises torch.distributed)."""
    log = tmp / "check.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("vllm_grpo_check.py")), str(build),
                                 str(model), str(tmp)], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return VLLMProcess(proc, log, out=tmp)


def _vllm_processes_wanted(session: pytest.Session) -> set[str]:
    """The names of the vLLM processes whose test files this session runs."""
    return {VLLM_PROCESS_TESTS[name] for item in session.items
            if (name := Path(str(item.path)).name) in VLLM_PROCESS_TESTS}


@pytest.fixture(scope="session")
def vllm_processes(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """The vLLM processes of the test files in this session, by name ("server", "colocate"); stopped at the end."""
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm is not installed (uv sync installs vLLM's CPU build on Linux x86_64)")
    wanted = _vllm_processes_wanted(request.session)
    started: dict[str, VLLMProcess] = {}
    try:
        if "colocate" in wanted:
            build, model = request.getfixturevalue("demo_build"), request.getfixturevalue("tiny_model_dir")
            started["colocate"] = _start_colocate(build, model, tmp_path_factory.mktemp("grpo-vllm"))
        if "server" in wanted:
            started["server"] = _start_server(request.getfixturevalue("tiny_model_dir"),
                                              tmp_path_factory.mktemp("vllm-serve"))
        yield started
    finally:
        for process in started.values():
            stop(process.proc, timeout=60)


@pytest.fixture(scope="session", autouse=True)
def _vllm_early(request: pytest.FixtureRequest) -> None:
    """Start :func:`vllm_processes` with the first test under tests/ when this session runs their files."""
    if importlib.util.find_spec("vllm") is not None and _vllm_processes_wanted(request.session):
        request.getfixturevalue("vllm_processes")
