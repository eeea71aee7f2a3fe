import math
import statistics
from collections import Counter

import numpy as np
import pytest
import torch
from trl import GRPOTrainer
from urp_train.dataset import load_examples
from urp_train.rewards import completion_text, reward_funcs
from urp_train.trainer import (
    SMALL_GROUPS,
    GroupedRepeatSampler,
    URPGRPOConfig,
    URPGRPOTrainer,
    grouped_advantages,
    merge_single_prompt_pools,
    pool_stats,
)

NAN = float("nan")


def varied(prompts, completions, **_):
    """A reward that differs between random completions, so advantages are not all zero."""
    return [float(sum(map(ord, completion_text(c))) % 7) / 7 for c in completions]


def _hand(totals, groups, scale=True):
    out = []
    for r, g in zip(totals, groups, strict=True):
        members = [t for t, h in zip(totals, groups, strict=True) if h == g and not math.isnan(t)]
        if math.isnan(r):
            out.append(0.0)
            continue
        mean = statistics.mean(members)
        out.append((r - mean) / (statistics.stdev(members) + 1e-4) if scale else r - mean)
    return out


def test_grouped_advantages_equal_a_hand_computation():
    acc = [1.0, 0.0, 0.5, 0.5, 0.5, 1.0, 0.2]
    fmt = [1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    groups = ["a", "a", "b", "b", "a", "b", "b"]
    rpf = torch.tensor([acc, fmt]).T
    w = torch.tensor([1.0, 0.5])
    totals = [a + 0.5 * f for a, f in zip(acc, fmt, strict=True)]
    got = grouped_advantages(rpf, w, groups)
    assert got.tolist() == pytest.approx(_hand(totals, groups), abs=1e-5)
    assert grouped_advantages(rpf, w, groups, scale_rewards="none").tolist() == pytest.approx(
        _hand(totals, groups, scale=False), abs=1e-6)
    batch_std = statistics.stdev(totals)
    assert grouped_advantages(rpf, w, groups, scale_rewards="batch").tolist() == pytest.approx(
        [c / (batch_std + 1e-4) for c in _hand(totals, groups, scale=False)], abs=1e-5)


def test_unscorable_completions_get_zero_advantage_and_leave_the_baseline():
    rpf = torch.tensor([[1.0, NAN], [0.0, NAN], [NAN, NAN], [0.5, NAN]])
    got = grouped_advantages(rpf, torch.tensor([1.0, 1.0]), ["a"] * 4)
    assert got.tolist() == pytest.approx(_hand([1.0, 0.0, NAN, 0.5], ["a"] * 4), abs=1e-5)
    assert got[2] == 0.0


def test_normalize_then_sum_normalises_each_reward_within_the_group():
    rpf = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 1.0], [0.5, 0.0]])
    groups = ["a", "b", "a", "b"]
    got = grouped_advantages(rpf, torch.tensor([1.0, 2.0]), groups, aggregation="normalize_then_sum")
    per = [_hand(rpf[:, k].tolist(), groups) for k in range(2)]
    summed = [a + 2 * b for a, b in zip(*per, strict=True)]
    mean, std = statistics.mean(summed), statistics.stdev(summed)
    assert got.tolist() == pytest.approx([(s - mean) / (std + 1e-4) for s in summed], abs=1e-4)


def test_grouped_sampler_keeps_runs_of_one_group_in_each_generation_batch():
    groups = ["a"] * 8 + ["b"] * 4 + ["c"] * 4
    s = GroupedRepeatSampler(groups, prompts_per_group=2, mini_repeat_count=3, batch_size=4, repeat_count=2, seed=1)
    order = list(s)
    assert len(order) == len(s) == 16 * 3 * 2
    assert Counter(order) == {i: 6 for i in range(16)}  # every prompt, num_generations x repeats
    batches = [order[i:i + 4 * 3 * 2] for i in range(0, len(order), 4 * 3 * 2)]
    for batch in batches:
        prompts = list(dict.fromkeys(batch))
        assert batch == [p for p in prompts for _ in range(3)] * 2  # TRL's repeat layout is kept
        assert prompts[0:2] and groups[prompts[0]] == groups[prompts[1]] and groups[prompts[2]] == groups[prompts[3]]
    assert list(GroupedRepeatSampler(groups, 2, 3, 4, 2, seed=1)) == order  # same seed, same order on every rank


