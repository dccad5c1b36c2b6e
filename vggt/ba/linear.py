"""Block-sparse linearization and damped linear solvers for Theseus' Levenberg-Marquardt.

Theseus' SparseLinearization visits every cost function in Python on every iteration. Here a cost function that
holds many small residual blocks (all observations of a bundle adjustment) hands over their Jacobians as one
tensor, and an index computed once scatters them into the CSR values of the Jacobian A. Other cost functions (a
handful) keep Theseus' per-cost layout.

The solvers damp the normal equations the Marquardt way, `(AtA + lambda diag(AtA) + floor) dx = Atb`, the floor
a small fraction of the largest diagonal entry, so that weakly observed or unobserved variables do not make the
system singular; if the factorisation still fails, the damping grows and the solve is retried.

This module imports Theseus at its top (the classes subclass its types): `vggt.ba.solver` imports it only once
`import_theseus()` has succeeded, so that a missing Theseus gives its one-line install hint.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import theseus as th
import torch
from theseus.optimizer.linear_system import SparseStructure

# Damping added to every diagonal entry, as a fraction of the largest one (at least 1): keeps columns that no
# residual touches (a point one problem of a batch does not observe) and near-singular ones factorisable.
DAMPING_FLOOR = 1.0e-10
# When a factorisation fails, the relative damping and the floor are raised to at least RETRY_MIN_DAMPING, then
# multiplied by RETRY_DAMPING_GROWTH, at most MAX_DAMPING_RETRIES times.
RETRY_MIN_DAMPING = 1.0e-8
RETRY_DAMPING_GROWTH = 10.0
MAX_DAMPING_RETRIES = 10
BACKENDS = ("cholmod", "dense")


class NotPositiveDefiniteError(RuntimeError):
    """The damped normal equations of at least one problem of the batch could not be factorised."""


def _block_layout(cost, column_of, value_offset: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """CSR pieces of a block cost: column of each non-zero, row lengths, position of each value in the cost's
    flattened [K, rows, W] Jacobian blocks (plus `value_offset`), and the number K * rows * W of those values."""
    columns, valid = cost.block_columns(column_of)  # [K, W]
    num_blocks, width = columns.shape
    rows = cost.block_rows
    # Within a row CSR wants increasing columns: sort each block's slots, invalid ones last.
    order = np.argsort(np.where(valid, columns, np.iinfo(np.int64).max), axis=1, kind="stable")
    sorted_columns = np.take_along_axis(columns, order, axis=1)
    sorted_valid = np.take_along_axis(valid, order, axis=1)
    source = (np.arange(num_blocks)[:, None, None] * rows + np.arange(rows)[None, :, None]) * width
    source = source + order[:, None, :]  # [K, rows, W]
    keep = np.broadcast_to(sorted_valid[:, None, :], source.shape)
    col_ind = np.broadcast_to(sorted_columns[:, None, :], source.shape)[keep]
    row_lengths = np.repeat(sorted_valid.sum(axis=1), rows)
    return col_ind, row_lengths, source[keep] + value_offset, source.size


class BlockSparseLinearization(th.Linearization):
    """Sparse Jacobian A [R, C] (CSR, one pattern for the whole batch) and residual b [B, R] of an objective.

    Cost functions with `block_columns`, `block_rows` and `block_jacobians` (see ReprojectionCost) are
    written in one gather; any other cost function as Theseus does, one dense block per variable.
    """

    def __init__(self, objective, ordering=None, **kwargs):
        super().__init__(objective, ordering)

        def column_of(variable) -> int:
            return self.var_start_cols[self.ordering.index_of(variable.name)]

        self._costs: list[tuple[Any, list[int] | None]] = []
        col_ind, row_lengths, source = [], [], []
        value_offset = 0
        for cost in objective._get_jacobians_iter():
            if hasattr(cost, "block_jacobians"):
                cols, lengths, src, num_values = _block_layout(cost, column_of, value_offset)
                self._costs.append((cost, None))
                value_offset += num_values
            else:
                starts = [column_of(var) for var in cost.optim_vars]
                var_order = sorted(range(len(starts)), key=starts.__getitem__)
                row_columns = np.concatenate(
                    [np.arange(starts[i], starts[i] + cost.optim_var_at(i).dof()) for i in var_order]
                )
                stride, rows = len(row_columns), cost.dim()
                cols = np.tile(row_columns, rows)
                lengths = np.full(rows, stride)
                src = value_offset + np.arange(rows * stride)
                self._costs.append((cost, var_order))
                value_offset += rows * stride
            col_ind.append(cols)
            row_lengths.append(lengths)
            source.append(src)
        lengths = np.concatenate(row_lengths)
        if len(lengths) != self.num_rows:
            raise RuntimeError(f"linearization has {len(lengths)} rows, the objective {self.num_rows}")
        self.A_col_ind = np.concatenate(col_ind).astype(np.int64)
        self.A_row_ptr = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
        self.A_row_ind = np.repeat(np.arange(self.num_rows), lengths)
        device = objective.device
        self._value_index = torch.from_numpy(np.concatenate(source)).to(device)
        self._col_index = torch.from_numpy(self.A_col_ind).to(device)
        self._row_index = torch.from_numpy(self.A_row_ind).to(device)

        self.A_val: torch.Tensor = None  # [B, nnz]
        self.b: torch.Tensor = None  # [B, R]
        self.detached_hessian = False
        self._AtA_diag: torch.Tensor = None
        self._Atb: torch.Tensor = None

    def _indices(self, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self._value_index.device != device:
            self._value_index, self._col_index, self._row_index = (
                t.to(device) for t in (self._value_index, self._col_index, self._row_index)
            )
        return self._value_index, self._col_index, self._row_index

    def _linearize_jacobian_impl(self):
        values, errors = [], []
        for cost, var_order in self._costs:
            if var_order is None:
                blocks, error = cost.block_jacobians()
            else:
                jacobians, error = cost.weighted_jacobians_error()
                blocks = torch.cat([jacobians[i] for i in var_order], dim=2)
            values.append(blocks.flatten(1))
            errors.append(error)
        # Cost functions whose variables all have batch size 1 broadcast to the others.
        batch = max(v.shape[0] for v in values)
        values = [v.expand(batch, -1) for v in values]
        errors = [e.expand(batch, -1) for e in errors]
        value_index, _, _ = self._indices(values[0].device)
        self.A_val = torch.cat(values, dim=1)[:, value_index]
        self.b = -torch.cat(errors, dim=1)
        self._AtA_diag = None
        self._Atb = None

    def _linearize_hessian_impl(self, _detach_hessian: bool = False):
        self._linearize_jacobian_impl()
        self.detached_hessian = _detach_hessian

    def structure(self):
        return SparseStructure(self.A_col_ind, self.A_row_ptr, self.num_rows, self.num_cols)

    @property
    def AtA_diag(self) -> torch.Tensor:
        """diag(AtA) [B, C]."""
        if self._AtA_diag is None:
            _, col_index, _ = self._indices(self.A_val.device)
            zeros = self.A_val.new_zeros(self.A_val.shape[0], self.num_cols)
            self._AtA_diag = zeros.index_add(1, col_index, self.A_val.square())
        return self._AtA_diag

    def dense_A(self) -> torch.Tensor:
        """A as a dense [B, R, C] tensor (differentiable in A_val)."""
        _, col_index, row_index = self._indices(self.A_val.device)
        flat = self.A_val.new_zeros(self.A_val.shape[0], self.num_rows * self.num_cols)
        flat = flat.index_copy(1, row_index * self.num_cols + col_index, self.A_val)
        return flat.view(-1, self.num_rows, self.num_cols)

    def _ata_impl(self) -> torch.Tensor:
        A = self.dense_A()
        return A.transpose(1, 2) @ A

    def _atb_impl(self) -> torch.Tensor:
        if self._Atb is None:
            _, col_index, row_index = self._indices(self.A_val.device)
            zeros = self.A_val.new_zeros(self.A_val.shape[0], self.num_cols)
            self._Atb = zeros.index_add(1, col_index, self.A_val * self.b[:, row_index])[:, :, None]
        return self._Atb

    def Av(self, v: torch.Tensor) -> torch.Tensor:
        _, col_index, row_index = self._indices(self.A_val.device)
        zeros = self.A_val.new_zeros(self.A_val.shape[0], self.num_rows)
        return zeros.index_add(1, row_index, self.A_val * v[:, col_index])

    def diagonal_scaling(self, v: torch.Tensor) -> torch.Tensor:
        return self.AtA_diag * v


class CholmodDampedSolve(torch.autograd.Function):
    """x [B, C] solving (AtA + diag(d)) x = Atb with CHOLMOD on the CPU, one factorisation per problem.

    The damping rows are appended to A (A_aug = [A; diag(sqrt d)]) so the symbolic analysis of A_aug A_aug^T
    done once serves every call. Gradients flow to A_val, b and d (none to the Hessian with detach_hessian).
    """

    @staticmethod
    def forward(ctx, A_val, b, damping, linearization, symbolic, detach_hessian: bool):
        from scipy.sparse import csc_matrix, csr_matrix
        from sksparse.cholmod import CholmodNotPositiveDefiniteError

        lin = linearization
        rows, cols = lin.num_rows, lin.num_cols
        A_cpu, b_cpu, d_cpu = (t.detach().cpu().double().numpy() for t in (A_val, b, damping))
        col_ind_aug = np.concatenate((lin.A_col_ind, np.arange(cols)))
        row_ptr_aug = np.concatenate((lin.A_row_ptr, lin.A_row_ptr[-1] + 1 + np.arange(cols)))
        solutions, factors, matrices = [], [], []
        for i in range(A_cpu.shape[0]):
            values = np.concatenate((A_cpu[i], np.sqrt(d_cpu[i])))
            At_aug = csc_matrix((values, col_ind_aug, row_ptr_aug), shape=(cols, rows + cols))
            try:
                factor = symbolic.cholesky_AAt(At_aug)
            except CholmodNotPositiveDefiniteError as error:
                raise NotPositiveDefiniteError(str(error)) from None
            A = csr_matrix((A_cpu[i], lin.A_col_ind, lin.A_row_ptr), shape=(rows, cols))
            solutions.append(factor(A.T @ b_cpu[i]))
            factors.append(factor)
            matrices.append(A)
        x = np.stack(solutions)
        ctx.factors, ctx.matrices, ctx.linearization = factors, matrices, lin
        ctx.detach_hessian = detach_hessian
        ctx.x, ctx.b = torch.from_numpy(x), torch.from_numpy(b_cpu)
        ctx.A_val = torch.from_numpy(A_cpu)
        return torch.from_numpy(x).to(device=A_val.device, dtype=A_val.dtype)

    @staticmethod
    def backward(ctx, grad_x):
        # With M = AtA + diag(d) and M x = At b, a loss gradient G on x gives H = M^-1 G and
        # dL/db = A H, dL/dA[r, c] = (b - A x)[r] H[c] - (A H)[r] x[c], dL/dd = -H x.
        grad_cpu = grad_x.detach().cpu().double().numpy()
        H = torch.from_numpy(np.stack([factor(g) for factor, g in zip(ctx.factors, grad_cpu)]))
        AH = torch.from_numpy(np.stack([A @ h for A, h in zip(ctx.matrices, H.numpy())]))
        lin, x, b = ctx.linearization, ctx.x, ctx.b
        rows, cols = torch.from_numpy(lin.A_row_ind), torch.from_numpy(lin.A_col_ind)
        if ctx.detach_hessian:
            grad_A, grad_d = b[:, rows] * H[:, cols], None
        else:
            Ax = torch.from_numpy(np.stack([A @ xi for A, xi in zip(ctx.matrices, x.numpy())]))
            grad_A = (b - Ax)[:, rows] * H[:, cols] - AH[:, rows] * x[:, cols]
            grad_d = (-H * x).to(device=grad_x.device, dtype=grad_x.dtype)
        grad_A = grad_A.to(device=grad_x.device, dtype=grad_x.dtype)
        return grad_A, AH.to(device=grad_x.device, dtype=grad_x.dtype), grad_d, None, None, None


class DampedSolver(th.LinearSolver):
    """Solves the Marquardt-damped normal equations of a BlockSparseLinearization.

    backend "cholmod": sparse Cholesky on the CPU (CUDA tensors are copied over and back); "dense": Cholesky
    of the dense AtA with torch on the objective's device (small problems).
    """

    def __init__(self, objective, linearization_cls=None, linearization_kwargs=None, backend="cholmod", **kwargs):
        linearization_cls = linearization_cls or BlockSparseLinearization
        if not issubclass(linearization_cls, BlockSparseLinearization):
            raise ValueError(f"DampedSolver needs a BlockSparseLinearization, got {linearization_cls.__name__}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        super().__init__(objective, linearization_cls, linearization_kwargs)
        self.backend = backend
        self._symbolic = None
        if backend == "cholmod":
            from scipy.sparse import csc_matrix
            from sksparse.cholmod import analyze_AAt

            lin = self.linearization
            col_ind = np.concatenate((lin.A_col_ind, np.arange(lin.num_cols)))
            row_ptr = np.concatenate((lin.A_row_ptr, lin.A_row_ptr[-1] + 1 + np.arange(lin.num_cols)))
            pattern = csc_matrix(
                (np.ones(len(col_ind)), col_ind, row_ptr), shape=(lin.num_cols, lin.num_rows + lin.num_cols)
            )
            self._symbolic = analyze_AAt(pattern)

    def solve(self, damping=None, ellipsoidal_damping: bool = True, **kwargs) -> torch.Tensor:
        """delta [B, C]; damping: LM's lambda, a float or one per problem [B] (None: only the floor)."""
        lin = self.linearization
        batch = lin.A_val.shape[0]
        relative = torch.zeros(batch, dtype=lin.A_val.dtype, device=lin.A_val.device)
        if damping is not None:
            relative = relative + torch.as_tensor(damping, dtype=relative.dtype, device=relative.device).view(-1)
        floor = DAMPING_FLOOR
        for _ in range(MAX_DAMPING_RETRIES + 1):
            try:
                return self._solve_damped(relative, floor, ellipsoidal_damping)
            except NotPositiveDefiniteError:
                relative = relative.clamp(min=RETRY_MIN_DAMPING) * RETRY_DAMPING_GROWTH
                floor = max(floor, RETRY_MIN_DAMPING) * RETRY_DAMPING_GROWTH
        raise NotPositiveDefiniteError(
            f"the normal equations stay singular with damping {relative.max().item():.3g} x diag(AtA); "
            "check for cameras or points without observations"
        )

    @staticmethod
    def _damping_diagonal(diag: torch.Tensor, relative: torch.Tensor, floor: float, ellipsoidal: bool):
        """[B, C] added to diag(AtA): relative * diag(AtA) (or relative alone) plus floor * max(diag, 1)."""
        scale = diag if ellipsoidal else torch.ones_like(diag)
        return relative[:, None] * scale + floor * diag.detach().amax(dim=1, keepdim=True).clamp(min=1.0)

    def _solve_damped(self, relative: torch.Tensor, floor: float, ellipsoidal: bool) -> torch.Tensor:
        lin = self.linearization
        if self.backend == "cholmod":
            diag = lin.AtA_diag.detach() if lin.detached_hessian else lin.AtA_diag
            damping = self._damping_diagonal(diag, relative, floor, ellipsoidal)
            return CholmodDampedSolve.apply(lin.A_val, lin.b, damping, lin, self._symbolic, lin.detached_hessian)
        A = lin.dense_A()
        AtA = A.transpose(1, 2) @ A
        if lin.detached_hessian:
            AtA = AtA.detach()
        damping = self._damping_diagonal(AtA.diagonal(dim1=1, dim2=2), relative, floor, ellipsoidal)
        lower, info = torch.linalg.cholesky_ex(AtA + torch.diag_embed(damping))
        if (info != 0).any():
            raise NotPositiveDefiniteError(f"dense Cholesky failed (info {info.tolist()})")
        Atb = A.transpose(1, 2) @ lin.b[:, :, None]
        return torch.cholesky_solve(Atb, lower)[:, :, 0]


