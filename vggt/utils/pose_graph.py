"""A pose graph over Sim(3): chaining window transforms, and spreading a loop-closure error over the chain.

Nodes are world-from-window similarities `T_k` (window k's coordinates into the world, i.e. the first window's).
An edge measures the relative similarity `Z_ij` taking window j's coordinates into window i's, so ideally
`T_j = T_i @ Z_ij`. Its residual is `r_ij = log(Z_ij^-1 T_i^-1 T_j)` [7] in sim(3) (order (rho, phi, sigma), see
`vggt.utils.similarity`), and the graph minimises `1/2 sum r^T Omega r` with Levenberg-Marquardt, updating nodes
on the right (`T_k <- T_k exp(delta_k)`) and holding node 0 fixed, which fixes the gauge (the world frame and
scale). Linearisation, for `P = T_i^-1 T_j`: `dr/d delta_j = J_r^-1(r)`, `dr/d delta_i = -J_r^-1(r) Ad(P^-1)`.

The normal equations are dense (7 (N - 1) unknowns): a few hundred windows solve in well under a second.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from vggt.errors import InputError
from vggt.utils.similarity import Similarity, compose_arrays, invert_arrays, sim3_exp, sim3_log, skew

TANGENT_DIM = 7
DEFAULT_MAX_ITERATIONS = 100
# Stop when the relative decrease of the cost, or the largest step component, falls below this.
DEFAULT_TOLERANCE = 1e-12
INITIAL_DAMPING = 1e-6
DAMPING_FACTOR = 10.0
MAX_DAMPING = 1e12


@dataclass(frozen=True)
class SimilarityEdge:
    """A measured relative similarity between nodes `target` (i) and `source` (j).

    measurement: `Z_ij`, taking node j's coordinates into node i's (`T_j ~ T_i @ Z_ij`).
    information: [7, 7] inverse covariance of the residual in (rho, phi, sigma) order, or a float w for w * I.
    """

    target: int
    source: int
    measurement: Similarity
    information: np.ndarray | float = 1.0


@dataclass
class PoseGraphResult:
    """nodes: N optimised world-from-window similarities (node 0 unchanged). costs: the cost before the first and
    after every accepted iteration. iterations: Levenberg-Marquardt iterations run."""

    nodes: list[Similarity]
    costs: list[float] = field(default_factory=list)
    iterations: int = 0


def chain_similarities(links: Sequence[Similarity], first: Similarity | None = None) -> list[Similarity]:
    """World-from-window nodes of a chain: `nodes[k + 1] = nodes[k] @ links[k]`.

    Args:
        links: K similarities, `links[k]` taking window k+1's coordinates into window k's.
        first: node 0 (default: the identity, i.e. the world is window 0's frame).

    Returns:
        K + 1 nodes.
    """
    nodes = [Similarity.identity() if first is None else first]
    for link in links:
        nodes.append(nodes[-1] @ link)
    return nodes


def adjoint(scale: np.ndarray, rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """[..., 7, 7] Ad(T) with `T exp(xi) T^-1 = exp(Ad(T) xi)`."""
    matrix = np.zeros(np.shape(scale) + (TANGENT_DIM, TANGENT_DIM))
    matrix[..., :3, :3] = np.asarray(scale)[..., None, None] * rotation
    matrix[..., :3, 3:6] = skew(translation) @ rotation
    matrix[..., :3, 6] = -translation
    matrix[..., 3:6, 3:6] = rotation
    matrix[..., 6, 6] = 1.0
    return matrix


def small_adjoint(xi: np.ndarray) -> np.ndarray:
    """[..., 7, 7] ad(xi), the matrix of the Lie bracket `[xi, .]` of sim(3)."""
    rho, phi, sigma = xi[..., :3], xi[..., 3:6], xi[..., 6]
    matrix = np.zeros(xi.shape[:-1] + (TANGENT_DIM, TANGENT_DIM))
    matrix[..., :3, :3] = skew(phi) + sigma[..., None, None] * np.eye(3)
    matrix[..., :3, 3:6] = skew(rho)
    matrix[..., :3, 6] = -rho
    matrix[..., 3:6, 3:6] = skew(phi)
    return matrix


def inverse_right_jacobian(xi: np.ndarray) -> np.ndarray:
    """[..., 7, 7] J_r^-1(xi) to fifth order: `I + ad/2 + ad^2/12 - ad^4/720` (Bernoulli numbers; odd terms past
    the first are zero)."""
    ad = small_adjoint(xi)
    ad2 = ad @ ad
    return np.eye(TANGENT_DIM) + ad / 2 + ad2 / 12 - ad2 @ ad2 / 720


class _Graph:
    """The edges of a pose graph as batched arrays, and its residuals and Jacobians at given nodes."""

    def __init__(self, edges: Sequence[SimilarityEdge], num_nodes: int) -> None:
        for edge in edges:
            for index in (edge.target, edge.source):
                if not 0 <= index < num_nodes:
                    raise InputError("{edges} name node {index}, but {nodes} has {count}", index=index, count=num_nodes)
        self.targets = np.array([edge.target for edge in edges], dtype=np.int64)
        self.sources = np.array([edge.source for edge in edges], dtype=np.int64)
        measurements = [edge.measurement for edge in edges]
        self.measurements_inverse = invert_arrays(*_stack(measurements))
        information = [_information_matrix(edge.information) for edge in edges]
        self.information = np.stack(information) if edges else np.zeros((0, TANGENT_DIM, TANGENT_DIM))

    def relative(self, nodes: tuple) -> tuple:
        """P_ij = T_i^-1 T_j per edge."""
        target = tuple(array[self.targets] for array in nodes)
        source = tuple(array[self.sources] for array in nodes)
        return compose_arrays(invert_arrays(*target), source)

    def residuals(self, nodes: tuple) -> np.ndarray:
        """[E, 7] log(Z^-1 P)."""
        return sim3_log(*compose_arrays(self.measurements_inverse, self.relative(nodes)))

    def cost(self, nodes: tuple) -> float:
        residuals = self.residuals(nodes)
        return 0.5 * float(np.einsum("ei,eij,ej->", residuals, self.information, residuals))

    def jacobians(self, nodes: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Residuals [E, 7] and their Jacobians [E, 7, 7] with respect to the target and the source node."""
        residuals = self.residuals(nodes)
        right = inverse_right_jacobian(residuals)
        return residuals, -right @ adjoint(*invert_arrays(*self.relative(nodes))), right


def _information_matrix(information: np.ndarray | float) -> np.ndarray:
    """[7, 7] information of an edge: a given matrix, or w * I for a float w."""
    matrix = np.asarray(information, dtype=np.float64)
    matrix = matrix * np.eye(TANGENT_DIM) if matrix.ndim == 0 else matrix
    valid = matrix.shape == (TANGENT_DIM, TANGENT_DIM) and np.isfinite(matrix).all() and np.allclose(matrix, matrix.T)
    if not valid or np.linalg.eigvalsh(matrix)[0] < -1e-12 * np.abs(matrix).max():
        raise InputError("an edge's information must be a float >= 0 or a symmetric positive semi-definite [7, 7]")
    return matrix


def _stack(similarities: Sequence[Similarity]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not similarities:
        return np.zeros(0), np.zeros((0, 3, 3)), np.zeros((0, 3))
    scales, rotations, translations = zip(*(s.as_arrays() for s in similarities))
    return np.stack(scales), np.stack(rotations), np.stack(translations)


def _normal_equations(graph: _Graph, nodes: tuple, num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Newton H [7 N, 7 N] and gradient g [7 N] over all nodes."""
    residuals, jacobian_target, jacobian_source = graph.jacobians(nodes)
    hessian = np.zeros((num_nodes, TANGENT_DIM, num_nodes, TANGENT_DIM))
    gradient = np.zeros((num_nodes, TANGENT_DIM))
    blocks = {"t": (graph.targets, jacobian_target), "s": (graph.sources, jacobian_source)}
    weighted = {key: np.swapaxes(jac, -1, -2) @ graph.information for key, (_, jac) in blocks.items()}
    for key, (rows, _) in blocks.items():
        np.add.at(gradient, rows, np.einsum("eij,ej->ei", weighted[key], residuals))
        for columns, jacobian in blocks.values():
            np.add.at(hessian, (rows, slice(None), columns), weighted[key] @ jacobian)
    size = num_nodes * TANGENT_DIM
    return hessian.reshape(size, size), gradient.reshape(size)


def optimize_pose_graph(
    nodes: Sequence[Similarity],
    edges: Sequence[SimilarityEdge],
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
    tolerance: float = DEFAULT_TOLERANCE,
) -> PoseGraphResult:
    """Levenberg-Marquardt on the pose graph from `nodes`, holding node 0 fixed.

    Args:
        nodes: N initial world-from-window similarities, e.g. `chain_similarities(links)`.
        edges: the measurements: consecutive links, plus loop-closure edges between distant windows.
        max_iterations: iterations at most.
        tolerance: stop when the relative cost decrease or the largest step component is below it.

    Returns:
        PoseGraphResult with the optimised nodes.
    """
    if not nodes:
        raise InputError("{nodes} is empty: a pose graph needs at least one node")
    num_nodes = len(nodes)
    graph = _Graph(edges, num_nodes)
    state = _stack(nodes)
    costs = [graph.cost(state)]
    damping, iteration = INITIAL_DAMPING, 0
    while iteration < max_iterations and num_nodes > 1 and costs[-1] > 0:
        iteration += 1
        hessian, gradient = _normal_equations(graph, state, num_nodes)
        free = slice(TANGENT_DIM, None)  # node 0 is fixed
        hessian, gradient = hessian[free, free], gradient[free]
        diagonal = np.maximum(np.diag(hessian), 1e-12 * max(1.0, np.abs(np.diag(hessian)).max()))
        while damping <= MAX_DAMPING:
            step = np.linalg.solve(hessian + damping * np.diag(diagonal), -gradient)
            increments = np.concatenate((np.zeros(TANGENT_DIM), step)).reshape(num_nodes, TANGENT_DIM)
            candidate = compose_arrays(state, sim3_exp(increments))
            cost = graph.cost(candidate)
            if cost <= costs[-1]:
                break
            damping *= DAMPING_FACTOR
        else:
            break  # no step lowers the cost: at the minimum to rounding
        decrease = (costs[-1] - cost) / costs[-1]
        state, damping = candidate, max(damping / DAMPING_FACTOR, INITIAL_DAMPING)
        costs.append(cost)
        if decrease < tolerance or np.abs(step).max() < tolerance:
            break
    optimised = [Similarity(s, r, t) for s, r, t in zip(*state)]
    return PoseGraphResult(optimised, costs, iteration)