def _pools_per_batch(order, pools, prompts_per_batch, repeats):
    """Distinct prompts per pool in each generation batch of a sampler's order."""
    size = prompts_per_batch * repeats
    out = []
    for b in range(0, len(order), size):
        prompts = list(dict.fromkeys(order[b:b + size]))
        out.append(Counter(pools[i] for i in prompts))
    return out


def test_no_generation_batch_holds_a_pool_of_one_prompt_with_the_recipes_numbers():
    """The 7B recipe: 256 prompts per rollout in runs of 8, over 110 countries of skewed sizes x 3 indicators."""
    rng = np.random.default_rng(0)
    sizes = np.minimum(np.ceil(rng.pareto(1.0, size=110) * 3), 400).astype(int)
    keys = [(f"c{c}", ind) for c, n in enumerate(sizes) for ind in ("pop", "gdp", "light") for _ in range(n)]
    pools = merge_single_prompt_pools(keys)
    assert sum(1 for k, v in pools.items() if k != v) > 0  # the skew leaves groups with a single prompt
    sampler = GroupedRepeatSampler([pools[k] for k in keys], 8, mini_repeat_count=5, batch_size=256, seed=3)
    order = list(sampler)
    assert len(order) == len(sampler)
    assert len(set(order)) >= len(keys) - 255  # all but TRL's incomplete last batch
    batches = _pools_per_batch(order, [pools[k] for k in keys], 256, 5)
    assert min(n for batch in batches for n in batch.values()) >= 2  # distinct prompts sharing a baseline
    assert all(len({ind for _, ind in batch}) == len({k[1] for k in batch}) for batch in batches)


def test_single_prompt_groups_are_merged_per_indicator_and_never_across_indicators():
    keys = [("a", "x")] * 3 + [("b", "x"), ("c", "x")] + [("a", "y")] * 2 + [("d", "y")] * 4 + [("e", "y")]
    pools = merge_single_prompt_pools(keys)
    assert pools[("b", "x")] == pools[("c", "x")] == (SMALL_GROUPS, "x")
    assert pools[("e", "y")] == ("a", "y")  # a lone single joins its indicator's smallest pool
    assert pools[("a", "x")] == ("a", "x") and pools[("d", "y")] == ("d", "y")
    with pytest.raises(ValueError, match="indicator 'z' has a single prompt"):
        merge_single_prompt_pools([*keys, ("a", "z")])
    with pytest.raises(ValueError, match="hold one example"):
        GroupedRepeatSampler(keys, 2, 1, 2)


def test_pool_stats_describe_the_pools_not_the_prompts():
    # 3 prompts x 2 completions; pools: prompts 0 and 1 share one (rewards vary), prompt 2 alone and constant
    rpf = torch.tensor([[1.0], [1.0], [0.0], [0.0], [0.5], [0.5]])
    stats = pool_stats(rpf, torch.tensor([1.0]), ["p", "p", "p", "p", "q", "q"], num_generations=2)
    assert stats["pools/count"] == 2 and stats["pools/prompts_min"] == 1 and stats["pools/prompts_median"] == 1.5
    assert stats["pools/frac_reward_zero_std"] == pytest.approx(2 / 6)  # TRL's per-prompt figure would say 1.0
    assert stats["pools/reward_std_mean"] == pytest.approx(statistics.stdev([1, 1, 0, 0]) / 2)


