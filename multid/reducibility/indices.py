"""The two reducibility indices of the paper (section 3), for one 2-D point cloud or thousands at once.

M_eps (epsilon-mixture index: the largest share of points in a thin slab around a line) and S (separability
index: the smallest mutual information over rotations, in bits), each in the paper code's two variants (the
synthetic demo, the GPT-2 cluster scan) as named configurations. The batched engine is what the pipeline
uses; the upstream-style one-cloud references exist for tests and benchmarks. docs/reducibility.md says
how the variants differ and where engine and references agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from multid.reducibility import kernels

LN2 = math.log(2.0)


# ----------------------------------------------------------------------------------------------------------
# Configurations (upstream's two variants of each index)


@dataclass(frozen=True)
class MixtureConfig:
    """How M_eps is optimised and reported.

    anneal: T_i = 1 - i / steps for step i = 0 .. steps-1 (demo; upstream hard-codes steps = 10,000 so T
        runs 1 -> 1e-4); otherwise T = 1 throughout (scan; upstream commit "Removing temperature").
    report: "surrogate" = the surrogate value computed at the last step, before its update (demo, which prints
        the loss of the last iteration); "hard" = the fraction |z| < eps at the final (v, c) (scan).
    """

    eps: float = 0.1
    lr: float = 0.1
    steps: int = 10_000
    anneal: bool = False
    report: str = "hard"


@dataclass(frozen=True)
class SeparabilityConfig:
    """How S is computed.

    grid: "fixed" = 2*half_bins equal bins per axis on [-bound, bound], points outside clipped into the edge
        bins (demo); "range" = `bins` equal bins per axis from the rotated cloud's own min to max, exactly as
        `np.histogram2d(x, y, bins=bins)` (scan; the range is recomputed for every rotation, so outliers change
        the bin widths).
    angles: number of rotation angles; endpoint=False gives 2*pi*i/angles (demo), endpoint=True gives
        `linspace(0, 2*pi, angles)` (scan).
    normalise: demo only: centre the cloud, then divide by mean(x^2) over all entries (upstream quirk: the mean
        square, not its square root, so the result is not unit-scale unless the variance is 1).
    MI = sum over cells with p > 0 of p * log((p + num_smoothing) / (p_x p_y + den_smoothing)) in nats.
        Demo: both smoothings 1e-4 (cells with p = 0 add exactly 0 either way). Scan: 0 and 1e-10 (upstream
        masks p > 0 and adds 1e-10; with p > 0 the marginals are >= 1/N, so where the 1e-10 goes changes the
        result by < 1e-5 bits).
    """

    grid: str = "range"
    bins: int = 10
    half_bins: int = 20
    bound: float = 3.0
    angles: int = 100
    endpoint: bool = True
    normalise: bool = False
    num_smoothing: float = 0.0
    den_smoothing: float = 1e-10


DEMO_MIXTURE = MixtureConfig(anneal=True, report="surrogate")
SCAN_MIXTURE = MixtureConfig(anneal=False, report="hard")
DEMO_SEPARABILITY = SeparabilityConfig(
    grid="fixed", half_bins=20, bound=3.0, angles=1000, endpoint=False, normalise=True,
    num_smoothing=1e-4, den_smoothing=1e-4,
)
SCAN_SEPARABILITY = SeparabilityConfig(
    grid="range", bins=10, angles=100, endpoint=True, normalise=False, num_smoothing=0.0, den_smoothing=1e-10,
)


# ----------------------------------------------------------------------------------------------------------
# Results


@dataclass
class MixtureResult:
    """M for B clouds (tensors of leading size B; the one-cloud function returns 0-d tensors and v of size 2).

    m: the reported index (per config.report); m_hard: fraction |z| < eps at the final (v, c);
    m_surrogate: surrogate at the last step (before its update); v (B x 2), c (B): the final slab parameters,
    in the cloud's original coordinates (the slab is |v.x + c| < eps * rms(v.x + c)).
    """

    m: torch.Tensor
    m_hard: torch.Tensor
    m_surrogate: torch.Tensor
    v: torch.Tensor
    c: torch.Tensor


@dataclass
class SeparabilityResult:
    """S for B clouds: s_bits (B), the argmin angle (B), MI in bits for every angle (B x A), the angles (A)."""

    s_bits: torch.Tensor
    angle: torch.Tensor
    mi_bits: torch.Tensor
    angles: torch.Tensor


# ----------------------------------------------------------------------------------------------------------
# Input helpers


def as_cloud_stack(clouds, mask=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (points B x N x 2 float64, mask B x N bool) from a B x N x 2 array/tensor or a list of N_i x 2.

    A list of clouds of different sizes is zero-padded to the largest; the mask marks real points.
    """
    if isinstance(clouds, (list, tuple)):
        if mask is not None:
            raise ValueError("pass a mask only with a stacked B x N x 2 array, not with a list of clouds")
        return pad_clouds(clouds)
    points = torch.as_tensor(np.asarray(clouds) if not torch.is_tensor(clouds) else clouds).to(torch.float64)
    if points.ndim != 3 or points.shape[-1] != 2:
        raise ValueError(f"clouds must be B x N x 2, got shape {tuple(points.shape)}")
    if mask is None:
        mask = torch.ones(points.shape[:2], dtype=torch.bool, device=points.device)
    mask = torch.as_tensor(mask, device=points.device).to(torch.bool)
    if mask.shape != points.shape[:2]:
        raise ValueError(f"mask must be B x N = {tuple(points.shape[:2])}, got {tuple(mask.shape)}")
    if bool((mask.sum(-1) < 2).any()):
        raise ValueError("every cloud needs at least 2 points")
    points = points * mask[..., None]
    return points, mask


