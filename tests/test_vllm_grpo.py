"""`urp-train grpo` with vLLM colocated (TRL's colocate mode) on vLLM's CPU build: generation and weight sync."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def colocate_report(vllm_processes: dict) -> dict:
    """The report of tests/vllm_grpo_check.py, which conftest started early in its own process."""
    check = vllm_processes["colocate"]
    check.proc.wait(timeout=900)  # bounded: about two minutes on an idle 2-core machine
    assert check.proc.returncode == 0, check.tail()
    return json.loads((check.out / "report.json").read_text())


def test_completions_come_from_vllm_and_rewards_and_advantages_are_logged(colocate_report: dict) -> None:
    assert colocate_report["vllm_calls"] == 2 and colocate_report["hf_generate_calls"] == 0
    log = colocate_report["log"]
    assert [e["step"] for e in log] == [1, 2]
    for entry in log:
        assert {"reward", "rewards/varied/mean", "rewards/accuracy/mean", "grad_norm"} <= entry.keys()
        assert entry["grad_norm"] > 0 and entry["rewards/varied/std"] > 0
    advantages = colocate_report["advantages"]
    assert advantages and any(abs(a) > 1e-3 for a in advantages)


def test_vllm_resizes_images_with_the_training_bounds(colocate_report: dict) -> None:
    assert colocate_report["mm_processor_kwargs"] == {"min_pixels": 12544, "max_pixels": 12544}


def test_every_sync_leaves_vllm_holding_the_policys_weights(colocate_report: dict) -> None:
    first, second = colocate_report["syncs"]  # one before each step's generation
    assert first["compared"] >= 10 and not first["policy_moved"] and first["unequal"] == []
    # after the first optimiser step: the policy moved, and vLLM generates with the moved weights
    assert second["policy_moved"] and second["unequal"] == [], second["unequal"]
