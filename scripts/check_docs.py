"""Documentation that runs: the `bash` blocks of the README and docs/, in order, in a fresh copy.

    uv run python scripts/check_docs.py          # fast lane (CI): links and files, then the fast blocks
    uv run python scripts/check_docs.py --all    # also the slow blocks: the demo, the paper table (~30 min)

First every link, anchor and repository path named in the pages (README.md, docs/*.md,
benchmarks/README.md, packages/*/README.md) is checked against the working tree. Then the files git
tracks or would track (nothing ignored: no .venv, no build/) are copied to a temporary folder, set up
with `uv sync --locked` (the README's setup without `pip install uv`; the uv cache makes it quick), and
every fenced `bash` block of README.md and then of docs/*.md (by name) runs there with `bash -eo
pipefail`, as written, with fresh caches (URP_CACHE_DIR, HF_HOME) as on a new machine. A block runs
unless the HTML comment on the line before its fence says otherwise:

    <!-- docs: slow -->                 only with --all (minutes: training, the demo, the paper table)
    <!-- docs: skip REASON -->          never here (a GPU, the network, a cluster); the reason is printed

A leading `pip install uv && ` is dropped when uv is already installed (it would change this machine's
Python). The first failing block stops the run (exit 1) with its page, line and output, and the copy is
kept for a look; otherwise it is removed. Exit 2: a page marks a block in a way this script does not know.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^<!--\s*docs:\s*(.*?)\s*-->$")
FENCE = re.compile(r"^(```+|~~~+)\s*([\w-]*)")
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
REPO_PATH = re.compile(r"(?<![\w/.~$-])((?:configs|scripts|docs|data|benchmarks|packages|tests)/[\w./-]*[\w/])")
PLACEHOLDER = re.compile(r"[A-Z]{3,}|\.\.\.|[<>{}*]")  # RECIPE_SET, <set>, {a,b}, *: not literal paths
BLOCK_TIMEOUT_S = {"fast": 600, "slow": 3600}


@dataclass(frozen=True)
class Block:
    """One fenced `bash` block: where it is, what it runs, and its lane (fast, slow or skip)."""

    page: Path
    line: int  # 1-based line of the opening fence
    code: str
    lane: str
    reason: str = ""

    def where(self) -> str:
        return f"{self.page.relative_to(REPO) if self.page.is_relative_to(REPO) else self.page}:{self.line}"


class DocsError(ValueError):
    """A page marks a block in a way this script does not know."""


def run_pages(root: Path) -> list[Path]:
    """The pages whose blocks run, in order: README.md, then docs/*.md by name."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def link_pages(root: Path) -> list[Path]:
    """The pages whose links and paths are checked."""
    return [*run_pages(root), root / "benchmarks" / "README.md", *sorted((root / "packages").glob("*/README.md"))]


