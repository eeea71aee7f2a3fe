"""The configs of ``urp-data build`` and ``urp-data preview``: light on imports so that `--help` is instant."""

from __future__ import annotations

from dataclasses import dataclass, field

from urp_data.errors import RegionError

ENGINES = ("local", "ray")


@dataclass
class BuildConfig:
    """What ``urp-data build`` does; every field is also a CLI flag."""

    region: str = field(metadata={"help": "shipped region name (see `urp-data regions`) or path of a region YAML"})
    out: str = field(default="build", metadata={"help": "output folder; the build goes to OUT/REGION/"})
    resolution: int | None = field(default=None, metadata={"help": "H3 resolution (overrides the region's)"})
    samples: int | None = field(default=None, metadata={"help": "number of samples (overrides the region's)"})
    seed: int | None = field(default=None, metadata={"help": "seed (overrides the region's)"})
    chunk_size: int = field(default=256, metadata={"help": "samples per chunk (the unit of resume and of memory)"})
    workers: int = field(default=1, metadata={"help": "processes cutting chunks in parallel: this one and N-1 "
                         "more, each with its own sources"})
    engine: str = field(default="local", metadata={"help": "local: this machine (--workers processes); ray: Ray "
                        "actors on a cluster, one per CPU (install urp-data[ray]); same output"})
    ray_address: str | None = field(default=None, metadata={"help": "with --engine ray: the cluster to join "
                                     "(host:port of `ray start --head`); unset: start a local Ray on this machine"})
    dry_run: bool = field(default=False, metadata={"help": "plan the samples and print, per network source, the "
                          "requests, expected bytes and the time its politeness limit implies; fetch and write "
                          "nothing"})
    allow_bulk: bool = field(default=False, metadata={"help": "let an online geocoder send more than 500 requests to "
                             "its public instance (sets geocoder.allow_bulk; ask the operators first, or self-host)"})

    def __post_init__(self) -> None:
        if self.chunk_size <= 0:
            raise RegionError(f"chunk_size must be positive, got {self.chunk_size}")
        if self.workers <= 0:
            raise RegionError(f"workers must be positive, got {self.workers}")
        if self.engine not in ENGINES:
            raise RegionError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.engine == "ray" and self.workers != 1:
            raise RegionError(f"workers={self.workers} with engine=ray: the Ray cluster's CPUs set the parallelism; "
                              "drop --workers")
        if self.ray_address is not None and self.engine != "ray":
            raise RegionError(f"ray_address={self.ray_address!r} needs --engine ray")


@dataclass
class PreviewConfig:
    """What ``urp-data preview`` does; every field is also a CLI flag (BUILD may also come first, bare)."""

    build: str = field(metadata={"help": "build folder written by `urp-data build` (OUT/REGION)"})
    out: str | None = field(default=None, metadata={"help": "output HTML file (default: BUILD/preview.html)"})
    per_split: int = field(default=4, metadata={"help": "chips per split in the gallery"})

    def __post_init__(self) -> None:
        if self.per_split < 0:
            raise ValueError(f"per_split must be 0 or more, got {self.per_split}")
