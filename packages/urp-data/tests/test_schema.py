"""The data contract: prompt rendering, answer parsing (adversarial too), score scales, layout."""

from __future__ import annotations

import math
import time

import numpy as np
import pyarrow as pa
import pytest
from urp_data.contract import (
    SCORE_MAX,
    SchemaError,
    ScoreScale,
    arrow_schema,
    check_indicator_names,
    compass_direction,
    indicator_columns,
    is_well_formed,
    parse_answer,
    render_answer,
    render_messages,
    render_prompt,
    resolve_splits,
    split_path,
)

ROW = {
    "lat": -7.99123,
    "lon": -34.85678,
    "address": "Olinda, Brazil",
    "nearby_places": [
        {"name": "Olinda", "kind": "city", "distance_km": 1.234, "direction": "North-East"},
        {"name": "Recife", "kind": "city", "distance_km": 6.0, "direction": "South"},
    ],
}


def test_prompt_has_coordinates_address_places_task_and_format():
    text = render_prompt(ROW, "population")
    assert "Coordinates: (-7.99123, -34.85678)" in text  # lat first, then lon
    assert 'Address: "Olinda, Brazil"' in text
    assert "1.2 km North-East: Olinda" in text and "6.0 km South: Recife" in text
    assert "population" in text and "<think>" in text and "<answer>" in text


def test_text_ablation_keeps_only_coordinates():
    text = render_prompt(ROW, "population", drop="text")
    assert "Coordinates" in text and "Olinda" not in text and "Recife" not in text


def test_messages_carry_an_image_slot_unless_dropped():
    with_image = render_messages(ROW, "night_light")
    assert {"type": "image"} in with_image[-1]["content"]
    no_image = render_messages(ROW, "night_light", drop="image")
    assert all(c["type"] == "text" for c in no_image[-1]["content"])


@pytest.mark.parametrize("score", [0.0, 0.1, 3.3, 5.0, 9.9])
def test_rendered_answer_round_trips(score):
    text = render_answer(score, "dense housing and roads")
    assert is_well_formed(text)
    assert parse_answer(text) == pytest.approx(score)


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("<think>x</think><answer>5.3</answer>", 5.3),
        ("<think>x</think>\n<answer> 7 </answer>", 7.0),
        ("<answer>1,234.5 people</answer>", None),  # outside the 0.0-9.9 scale: unparsed
        ("<answer>-2.5</answer>", None),
        ("<answer>3e2</answer>", None),
        ("<answer>1e300</answer>", None),  # would dominate every mean and the bias score
        ("<answer>9.9</answer>", 9.9),
        ("<answer>0</answer>", 0.0),
        ("<answer>5e-1</answer>", 0.5),
        ("<ANSWER>4.4</ANSWER>", 4.4),
        ("<AnSwEr>4.4</aNsWeR>", 4.4),  # tags match in any case
        ("<answer><answer>5</answer></answer>", None),  # nested: ambiguous
        ("<answer>5</answer><answer>", None),  # a second, unclosed block: ambiguous
        ("</answer>5<answer>", None),  # closed before opened
        ("<answer>" * 1000 + "5</answer>", None),
        ("", None),
        ("no tags at all 5.5", None),
        ("<answer></answer>", None),
        ("<answer>nan</answer>", None),
        ("<answer>inf</answer>", None),
        ("<answer>1e309</answer>", None),  # overflows to inf
        ("<answer>3</answer><answer>4</answer>", None),  # ambiguous
        ("<answer>__import__('os').system('true')</answer>", None),  # text only, never evaluated
        ("<answer>\uff16.\uff10</answer>", None),  # full-width digits are not ASCII numbers
        ("<answer>5.3 out of 9.9</answer>", 5.3),  # the first number is the answer
        ("<think>" + "a" * 300_000 + "</think><answer>5</answer>", None),  # runaway generation
    ],
)
def test_parse_answer(completion, expected):
    got = parse_answer(completion)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)
        assert math.isfinite(got)


def test_well_formed_allows_white_space_and_a_unit():
    assert is_well_formed("  <think>a\nb</think>\n<answer> 7.5 points </answer>\n")


ADVERSARIAL = {  # name: (completion, parse_answer, is_well_formed)
    "repeated open tag": ("<answer>" * 24_000, None, False),
    "repeated mixed-case blocks": ("<AnSwEr>1</ANSWER>" * 11_000, None, False),
    "nested blocks": ("<think>" + "<answer><answer>5" * 11_000 + "</answer>", None, False),
    "repeated think": ("<think>" * 28_000 + "</think><answer>5</answer>", 5.0, False),
    "huge number": ("<think>a</think><answer>" + "9" * 190_000 + "</answer>", None, False),
    "unicode digits": ("<answer>" + "\uff16" * 190_000 + "</answer>", None, False),
    "long white space": ("<think>a</think><answer>5" + " " * 190_000 + "x</answer>", 5.0, True),
}


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_adversarial_completions_parse_in_bounded_time(name):
    """Linear-time parsing: the old lazy-regex parser took ~20 s on the first case (quadratic).

    The bound is two orders of magnitude above the linear parser's time on a loaded machine;
    benchmarks/parse_answer.py shows the scaling itself.
    """
    text, answer, well_formed = ADVERSARIAL[name]
    assert len(text) <= 200_000
    t0 = time.perf_counter()
    got = (parse_answer(text), is_well_formed(text))
    assert time.perf_counter() - t0 < 2.0
    assert got == (answer, well_formed)


