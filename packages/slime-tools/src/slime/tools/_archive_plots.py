"""Figures of the behavioural space: archive heatmaps (grid, CVT) and the live pods in kernel PCA.

Each function builds and returns a matplotlib Figure (object API, no pyplot state) or raises
DataError saying why there is nothing to draw.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from slime.memory import Archive, CVTArchive, GridArchive, kernel_pca
from slime.proto import ArchiveError, DataError

__all__ = ["DESCRIPTOR_LABELS", "OBJECTIVE_LABEL", "archive_heatmap", "behaviour_space"]

# Every descriptor of slime.core.pseudopod lies in [0, 1]; the label says what 1 means.
DESCRIPTOR_LABELS = {
    "attention_distance": "attention distance (fraction of context, 0-1)",
    "activation_sparsity": "activation sparsity (Hoyer, 0-1)",
    "weight_spread": "weight spread (0-1)",
}
OBJECTIVE_LABEL = "fitness of the elite (higher is better)"


def _label(names: Sequence[str], i: int) -> str:
    if i < len(names):
        return DESCRIPTOR_LABELS.get(names[i], names[i])
    return f"descriptor {i}"


def _elites(archive: Archive) -> tuple[np.ndarray, np.ndarray]:
    """``(cells (n,), objectives (n,))`` of the archive's elites."""
    elites = list(archive)
    if not elites:
        raise DataError(f"the {type(archive).__name__} holds no elite yet")
    cells = np.array([e.cell for e in elites], dtype=np.int64)
    return cells, np.array([e.objective for e in elites], dtype=np.float64)


def _title(archive: Archive, title: str) -> str:
    stats = archive.stats
    return (
        f"{title}: {stats.num_elites} elites, coverage {stats.coverage:.0%}, "
        f"QD score {stats.qd_score:.3g}"
    )


def _grid(fig: Figure, archive: GridArchive, names: Sequence[str], title: str) -> None:
    cells, objectives = _elites(archive)
    dims = archive.dims
    values = np.full(dims, np.nan)
    values[np.unravel_index(cells, dims)] = objectives
    ranges = archive.ranges
    ax = fig.add_subplot()
    if len(dims) == 1:
        image = values[None, :]
        extent = (*ranges[0], 0.0, 1.0)
        ax.set_yticks([])
    else:
        # Beyond two descriptors, each (x, y) cell shows its best elite over the others.
        image = np.fmax.reduce(values.reshape(dims[0], dims[1], -1), axis=2)  # NaN: empty
        image = image.T  # imshow rows are y
        extent = (*ranges[0], *ranges[1])
        ax.set_ylabel(_label(names, 1))
        if len(dims) > 2:
            title += f" (best over {', '.join(_label(names, i) for i in range(2, len(dims)))})"
    cmap = colormaps["viridis"].with_extremes(bad="0.85")  # empty cells: light grey
    mesh = ax.imshow(image, origin="lower", extent=extent, aspect="auto", cmap=cmap)
    fig.colorbar(mesh, ax=ax, label=OBJECTIVE_LABEL)
    ax.set_xlabel(_label(names, 0))
    ax.set_title(title, fontsize=10)


def _voronoi_edges(points: np.ndarray) -> list[np.ndarray]:
    """Finite edges of the 2-D Voronoi diagram of ``points`` ``(n, 2)``, n >= 4."""
    from scipy.spatial import Voronoi

    diagram = Voronoi(points)
    return [diagram.vertices[r] for r in diagram.ridge_vertices if -1 not in r]


def _cvt(fig: Figure, archive: CVTArchive, names: Sequence[str], title: str) -> None:
    cells, objectives = _elites(archive)
    centroids = archive.centroids.numpy()
    if centroids.shape[1] == 1:
        centroids = np.concatenate([centroids, np.zeros_like(centroids)], axis=1)
    xy = centroids[:, :2]
    ax = fig.add_subplot()
    if archive.descriptor_dim == 2 and len(xy) >= 4:
        edges = LineCollection(_voronoi_edges(xy), colors="0.6", linewidths=0.6)
        ax.add_collection(edges)
    empty = np.setdiff1d(np.arange(archive.cells), cells)
    ax.scatter(xy[empty, 0], xy[empty, 1], s=12, facecolors="none", edgecolors="0.6")
    points = ax.scatter(xy[cells, 0], xy[cells, 1], c=objectives, s=40, cmap="viridis")
    fig.colorbar(points, ax=ax, label=OBJECTIVE_LABEL)
    (x0, x1), *rest = archive.ranges
    ax.set_xlim(x0, x1)
    ax.set_xlabel(_label(names, 0))
    if rest:
        ax.set_ylim(*rest[0])
        ax.set_ylabel(_label(names, 1))
    else:
        ax.set_yticks([])
    ax.set_title(title + " (CVT centroids; hollow: empty cell)", fontsize=10)


