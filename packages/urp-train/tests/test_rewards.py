import math

import pytest
from urp_train.rewards import REWARDS, accuracy_reward, completion_text, format_reward, reward_funcs

GOOD = "<think>dense roofs, a port</think><answer>6.0</answer>"

ADVERSARIAL = [
    "",
    "no tags at all, just 5.0",
    "<think>a</think><answer>3.0</answer><answer>4.0</answer>",
    "<think>a</think><answer>NaN</answer>",
    "<think>a</think><answer>nan</answer>",
    "<think>a</think><answer>inf</answer>",
    "<think>a</think><answer>-inf</answer>",
    "<think>a</think><answer>1e309</answer>",
    "<think>a</think><answer>-1e309</answer>",
    "<think>a</think><answer>1e308</answer>",
    "<think>a</think><answer>" + "9" * 400 + "</answer>",
    "<think>a</think><answer>1,234,567.5</answer>",
    "<think>a</think><answer>5.5 people/km2</answer>",
    "<think>a</think><answer>-3.2</answer>",
    "<think>a</think><answer>__import__('os').system('echo pwned')</answer>",
    "<think>a</think><answer>2**1000000</answer>",
    "<think>" + "x" * 300_000 + "</think><answer>6.0</answer>",
    "<think>" + "<think>" * 1000 + "</think><answer>6.0</answer>",
    "<answer>6.0</answer><think>late</think>",
    "<think>a</think><answer></answer>",
    "\x00\uffff<think>\u202e</think><answer>６.０</answer>",
]


def _rewards(completions, targets=None):
    targets = targets if targets is not None else [6.0] * len(completions)
    prompts = [None] * len(completions)
    return {
        "format": format_reward(prompts, completions),
        "accuracy": accuracy_reward(prompts, completions, target=targets, indicator=["population"] * len(targets)),
    }


def test_well_formed_exact_answer_gets_full_rewards():
    r = _rewards([GOOD])
    assert r == {"format": [1.0], "accuracy": [1.0]}


def test_accuracy_is_partial_credit_on_the_documented_scale():
    prompts = [None] * 4
    comps = [f"<think>x</think><answer>{p}</answer>" for p in (6.0, 5.0, 3.5, 0.0)]
    r = accuracy_reward(prompts, comps, target=[6.0] * 4, scale=5.0)
    assert r == pytest.approx([1.0, 0.8, 0.5, 0.0])
    per = accuracy_reward(prompts, comps, target=[6.0] * 4, indicator=["a", "b", "a", "b"],
                          scale=5.0, scales={"b": 10.0})
    assert per == pytest.approx([1.0, 0.9, 0.5, 0.4])


def test_accuracy_uses_the_answer_not_the_reasoning_and_needs_no_format():
    r = accuracy_reward([None], ["<think>maybe 1.0</think> so <answer> 6.0 </answer> trailing"], target=[6.0])
    assert r == [1.0]
    assert format_reward([None], ["<think>maybe 1.0</think> so <answer> 6.0 </answer> trailing"]) == [0.0]


@pytest.mark.parametrize("completion", ADVERSARIAL, ids=range(len(ADVERSARIAL)))
def test_rewards_are_bounded_and_finite_on_adversarial_text(completion):
    for name, values in _rewards([completion]).items():
        (v,) = values
        assert isinstance(v, float) and math.isfinite(v) and 0.0 <= v <= 1.0, (name, v)


def test_adversarial_answers_score_as_the_contract_parses_them():
    r = _rewards(ADVERSARIAL)
    fmt = dict(zip(ADVERSARIAL, r["format"], strict=True))
    acc = dict(zip(ADVERSARIAL, r["accuracy"], strict=True))
    # Well formed needs an answer the contract parses: these three have the right shape, but their
    # numbers lie off the 0.0-9.9 scale, so they are unparsed for the format reward as for accuracy.
    off_scale = ["<think>a</think><answer>1e308</answer>", "<think>a</think><answer>1,234,567.5</answer>",
                 "<think>a</think><answer>-3.2</answer>"]
    assert not any(fmt.values()) and all(c in fmt for c in off_scale)
    assert format_reward([None], [off_scale[2].replace("-3.2", "3.2")]) == [1.0]  # the same shape on the scale
    assert acc["<think>a</think><answer>3.0</answer><answer>4.0</answer>"] == 0.0  # ambiguous
    for overflow in ("1e309", "-1e309", "inf", "-inf", "NaN", "9" * 400):
        assert acc[f"<think>a</think><answer>{overflow}</answer>"] == 0.0
    assert acc["<think>a</think><answer>1e308</answer>"] == 0.0  # finite but far off
    assert acc["<think>a</think><answer>-3.2</answer>"] == 0.0
    assert acc["<think>a</think><answer>1,234,567.5</answer>"] == 0.0  # one number: 1234567.5
    assert acc["<think>a</think><answer>5.5 people/km2</answer>"] == pytest.approx(0.9)  # unit ignored...
    assert fmt["<think>a</think><answer>5.5 people/km2</answer>"] == 0.0  # ...but a second number is bad form
    assert acc["<think>a</think><answer>__import__('os').system('echo pwned')</answer>"] == 0.0  # never eval'd
    assert acc["<think>" + "x" * 300_000 + "</think><answer>6.0</answer>"] == 0.0  # over the parse limit


def test_conversational_completions_are_read_like_strings():
    conv = [[{"role": "assistant", "content": GOOD}]]
    blocks = [[{"role": "assistant", "content": [{"type": "text", "text": GOOD}]}]]
    assert completion_text(conv[0]) == GOOD == completion_text(blocks[0])
    assert _rewards(conv) == _rewards(blocks) == _rewards([GOOD])
    for junk in (None, 42, [None], [{"role": "assistant"}], [{"content": [None, {"text": 5}]}]):
        assert completion_text(junk) == ""
        assert _rewards([junk]) == {"format": [0.0], "accuracy": [0.0]}


def test_missing_target_gives_none():
    assert accuracy_reward([None, None], [GOOD, GOOD], target=[None, float("nan")]) == [None, None]


def test_registry_binds_options_and_keeps_names():
    funcs = reward_funcs(["accuracy", "format"], scale=2.0, scales={"gdp": 4.0}, unrelated=1)
    assert [f.__name__ for f in funcs] == ["accuracy", "format"]
    comp = ["<think>x</think><answer>5.0</answer>"] * 2
    assert funcs[0]([None] * 2, comp, target=[6.0, 6.0], indicator=["population", "gdp"]) == pytest.approx(
        [0.5, 0.75])
    assert set(REWARDS) == {"accuracy", "format"}
    with pytest.raises(ValueError, match="unknown reward 'lenght'"):
        reward_funcs(["lenght"])