def blocks(page: Path) -> list[Block]:
    """The `bash` blocks of ``page`` with their lanes, from the marker on the line before each fence."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith(fence.group(1))), len(lines))
        if fence.group(2) == "bash":
            marker = MARKER.match(lines[i - 1].strip()) if i else None
            lane, reason = "fast", ""
            if marker:
                word, _, reason = marker.group(1).partition(" ")
                if word == "slow" and not reason:
                    lane = "slow"
                elif word == "skip" and reason:
                    lane = "skip"
                else:
                    raise DocsError(f"{page}:{i}: unknown marker {marker.group(0)!r}; use "
                                    "<!-- docs: slow --> or <!-- docs: skip REASON -->")
            found.append(Block(page, i + 1, "\n".join(lines[i + 1:end]) + "\n", lane, reason))
        i = end + 1
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower()).replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a Markdown page (a repeated heading gets -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    in_code = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            in_code = not in_code
        elif not in_code and (m := re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)):
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_links(page: Path, root: Path) -> list[str]:
    """Links to files or anchors that do not exist, and paths named (from the root or the page's folder) that do not."""
    text = page.read_text(encoding="utf-8")
    where = page.relative_to(root)
    problems = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http(s), mailto: not checked (no network here)
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            problems.append(f"{where}: link to {target}: {path} does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{where}: link to {target}: no heading #{anchor} in {dest.relative_to(root)}")
    prose = LINK.sub(lambda m: m.group(0).split("](")[0], text)  # a link's target is checked above
    for name in sorted(set(REPO_PATH.findall(prose))):
        if not PLACEHOLDER.search(name) and not (root / name).exists() and not (page.parent / name).exists():
            problems.append(f"{where}: names {name}, which does not exist")
    return problems


def fresh_copy(root: Path, dest: Path) -> None:
    """The files git tracks or would track (none it ignores), as a fresh clone of this tree would hold."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = root / name
        if src.is_file():  # a tracked file deleted in the working tree is left out, as a commit would
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def clean_env(home: Path) -> dict[str, str]:
    """This process's environment without its virtual environment, and with fresh caches under ``home``."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "PYTHONPATH")}
    venv_bin = os.environ.get("VIRTUAL_ENV", "") and str(Path(os.environ["VIRTUAL_ENV"]) / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and p != venv_bin)
    env.update(URP_CACHE_DIR=str(home / "urp-cache"), HF_HOME=str(home / "hf"))
    return env


def run_block(block: Block, cwd: Path, env: dict[str, str], log: Path) -> tuple[bool, float]:
    """Run one block in ``cwd``; its output goes to ``log``. Returns (passed, seconds)."""
    code = block.code
    if code.startswith("pip install uv && ") and shutil.which("uv", path=env["PATH"]):
        code = code.removeprefix("pip install uv && ")
        print("        (uv is installed: `pip install uv && ` dropped)", flush=True)
    start = time.monotonic()
    with log.open("w") as out:
        try:
            done = subprocess.run(["bash", "-eo", "pipefail", "-c", code], cwd=cwd, env=env, stdout=out,
                                  stderr=subprocess.STDOUT, timeout=BLOCK_TIMEOUT_S[block.lane], check=False)
            passed = done.returncode == 0
        except subprocess.TimeoutExpired:
            out.write(f"\ncheck_docs: timed out after {BLOCK_TIMEOUT_S[block.lane]} s\n")
            passed = False
    return passed, time.monotonic() - start


def run_all(todo: list[Block], lanes: set[str], cwd: Path, env: dict[str, str], logs: Path) -> bool:
    """Run the blocks of ``lanes`` in order, print one line per block; stop at the first failure."""
    for n, block in enumerate(todo, 1):
        first = block.code.strip().splitlines()[0] if block.code.strip() else "(empty)"
        if block.lane not in lanes:
            why = block.reason if block.lane == "skip" else "slow; runs with --all"
            print(f"  skip  {block.where()}: {why}", flush=True)
            continue
        print(f"  run   {block.where()}: {first}", flush=True)
        passed, seconds = run_block(block, cwd, env, logs / f"block-{n:02d}.log")
        if not passed:
            tail = (logs / f"block-{n:02d}.log").read_text(errors="replace").splitlines()[-25:]
            print(f"  FAIL  {block.where()} after {seconds:.0f} s; its output ends:", file=sys.stderr)
            print("\n".join("        " + t for t in tail), file=sys.stderr)
            return False
        print(f"        ok in {seconds:.1f} s", flush=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--all", action="store_true", help="run the slow blocks too (the demo, the paper table)")
    args = parser.parse_args(argv)
    start = time.monotonic()
    try:
        todo = [b for page in run_pages(REPO) for b in blocks(page)]
    except DocsError as exc:
        print(f"check_docs: error: {exc}", file=sys.stderr)
        return 2
    problems = [p for page in link_pages(REPO) for p in broken_links(page, REPO)]
    for problem in problems:
        print(f"check_docs: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"links and paths of {len(link_pages(REPO))} pages: ok", flush=True)
    work = Path(tempfile.mkdtemp(prefix="urp-docs-"))
    clone, home = work / "urp", work / "home"
    fresh_copy(REPO, clone)
    env = clean_env(home)
    print(f"fresh copy in {clone}; uv sync --locked", flush=True)
    sync = subprocess.run(["uv", "sync", "--locked"], cwd=clone, env=env, capture_output=True, text=True, check=False)
    passed = sync.returncode == 0 and run_all(todo, {"fast", "slow"} if args.all else {"fast"}, clone, env, work)
    if sync.returncode != 0:
        print(f"check_docs: uv sync --locked failed:\n{sync.stderr}", file=sys.stderr)
    minutes, seconds = divmod(round(time.monotonic() - start), 60)
    if not passed:
        print(f"check_docs: failed after {minutes} min {seconds} s; the copy and the logs are kept in {work}",
              file=sys.stderr)
        return 1
    shutil.rmtree(work, ignore_errors=True)
    print(f"check_docs: {'all' if args.all else 'fast'} blocks passed in {minutes} min {seconds} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
