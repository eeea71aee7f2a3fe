"""Plot reward per GRPO step from a run's trainer_state.json (what `scripts/demo.sh` shows).

    python scripts/plot_rewards.py runs/demo-grpo --out reports/demo-reward.png

Also prints one line per step (step, reward, reward_std, grad_norm, format reward) so a log
shows the same numbers as the picture.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from urp_data.util.fs import one_line


def steps(run: Path) -> list[dict]:
    """The per-step training logs of a run (entries that carry a reward)."""
    state = run / "trainer_state.json"
    if not state.is_file():
        raise FileNotFoundError(f"{state} not found: is {run} the output_dir of a finished `urp-train grpo`?")
    return [e for e in json.loads(state.read_text())["log_history"] if "reward" in e]


def plot(logs: list[dict], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [e["step"] for e in logs]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(x, [e["reward"] for e in logs], marker="o", label="total reward (accuracy + 0.5 format)")
    for key, label in (("rewards/format/mean", "format"), ("rewards/accuracy/mean", "accuracy")):
        if all(key in e for e in logs):
            ax.plot(x, [e[key] for e in logs], marker=".", lw=1, label=label)
    ax.fill_between(x, [e["reward"] - e["reward_std"] for e in logs], [e["reward"] + e["reward_std"] for e in logs],
                    alpha=0.15, label="± reward std")
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("mean reward")
    ax.set_title(title)
    ax.legend(fontsize=7)
    tmp = out.with_name(out.name + ".tmp.png")
    fig.savefig(tmp, dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    os.replace(tmp, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="output_dir of a GRPO run")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--title", default="GRPO on the demo build (tiny model, CPU)")
    args = parser.parse_args(argv)
    try:
        logs = steps(args.run)
    except (OSError, ValueError, KeyError) as exc:
        print(f"plot_rewards: error: {one_line(exc)}", file=sys.stderr)
        return 1
    if not logs:
        print(f"plot_rewards: error: {args.run} logged no rewards (set logging_steps: 1)", file=sys.stderr)
        return 1
    for e in logs:
        print(f"step {e['step']:>3}  reward {e['reward']:.3f}  reward_std {e['reward_std']:.3f}  "
              f"grad_norm {e.get('grad_norm', float('nan')):.4f}  format {e.get('rewards/format/mean', float('nan')):.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot(logs, args.out, args.title)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
