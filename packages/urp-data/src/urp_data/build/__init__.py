"""The build: open a region's sources, plan its cells, cut chunks (locally or on Ray), write the splits.

Start at :func:`urp_data.build.run.build`.
"""
