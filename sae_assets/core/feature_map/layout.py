"""Feature map (seed 004): SAE decoder vectors -> 3-D UMAP positions, cosine k-NN edges, JSON for a web viewer.

One exact k-NN (:func:`~sae_assets.core.feature_map.knn.exact_knn`, ``k = max(k_edges, n_neighbors)``) serves twice: its
first ``k_edges`` neighbours at or above ``edge_threshold`` are the map's edges, and its first ``n_neighbors - 1``
(each point itself prepended at distance 0, as umap-learn expects) are UMAP's ``precomputed_knn``, so UMAP runs
no approximate neighbour search (pynndescent) of its own.

The viewer reads ``layer-N.json`` (or ``layer-N.json.gz``) in the seed's shape, ``{"layer", "model", "nodes":
[{"id", "position": [x, y, z], "label", "density", "cluster"}], "edges": [{"source", "target", "similarity"}]}``, and
``manifest.json`` listing the layers present. Files are written through
:mod:`~sae_assets.core.common.atomic_file` (a temporary name, then renamed), so a reader never sees half a file and a
failed write leaves nothing behind.
"""

from __future__ import annotations

import gzip as gz
import json
import threading
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import torch

from sae_assets.core.common.atomic_file import StagedFile, write_atomic
from sae_assets.core.common.progress import Report
from sae_assets.core.common.similarity import unit_rows
from sae_assets.core.common.umap_cache import load_umap
from sae_assets.core.common.umap_progress import umap_tqdm_kwds
from sae_assets.core.feature_map.export_names import LAYER_FILE, MANIFEST
from sae_assets.core.feature_map.knn import exact_knn
from sae_assets.core.feature_map.pca_init import pca_layout


@dataclass(frozen=True)
class FeatureMapConfig:
    n_neighbors: int = 15
    """UMAP neighbourhood size, the point itself included (umap-learn's convention): larger keeps more of
    the global structure, smaller more of the local one."""
    min_dist: float = 0.1
    """UMAP minimum distance between embedded points: smaller packs neighbours tighter."""
    metric: Literal["cosine"] = "cosine"
    """Similarity of decoder vectors, for edges and UMAP alike; only ``cosine`` (the exact k-NN's)."""
    seed: int = 0
    """UMAP ``random_state``: the same decoder and seed give the same positions."""
    init: Literal["pca", "spectral", "random"] = "pca"
    """UMAP initial layout: ``pca`` (default here), ``spectral`` (umap-learn's default) or ``random``. PCA is
    deterministic and needs no eigensolver, which warns or fails on a k-NN graph with many components (dead
    and duplicate decoder rows make those); it is computed here in torch (:mod:`~sae_assets.core.feature_map.pca_init`,
    0.3 s at 16k x 2,304 against 1.6 s for umap-learn's own), and both inits reach the seed's trustworthiness
    within 0.01 (``benchmarks/feature_map.py``)."""
    n_epochs: int | None = 100
    """UMAP layout epochs; None: umap-learn's default (200 above 10,000 points, else 500). 100 halves the layout's
    time at the same trustworthiness (cosine, 5 neighbours): 16,384 x 2,304 (``benchmarks/feature_map.py``'s
    decoder) 0.9397 at 100 epochs vs 0.9378 at 200 (3.5 vs 6.8 s); 2,048 x 576: 0.9793 vs 0.9817 at 500."""
    k_edges: int = 25
    """Nearest neighbours of each feature considered as its edges."""
    edge_threshold: float = 0.25
    """Lowest cosine similarity kept as an edge."""
    precision: int = 4
    """Digits of floats in the JSON: decimals of positions and similarities, significant digits of density."""
    gzip: bool = False
    """Write ``layer-N.json.gz`` (gzip) instead of ``layer-N.json``."""

    def __post_init__(self) -> None:
        if self.metric != "cosine":
            raise ValueError(f"metric must be 'cosine' (the exact k-NN's), not {self.metric!r}")
        if self.init not in ("pca", "spectral", "random"):
            raise ValueError(f"init must be 'pca', 'spectral' or 'random', not {self.init!r}")
        if self.n_neighbors < 2:
            raise ValueError(f"n_neighbors must be at least 2, not {self.n_neighbors}")
        if self.k_edges < 1:
            raise ValueError(f"k_edges must be at least 1, not {self.k_edges}")
        if not -1.0 <= self.edge_threshold <= 1.0:
            raise ValueError(f"edge_threshold is a cosine similarity in [-1, 1], not {self.edge_threshold}")
        if self.min_dist < 0:
            raise ValueError(f"min_dist must be >= 0, not {self.min_dist}")
        if not 0 <= self.precision <= 12:
            raise ValueError(f"precision must be in [0, 12], not {self.precision}")

    @property
    def knn_k(self) -> int:
        """Neighbours of the one exact k-NN: enough for the edges and for UMAP's graph."""
        return max(self.k_edges, self.n_neighbors)


