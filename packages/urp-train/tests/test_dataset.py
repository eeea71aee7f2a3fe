import pyarrow.parquet as pq
import pytest
from PIL import Image
from urp_data.contract import SchemaError, load_manifest, parse_answer, split_path
from urp_train.dataset import check_image_tokens, image_token_counts, load_examples, with_completions


def _user_text(example):
    return "".join(p["text"] or "" for p in example["prompt"][-1]["content"] if p["type"] == "text")


def test_one_example_per_sample_and_non_null_indicator_with_the_scored_target(tiny_build):
    ds = load_examples(tiny_build, "train")
    rows = pq.read_table(split_path(tiny_build, "train")).to_pylist()
    scales = {k: v.score_scale() for k, v in load_manifest(tiny_build).indicators.items()}
    expected = {(r["sample_id"], ind): r[ind] for r in rows for ind in scales if r[ind] is not None}
    got = {(e["sample_id"], e["indicator"]): e for e in ds}
    assert len(ds) == len(got) == len(expected) < len(rows) * len(scales)  # nulls dropped, no duplicates
    for key, value in expected.items():
        ex = got[key]
        assert ex["target_value"] == value
        assert ex["target"] == round(scales[key[1]].to_score(value), 1)
        assert 0.0 <= ex["target"] <= 9.9
        assert ex["group"] == key[0].split("-", 1)[1].rsplit("-", 1)[0]
        assert isinstance(ex["image"], Image.Image) and ex["image"].size == (64, 64)
        assert ex["prompt"][-1]["content"][0]["type"] == "image"
        assert key[1].replace("_", " ") in _user_text(ex)


def test_indicator_and_split_selection(tiny_build):
    ds = load_examples(tiny_build, "test", indicators=["night_light"])
    assert set(ds["indicator"]) == {"night_light"}
    assert {s.split("-")[0] for s in ds["sample_id"]} == {"test_seen", "test_unseen"}
    with pytest.raises(SchemaError, match="no indicator gdp"):
        load_examples(tiny_build, "train", indicators=["gdp"])


def test_drop_image_removes_the_image_and_its_slot(tiny_build):
    ds = load_examples(tiny_build, "train", drop="image")
    assert "image" not in ds.column_names
    for ex in ds:
        assert all(p["type"] == "text" for m in ex["prompt"] for p in m["content"])
        assert "Address:" in _user_text(ex) and "Nearby Places:" in _user_text(ex)


def test_drop_text_keeps_image_and_coordinates_only(tiny_build):
    full = load_examples(tiny_build, "train")
    ds = load_examples(tiny_build, "train", drop="text")
    assert len(ds) == len(full)
    for ex in ds:
        text = _user_text(ex)
        assert "Coordinates:" in text
        assert "Address" not in text and "Rua" not in text and "Recife" not in text
        assert isinstance(ex["image"], Image.Image)


def test_sft_completion_renders_the_target_in_the_answer_format(tiny_build):
    ds = with_completions(load_examples(tiny_build, "val"))
    for ex in ds:
        (msg,) = ex["completion"]
        assert msg["role"] == "assistant"
        assert parse_answer(msg["content"][0]["text"]) == pytest.approx(ex["target"])


def test_every_prompt_carries_the_image_tokens_its_image_needs(tiny_build, tiny_model_dir):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    ds = load_examples(tiny_build, "all")
    counts = image_token_counts(ds, processor)
    assert len(counts) == len(ds)
    assert {c for c in counts} == {(16, 16)}  # 112x112 pixels: 8x8 patches merged 2x2
    check_image_tokens(ds, processor)
    assert {c[0] for c in image_token_counts(load_examples(tiny_build, "val", drop="image"), processor)} == {0}


def test_mismatched_image_tokens_are_caught(tiny_build, tiny_model_dir):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    ds = load_examples(tiny_build, "val")
    doubled = ds.map(lambda ex: {"prompt": [ex["prompt"][0], {**ex["prompt"][1], "content": [
        {"type": "image", "text": None}, *ex["prompt"][1]["content"]]}]})
    with pytest.raises(SchemaError, match="2 image slots for 1 images"):
        check_image_tokens(doubled, processor)
    processor.image_processor.size = {"shortest_edge": 56 * 56, "longest_edge": 224 * 224}
    mixed = ds.map(lambda ex, i: {"image": ex["image"].resize((64 + 64 * (i % 2), 64))}, with_indices=True)
    with pytest.raises(SchemaError, match="different numbers of image tokens"):
        check_image_tokens(mixed, processor)


def test_missing_build_is_a_clear_error(tmp_path):
    with pytest.raises(SchemaError, match="manifest.json not found"):
        load_examples(tmp_path, "train")


def test_recipe_pixels_beat_the_checkpoints_stored_bounds(tiny_build, tiny_model_dir, tmp_path):
    """Qwen2.5-VL-7B stores min_pixels 3136 and max_pixels 12845056; the recipe's 448x448 must still win."""
    import json
    import shutil

    from urp_train.models import load_processor, vllm_processor_kwargs

    model_dir = tmp_path / "stored-bounds"
    shutil.copytree(tiny_model_dir, model_dir, ignore=shutil.ignore_patterns("*.safetensors"))
    config = json.loads((model_dir / "processor_config.json").read_text())
    config["image_processor"].update(min_pixels=3136, max_pixels=12845056)
    (model_dir / "processor_config.json").write_text(json.dumps(config))
    pixels = (448 * 448, 448 * 448)
    ds = load_examples(tiny_build, "val")  # 64x64 chips: 4 image tokens under the stored bounds, 256 under ours

    processor = load_processor(model_dir, pixels=pixels)
    assert (processor.image_processor.size["shortest_edge"], processor.image_processor.size["longest_edge"]) == pixels
    assert {c for c in image_token_counts(ds, processor, pixels)} == {(256, 256)}
    check_image_tokens(ds, processor, pixels)
    assert vllm_processor_kwargs(processor) == {"min_pixels": 448 * 448, "max_pixels": 448 * 448}  # what vLLM gets

    stored = load_processor(model_dir)  # the checkpoint's bounds: the check compares with the recipe's, not itself
    with pytest.raises(SchemaError, match="has 4 image tokens but its image needs 256"):
        check_image_tokens(ds, stored, pixels)


def test_image_token_rule_matches_qwen2_vl_for_odd_sizes():
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as reference
    from urp_train.models import image_tokens, smart_resize

    for h, w, lo, hi in [(64, 64, 3136, 12845056), (448, 448, 200704, 200704), (500, 333, 3136, 200704),
                         (1000, 30, 3136, 12845056), (20, 20, 56 * 56, 28 * 28 * 1280), (4000, 3000, 3136, 1003520)]:
        assert smart_resize(h, w, lo, hi) == reference(h, w, 28, lo, hi)
    assert image_tokens(448, 448, 200704, 200704) == 256


def test_held_out_indicators_are_left_out_of_training_and_kept_for_evaluation(tiny_build):
    from urp_train.dataset import URPDataArguments, load_data

    args = URPDataArguments(build_dir=str(tiny_build), eval_split="val", train_indicators=["night_light"],
                            eval_indicators=["population"])
    train, evaluation = load_data(args, seed=0)
    assert set(train["indicator"]) == {"night_light"} and set(evaluation["indicator"]) == {"population"}
    train, evaluation = load_data(URPDataArguments(build_dir=str(tiny_build), eval_split="val",
                                                   train_indicators=["population"]), seed=0)
    assert set(train["indicator"]) == set(evaluation["indicator"]) == {"population"}  # eval follows train by default
