"""The shipped demo build: what the README promises, readable by the tools users have."""

from __future__ import annotations

import duckdb
import geopandas as gpd
import numpy as np
import pyarrow.parquet as pq
from PIL import Image
from urp_data.contract import SPLITS, arrow_schema, indicator_columns, load_manifest, split_path
from urp_data.sampling.splits import shared_ground


def test_demo_has_enough_real_samples_and_an_unseen_country(demo_build):
    m = load_manifest(demo_build)
    counts = m.counts["per_split"]
    assert sum(counts.values()) >= 300
    assert counts["test_unseen"] > 0 and counts["train"] > 0
    assert m.config["unseen_groups"] and all(g.startswith("PRY-") for g in m.config["unseen_groups"])
    real = [n for n, i in m.indicators.items() if i.source and i.licence]
    assert len(real) >= 2
    for info in m.indicators.values():
        assert info.resolution and info.scale and len(info.scale) == 101


def test_unseen_split_has_a_varying_indicator(demo_build):
    t = pq.read_table(split_path(demo_build, "test_unseen"))
    columns = {c: t.column(c).drop_null().to_numpy().astype(float) for c in indicator_columns(t.schema)}
    varying = [c for c, v in columns.items() if v.size > 1 and v.std() > 0]
    assert varying


def test_no_cell_in_two_splits_and_no_unseen_group_in_training(demo_build):
    con = duckdb.connect()
    files = [str(split_path(demo_build, s)) for s in SPLITS]
    dup = con.execute(f"select count(*) - count(distinct h3_cell) from read_parquet({files})").fetchone()[0]
    assert dup == 0
    leak = con.execute(f"""
        select count(*) from read_parquet('{split_path(demo_build, "test_unseen")}') u
        join read_parquet({files[:2]}) t on u."group" = t."group" or u.country = t.country""").fetchone()[0]
    assert leak == 0


def test_files_open_with_geopandas_duckdb_and_datasets(demo_build):
    import datasets

    path = split_path(demo_build, "train")
    gdf = gpd.read_parquet(path)
    assert gdf.crs.to_string() == "OGC:CRS84" and gdf.geometry.is_valid.all()
    centres = gpd.GeoSeries(gpd.points_from_xy(gdf["lon"], gdf["lat"]), index=gdf.index, crs=gdf.crs)
    inside = gdf.geometry.contains(centres)
    assert inside.all()  # footprints are centred on (lat, lon)
    n = duckdb.connect().execute(f"select count(*) from read_parquet('{path}')").fetchone()[0]
    assert n == len(gdf)
    ds = datasets.load_dataset("parquet", data_files=str(path), split="train")
    img = ds[0]["image"]
    assert isinstance(img, Image.Image) and img.size == (448, 448) and img.mode == "RGB"
    assert np.asarray(img).std() > 5  # a real picture, not a flat fill
    assert pq.read_schema(path).names == arrow_schema(indicator_columns(pq.read_schema(path))).names


def test_score_scale_is_fitted_on_train_only(demo_build):
    m = load_manifest(demo_build)
    train = pq.read_table(split_path(demo_build, "train"), columns=["night_light"]).column(0)
    vals = train.to_numpy(zero_copy_only=False).astype(float)
    scale = m.indicators["night_light"].scale
    assert scale[0] == np.nanmin(vals) and scale[-1] == np.nanmax(vals)


def test_country_indicator_follows_the_sample_country_not_coarse_polygons(demo_build):
    # 1:110m polygons put Foz do Iguaçu (BR) in Paraguay; joined by country code, every Brazilian
    # sample carries Brazil's GDP per capita and every Paraguayan one Paraguay's.
    con = duckdb.connect()
    files = [str(split_path(demo_build, s)) for s in SPLITS]
    rows = con.execute(f"""select country, count(distinct gdp_per_capita), min(gdp_per_capita)
                           from read_parquet({files}) group by country""").fetchall()
    per_country = {c: (n, v) for c, n, v in rows}
    assert per_country["BRA"][0] == 1 and per_country["PRY"][0] == 1
    assert per_country["BRA"][1] > per_country["PRY"][1]


def test_no_held_out_chip_shares_ground_with_a_train_chip(demo_build):
    geoms = {s: pq.read_table(split_path(demo_build, s), columns=["geometry"]).column(0).to_pylist() for s in SPLITS}
    assert geoms["train"] and geoms["test_seen"] and geoms["test_unseen"]
    for s in ("val", "test_seen", "test_unseen"):
        assert shared_ground(geoms[s], geoms["train"]) == 0, s
    seen = geoms["train"] + geoms["val"] + geoms["test_seen"]
    assert shared_ground(geoms["test_unseen"], seen) == 0
    # the check can fail: a chip always shares ground with itself
    assert shared_ground(geoms["test_seen"][:1], geoms["test_seen"]) == 1


def test_manifest_says_which_buffer_and_why(demo_build):
    m = load_manifest(demo_build)
    sp = m.config["splits"]
    assert sp["buffer_km"] == 5 and "night_light" in sp["buffer_reason"]  # the demo's configured buffer, explained
    assert sp["buffer_candidates_km"]["indicator night_light"] > 14
    assert sp["block_resolution"] == 7 and "dropped" in sp["holdout_rule"]


def test_labels_say_their_resolution_and_whether_the_prompt_shows_them(demo_build):
    inds = load_manifest(demo_build).indicators
    assert inds["settlement_population"].derived_from_prompt and inds["settlement_population"].radius_km == 5
    assert not inds["population"].derived_from_prompt and "IBGE" in inds["population"].resolution
    assert 0 < inds["population"].resolution_km < 5  # census tracts, measured from the polygons
    assert inds["night_light"].resolution_km > 14
    t = pq.read_table(split_path(demo_build, "train"), columns=["lat", "population"]).to_pandas()
    assert t[t.lat > -10].population.notna().any() and t[t.lat < -20].population.isna().all()  # Olinda only