def test_indicator_names_follow_one_pattern_and_do_not_collide():
    check_indicator_names(["population", "night_light", "V014", "co2_2020"])
    for bad, message in [(["1st"], "not allowed"), (["night light"], "not allowed"), (["a-b"], "not allowed"),
                         (["x" * 65], "not allowed"), (["$x"], "not allowed"), ([""], "not allowed"),
                         (["Population", "population"], "another indicator"),
                         (["LAT"], "column of the data contract"), (["Split"], "column of the data contract"),
                         (["score"], "column of the data contract")]:
        with pytest.raises(SchemaError, match=message):
            check_indicator_names(bad)
    with pytest.raises(SchemaError, match="another indicator"):
        arrow_schema(["gdp", "GDP"])


def test_parse_answer_is_total_on_non_text():
    assert parse_answer(None) is None  # type: ignore[arg-type]
    assert parse_answer(5.0) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "completion",
    [
        "<answer>5</answer>",  # no think
        "<think>a</think><answer>5</answer><answer>6</answer>",
        "<think>a</think><think>b</think><answer>5</answer>",
        "<answer>5</answer><think>a</think>",
        "<think>a</think><answer>five</answer>",
        "<think>a</think><answer>5 or 6</answer>",
        "<think>a</think><answer>1e309</answer>",
        "<think>a</think><answer>5</answer> trailing text",
        "<think>a</think><answer>42</answer>",  # off the scale: unparsed, so not well formed either
        "<think>a</think><answer>5</answer><ANSWER>",  # a stray tag in another case
        "<think>a<answer>1</answer></think><answer>5</answer>",  # tags inside think
        "<THINK>a</THINK><answer>5</answer>",  # the format wants lower-case tags
    ],
)
def test_malformed_completions_are_rejected(completion):
    assert not is_well_formed(completion)


def test_score_scale_is_fitted_quantiles_and_inverts():
    rng = np.random.default_rng(0)
    values = rng.lognormal(8, 2, 5000)  # skewed like population
    scale = ScoreScale.fit(values)
    scores = scale.to_score(values)
    assert scores.min() >= 0 and scores.max() <= SCORE_MAX
    # uniform on the data it was fitted on
    assert np.mean(scores < SCORE_MAX / 2) == pytest.approx(0.5, abs=0.02)
    med = float(np.median(values))
    assert scale.to_score(med) == pytest.approx(SCORE_MAX / 2, abs=0.05)
    assert scale.to_value(scale.to_score(med)) == pytest.approx(med, rel=0.05)
    assert scale.to_value(100.0) == pytest.approx(values.max())  # clipped to the top
    assert math.isnan(scale.to_score(float("nan")))


def test_score_scale_ties_take_the_middle_score():
    scale = ScoreScale.fit([0.0] * 50 + list(range(1, 51)))
    assert scale.to_score(0.0) == pytest.approx(SCORE_MAX * 0.25, abs=0.1)


def test_score_scale_needs_values():
    with pytest.raises(SchemaError):
        ScoreScale.fit([float("nan")])


def test_arrow_schema_lists_indicators_and_geoparquet():
    schema = arrow_schema(["population", "night_light"])
    assert indicator_columns(schema) == ["population", "night_light"]
    assert schema.field("image").type == pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    assert b"geo" in schema.metadata and b"huggingface" in schema.metadata


def test_split_names_and_aliases(tmp_path):
    assert resolve_splits("unseen") == ("test_unseen",)
    assert resolve_splits("train") == ("train",)
    assert split_path(tmp_path, "val") == tmp_path / "val.parquet"
    with pytest.raises(SchemaError):
        resolve_splits("holdout")


@pytest.mark.parametrize(("bearing", "word"), [(0, "North"), (44, "North-East"), (90, "East"), (181, "South"),
                                               (230, "South-West"), (300, "North-West"), (359, "North")])
def test_compass(bearing, word):
    assert compass_direction(bearing) == word


def test_manifests_without_the_honesty_fields_still_load():
    import json

    from urp_data.contract import Manifest

    old = {"region": "r", "resolution": 8, "indicators": {"population": {
        "name": "population", "description": "population", "unit": "people", "source": "x", "resolution": "cell"}}}
    info = Manifest.from_dict(json.loads(json.dumps(old))).indicators["population"]
    assert info.derived_from_prompt is False and info.resolution_km is None and info.warning() is None
    info.derived_from_prompt = True
    assert "prompt" in info.warning()
    info.radius_km, info.resolution_km = 5.0, 3.0
    assert info.support_km() == 10.0  # the pooling diameter
