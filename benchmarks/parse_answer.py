"""Scaling of answer parsing on adversarial completions: time should grow linearly with length.

    uv run python benchmarks/parse_answer.py

For each family of hostile completions (repeated or nested tags, mixed case, huge numbers,
long white space), times ``parse_answer`` + ``is_well_formed`` at lengths 12.5k-200k chars
(best of 5) and prints the time per 1,000 characters and the ratio of the longest to the
shortest run: about 16 (the length ratio) for linear time, about 256 for quadratic.
"""

from __future__ import annotations

import time

from urp_data.contract import MAX_ANSWER_CHARS, is_well_formed, parse_answer

FAMILIES = {
    "repeated <answer>": lambda n: "<answer>" * (n // 8),
    "mixed-case tags": lambda n: "<AnSwEr>1</ANSWER>" * (n // 18),
    "nested blocks": lambda n: "<think>" + "<answer><answer>5" * (n // 17) + "</answer>",
    "huge number": lambda n: "<think>a</think><answer>" + "9" * n + "</answer>",
    "unicode digits": lambda n: "<answer>" + "\uff16" * n + "</answer>",
    "long white space": lambda n: "<think>a</think><answer>5" + " " * n + "x</answer>",
}
LENGTHS = (12_500, 25_000, 50_000, 100_000, 200_000 - 64)


def best_of(fn, text: str, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(text)
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    assert max(LENGTHS) + 64 <= MAX_ANSWER_CHARS
    print(f"{'family':20s} " + " ".join(f"{n:>10,d}" for n in LENGTHS) + "   ratio  (ms per 1k chars)")
    for name, make in FAMILIES.items():
        row = []
        for n in LENGTHS:
            text = make(n)
            row.append((best_of(lambda t: (parse_answer(t), is_well_formed(t)), text), len(text)))
        per_k = " ".join(f"{1000 * t / (chars / 1000):10.4f}" for t, chars in row)
        print(f"{name:20s} {per_k}   {row[-1][0] / max(row[0][0], 1e-9):5.1f}")


if __name__ == "__main__":
    main()