@pytest.fixture(scope="module")
def parts(tiny_build, tiny_model_dir):
    from urp_train.models import load_model_and_processor

    ds = load_examples(tiny_build, "train")
    ds = ds.add_column("uid", [f"u{i}" for i in range(len(ds))])
    return ds, tiny_model_dir, load_model_and_processor


def _trainer(parts, tmp_path, **overrides):
    ds, model_dir, load = parts
    model, processor = load(model_dir, dtype="float32")
    kwargs = {"output_dir": str(tmp_path), "per_device_train_batch_size": 4, "num_generations": 2,
              "max_completion_length": 6, "max_steps": 1, "report_to": "none", "use_cpu": True, "bf16": False,
              "save_strategy": "no", "logging_steps": 1, "reward_weights": [1.0, 0.5], "seed": 0}
    kwargs.update(overrides)
    args = URPGRPOConfig(**kwargs)
    funcs = [reward_funcs(["accuracy"])[0], varied]
    return URPGRPOTrainer(model=model, processing_class=processor, reward_funcs=funcs, args=args, train_dataset=ds)


def _batch(ds, idx, g=2):
    return [dict(ds[i]) for i in idx for _ in range(g)]


@pytest.mark.slow  # trains a model (tens of seconds)
def test_grouping_by_a_unique_column_equals_trl_prompt_grouping(parts, tmp_path):
    trainer = _trainer(parts, tmp_path, advantage_grouping="uid")
    trainer.model.train()
    # Every uid pool holds one prompt, which training merges per indicator; to compare the hooks' plumbing
    # with TRL's per-prompt computation, keep each uid its own pool here.
    trainer._pools = {}
    inputs = _batch(parts[0], [0, 1, 5])
    torch.manual_seed(0)
    ours = trainer._generate_and_score_completions(inputs)["advantages"]
    torch.manual_seed(0)
    theirs = GRPOTrainer._generate_and_score_completions(trainer, inputs)["advantages"]
    assert ours.abs().sum() > 0
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    trainer.args.advantage_grouping = "prompt"  # the default: TRL's computation, untouched
    torch.manual_seed(0)
    torch.testing.assert_close(trainer._generate_and_score_completions(inputs)["advantages"], theirs)


