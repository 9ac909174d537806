"""Graph datasets: Zachary's karate club (from networkx's shipped copy).

Example:
    >>> g = karate_club()
    >>> g["edge_index"].shape, g["labels"].shape
    ((2, 156), (34,))
"""

from __future__ import annotations

import numpy as np

from gpudl.data.datasets import DatasetError


def karate_club() -> dict[str, np.ndarray]:
    """34 members, 78 friendships (both directions in ``edge_index``), club labels 0/1.

    Returns ``{"adjacency": (34, 34) float32, "edge_index": (2, 156) int64,
    "labels": (34,) int64 (0 = Mr. Hi, 1 = Officer), "features": (34, 34) one-hot}``.
    """
    try:
        import networkx as nx
    except ImportError as exc:
        raise DatasetError("karate_club: needs networkx (pip install 'gpudl[data]')") from exc
    g = nx.karate_club_graph()
    n = g.number_of_nodes()
    adjacency = np.zeros((n, n), dtype=np.float32)
    for a, b in g.edges():
        adjacency[a, b] = adjacency[b, a] = 1.0
    src, dst = np.nonzero(adjacency)
    labels = np.array([0 if g.nodes[i]["club"] == "Mr. Hi" else 1 for i in range(n)], np.int64)
    return {"adjacency": adjacency, "edge_index": np.stack([src, dst]).astype(np.int64),
            "labels": labels, "features": np.eye(n, dtype=np.float32)}
