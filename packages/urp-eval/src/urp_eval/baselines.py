"""Baselines that need no model: the k nearest training samples by great-circle distance (GeoLLM's)."""

from __future__ import annotations

import numpy as np
from urp_data.util.geodesy import unit_vectors


def knn_block(n_ref: int) -> int:
    """Query points per distance block of :func:`knn_mean` (a block holds ~20M distances)."""
    return max(1, 20_000_000 // max(n_ref, 1))


def knn_mean(train_lat: np.ndarray, train_lon: np.ndarray, train_values: np.ndarray,
             lat: np.ndarray, lon: np.ndarray, k: int) -> np.ndarray:
    """Mean of ``train_values`` at the k training points nearest each (lat, lon), by great-circle distance.

    Brute force in blocks (bounded memory): evaluation sets are thousands to a few hundred
    thousand points. Fewer than k training points: the mean of all of them.
    """
    ref, q = unit_vectors(train_lat, train_lon), unit_vectors(lat, lon)
    k = min(k, len(ref))
    out = np.empty(len(q))
    block = knn_block(len(ref))
    for s in range(0, len(q), block):
        d = 2.0 - 2.0 * (q[s:s + block] @ ref.T)  # squared chord length, monotone in great-circle distance
        idx = np.argpartition(d, k - 1, axis=1)[:, :k] if k < len(ref) else np.broadcast_to(
            np.arange(len(ref)), (len(d), len(ref)))
        out[s:s + block] = train_values[idx].mean(axis=1)
    return out