def test_grouping_by_region_normalises_across_prompts_of_a_group(parts, tmp_path):
    trainer = _trainer(parts, tmp_path, advantage_grouping="group")
    trainer.model.train()
    ds = parts[0]
    idx = [0, 1, len(ds) - 1, len(ds) - 2]  # two prompts of the first group, two of the last
    inputs = _batch(ds, idx)
    assert len({x["group"] for x in inputs}) == 2
    torch.manual_seed(0)
    out = trainer._generate_and_score_completions(inputs)
    rewards = trainer._urp_rewards_per_func
    expected = grouped_advantages(rewards, torch.tensor([1.0, 0.5]), [(x["group"], x["indicator"]) for x in inputs])
    torch.testing.assert_close(out["advantages"], expected)
    per_prompt = grouped_advantages(rewards, torch.tensor([1.0, 0.5]), [i // 2 for i in range(len(inputs))])
    assert not torch.allclose(out["advantages"], per_prompt)  # the override changes something
    totals = (rewards * torch.tensor([1.0, 0.5])).sum(1)
    for g in {x["group"] for x in inputs}:
        rows = torch.tensor([x["group"] == g for x in inputs])
        assert trainer._metrics["train"][f"rewards_by_group/{g}/mean"][-1] == pytest.approx(totals[rows].mean().item())
    for key in {(x["group"], x["indicator"]) for x in inputs}:
        rows = torch.tensor([(x["group"], x["indicator"]) == key for x in inputs])
        assert abs(out["advantages"][rows].mean()) < 1e-5  # zero-mean within each (group, indicator) pool


def test_group_pools_never_mix_indicators(parts, tmp_path):
    trainer = _trainer(parts, tmp_path, advantage_grouping="group")
    trainer.model.train()
    ds = parts[0]
    first = ds[0]
    other = next(i for i in range(len(ds)) if ds[i]["group"] == first["group"]
                 and ds[i]["indicator"] != first["indicator"])
    inputs = _batch(ds, [0, other])  # one group, two indicators
    torch.manual_seed(0)
    out = trainer._generate_and_score_completions(inputs)
    rewards = trainer._urp_rewards_per_func
    per_prompt = grouped_advantages(rewards, torch.tensor([1.0, 0.5]), [i // 2 for i in range(len(inputs))])
    pooled = grouped_advantages(rewards, torch.tensor([1.0, 0.5]), [x["group"] for x in inputs])
    torch.testing.assert_close(out["advantages"], per_prompt)  # each indicator is its own pool here
    assert not torch.allclose(pooled, per_prompt)  # pooling across indicators would differ
    logged = list(trainer._logs["advantages"])  # TRL keeps the last generation_batch_size
    assert logged == pytest.approx(out["advantages"].tolist()[-len(logged):])


@pytest.mark.slow  # trains a model (tens of seconds)
def test_a_training_step_changes_every_trainable_parameter_and_logs_groups(parts, tmp_path):
    trainer = _trainer(parts, tmp_path, advantage_grouping="group", learning_rate=1e-3)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    unchanged = [n for n, p in trainer.model.named_parameters() if n in before and torch.equal(before[n], p)]
    assert unchanged == []
    log = trainer.state.log_history[0]
    assert "loss" in log and "rewards/accuracy/mean" in log and "rewards/varied/mean" in log
    assert any(k.startswith("rewards_by_group/g-") for k in log)
    assert log["pools/count"] >= 1 and 0 <= log["pools/frac_reward_zero_std"] <= 1 and "pools/reward_std_mean" in log


def test_a_frozen_vision_tower_stays_unchanged_and_the_rest_trains(parts, tmp_path):
    from urp_train.models import freeze_vision_tower, vision_tower

    trainer = _trainer(parts, tmp_path, advantage_grouping="group", learning_rate=1e-3)
    tower = {id(p) for p in vision_tower(trainer.model).parameters()}
    assert freeze_vision_tower(trainer.model) == sum(p.numel() for p in vision_tower(trainer.model).parameters()) > 0
    params = dict(trainer.model.named_parameters())
    before = {n: p.detach().clone() for n, p in params.items()}
    trainer.train()
    frozen = [n for n, p in params.items() if id(p) in tower]
    rest = [n for n, p in params.items() if id(p) not in tower]
    assert frozen and rest
    assert all(torch.equal(before[n], params[n]) for n in frozen)
    assert [n for n in rest if torch.equal(before[n], params[n])] == []

    from urp_train.models import URPModelConfig

    model, _ = URPModelConfig(model_name_or_path=str(parts[1]), dtype="float32", freeze_vision_tower=True).load()
    tower = {id(p) for p in vision_tower(model).parameters()}
    assert all(p.requires_grad == (id(p) not in tower) for p in model.parameters())


def test_config_checks_name_the_fix(tmp_path):
    base = {"output_dir": str(tmp_path), "per_device_train_batch_size": 4, "num_generations": 2, "use_cpu": True}
    with pytest.raises(ValueError, match="prompts_per_group=3 must divide the 2 prompts"):
        URPGRPOConfig(**base, advantage_grouping="group", prompts_per_group=3)
    with pytest.raises(ValueError, match="set remove_unused_columns to false"):
        URPGRPOConfig(**base, advantage_grouping="group", remove_unused_columns=True)
    with pytest.raises(ValueError, match="one weight per reward"):
        URPGRPOConfig(**base, reward_weights=[1.0])
    assert URPGRPOConfig(**base, accuracy_scales='{"gdp": 3}').accuracy_scales == {"gdp": 3}
