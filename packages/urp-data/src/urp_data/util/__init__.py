"""Helpers every layer may use: files and folders, geodesy, the command-line kit, versions, the basemap.

Nothing here imports the build stack (GDAL, geopandas): urp-train and urp-eval use it too.
"""