@dataclass(frozen=True)
class FeatureMap:
    coords: np.ndarray
    """``[n, 3]`` float32 UMAP positions, row i for vector i."""
    indices: np.ndarray
    """``[n, knn_k]`` int64 row positions of each vector's nearest others (similarity desc, index asc)."""
    sims: np.ndarray
    """``[n, knn_k]`` float32 cosine similarities of those neighbours."""
    knn_seconds: float
    umap_seconds: float


def umap_knn(indices: np.ndarray, sims: np.ndarray, n_neighbors: int) -> tuple[np.ndarray, np.ndarray]:
    """An exact k-NN without self (``[n, k]``, ``k >= n_neighbors - 1``) -> umap-learn's ``precomputed_knn``
    arrays ``[n, n_neighbors]``: each point itself first at distance 0, then its ``n_neighbors - 1`` nearest
    at cosine distance ``1 - similarity``; int32 / float32 like pynndescent's."""
    n, k = indices.shape
    if k < n_neighbors - 1:
        raise ValueError(f"UMAP with n_neighbors={n_neighbors} needs {n_neighbors - 1} neighbours, the k-NN has {k}")
    idx = np.concatenate([np.arange(n)[:, None], indices[:, : n_neighbors - 1]], axis=1).astype(np.int32)
    dist = np.concatenate([np.zeros((n, 1)), np.maximum(1.0 - sims[:, : n_neighbors - 1], 0.0)], axis=1)
    return idx, dist.astype(np.float32)


def umap_3d(vectors: np.ndarray, knn_indices: np.ndarray, knn_sims: np.ndarray, cfg: FeatureMapConfig,
            report: Report | None = None) -> np.ndarray:
    """``vectors [n, dim]`` and their exact k-NN -> ``[n, 3]`` float32 positions (UMAP, cosine, seeded); ``report``
    gets a line when it starts, then its epochs (done, rate, ETA) at most every 10 s.

    UMAP builds its graph from the given k-NN at every size (``force_approximation_algorithm``: below 4,096 points
    umap-learn would otherwise compute all pairwise distances itself). With ``init="pca"`` the initial layout comes
    from :func:`~sae_assets.core.feature_map.pca_init.pca_layout`, and UMAP, which then reads nothing of the vectors
    but their count, is handed that ``[n, 3]`` layout as its data instead of the ``[n, dim]`` matrix it would
    validate, copy and hash (0.7 s at 16,384 x 2,304)."""
    umap = load_umap()  # heavy (numba): imported only when used; kernels cached on disk

    idx, dist = umap_knn(np.asarray(knn_indices), np.asarray(knn_sims), cfg.n_neighbors)
    unit = unit_rows(torch.as_tensor(np.asarray(vectors)).to(torch.float32))
    init: str | np.ndarray = cfg.init
    if cfg.init == "pca":
        init = pca_layout(unit, 3, cfg.seed)
    data = init if isinstance(init, np.ndarray) else unit.numpy()
    what = f"feature map UMAP of {len(data):,} points"
    reducer = umap.UMAP(n_components=3, n_neighbors=cfg.n_neighbors, min_dist=cfg.min_dist, metric=cfg.metric,
                        random_state=cfg.seed, init=init, n_jobs=1, precomputed_knn=(idx, dist, None),
                        force_approximation_algorithm=True, n_epochs=cfg.n_epochs,
                        tqdm_kwds=umap_tqdm_kwds(report, what))
    if report is not None:
        report(f"{what}: graph of the exact k-NN, then the layout's epochs")
    with warnings.catch_warnings():
        # no search index: only transform() of new points would need one
        warnings.filterwarnings("ignore", message=r"precomputed_knn\[2\]")
        coords = np.asarray(reducer.fit_transform(data), dtype=np.float32)
    if coords.shape != (len(data), 3) or not np.isfinite(coords).all():
        raise ValueError(f"UMAP returned {coords.shape} positions with non-finite values")
    return coords


