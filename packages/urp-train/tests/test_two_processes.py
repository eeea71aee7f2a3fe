"""Group-wise advantages across two processes: gathered, pooled and sliced as one process would."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from urp_train.trainer import grouped_advantages

SCRIPT = Path(__file__).parent / "scripts" / "two_process_grpo_step.py"


@pytest.mark.slow
def test_two_cpu_processes_compute_the_advantages_one_process_would(tiny_build, tiny_model_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    with socket.socket() as s:  # a free loopback port for the rendezvous (torchrun's port 0 hangs the ranks)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(port), str(SCRIPT), str(tiny_build), str(tiny_model_dir), str(tmp_path)]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                           start_new_session=True)
    try:
        _, stderr = run.communicate(timeout=240)
    finally:
        if run.poll() is None:  # a hung rendezvous: stop torchrun and both ranks, not only torchrun
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    assert run.returncode == 0, stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [len(r) for r in ranks] == [1, 1]  # one rollout each
    first, second = ranks[0][0], ranks[1][0]
    assert (first["world"], second["world"], first["backend"]) == (2, 2, "gloo")
    assert first["pools"] == second["pools"]  # both ranks pool the gathered batch the same way
    assert first["rewards_per_func"] == second["rewards_per_func"]
    rewards = torch.tensor(first["rewards_per_func"])
    assert len(rewards) == 2 * 4 and rewards.nansum() > 0  # 2 processes x 4 completions, rewards not all zero
    pools = [tuple(p) for p in first["pools"]]
    assert set(pools[:4]) & set(pools[4:])  # a pool spans both ranks: its baseline needs the gathered rewards
    one_process = grouped_advantages(rewards, torch.tensor([1.0, 0.5]), pools)
    gathered = torch.tensor(first["advantages"] + second["advantages"])  # rank 0's slice, then rank 1's
    torch.testing.assert_close(gathered, one_process)
    assert gathered.abs().sum() > 0