class LevenbergMarquardt(th.LevenbergMarquardt):
    """Theseus LM with DampedSolver (adaptive, Marquardt-scaled damping) that retracts all variables of one
    type (every camera pose) in one batched call, as Theseus' Vectorize does, instead of one call each."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if isinstance(self.linear_solver, DampedSolver):
            self._allows_adaptive = self._allows_ellipsoidal = True

    def _step(self, delta, previous_err, converged_indices, force_update, delta_forced_to_gn, **kwargs):
        if delta_forced_to_gn:
            # The implicit-differentiation step: its gradient is d(delta)/d(inputs) at the solution, and its
            # value, zero at an exact optimum, is not applied. Where the solve stopped short of one (iteration
            # cap, nearly singular directions) a full Gauss-Newton step could throw the solution away.
            delta = delta - delta.detach()
        return super()._step(delta, previous_err, converged_indices, force_update, delta_forced_to_gn, **kwargs)

    def _compute_retracted_tensors_and_error(self, delta, converged_indices, force_update):
        self._update_tmp_optim_vars()
        th.Vectorize._vectorized_retract_optim_vars(
            delta, self._tmp_optim_vars, ignore_mask=converged_indices, force_update=force_update
        )
        tensor_dict = {v.name: v.tensor for v in self._tmp_optim_vars}
        return tensor_dict, self.objective.error_metric(tensor_dict, also_update=False)
