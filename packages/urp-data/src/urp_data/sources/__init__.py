"""The sources a build reads: imagery, places (gazetteer, geocoders, POIs), indicators and vector files.

Each kind is a small class satisfying a protocol in :mod:`urp_data.sources.base`.
"""
