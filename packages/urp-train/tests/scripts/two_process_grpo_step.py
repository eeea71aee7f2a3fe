"""One GRPO step of the tiny model with group-wise advantages on two CPU processes (gloo).

Started by ``test_two_processes.py`` under ``torchrun --nproc_per_node 2``; each rank writes what
it saw in its rollout (gathered rewards and pools, its own slice of the advantages) to
``OUT/rank<r>.json`` for the test to compare with a one-process computation. A rollout is 4 prompts
x 2 completions, 2 prompts per rank, in one run of ``prompts_per_group`` 4: the pool spans both ranks.
Usage: two_process_grpo_step.py BUILD_DIR MODEL_DIR OUT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import ClassVar

from urp_train.dataset import load_examples
from urp_train.models import load_model_and_processor
from urp_train.rewards import completion_text, reward_funcs
from urp_train.trainer import URPGRPOConfig, URPGRPOTrainer


def varied(prompts, completions, **_):
    """A reward that differs between random completions, so the rewards and advantages are not all zero."""
    return [float(sum(map(ord, completion_text(c))) % 7) / 7 for c in completions]


class RecordingTrainer(URPGRPOTrainer):
    records: ClassVar[list[dict]] = []  # one trainer per process

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        self.records.append({
            "rank": self.accelerator.process_index,
            "world": self.accelerator.num_processes,
            "backend": str(self.accelerator.state.backend),
            "rewards_per_func": self._urp_rewards_per_func.tolist(),
            "pools": [[str(part) for part in key] for key in self._urp_groups],
            "advantages": output["advantages"].tolist(),
        })
        return output


def main(build: str, model_dir: str, out: str) -> None:
    model, processor = load_model_and_processor(model_dir, dtype="float32")
    args = URPGRPOConfig(output_dir=out, use_cpu=True, bf16=False, max_steps=1, per_device_train_batch_size=4,
                         num_generations=2, max_completion_length=6, advantage_grouping="group",
                         prompts_per_group=4, reward_weights=[1.0, 0.5], report_to="none", save_strategy="no",
                         logging_steps=1, seed=0, learning_rate=1e-3)
    trainer = RecordingTrainer(model=model, processing_class=processor, args=args,
                               reward_funcs=[reward_funcs(["accuracy"])[0], varied],
                               train_dataset=load_examples(build, "train"))
    trainer.train()
    path = Path(out) / f"rank{trainer.accelerator.process_index}.json"
    path.write_text(json.dumps(trainer.records))


if __name__ == "__main__":
    main(*sys.argv[1:4])
