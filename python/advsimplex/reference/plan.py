"""Second-order jet plans: which second-order directional derivatives a jet carries (math spec §4, §7b).

A *jet* along the ``m`` trajectory vertices is stored **stacked** along one stream dimension
(``S = 1 + m + N`` entries): the primal, the ``m`` first-order streams ``x_k = Dx[δ_k]`` and ``N``
second-order streams. A :class:`JetPlan` says what the second-order streams hold:

- **pairs** (``taylor2``, ``paper-cross``, the generic oracle): one stream per vertex pair
  ``p = (a, b)`` of a table (:func:`~advsimplex.reference.pair_index`): ``x_p = D²x[δ_a, δ_b]``;
- **collapsed** (``paper``): one stream per simplex ``s`` (vertices ``s .. s + Q − 2``):
  ``x̄_s = Σ_{k,l} M_kl D²x[δ_k, δ_l]`` with the Dirichlet second moments
  ``M_kl = E[β_k β_l] = (1 + [k = l]) / (Q(Q + 1))``, i.e. ``E_p D²x[p, p]`` for ``p`` uniform on the
  simplex. One stream per simplex (``m − Q + 2``) instead of one per pair.

Every second-order rule has the form ``y_2 = Dφ[x_2] + quadratic(B)``, ``B`` the symmetric bilinear form
``D²φ[·, ·]`` of the rule applied to first-order streams. :meth:`JetPlan.quadratic` evaluates that sum
for the plan: ``B(x_a, x_b)`` per pair, or, collapsed, with ``σ_s = Σ_{k∈s} x_k`` (spec §7b, Theorem 3.1)::

    Σ_{k,l∈s} M_kl B(x_k, x_l) = (Σ_{k∈s} B(x_k, x_k) + B(σ_s, σ_s)) / (Q(Q + 1))

so the collapsed path never forms a term per pair.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .simplices import check_order, num_simplices, pair_index, simplex_pairs

Streams = Tensor | tuple[Tensor, ...]
"""First-order streams handed to a bilinear form: one tensor, or several stacked alike (``q`` and ``k``)."""


def _select(x: Streams, dim: int, index: Tensor) -> Streams:
    if isinstance(x, tuple):
        return tuple(t.index_select(dim, index) for t in x)
    return x.index_select(dim, index)


def _cat(parts: list[Streams], dim: int) -> Streams:
    if isinstance(parts[0], tuple):
        return tuple(torch.cat(group, dim=dim) for group in zip(*parts))
    return torch.cat(parts, dim=dim)


def window_sum(x: Streams, width: int, dim: int) -> Streams:
    """Sums of ``width`` consecutive entries along ``dim``: (…, n, …) → (…, n − width + 1, …)."""
    if isinstance(x, tuple):
        return tuple(window_sum(t, width, dim) for t in x)
    count = x.shape[dim] - width + 1
    out = x.narrow(dim, 0, count)
    for i in range(1, width):
        out = out + x.narrow(dim, i, count)
    return out


@dataclass(frozen=True)
class JetPlan:
    """Layout of the second-order streams of a stacked jet (see the module docstring).

    - ``m``: first-order streams (trajectory vertices);
    - ``left``/``right``: int64 (P,) vertex indices of each pair stream (pairs plans), else None;
    - ``order``: simplex order Q (required for collapsed plans; recorded for canonical pair plans).

    Build with :meth:`from_pairs`, :meth:`pairwise` or :meth:`collapsed`.
    """

    m: int
    left: Tensor | None = None
    right: Tensor | None = None
    order: int | None = None

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_pairs(cls, pairs: Tensor, m: int, device: torch.device | str | None = None) -> JetPlan:
        """A pairs plan from a (P, 2) integer table of vertex pairs (0-based, each entry < m)."""
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise ValueError(f"m (number of first-order streams) must be a positive int, got {m!r}")
        if not isinstance(pairs, Tensor) or pairs.dim() != 2 or pairs.shape[1] != 2:
            shape = tuple(pairs.shape) if isinstance(pairs, Tensor) else type(pairs).__name__
            raise ValueError(f"pairs must be an integer tensor of shape (P, 2), got {shape}")
        if pairs.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"pairs must be an integer tensor, got {pairs.dtype}")
        if pairs.numel() and (int(pairs.min()) < 0 or int(pairs.max()) >= m):
            raise ValueError(f"pairs must index vertices 0 .. m-1 = {m - 1}; got values in "
                             f"[{int(pairs.min())}, {int(pairs.max())}]")  # fmt: skip
        idx = pairs.to(device=device, dtype=torch.long)
        return cls(m=int(m), left=idx[:, 0].contiguous(), right=idx[:, 1].contiguous())

    @classmethod
    def pairwise(cls, m: int, order: int, device: torch.device | str | None = None) -> JetPlan:
        """One stream per canonical vertex pair of the order-Q simplices (:func:`pair_index`)."""
        plan = cls.from_pairs(pair_index(m, order), m, device)
        return cls(m=plan.m, left=plan.left, right=plan.right, order=order)

    @classmethod
    def collapsed(cls, m: int, order: int) -> JetPlan:
        """One stream per order-Q simplex: ``Σ_{k,l} M_kl D²x[δ_k, δ_l]`` (spec §7b)."""
        check_order(m, order)
        return cls(m=int(m), order=int(order))

    @classmethod
    def for_variant(cls, variant: str, m: int, order: int, device: torch.device | str | None = None) -> JetPlan:
        """What the closed form ``variant`` consumes: collapsed streams for ``paper``, pairs otherwise."""
        return cls.collapsed(m, order) if variant == "paper" else cls.pairwise(m, order, device)

    def to(self, device: torch.device | str) -> JetPlan:
        if self.is_collapsed or self.left.device == torch.device(device):
            return self
        return JetPlan(self.m, self.left.to(device), self.right.to(device), self.order)

    # ------------------------------------------------------------------ layout

    @property
    def is_collapsed(self) -> bool:
        return self.left is None

    @property
    def width(self) -> int:
        """Non-zero vertices per simplex, W = Q − 1 (collapsed plans)."""
        return self.order - 1

    @property
    def num_second(self) -> int:
        """N: pair streams P, or simplices m − Q + 2 (collapsed)."""
        return num_simplices(self.m, self.order) if self.is_collapsed else int(self.left.shape[0])

    @property
    def size(self) -> int:
        """S = 1 + m + N streams."""
        return 1 + self.m + self.num_second

    @property
    def coefficient(self) -> float:
        """``1 / (Q(Q + 1))``: the off-diagonal Dirichlet moment E[β_k β_l] (collapsed plans)."""
        return 1.0 / (self.order * (self.order + 1))

    def describe(self) -> str:
        if self.is_collapsed:
            return f"collapsed (m={self.m}, Q={self.order}, {self.num_second} simplex streams)"
        return f"pairs (m={self.m}, {self.num_second} pair streams)"

    def split(self, x: Tensor, dim: int = 0) -> tuple[Tensor, Tensor, Tensor]:
        """Views (primal (…1…), first (…m…), second (…N…)) of a stacked jet; the primal keeps its
        singleton stream dimension so that it broadcasts against the tangents."""
        if x.shape[dim] != self.size:
            raise ValueError(
                f"expected {self.size} = 1 + m + {'S' if self.is_collapsed else 'P'} streams ({self.describe()}) "
                f"along dim {dim}, "
                f"got shape {tuple(x.shape)}"
            )
        return x.narrow(dim, 0, 1), x.narrow(dim, 1, self.m), x.narrow(dim, 1 + self.m, self.num_second)

    def pair_streams(self, first: Streams, dim: int = 0) -> tuple[Streams, Streams]:
        """(first[left], first[right]) gathered along ``dim`` (pairs plans)."""
        if self.is_collapsed:
            raise ValueError("pair_streams: a collapsed plan carries no pair streams")
        return _select(first, dim, self.left), _select(first, dim, self.right)

    # ------------------------------------------------------------------ the second-order sums

    def quadratic(
        self,
        bilinear: Callable[[Streams, Streams], Tensor],
        first: Streams,
        dim: int = 0,
        diagonal: Callable[[Streams], Tensor] | None = None,
    ) -> Tensor:
        """The second-order contribution of a symmetric bilinear form ``B`` of the first-order streams.

        ``first`` holds the m first-order streams along ``dim`` (a tensor, or a tuple of tensors stacked
        alike); ``bilinear(a, b)`` evaluates ``B`` stream by stream (a, b with equal stream counts);
        ``diagonal(a)``, if given, is a cheaper ``B(a, a)``. Returns the N second-order streams along
        ``dim``: ``B(x_a, x_b)`` per pair, or ``Σ_{k,l∈s} M_kl B(x_k, x_l)`` per simplex (module docstring).
        """
        if not self.is_collapsed:
            a, b = self.pair_streams(first, dim)
            return bilinear(a, b)
        sigma = window_sum(first, self.width, dim)  # σ_s = Σ_{k∈s} x_k
        both = _cat([first, sigma], dim)
        square = diagonal(both) if diagonal is not None else bilinear(both, both)
        diag, at_sigma = square.split([self.m, self.num_second], dim=dim)
        return (window_sum(diag, self.width, dim) + at_sigma) * self.coefficient

    def collapse_pairs(self, second: Tensor, dim: int = 1) -> Tensor:
        """Collapsed streams from the canonical pair streams (P along ``dim``): ``F̄_s = Σ_{k,l} M_kl F_{(k,l)}``.

        The oracle of the collapsed path: the generic torch.func jets compute pair jets and collapse them.
        """
        if not self.is_collapsed:
            raise ValueError("collapse_pairs needs a collapsed plan")
        weights = collapse_matrix(self.m, self.order).to(device=second.device, dtype=second.dtype)  # (N, P)
        moved = second.movedim(dim, -1)
        if moved.shape[-1] != weights.shape[1]:
            raise ValueError(
                f"collapse_pairs: expected {weights.shape[1]} pair streams along dim {dim} for m={self.m}, "
                f"Q={self.order}; got shape {tuple(second.shape)}"
            )
        return (moved @ weights.t()).movedim(-1, dim)


def collapse_matrix(m: int, order: int) -> Tensor:
    """(N, P) float64: ``C[s, p] = Σ_{(k,l) ↦ p} M_kl`` over the ordered vertex pairs of simplex s (spec §7b)."""
    n = num_simplices(m, order)
    p = pair_index(m, order).shape[0]
    c = 1.0 / (order * (order + 1))
    out = torch.zeros(n, p, dtype=torch.float64)
    local = simplex_pairs(m, order)  # (N, W, W) pair index of local (k, l)
    w = order - 1
    for s in range(n):
        for k in range(w):
            for l in range(w):
                out[s, local[s, k, l]] += c * (2.0 if k == l else 1.0)
    return out