def pad_clouds(clouds: Sequence) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad a list of N_i x 2 clouds into B x max(N_i) x 2 (float64) with a B x max(N_i) bool mask."""
    arrays = [torch.as_tensor(np.asarray(c) if not torch.is_tensor(c) else c).to(torch.float64) for c in clouds]
    for i, a in enumerate(arrays):
        if a.ndim != 2 or a.shape[1] != 2 or a.shape[0] < 2:
            raise ValueError(f"cloud {i} must be N x 2 with N >= 2, got shape {tuple(a.shape)}")
    n_max = max(a.shape[0] for a in arrays)
    points = torch.zeros(len(arrays), n_max, 2, dtype=torch.float64)
    mask = torch.zeros(len(arrays), n_max, dtype=torch.bool)
    for i, a in enumerate(arrays):
        points[i, : a.shape[0]] = a
        mask[i, : a.shape[0]] = True
    return points, mask


def initial_directions(num_clouds: int, seed: int) -> torch.Tensor:
    """The optimiser's starting v for each cloud (B x 2, float32), drawn in a fixed documented order.

    Cloud b gets `torch.randn(2)` from a CPU generator seeded with `seed + b`, so a loop calling the one-cloud
    function with seed + b reproduces the batch (the cluster scan's convention). The reducibility demo passes
    its own start instead: the paper code's draw right after each cloud (`multid.reducibility.synthetic`).
    """
    rows = [torch.randn(2, generator=torch.Generator().manual_seed(seed + b)) for b in range(num_clouds)]
    return torch.stack(rows) if rows else torch.zeros(0, 2)


# ----------------------------------------------------------------------------------------------------------
# epsilon-mixture index


def temperature(step: int, config: MixtureConfig) -> float:
    """T at optimiser step `step`: 1 - step/steps when annealing (demo), else 1 (scan)."""
    return 1.0 - step / config.steps if config.anneal else 1.0


def mixture_index_batched(
    clouds,
    mask=None,
    config: MixtureConfig = SCAN_MIXTURE,
    seed: int = 0,
    v0=None,
    dtype: torch.dtype = torch.float32,
    max_points: int = 1 << 18,
) -> MixtureResult:
    """M_eps for a stack of clouds: one gradient-ascent run per cloud, many clouds advanced together.

    clouds: B x N x 2 (with optional B x N bool mask) or a list of N_i x 2 clouds (padded here).
    v0: B x 2 starting directions; default `initial_directions(B, seed)`. c starts at 0 (upstream).
    Every step, for every cloud: z = (v.x + c) / rms(v.x + c) with the RMS over the cloud's own points and
    including the offset (upstream: not a standard deviation); surrogate P = mean(sigmoid((eps - |z|) / T));
    (v, c) += lr * dP/d(v, c). The arithmetic runs in `dtype` (float32 = torch's default, as upstream).
    Clouds are run in chunks of about `max_points` points (all steps per chunk) so that a chunk's working set
    stays in the CPU cache; clouds never interact, so chunking does not change any cloud's numbers.
    """
    if config.report not in ("surrogate", "hard"):
        raise ValueError(f"MixtureConfig.report must be 'surrogate' or 'hard', got {config.report!r}")
    points, mask = as_cloud_stack(clouds, mask)
    num = points.shape[0]
    if v0 is None:
        v0 = initial_directions(num, seed)
    v0 = torch.as_tensor(v0).to(device=points.device, dtype=dtype).reshape(num, 2)
    chunk = max(1, max_points // points.shape[1])
    parts = [
        _ascend(points[start : start + chunk], mask[start : start + chunk], v0[start : start + chunk], config, dtype)
        for start in range(0, num, chunk)
    ]
    return MixtureResult(*(torch.cat(field, 0) for field in zip(*parts)))


def _ascend(points, mask, v0, config: MixtureConfig, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """Gradient ascent for one chunk of clouds; returns (m, m_hard, m_surrogate, v, c)."""
    state = _MixtureState.build(points, mask, dtype)
    v = v0.clone()
    c = torch.zeros(points.shape[0], dtype=dtype, device=points.device)
    surrogate = torch.full_like(c, float("nan"))
    for step in range(config.steps):
        surrogate, grad_v, grad_c = state.surrogate_and_gradient(v, c, config.eps, temperature(step, config))
        v = v + config.lr * grad_v
        c = c + config.lr * grad_c
    hard = state.hard_fraction(v, c, config.eps)
    reported = surrogate if config.report == "surrogate" else hard
    return reported, hard, surrogate, v, c


def mixture_index(points, config: MixtureConfig = SCAN_MIXTURE, seed: int = 0, v0=None,
                  dtype: torch.dtype = torch.float32) -> MixtureResult:
    """M_eps of one N x 2 cloud: `mixture_index_batched` with B = 1 (same arithmetic), squeezed."""
    batch_v0 = None if v0 is None else torch.as_tensor(v0).reshape(1, 2)
    result = mixture_index_batched(np.asarray(points)[None] if not torch.is_tensor(points) else points[None],
                                   config=config, seed=seed, v0=batch_v0, dtype=dtype)
    return MixtureResult(m=result.m[0], m_hard=result.m_hard[0], m_surrogate=result.m_surrogate[0],
                         v=result.v[0], c=result.c[0])


def slab_coordinate(points, v, c) -> np.ndarray:
    """z = (v.x + c) / sqrt(mean((v.x + c)^2)) for one N x 2 cloud (the quantity M thresholds at eps), float64."""
    x = torch.as_tensor(np.asarray(points, dtype=np.float64))
    v = torch.as_tensor(np.asarray(v, dtype=np.float64).reshape(2))
    return slab_z(x, v, torch.tensor(float(c), dtype=torch.float64)).numpy()


def slab_z(x: torch.Tensor, v: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Upstream's z for one cloud, written as upstream does: y = x @ v + c, z = y / sqrt(mean(y^2))."""
    y = x @ v + c
    return y / torch.sqrt(torch.mean(y**2))


def surrogate_value(x: torch.Tensor, v: torch.Tensor, c: torch.Tensor, eps: float, temp: float) -> torch.Tensor:
    """Upstream's smooth surrogate for one cloud: mean(sigmoid((eps - |z|) / T)) (autograd-differentiable)."""
    return torch.mean(torch.sigmoid((eps - torch.abs(slab_z(x, v, c))) / temp))


ROW_BLOCK = 512


def row_sums(values: torch.Tensor) -> torch.Tensor:
    """Sum over the last axis (length a multiple of ROW_BLOCK) in a way that does not depend on padding.

    Each block of ROW_BLOCK entries is summed by one vectorised reduction, then the block sums are added in
    order (a float64 cumsum, which is sequential). A cloud padded with zeros to any longer row therefore gets
    bit-for-bit the same sum as the cloud alone: the loop-vs-batch guarantee of the M optimiser rests on this.
    """
    blocks = values.reshape(*values.shape[:-1], -1, ROW_BLOCK).sum(-1)
    return blocks.cumsum(-1, dtype=torch.float64)[..., -1]


def padded_length(num_points: int) -> int:
    """Row length used by the M engine: num_points rounded up to a multiple of ROW_BLOCK."""
    return -(-num_points // ROW_BLOCK) * ROW_BLOCK


class _MixtureState:
    """Per-cloud data laid out for fast steps: raw coordinates, masks, means and centred second moments.

    z is computed from the raw coordinates, y = x.v + c as upstream computes it (so a point with y exactly 0
    in upstream, e.g. a point at the origin while c = 0, also has z exactly 0 here), while the RMS comes from
    the centred moments, rms^2 = v.Cov v + c'^2 with c' = c + mu.v, which is free of cancellation. The
    gradient in (v, c) is then assembled from per-cloud sums, so the trajectory is upstream's plain ascent.

    Rows are zero-padded to a multiple of ROW_BLOCK (a one-cloud call too), so every element-wise kernel runs
    its vectorised path on every point and every per-cloud sum goes through `row_sums`: a cloud's numbers are
    then the same whether it runs alone or inside any padded batch (tests check this at 1 and 2 threads).
    """

    def __init__(self, x0, x1, weight, mean, cov, count):
        self.x0, self.x1, self.weight = x0, x1, weight  # B x N' each; padded entries are 0
        self.mean, self.cov, self.count = mean, cov, count  # B x 2, B x 2 x 2 (mean of (x-mu)(x-mu)^T), B
        self.padded = bool((weight == 0).any())
        # per step: sigmoid s, w x_0, w x_1 and w = s (1 - s) sign(z), summed per cloud in one call
        self.buffer = torch.empty(x0.shape[0], 4, x0.shape[1], dtype=x0.dtype, device=x0.device)

    @classmethod
    def build(cls, points: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype) -> "_MixtureState":
        pad = padded_length(points.shape[1]) - points.shape[1]
        weight = torch.nn.functional.pad(mask.to(torch.float64), (0, pad))
        points = torch.nn.functional.pad(points.to(torch.float64), (0, 0, 0, pad)) * weight[..., None]
        count = row_sums(weight)
        mean = row_sums(points.transpose(1, 2)) / count[:, None]
        centred = (points - mean[:, None, :]) * weight[..., None]
        pairs = (centred[..., :, None] * centred[..., None, :]).permute(0, 2, 3, 1)  # B x 2 x 2 x N'
        cov = row_sums(pairs) / count[:, None, None]
        return cls(x0=points[..., 0].to(dtype).contiguous(), x1=points[..., 1].to(dtype).contiguous(),
                   weight=weight.to(dtype), mean=mean.to(dtype), cov=cov.to(dtype), count=count.to(dtype))

    def _masked(self, values: torch.Tensor) -> torch.Tensor:
        """Zero the padded entries in place. Skipped when nothing is padded, which gives the same bits
        (x * 1.0 == x), so a cloud's numbers still do not depend on the batch it runs in."""
        return values.mul_(self.weight) if self.padded else values

    def _offset_and_rms(self, v: torch.Tensor, c: torch.Tensor):
        """c' = c + mu.v, Cov v, and rms = sqrt(v.Cov v + c'^2) (= sqrt(mean((v.x + c)^2)) over real points)."""
        offset = c + (self.mean * v).sum(-1)
        cov_v = (self.cov * v[:, None, :]).sum(-1)
        rms = torch.sqrt((v * cov_v).sum(-1) + offset * offset)
        return offset, cov_v, rms

    def _z(self, coef: torch.Tensor) -> torch.Tensor:
        """x_0 coef_0 + x_1 coef_1 + coef_2 per cloud, B x N' (coef = (v, c) / scale, B x 3)."""
        z = self.x0 * coef[:, 0:1]
        z.addcmul_(self.x1, coef[:, 1:2])
        return z.add_(coef[:, 2:3])

    def surrogate_and_gradient(self, v, c, eps: float, temp: float):
        """P = mean(sigmoid((eps - |z|)/T)) per cloud and its exact gradient in (v, c).

        With g_j = dP/dz_j = -s_j (1 - s_j) sign(z_j) / (N T) (sign(0) = 0, as autograd's |z|), z = y / r,
        y = x.v + c, r^2 = mean(y^2): dP/dy_j = g_j / r - y_j * (sum_i g_i y_i) / (N r^3). Summing against x
        and 1 and using sum_j y_j x_j = N (Cov v + mu c'), sum_j y_j = N c', sum_j g_j y_j = v.G_x + c G_1
        leaves only four per-cloud sums over points: sum s, sum w x_0, sum w x_1, sum w with
        w = s (1 - s) sign(z). The temperature is folded into the coefficients: z / T = x.(v / rT) + c / rT.
        """
        offset, cov_v, rms = self._offset_and_rms(v, c)
        q = torch.cat([v, c[:, None]], -1)  # (v, c)
        z_over_t = self._z(q / (rms * temp)[:, None])
        buf = self.buffer
        s = torch.sigmoid(torch.rsub(z_over_t.abs(), eps / temp), out=buf[:, 0])  # sigmoid(eps/T - |z|/T)
        w = torch.addcmul(s, s, s, value=-1.0, out=buf[:, 3]).mul_(z_over_t.sign_())  # s (1 - s) sign(z)
        torch.mul(w, self.x0, out=buf[:, 1])  # x is 0 at padded entries
        torch.mul(w, self.x1, out=buf[:, 2])
        self._masked(s)
        self._masked(w)
        sums = row_sums(buf).to(v.dtype)  # B x 4
        surrogate = sums[:, 0] / self.count
        g = sums[:, 1:] * (-1.0 / (self.count * temp))[:, None]  # (G_x0, G_x1, G_1) = sums of dP/dz
        k = (q * g).sum(-1) / (rms * rms * rms)
        grad_v = g[:, :2] / rms[:, None] - k[:, None] * (cov_v + self.mean * offset[:, None])
        grad_c = g[:, 2] / rms - k * offset
        return surrogate, grad_v, grad_c

    def hard_fraction(self, v, c, eps: float) -> torch.Tensor:
        """Fraction of real points with |z| < eps."""
        _, _, rms = self._offset_and_rms(v, c)
        z = self._z(torch.cat([v, c[:, None]], -1) / rms[:, None])
        inside = self._masked((z.abs() < eps).to(z.dtype))
        return row_sums(inside).to(z.dtype) / self.count


def surrogate_autograd(points, v, c, eps: float, temp: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference: upstream's surrogate for one cloud and its autograd gradient (tests check the engine)."""
    x = torch.as_tensor(points)
    v = torch.as_tensor(v, dtype=x.dtype).clone().requires_grad_(True)
    c = torch.as_tensor(c, dtype=x.dtype).reshape(()).clone().requires_grad_(True)
    surrogate = surrogate_value(x, v, c, eps, temp)
    grad_v, grad_c = torch.autograd.grad(surrogate, (v, c))
    return surrogate.detach(), grad_v, grad_c


def reference_mixture_index(points, config: MixtureConfig = SCAN_MIXTURE, seed: int = 0, v0=None,
                            dtype: torch.dtype = torch.float32) -> MixtureResult:
    """Reference (tests, benchmark): M_eps of one cloud the way upstream computes it, not used by the engine.

    A plain torch autograd loop on one N x 2 cloud: every step y = x @ v + c, z = y / sqrt(mean(y^2)),
    P = mean(sigmoid((eps - |z|) / T)), P.backward(), then v += lr * v.grad, c += lr * c.grad (gradient
    ascent) with the gradients cleared. Same start as the engine (v0, else `initial_directions(1, seed)[0]`
    = `torch.manual_seed(seed); torch.randn(2)`; c = 0), same T schedule and report (config.report).
    Arithmetic in `dtype` (float32 = upstream's torch default). The engine reaches the same (v, c) with a
    closed-form gradient on centred coordinates: equal up to rounding (see the tests for how far that goes).
    """
    x = torch.as_tensor(np.asarray(points) if not torch.is_tensor(points) else points).to(dtype)
    if x.ndim != 2 or x.shape[1] != 2 or x.shape[0] < 2:
        raise ValueError(f"points must be N x 2 with N >= 2, got shape {tuple(x.shape)}")
    start = initial_directions(1, seed)[0] if v0 is None else torch.as_tensor(v0).reshape(2)
    v = start.to(dtype).clone().requires_grad_(True)
    c = torch.zeros((), dtype=dtype, requires_grad=True)
    surrogate = torch.tensor(float("nan"), dtype=dtype)
    for step in range(config.steps):
        loss = surrogate_value(x, v, c, config.eps, temperature(step, config))
        loss.backward()
        with torch.no_grad():
            v += config.lr * v.grad
            c += config.lr * c.grad
        v.grad = None
        c.grad = None
        surrogate = loss.detach()
    with torch.no_grad():
        hard = (slab_z(x, v, c).abs() < config.eps).to(dtype).mean()
    reported = surrogate if config.report == "surrogate" else hard
    return MixtureResult(m=reported, m_hard=hard, m_surrogate=surrogate, v=v.detach(), c=c.detach())


# ----------------------------------------------------------------------------------------------------------
# separability index


def rotation_angles(config: SeparabilityConfig) -> np.ndarray:
    """The angles S minimises over: 2*pi*i/A, i < A (demo) or linspace(0, 2*pi, A) with endpoint (scan)."""
    if config.endpoint:
        return np.linspace(0.0, 2.0 * np.pi, config.angles)
    return np.array([2.0 * np.pi * i / config.angles for i in range(config.angles)])


def demo_normalise(points: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Demo quirk: centre each cloud, then divide by mean(x^2) over all its entries (not the RMS)."""
    weight = mask.to(points.dtype)[..., None]
    count = weight.sum(1)
    centred = (points - (points * weight).sum(1, keepdim=True) / count[:, None, :]) * weight
    mean_square = (centred**2).sum((1, 2)) / (2.0 * count[:, 0])
    return centred / mean_square[:, None, None]


def separability_index_batched(clouds, mask=None, config: SeparabilityConfig = SCAN_SEPARABILITY) -> SeparabilityResult:
    """S for a stack of clouds (B x N x 2 with a mask, or a list of N_i x 2): every (cloud, angle) histogram in one
    compiled pass over the cloud's points (`multid.reducibility.kernels.mi_nats_stack`, float64, the same bins
    as upstream's), the pairs spread over the kernel threads. Always on the CPU (a stack on another device is
    copied back)."""
    if config.grid not in ("fixed", "range"):
        raise ValueError(f"SeparabilityConfig.grid must be 'fixed' or 'range', got {config.grid!r}")
    points, mask = as_cloud_stack(clouds, mask)
    points, mask = points.cpu(), mask.cpu()
    if config.normalise:
        points = demo_normalise(points, mask)
    kept = points[mask].numpy()  # the real points of every cloud, cloud after cloud
    offsets = np.concatenate([[0], np.cumsum(mask.sum(-1).numpy())]).astype(np.int64)
    angles = rotation_angles(config)
    kernels.threads()
    # cos and sin from torch, as the engine before the kernel computed them (numpy's can differ in the last bit)
    mi_nats = kernels.mi_nats_stack(np.ascontiguousarray(kept[:, 0]), np.ascontiguousarray(kept[:, 1]), offsets,
                                    torch.cos(torch.from_numpy(angles)).numpy(), torch.sin(torch.from_numpy(angles)).numpy(),
                                    config.grid == "fixed", config.bins, config.half_bins, float(config.bound),
                                    float(config.num_smoothing), float(config.den_smoothing))
    mi_bits = torch.from_numpy(mi_nats) / LN2
    angles_t = torch.from_numpy(angles)
    s_bits, best = mi_bits.min(-1)
    return SeparabilityResult(s_bits=s_bits, angle=angles_t[best], mi_bits=mi_bits, angles=angles_t)


def separability_index(points, config: SeparabilityConfig = SCAN_SEPARABILITY) -> SeparabilityResult:
    """S of one N x 2 cloud: `separability_index_batched` with B = 1 (same arithmetic), squeezed."""
    stacked = np.asarray(points)[None] if not torch.is_tensor(points) else points[None]
    result = separability_index_batched(stacked, config=config)
    return SeparabilityResult(s_bits=result.s_bits[0], angle=result.angle[0], mi_bits=result.mi_bits[0],
                              angles=result.angles)


def reference_separability_index(points, config: SeparabilityConfig = SCAN_SEPARABILITY) -> SeparabilityResult:
    """Reference (tests, benchmark): S of one cloud the way upstream computes it, not used by the engine.

    numpy float64, a Python loop over `rotation_angles(config)`: rotate as row vectors xy @ R(theta) with
    R = cos I + sin [[0, -1], [1, 0]]; histogram with `np.histogram2d(x, y, bins=config.bins)` (grid "range",
    the scan) or, for the demo (grid "fixed", after centring and dividing by mean(x^2)), 2*half_bins bins per
    axis on [-bound, bound] by floor(x * half_bins / bound) + half_bins clipped to the edge bins; then the
    plug-in MI sum over p > 0 of p log((p + num_smoothing) / (p_x p_y + den_smoothing)) in nats, / ln 2.
    """
    xy = np.asarray(points.detach().cpu().numpy() if torch.is_tensor(points) else points, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2 or xy.shape[0] < 2:
        raise ValueError(f"points must be N x 2 with N >= 2, got shape {tuple(xy.shape)}")
    if config.grid not in ("fixed", "range"):
        raise ValueError(f"SeparabilityConfig.grid must be 'fixed' or 'range', got {config.grid!r}")
    if config.normalise:
        xy = xy - xy.mean(0)
        xy = xy / np.mean(xy**2)
    angles = rotation_angles(config)
    side = 2 * config.half_bins
    mi_nats = []
    for theta in angles:
        rotation = np.cos(theta) * np.eye(2) + np.sin(theta) * np.array([[0.0, -1.0], [1.0, 0.0]])
        rotated = xy @ rotation
        if config.grid == "range":
            counts, _, _ = np.histogram2d(rotated[:, 0], rotated[:, 1], bins=config.bins)
        else:
            index = np.clip(np.floor(rotated * (config.half_bins / config.bound)) + config.half_bins, 0, side - 1)
            index = index.astype(np.int64)
            counts = np.bincount(index[:, 0] * side + index[:, 1], minlength=side * side).reshape(side, side)
        p = counts / counts.sum()
        outer = p.sum(1)[:, None] * p.sum(0)[None, :]
        cells = p > 0
        mi_nats.append(np.sum(p[cells] * np.log((p[cells] + config.num_smoothing)
                                                 / (outer[cells] + config.den_smoothing))))
    mi_bits = torch.as_tensor(np.array(mi_nats) / LN2)
    best = int(torch.argmin(mi_bits))
    angles_t = torch.as_tensor(angles, dtype=torch.float64)
    return SeparabilityResult(s_bits=mi_bits[best], angle=angles_t[best], mi_bits=mi_bits, angles=angles_t)


# ----------------------------------------------------------------------------------------------------------
# both indices


@dataclass
class CloudIndices:
    """M and S of one 2-D cloud with what a three-panel figure row needs (the demo's and the scan's results)."""

    points: np.ndarray
    m: float  # reported M (demo: surrogate at the last annealed step; scan: the hard fraction)
    m_hard: float  # fraction |z| < eps at the final (v, c)
    v: np.ndarray
    c: float
    s_bits: float
    s_angle: float
    mi_bits: np.ndarray
    angles: np.ndarray


@dataclass
class ReducibilityResult:
    mixture: MixtureResult
    separability: SeparabilityResult


def reducibility_batched(
    clouds,
    mask=None,
    mixture_config: MixtureConfig = SCAN_MIXTURE,
    separability_config: SeparabilityConfig = SCAN_SEPARABILITY,
    seed: int = 0,
    v0=None,
) -> ReducibilityResult:
    """Both indices for a stack of clouds (e.g. 1000 clusters x 4 PC planes, padded to one size)."""
    points, mask = as_cloud_stack(clouds, mask)
    mixture = mixture_index_batched(points, mask, config=mixture_config, seed=seed, v0=v0)
    separability = separability_index_batched(points, mask, config=separability_config)
    return ReducibilityResult(mixture=mixture, separability=separability)