def archive_heatmap(
    archive: Archive, names: Sequence[str] = (), *, title: str = "archive"
) -> Figure:
    """Heatmap of an archive's elites coloured by objective.

    A GridArchive is drawn as an image over its first two descriptors (one row for a 1-D grid);
    a CVTArchive as its centroids (with the Voronoi edges for 2-D descriptors), filled where a
    cell holds an elite. Empty cells are grey.

    Args:
        names: descriptor names (DESCRIPTOR_NAMES order) for the axis labels.
        title: prefix of the title; archive statistics are appended.

    Raises:
        DataError: the archive holds no elite, or is neither a grid nor a CVT archive.
    """
    fig = Figure(figsize=(6.4, 4.8), layout="constrained")
    if isinstance(archive, GridArchive):
        _grid(fig, archive, names, _title(archive, title))
    elif isinstance(archive, CVTArchive):
        _cvt(fig, archive, names, _title(archive, title))
    else:
        raise DataError(f"cannot draw a {type(archive).__name__}; expected a grid or CVT archive")
    return fig


def behaviour_space(
    descriptors: Sequence[torch.Tensor],
    fitness: Sequence[Sequence[float]] | None = None,
    *,
    title: str = "behaviour of the live pods",
) -> Figure:
    """The live pods of every layer in the first two kernel-PCA components of their descriptors.

    Args:
        descriptors: per layer, the live pods' descriptors ``(n_i, k)`` (all layers share ``k``).
        fitness: per layer, the pods' fitness, colouring the points (None: colour by layer).

    Raises:
        DataError: fewer than two pods in all, or descriptors that kernel PCA cannot separate
            (e.g. all identical, as before the first behaviour measurement).
    """
    samples = torch.cat([d.detach().double().cpu() for d in descriptors])
    if samples.shape[0] < 2:
        raise DataError(f"kernel PCA needs at least 2 live pods, the model has {samples.shape[0]}")
    try:
        pca = kernel_pca(samples, n_components=2)
    except ArchiveError as exc:
        raise DataError(f"no behaviour map: {exc} (pods never measured?)") from exc
    embedding = pca.embedding.numpy()
    layers = np.concatenate([np.full(len(d), i) for i, d in enumerate(descriptors)])
    fig = Figure(figsize=(6.4, 4.8), layout="constrained")
    ax = fig.add_subplot()
    markers = "osD^vP*X"
    colour = None if fitness is None else np.concatenate([np.asarray(f, float) for f in fitness])
    low = None if colour is None else colour.min()
    high = None if colour is None else colour.max()
    points = None
    for layer in range(len(descriptors)):
        at = layers == layer
        if not at.any():
            continue
        style = {"marker": markers[layer % len(markers)], "s": 50, "label": f"layer {layer}"}
        if colour is None:
            ax.scatter(embedding[at, 0], embedding[at, 1], **style)
        else:
            points = ax.scatter(
                embedding[at, 0],
                embedding[at, 1],
                c=colour[at],
                vmin=low,
                vmax=high,
                cmap="viridis",
                edgecolors="k",
                **style,
            )
    if points is not None:
        fig.colorbar(points, ax=ax, label="pod fitness (higher is better)")
    share = pca.explained_ratio.numpy()
    ax.set_xlabel(f"kernel PC 1 (RBF; {share[0]:.0%} of variance, dimensionless)")
    ax.set_ylabel(f"kernel PC 2 (RBF; {share[1]:.0%} of variance, dimensionless)")
    ax.set_title(f"{title}: {samples.shape[0]} pods", fontsize=10)
    ax.legend(loc="best", fontsize=8)
    return fig