def build_feature_map(vectors: torch.Tensor | np.ndarray, cfg: FeatureMapConfig,
                      device: torch.device | str | None = None, report: Report | None = None) -> FeatureMap:
    """``vectors [n, dim]`` -> one exact k-NN (on ``device``) used for edges and for UMAP's 3-D positions.
    Raises ValueError for NaN/Inf vectors or ``n <= knn_k``. ``report`` gets progress at most every 10 s."""
    start = time.perf_counter()
    importing = threading.Thread(target=load_umap, name="import-umap", daemon=True)
    importing.start()  # Python imports (~3 s) overlap the k-NN's products, which leave the interpreter free
    knn_indices, knn_sims = exact_knn(vectors, cfg.knn_k, device=device, report=report)
    indices, sims = knn_indices.cpu().numpy(), knn_sims.cpu().numpy()
    knn_seconds = time.perf_counter() - start
    start = time.perf_counter()
    importing.join()
    array = vectors.detach().cpu().numpy() if isinstance(vectors, torch.Tensor) else np.asarray(vectors)
    coords = umap_3d(array, indices, sims, cfg, report)
    return FeatureMap(coords, indices, sims, knn_seconds, time.perf_counter() - start)


def edges_frame(indices: np.ndarray, sims: np.ndarray, k_edges: int, threshold: float,
                features: np.ndarray | None = None) -> pl.DataFrame:
    """Directed k-NN edges: for each row, its first ``k_edges`` neighbours with similarity ``>= threshold``;
    columns ``source``, ``target`` (int32; ``features[row]`` when given, else row positions) and
    ``similarity`` (float32), ordered by source then neighbour rank."""
    idx, sim = np.asarray(indices)[:, :k_edges], np.asarray(sims, dtype=np.float32)[:, :k_edges]
    keep = sim >= threshold
    ids = np.arange(len(idx)) if features is None else np.asarray(features)
    source = np.broadcast_to(np.arange(len(idx))[:, None], idx.shape)[keep]
    return pl.DataFrame({"source": pl.Series(ids[source], dtype=pl.Int32),
                         "target": pl.Series(ids[idx[keep]], dtype=pl.Int32),
                         "similarity": pl.Series(sim[keep], dtype=pl.Float32)})


def nodes_frame(features: np.ndarray, coords: np.ndarray, labels: Iterable[str | None] | None = None,
                density: Iterable[float | None] | None = None,
                cluster: Iterable[int | None] | None = None) -> pl.DataFrame:
    """``feature`` (int32), ``x``, ``y``, ``z`` (float32), ``label`` (string, typed even when all null),
    ``density`` (float64), ``cluster`` (int32: ``feature_clusters``' id, -1 noise, null when not clustered);
    one row per feature."""
    n = len(features)
    return pl.DataFrame({
        "feature": pl.Series(features, dtype=pl.Int32),
        **{axis: pl.Series(coords[:, i], dtype=pl.Float32) for i, axis in enumerate("xyz")},
        "label": pl.Series(list(labels) if labels is not None else [None] * n, dtype=pl.String),
        "density": pl.Series(list(density) if density is not None else [None] * n, dtype=pl.Float64),
        "cluster": pl.Series(list(cluster) if cluster is not None else [None] * n, dtype=pl.Int32),
    })


def _significant(value: float | None, digits: int) -> float | None:
    if value is None or not np.isfinite(value):
        return None
    return float(f"{value:.{max(digits, 1)}g}")


