"""The Sim(3) pose graph (vggt.utils.pose_graph): chaining, loop closure, and its optimum against SciPy's."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import least_squares

from benchmarks.synthetic_windows import random_similarity
from vggt.errors import InputError
from vggt.utils.pose_graph import SimilarityEdge, _Graph, _stack, chain_similarities, optimize_pose_graph
from vggt.utils.similarity import Similarity, compose_arrays, rotation_log, sim3_exp


def node_errors(nodes: list[Similarity], truth: list[Similarity]) -> np.ndarray:
    """[N, 3]: rotation (deg), translation and log-scale errors of each node."""
    rows = []
    for node, true in zip(nodes, truth):
        rotation = np.rad2deg(np.linalg.norm(rotation_log(node.rotation @ true.rotation.T)))
        rows.append(
            (rotation, np.linalg.norm(node.translation - true.translation), abs(np.log(node.scale / true.scale)))
        )
    return np.array(rows)


def drifting_loop(num_nodes: int, seed: int):
    """True nodes on a loop, and links measured with a steady bias (drift) plus noise."""
    rng = np.random.default_rng(seed)
    truth = [Similarity.identity()]
    for _ in range(1, num_nodes):
        step = np.concatenate((rng.normal(0, 0.5, 3), rng.normal(0, 0.2, 3), rng.normal(0, 0.05, 1)))
        truth.append(truth[-1] @ Similarity.exp(step))
    bias = np.array([0.02, -0.01, 0.01, 0.01, 0.005, -0.01, 0.01])
    measured = []
    for k in range(num_nodes - 1):
        true_link = truth[k].inverse() @ truth[k + 1]
        measured.append(true_link @ Similarity.exp(bias + rng.normal(0, 0.002, 7)))
    return truth, measured


def test_without_loop_edges_the_optimum_is_the_chain():
    truth, links = drifting_loop(8, seed=0)
    chained = chain_similarities(links)
    edges = [SimilarityEdge(k, k + 1, link) for k, link in enumerate(links)]
    result = optimize_pose_graph(chained, edges)
    assert result.costs[-1] < 1e-20
    for node, chain in zip(result.nodes, chained):
        np.testing.assert_allclose(node.matrix, chain.matrix, atol=1e-10)
    np.testing.assert_allclose(chained[3].matrix, (links[0] @ links[1] @ links[2]).matrix, atol=1e-12)


def test_an_accurate_loop_edge_spreads_the_drift_over_the_chain():
    truth, links = drifting_loop(12, seed=1)
    chained = chain_similarities(links)
    edges = [SimilarityEdge(k, k + 1, link) for k, link in enumerate(links)]
    loop = truth[0].inverse() @ truth[-1]
    edges.append(SimilarityEdge(0, len(truth) - 1, loop, information=100.0))
    result = optimize_pose_graph(chained, edges)

    before, after = node_errors(chained, truth), node_errors(result.nodes, truth)
    np.testing.assert_array_equal(result.nodes[0].matrix, chained[0].matrix)  # node 0 is held fixed
    assert result.costs[-1] < result.costs[0] / 10
    # The last node is pinned by the loop edge; every error component shrinks over the whole chain.
    assert np.all(after[-1] < before[-1] / 10), (before[-1], after[-1])
    assert np.all(after.max(axis=0) < before.max(axis=0) / 2), (before.max(axis=0), after.max(axis=0))


def test_optimum_matches_scipy_least_squares_on_large_residuals():
    rng = np.random.default_rng(2)
    nodes = [Similarity.identity()] + [random_similarity(rng) for _ in range(3)]
    pairs = [(0, 1), (1, 2), (2, 3), (3, 0), (0, 2)]
    edges = [
        SimilarityEdge(i, j, nodes[i].inverse() @ nodes[j] @ Similarity.exp(rng.normal(0, 0.3, 7)), 1.0 + i)
        for i, j in pairs
    ]
    result = optimize_pose_graph(nodes, edges)

    graph, start = _Graph(edges, 4), _stack(nodes)
    whitening = np.linalg.cholesky(graph.information)  # Omega = L L^T, so |L^T r|^2 = r^T Omega r

    def residuals(step):
        moved = compose_arrays(start, sim3_exp(np.concatenate((np.zeros(7), step)).reshape(4, 7)))
        return np.einsum("eji,ej->ei", whitening, graph.residuals(moved)).ravel()

    reference = least_squares(residuals, np.zeros(21), xtol=1e-15, ftol=1e-15, gtol=1e-15)
    assert result.costs[-1] == pytest.approx(reference.cost, rel=1e-8)


def test_jacobians_match_finite_differences():
    rng = np.random.default_rng(3)
    nodes = [random_similarity(rng) for _ in range(3)]
    edges = [
        SimilarityEdge(i, j, nodes[i].inverse() @ nodes[j] @ Similarity.exp(rng.normal(0, 0.2, 7)))
        for i, j in ((0, 1), (2, 1))
    ]
    graph, state = _Graph(edges, 3), _stack(nodes)
    _, jacobian_target, jacobian_source = graph.jacobians(state)
    step = 1e-6
    for e, edge in enumerate(edges):
        for node, analytic in ((edge.target, jacobian_target[e]), (edge.source, jacobian_source[e])):
            numeric = np.zeros((7, 7))
            for k in range(7):
                delta = np.zeros((3, 7))
                delta[node, k] = step
                plus = graph.residuals(compose_arrays(state, sim3_exp(delta)))[e]
                minus = graph.residuals(compose_arrays(state, sim3_exp(-delta)))[e]
                numeric[:, k] = (plus - minus) / (2 * step)
            # Residuals of norm ~0.5: the series of J_r^-1, cut after ad^4, leaves ~|ad(r)|^6 / 30240, about 1e-5;
            # a wrong sign or adjoint would be off by order 1.
            np.testing.assert_allclose(analytic, numeric, atol=1e-4)


def test_bad_graphs_raise_input_errors():
    nodes = chain_similarities([Similarity.identity()])
    with pytest.raises(InputError, match="name node 5"):
        optimize_pose_graph(nodes, [SimilarityEdge(0, 5, Similarity.identity())])
    with pytest.raises(InputError, match="positive semi-definite"):
        optimize_pose_graph(nodes, [SimilarityEdge(0, 1, Similarity.identity(), information=-np.eye(7))])
    with pytest.raises(InputError, match="nodes is empty"):
        optimize_pose_graph([], [])
