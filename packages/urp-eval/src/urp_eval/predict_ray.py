"""``urp-eval predict --engine ray``: the single-process path's work, spread over a Ray cluster.

The driver runs the same loop as ``--engine local`` (same splits, same row groups, same
prompts, same resume, same writer), so the predictions file is the same; only the two costly
steps go to the cluster:

- model backends: one model replica per GPU (per CPU on a cluster without GPUs) held by a Ray
  actor, loaded once. Each call of :meth:`RayGenerator.generate` receives ``batch_size`` prompts
  per replica, cuts them into exactly the batches the single-process path would generate, and
  runs the batches side by side. With greedy decoding the completions are the local path's;
  sampled completions depend on which replica drew them. For vLLM, give each replica a large
  ``--batch-size`` (e.g. 256): vLLM schedules within a call, and the driver hands over the next
  round when every replica has answered.
- ``knn``: the query points are cut at the same block boundaries as :func:`knn_mean` uses
  and spread over the cluster's CPUs as Ray tasks (the training points are shipped once), so
  every distance is computed exactly as in one process.

Why actors and not Ray Data's ``map_batches``: the driver already streams the split one Parquet
row group at a time and must keep the resumable writer; an actor per GPU is the same "one engine
per GPU" that a Ray Data pipeline would schedule, without handing the file order to Ray Data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from urp_eval.baselines import knn_block, knn_mean
from urp_eval.config import PredictConfig
from urp_eval.generators import make_generator


class _Replica:
    """One model on one GPU (or CPU): the single-process generator, inside a Ray actor."""

    def __init__(self, cfg: PredictConfig) -> None:
        self.generator = make_generator(cfg)

    def generate(self, messages: Sequence[list[dict[str, Any]]], images: Sequence[Any]) -> list[list[str]]:
        return self.generator.generate(messages, images)


class RayGenerator:
    """A :class:`urp_eval.predict.Generator` whose batches run on model replicas across the cluster."""

    def __init__(self, cfg: PredictConfig) -> None:
        import ray

        self.ray, self.batch_size = ray, cfg.batch_size
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        per_replica = {"num_gpus": 1} if gpus else {"num_cpus": 1}
        n = gpus or max(1, int(resources.get("CPU", 1)))
        self.replicas = [ray.remote(**per_replica)(_Replica).remote(cfg) for _ in range(n)]
        self.prompts_per_call = cfg.batch_size * n

    def generate(self, messages: Sequence[list[dict[str, Any]]], images: Sequence[Any]) -> list[list[str]]:
        b = self.batch_size
        refs = [self.replicas[i % len(self.replicas)].generate.remote(messages[s:s + b], images[s:s + b])
                for i, s in enumerate(range(0, len(messages), b))]
        return [completions for batch in self.ray.get(refs) for completions in batch]


def knn_mean_on_ray(train_lat: np.ndarray, train_lon: np.ndarray, train_values: np.ndarray,
                    lat: np.ndarray, lon: np.ndarray, k: int) -> np.ndarray:
    """:func:`urp_eval.predict.knn_mean` with the queries spread over the cluster's CPUs (same values)."""
    import ray

    block = knn_block(len(train_lat))
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    shard = block * max(1, math.ceil(len(lat) / cpus / block))  # whole blocks: identical arithmetic
    ref = ray.put((train_lat, train_lon, train_values))
    task = ray.remote(num_cpus=1)(_knn_shard)
    refs = [task.remote(ref, lat[s:s + shard], lon[s:s + shard], k) for s in range(0, len(lat), shard)]
    return np.concatenate(ray.get(refs)) if refs else np.empty(0)


def _knn_shard(ref: tuple[np.ndarray, np.ndarray, np.ndarray], lat: np.ndarray, lon: np.ndarray,
               k: int) -> np.ndarray:
    return knn_mean(*ref, lat, lon, k)
