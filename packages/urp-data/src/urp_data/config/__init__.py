"""Typed configs: the build's command-line config and the region YAML files."""