def layer_json(nodes: pl.DataFrame, edges: pl.DataFrame, precision: int, *, model: str, layer: int) -> dict:
    """The seed's ``layer-N.json`` object from :func:`nodes_frame` and :func:`edges_frame` frames."""
    positions = (np.round(nodes.select("x", "y", "z").to_numpy().astype(np.float64), precision) + 0.0).tolist()
    densities = [_significant(d, precision) for d in nodes["density"].to_list()]
    similarity = (np.round(edges["similarity"].to_numpy().astype(np.float64), precision) + 0.0).tolist()
    return {
        "layer": int(layer), "model": model,
        "nodes": [{"id": f, "position": p, "label": lab, "density": d, "cluster": c}
                  for f, p, lab, d, c in zip(nodes["feature"].to_list(), positions, nodes["label"].to_list(),
                                             densities, nodes["cluster"].to_list(), strict=True)],
        "edges": [{"source": s, "target": t, "similarity": v}
                  for s, t, v in zip(edges["source"].to_list(), edges["target"].to_list(), similarity, strict=True)],
    }


def dumps(payload: dict) -> str:
    """Compact JSON, safe to inline in HTML: ``<``, ``>``, ``&`` escaped as ``\\u003c``... (the parsed strings
    are unchanged: labels stay verbatim text); NaN is refused."""
    text = json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def layer_file_name(layer: int, gzip: bool) -> str:
    return f"layer-{int(layer)}.json" + (".gz" if gzip else "")


def encode(payload: dict, gzip: bool) -> bytes:
    data = dumps(payload).encode("utf-8")
    return gz.compress(data, compresslevel=6, mtime=0) if gzip else data


def read_json(path: Path) -> dict:
    data = Path(path).read_bytes()
    return json.loads(gz.decompress(data) if path.name.endswith(".gz") else data)


def commit_layer(staged: StagedFile) -> Path:
    """Publish a staged ``layer-N.json[.gz]`` and remove the layer's file of the other format, if any."""
    path = staged.commit()
    other = path.name.removesuffix(".gz") if path.name.endswith(".gz") else path.name + ".gz"
    (path.parent / other).unlink(missing_ok=True)
    return path


def layer_entry(path: Path, payload: dict | None = None) -> dict:
    """A manifest line for a layer file: ``layer``, ``file``, ``features``, ``edges``, ``bytes``; counts from
    ``payload`` when given, else from the parsed file."""
    payload = payload if payload is not None else read_json(path)
    if (match := LAYER_FILE.match(path.name)) is None:
        raise ValueError(f"{path.name} is not a layer file (layer-<N>.json[.gz])")
    return {"layer": int(match.group(1)), "file": path.name, "features": len(payload["nodes"]),
            "edges": len(payload["edges"]), "bytes": path.stat().st_size}


def manifest_json(model: str, entries: Iterable[dict]) -> dict:
    """``{"model", "layers": [{"layer", "file", "features", "edges", "bytes"}, ...]}``, by layer."""
    return {"model": model, "layers": sorted(entries, key=lambda e: e["layer"])}


def write_manifest(directory: Path | str, model: str, fresh: Iterable[dict] = ()) -> tuple[Path, dict]:
    """Rebuild ``manifest.json`` from the layer files present in ``directory``. Entries come from ``fresh``
    (just written), else from the previous manifest when the file's size is unchanged, else from parsing it."""
    directory = Path(directory)
    known = {e["file"]: e for e in _previous_entries(directory)} | {e["file"]: e for e in fresh}
    entries = []
    for path in sorted(p for p in directory.iterdir() if LAYER_FILE.match(p.name)):
        entry = known.get(path.name)
        entries.append(entry if entry is not None and entry["bytes"] == path.stat().st_size else layer_entry(path))
    manifest = manifest_json(model, entries)
    return write_atomic(directory / MANIFEST, json.dumps(manifest, indent=1) + "\n"), manifest


def _previous_entries(directory: Path) -> list[dict]:
    try:
        return list(json.loads((directory / MANIFEST).read_text())["layers"])
    except (OSError, ValueError, KeyError, TypeError):
        return []
