r"""Every Numba kernel of ddpm_ref, each next to the plain-NumPy twin the tests hold it to.

The engine room (:mod:`ddpm_ref.nn.fast`) calls the dispatchers at the bottom (``im2col``,
``col2im``, ...), built from one explicit table ``_KERNELS`` of (kernel, twin) pairs; they run the
Numba kernel or its NumPy twin depending on one switch: :func:`use_numba`, initialised from the
environment (``DDPM_REF_NUMPY=1`` selects the twins). Twins agree with kernels to rounding
(relative error < 1e-10 in float64); the kernels exist only for speed.

Rules for kernels (STYLE.md): nopython, ``cache=True``, ``fastmath=False`` (one exception: the
group-norm sums, see ``_sum``), no globals. The kernels are serial and release the GIL
(``nogil=True``); the layers run them in worker threads, each on its own range of images or
elements (``threads.py``), so no kernel uses ``prange`` and Numba's threading layer is never
started. Kernels compile lazily, once per dtype (float32 for training, float64 for checks).

Contents: the 1-D offset helpers; im2col / col2im; the layout copies around the convolution's
matmul; the Winograd F(2x2, 3x3) transforms (``wino_*``, see winograd.py); nearest 2x
upsampling; GroupNorm; SiLU; Adam.

Convolution layout ("column" layout of Caffe's im2col, with the image axis inside): for a chunk of m
images, ``cols`` has shape (C k k, m, Ho Wo) and row r = (c k + di) k + dj holds the input plane c
shifted by (di, dj): cols[r, n, i Wo + j] = x_pad[n, c, i s + di, j s + dj]. A convolution is then
one BLAS matmul w.reshape(F, C k k) @ cols.reshape(C k k, m Ho Wo).
"""

from __future__ import annotations

import os

import numpy as np
from numba import njit

_state = {"numba": os.environ.get("DDPM_REF_NUMPY", "0") != "1"}


def use_numba(flag: bool) -> None:
    """Select the Numba kernels (True, the default) or their NumPy twins (False)."""
    _state["numba"] = bool(flag)


def numba_enabled() -> bool:
    """True when the layers run the Numba kernels, False when they run the NumPy twins."""
    return _state["numba"]


@njit(cache=True)
def _valid_range(n_out, n_in, stride, offset):
    # output indices j in [j0, j1) whose input index j stride + offset lies in [0, n_in)
    j0 = 0 if offset >= 0 else (-offset + stride - 1) // stride
    j1 = (n_in - 1 - offset) // stride + 1 if n_in - 1 - offset >= 0 else 0
    return j0, max(j0, min(n_out, j1))


@njit(cache=True)
def _expect(ok):
    # kernels run without bounds checks: a shape mismatch would write out of bounds
    if not ok:
        raise ValueError("kernel arguments: shapes do not match (see the kernel's twin)")


# 1-D helpers on flat arrays with offsets: dst[d0 + j] for j < n. Returning early unless the offsets
# are >= 0 lets LLVM drop Numba's negative-index wraparound and vectorise the loop; slicing a view
# per call instead costs more than copying a 7x7 plane.


@njit(cache=True)
def _fill0(dst, d0, n):
    # dst[d0 + j] = 0
    if d0 < 0:
        return
    for j in range(n):
        dst[d0 + j] = 0


@njit(cache=True)
def _set(dst, d0, a, a0, sign, n):
    # dst[d0 + j] = sign * a[a0 + j], sign = +1 or -1
    if d0 < 0 or a0 < 0:
        return
    if sign > 0:
        for j in range(n):
            dst[d0 + j] = a[a0 + j]
    else:
        for j in range(n):
            dst[d0 + j] = -a[a0 + j]


@njit(cache=True)
def _acc(dst, d0, a, a0, sign, n):
    # dst[d0 + j] += sign * a[a0 + j]
    if d0 < 0 or a0 < 0:
        return
    if sign > 0:
        for j in range(n):
            dst[d0 + j] += a[a0 + j]
    else:
        for j in range(n):
            dst[d0 + j] -= a[a0 + j]


@njit(cache=True)
def _comb(dst, d0, a, a0, b, b0, sign, n):
    # dst[d0 + j] = a[a0 + j] + sign * b[b0 + j]
    if d0 < 0 or a0 < 0 or b0 < 0:
        return
    if sign > 0:
        for j in range(n):
            dst[d0 + j] = a[a0 + j] + b[b0 + j]
    else:
        for j in range(n):
            dst[d0 + j] = a[a0 + j] - b[b0 + j]


# ----------------------------------------------------------------------------------------------
# im2col: x (m, C, H, W) -> cols (C k k, m, Ho Wo)


@njit(cache=True)
def _zero_pad_columns(dst, d0, i0, i1, j0, j1, W):
    # in a "same" shifted plane at dst[d0:], columns j < j0 and j >= j1 of rows i0..i1 read padding
    if d0 < 0:
        return
    for i in range(i0, i1):
        for j in range(j0):  # (at most pad columns each side: scalar stores)
            dst[d0 + i * W + j] = 0
        for j in range(j1, W):
            dst[d0 + i * W + j] = 0


@njit(nogil=True, cache=True)
def im2col_numba(x, k, stride, pad, cols):
    m, C, H, W = x.shape
    Ho = (H + 2 * pad - k) // stride + 1
    Wo = (W + 2 * pad - k) // stride + 1
    _expect(cols.shape == (C * k * k, m, Ho * Wo) and x.flags.c_contiguous)
    P = Ho * Wo
    xf, colsf = x.reshape(x.size), cols.reshape(cols.size)
    for c in range(C):
        for n in range(m):
            s0 = (n * C + c) * H * W  # the input plane is xf[s0 : s0 + H W]
            for di in range(k):
                i0, i1 = _valid_range(Ho, H, stride, di - pad)
                for dj in range(k):
                    j0, j1 = _valid_range(Wo, W, stride, dj - pad)
                    d0 = (((c * k + di) * k + dj) * m + n) * P  # cols[(c k + di) k + dj, n]
                    if stride == 1 and Wo == W:
                        # "same" convolution: the plane shifted by (di - pad) W + (dj - pad),
                        # one contiguous copy, then zeros where it read padding
                        shift = (di - pad) * W + (dj - pad)
                        lo, hi = max(i0 * W, -shift), min(i1 * W, H * W - shift)
                        _fill0(colsf, d0, lo)
                        _set(colsf, d0 + lo, xf, s0 + lo + shift, 1, hi - lo)
                        _fill0(colsf, d0 + hi, P - hi)
                        _zero_pad_columns(colsf, d0, i0, i1, j0, j1, W)
                    else:
                        dst = cols[(c * k + di) * k + dj, n]  # (Ho Wo,)
                        _fill0(dst, 0, P)
                        for i in range(i0, i1):
                            srow = x[n, c, i * stride + di - pad]  # (W,) input row read
                            for j in range(j0, j1):
                                dst[i * Wo + j] = srow[j * stride + dj - pad]


def im2col_numpy(x, k, stride, pad, cols):
    """NumPy twin of :func:`im2col_numba` (same arguments, fills ``cols`` in place)."""
    m, C, H, W = x.shape
    Ho = (H + 2 * pad - k) // stride + 1
    Wo = (W + 2 * pad - k) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))  # (m, C, H+2p, W+2p)
    c6 = cols.reshape(C, k, k, m, Ho, Wo)
    for di in range(k):
        for dj in range(k):
            patch = xp[:, :, di : di + stride * Ho : stride, dj : dj + stride * Wo : stride]
            c6[:, di, dj] = patch.transpose(1, 0, 2, 3)  # (C, m, Ho, Wo)


# ----------------------------------------------------------------------------------------------
# col2im: the adjoint of im2col, dcols (C k k, m, Ho Wo) -> dx (m, C, H, W), overlaps summed


@njit(nogil=True, cache=True)
def col2im_numba(dcols, k, stride, pad, dx):
    # dcols is scratch: its entries that read padding are zeroed (their gradient is discarded)
    m, C, H, W = dx.shape
    Ho = (H + 2 * pad - k) // stride + 1
    Wo = (W + 2 * pad - k) // stride + 1
    _expect(dcols.shape == (C * k * k, m, Ho * Wo) and dx.flags.c_contiguous)
    P = Ho * Wo
    dxf, dcf = dx.reshape(dx.size), dcols.reshape(dcols.size)
    for c in range(C):
        for n in range(m):
            p0 = (n * C + c) * H * W  # the plane dx[n, c] is dxf[p0 : p0 + H W]
            _fill0(dxf, p0, H * W)
            for di in range(k):
                i0, i1 = _valid_range(Ho, H, stride, di - pad)
                for dj in range(k):
                    j0, j1 = _valid_range(Wo, W, stride, dj - pad)
                    d0 = (((c * k + di) * k + dj) * m + n) * P  # dcols[(c k + di) k + dj, n]
                    if stride == 1 and Wo == W:
                        # add the shifted plane back in one contiguous add (see im2col)
                        shift = (di - pad) * W + (dj - pad)
                        lo, hi = max(i0 * W, -shift), min(i1 * W, H * W - shift)
                        _zero_pad_columns(dcf, d0, i0, i1, j0, j1, W)
                        _acc(dxf, p0 + lo + shift, dcf, d0 + lo, 1, hi - lo)
                    else:
                        plane = dx[n, c].reshape(H * W)  # flat
                        src = dcols[(c * k + di) * k + dj, n]  # (Ho Wo,)
                        for i in range(i0, i1):
                            base = (i * stride + di - pad) * W + dj - pad  # >= 0 for j >= j0
                            for j in range(j0, j1):
                                plane[base + j * stride] += src[i * Wo + j]


def col2im_numpy(dcols, k, stride, pad, dx):
    """NumPy twin of :func:`col2im_numba` (fills ``dx`` in place; leaves ``dcols`` alone)."""
    m, C, H, W = dx.shape
    Ho = (H + 2 * pad - k) // stride + 1
    Wo = (W + 2 * pad - k) // stride + 1
    dxp = np.zeros((m, C, H + 2 * pad, W + 2 * pad), dtype=dx.dtype)  # (m, C, H+2p, W+2p)
    c6 = dcols.reshape(C, k, k, m, Ho, Wo)
    for di in range(k):
        for dj in range(k):
            # each (di, dj) tap scatters its plane back where im2col read it from
            dxp[:, :, di : di + stride * Ho : stride, dj : dj + stride * Wo : stride] += c6[
                :, di, dj
            ].transpose(1, 0, 2, 3)
    dx[...] = dxp[:, :, pad : pad + H, pad : pad + W]


# ----------------------------------------------------------------------------------------------
# Channel-major <-> image-major copies around the conv matmul: (F, m, P) <-> (m, F, P)


@njit(nogil=True, cache=True)
def fm_to_mf_bias_numba(res, b, out):
    F, m, P = res.shape
    _expect(out.shape == (m, F, P) and b.shape[0] == F)
    for f in range(F):
        for n in range(m):
            for p in range(P):
                out[n, f, p] = res[f, n, p] + b[f]


def fm_to_mf_bias_numpy(res, b, out):
    """NumPy twin: out[n, f, p] = res[f, n, p] + b[f]."""
    out[...] = res.transpose(1, 0, 2) + b[:, None]


@njit(nogil=True, cache=True)
def mf_to_fm_numba(a, out):
    m, F, P = a.shape
    _expect(out.shape == (F, m, P))
    for f in range(F):
        for n in range(m):
            for p in range(P):
                out[f, n, p] = a[n, f, p]


def mf_to_fm_numpy(a, out):
    """NumPy twin: out[f, n, p] = a[n, f, p]."""
    out[...] = a.transpose(1, 0, 2)


# ----------------------------------------------------------------------------------------------
# Winograd F(2x2, 3x3) transforms (winograd.py) for 3x3 stride-1 pad-1 convolutions, even H, W.
# Output tile (ti, tj) of 2x2 pixels reads the 4x4 patch d of the padded input at rows 2ti..2ti+3,
# columns 2tj..2tj+3. An image has Th x Tw = H/2 x W/2 tiles, laid out with one padding row and
# column, q = ti (Tw + 1) + tj over Tp = (Th + 1)(Tw + 1) slots, and the chunk's planes follow one
# another (V[4a + b, c, n Tp + q] holds (B^T d B)[a, b]; an output tile is A^T M A from
# M[4a + b, f, n Tp + q]). A shift by one tile row or column is then a shift of the flat index, so
# each step of a transform is one long loop over all planes of the chunk. Padding slots hold
# finite values that no output reads (and whose gradients are 0).
# The padded input is kept de-interleaved, S[2r + s, plane, u (Tw + 1) + v] = x_pad[2u + r, 2v + s]:
# patch row k of tile row ti is S[k % 2] shifted by (k // 2) tile rows.
_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)
_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)


@njit(cache=True)
def _split2(a, a0, b, b0, src, s0, n):
    # de-interleave: a[a0 + j] = src[s0 + 2j], b[b0 + j] = src[s0 + 2j + 1]
    if a0 < 0 or b0 < 0 or s0 < 0:
        return
    for j in range(n):
        a[a0 + j] = src[s0 + 2 * j]
        b[b0 + j] = src[s0 + 2 * j + 1]


@njit(cache=True)
def _merge2(dst, d0, a, a0, b, b0, n, bias):
    # interleave: dst[d0 + 2j] = a[a0 + j] + bias, dst[d0 + 2j + 1] = b[b0 + j] + bias
    if d0 < 0 or a0 < 0 or b0 < 0:
        return
    for j in range(n):
        dst[d0 + 2 * j] = a[a0 + j] + bias
        dst[d0 + 2 * j + 1] = b[b0 + j] + bias


@njit(nogil=True, cache=True)
def wino_in_numba(x, V):
    m, C, H, W = x.shape
    Th, Tw = H // 2, W // 2
    K1, Tp = Tw + 1, (Th + 1) * (Tw + 1)
    L = C * m * Tp  # one row of V, S or R: every plane of the chunk
    _expect(H % 2 == 0 and W % 2 == 0 and V.shape == (16, C, m * Tp) and x.flags.c_contiguous)
    S = np.zeros(4 * L, dtype=x.dtype)  # de-interleaved planes; their borders stay 0
    R = np.zeros(8 * L, dtype=x.dtype)  # R[(2a + s) L + j]: (B^T d)[a] on columns of parity s
    Vf, xf = V.reshape(V.size), x.reshape(x.size)
    for c in range(C):
        for n in range(m):
            q0 = (c * m + n) * Tp
            for i in range(H):  # x[i, j] is x_pad[i + 1, j + 1]; x[i, 2v] goes to S[2r + 1]
                o = (i + 1) % 2 * 2 * L + q0 + (i + 1) // 2 * K1
                _split2(S, o + L, S, o + 1, xf, ((n * C + c) * H + i) * W, Tw)
    n = L - K1
    for s in range(2):  # rows of B^T d: d0, d2 = S[s] at j, j + K1; d1, d3 = S[2 + s]
        e, o = s * L, (2 + s) * L
        _comb(R, s * L, S, e, S, e + K1, -1, n)  # d0 - d2
        _comb(R, (2 + s) * L, S, o, S, e + K1, 1, n)  # d1 + d2
        _comb(R, (4 + s) * L, S, e + K1, S, o, -1, n)  # d2 - d1
        _comb(R, (6 + s) * L, S, o, S, o + K1, -1, n)  # d1 - d3
    for a in range(4):  # columns, (B^T d) B: c0, c2 = R[2a] at j, j + 1; c1, c3 = R[2a + 1]
        r0, r1, v0 = 2 * a * L, (2 * a + 1) * L, 4 * a * L
        _comb(Vf, v0, R, r0, R, r0 + 1, -1, L - 1)  # c0 - c2
        _comb(Vf, v0 + L, R, r1, R, r0 + 1, 1, L - 1)  # c1 + c2
        _comb(Vf, v0 + 2 * L, R, r0 + 1, R, r1, -1, L - 1)  # c2 - c1
        _comb(Vf, v0 + 3 * L, R, r1, R, r1 + 1, -1, L - 1)  # c1 - c3
        for b in range(4):
            Vf[v0 + b * L + L - 1] = 0  # the last slot (padding) has no right neighbour


def _patches(xp, H, W):
    # d[n, c, ti, tj, a, b] = xp[n, c, 2 ti + a, 2 tj + b]: the 4x4 patch of every tile
    rows = [[xp[:, :, a : a + H : 2, b : b + W : 2] for b in range(4)] for a in range(4)]
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)  # (m, C, Th, Tw, 4, 4)


def _from_slots(A, m, H, W):
    # A (16, X, m Tp) in the slot layout -> its real tiles as (m, X, Th, Tw, 4, 4)
    t = A.reshape(4, 4, A.shape[1], m, H // 2 + 1, W // 2 + 1)[..., : H // 2, : W // 2]
    return t.transpose(3, 2, 4, 5, 0, 1)


def _to_slots(A, t):
    # t (m, X, Th, Tw, 4, 4) -> A (16, X, m Tp) in the slot layout, 0 on padding slots
    m, X, Th, Tw = t.shape[:4]
    A6 = A.reshape(4, 4, X, m, Th + 1, Tw + 1)
    A6[...] = 0
    A6[..., :Th, :Tw] = t.transpose(4, 5, 1, 0, 2, 3)


def wino_in_numpy(x, V):
    """NumPy twin: V[4a + b, c, n Tp + q] = (B^T d_q B)[a, b] for the patch d_q of tile q (0 on
    padding slots, where the kernel leaves other finite values)."""
    m, C, H, W = x.shape
    d = _patches(np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))), H, W)  # (m, C, Th, Tw, 4, 4)
    _to_slots(V, _BT @ d @ _BT.T)  # B^T d B: (m, C, Th, Tw, 4, 4)


@njit(nogil=True, cache=True)
def wino_in_adj_numba(dV, dx):
    # the adjoint of wino_in_numba, padding slots included (their dV is 0 in a backward pass)
    m, C, H, W = dx.shape
    Th, Tw = H // 2, W // 2
    K1, Tp = Tw + 1, (Th + 1) * (Tw + 1)
    L = C * m * Tp
    _expect(H % 2 == 0 and W % 2 == 0 and dV.shape == (16, C, m * Tp) and dx.flags.c_contiguous)
    dS = np.zeros(4 * L, dtype=dx.dtype)
    dR = np.zeros(8 * L, dtype=dx.dtype)
    dVf, dxf = dV.reshape(dV.size), dx.reshape(dx.size)
    n = L - 1
    for a in range(4):  # adjoint of the columns step
        r0, r1, v0 = 2 * a * L, (2 * a + 1) * L, 4 * a * L
        _set(dR, r0, dVf, v0, 1, n)  # dc0
        _acc(dR, r0 + 1, dVf, v0, -1, n)  # dc2
        _acc(dR, r0 + 1, dVf, v0 + L, 1, n)
        _acc(dR, r0 + 1, dVf, v0 + 2 * L, 1, n)
        _comb(dR, r1, dVf, v0 + L, dVf, v0 + 2 * L, -1, n)  # dc1
        _acc(dR, r1, dVf, v0 + 3 * L, 1, n)
        _acc(dR, r1 + 1, dVf, v0 + 3 * L, -1, n)  # dc3
    n = L - K1
    for s in range(2):  # adjoint of the rows step
        e, o = s * L, (2 + s) * L
        a0, a1, a2, a3 = s * L, (2 + s) * L, (4 + s) * L, (6 + s) * L
        _acc(dS, e, dR, a0, 1, n)  # dd0
        _acc(dS, e + K1, dR, a0, -1, n)  # dd2
        _acc(dS, e + K1, dR, a1, 1, n)
        _acc(dS, e + K1, dR, a2, 1, n)
        _acc(dS, o, dR, a1, 1, n)  # dd1
        _acc(dS, o, dR, a2, -1, n)
        _acc(dS, o, dR, a3, 1, n)
        _acc(dS, o + K1, dR, a3, -1, n)  # dd3
    for c in range(C):  # gather back where wino_in took x from
        for nn in range(m):
            q0 = (c * m + nn) * Tp
            for i in range(H):
                o = (i + 1) % 2 * 2 * L + q0 + (i + 1) // 2 * K1
                _merge2(dxf, ((nn * C + c) * H + i) * W, dS, o + L, dS, o + 1, Tw, 0)


def wino_in_adj_numpy(dV, dx):
    """NumPy twin: dx = the adjoint of wino_in_numpy (each tile adds B dV_q B^T onto its patch;
    padding slots ignored)."""
    m, C, H, W = dx.shape
    dd = _BT.T @ _from_slots(dV, m, H, W) @ _BT  # B dV B^T: (m, C, Th, Tw, 4, 4)
    dxp = np.zeros((m, C, H + 2, W + 2), dtype=dx.dtype)
    for a in range(4):
        for b in range(4):
            dxp[:, :, a : a + H : 2, b : b + W : 2] += dd[..., a, b]
    dx[...] = dxp[:, :, 1 : H + 1, 1 : W + 1]


@njit(nogil=True, cache=True)
def wino_out_numba(M, bias, out):
    m, F, H, W = out.shape
    Th, Tw = H // 2, W // 2
    K1, Tp = Tw + 1, (Th + 1) * (Tw + 1)
    L = F * m * Tp
    _expect(H % 2 == 0 and W % 2 == 0 and M.shape == (16, F, m * Tp) and bias.shape[0] == F)
    _expect(out.flags.c_contiguous)
    U = np.empty(8 * L, dtype=out.dtype)  # U[(4e + b) L + j] = (A^T M)[e, b]
    Y = np.empty(4 * L, dtype=out.dtype)  # Y[(2e + g) L + j] = (A^T M A)[e, g]
    Mf, of = M.reshape(M.size), out.reshape(out.size)
    for b in range(4):  # rows: u0 = M0 + M1 + M2, u1 = M1 - M2 - M3 (column b)
        _comb(U, b * L, Mf, b * L, Mf, (4 + b) * L, 1, L)
        _acc(U, b * L, Mf, (8 + b) * L, 1, L)
        _comb(U, (4 + b) * L, Mf, (4 + b) * L, Mf, (8 + b) * L, -1, L)
        _acc(U, (4 + b) * L, Mf, (12 + b) * L, -1, L)
    for e in range(2):  # columns: y0 = u0 + u1 + u2, y1 = u1 - u2 - u3
        u = 4 * e * L
        _comb(Y, 2 * e * L, U, u, U, u + L, 1, L)
        _acc(Y, 2 * e * L, U, u + 2 * L, 1, L)
        _comb(Y, (2 * e + 1) * L, U, u + L, U, u + 2 * L, -1, L)
        _acc(Y, (2 * e + 1) * L, U, u + 3 * L, -1, L)
    for f in range(F):
        for n in range(m):
            q0, o = (f * m + n) * Tp, (n * F + f) * H * W
            for ti in range(Th):  # output rows 2ti, 2ti + 1 interleave y_e0 and y_e1
                q = q0 + ti * K1
                _merge2(of, o + 2 * ti * W, Y, q, Y, L + q, Tw, bias[f])
                _merge2(of, o + (2 * ti + 1) * W, Y, 2 * L + q, Y, 3 * L + q, Tw, bias[f])


def wino_out_numpy(M, bias, out):
    """NumPy twin: out tile q of filter f = A^T M_q A + bias[f], M_q = M[:, f, n Tp + q]."""
    m, F, H, W = out.shape
    y = _AT @ _from_slots(M, m, H, W) @ _AT.T  # (m, F, Th, Tw, 2, 2)
    out[...] = y.transpose(0, 1, 2, 4, 3, 5).reshape(out.shape) + bias[:, None, None]


@njit(nogil=True, cache=True)
def wino_out_adj_numba(dout, dM):
    m, F, H, W = dout.shape
    Th, Tw = H // 2, W // 2
    K1, Tp = Tw + 1, (Th + 1) * (Tw + 1)
    L = F * m * Tp
    _expect(H % 2 == 0 and W % 2 == 0 and dM.shape == (16, F, m * Tp))
    _expect(dout.flags.c_contiguous)
    Y = np.zeros(4 * L, dtype=dout.dtype)  # dout tiles, Y[(2e + g) L + j]; padding slots stay 0
    Pm = np.empty(8 * L, dtype=dout.dtype)  # A dY: Pm[(2a + g) L + j]
    dMf, df = dM.reshape(dM.size), dout.reshape(dout.size)
    for f in range(F):
        for n in range(m):
            q0, o = (f * m + n) * Tp, (n * F + f) * H * W
            for ti in range(Th):
                q = q0 + ti * K1
                _split2(Y, q, Y, L + q, df, o + 2 * ti * W, Tw)
                _split2(Y, 2 * L + q, Y, 3 * L + q, df, o + (2 * ti + 1) * W, Tw)
    for g in range(2):  # rows of A dY: p0 = y0, p1 = y0 + y1, p2 = y0 - y1, p3 = -y1
        y0, y1 = g * L, (2 + g) * L
        _set(Pm, g * L, Y, y0, 1, L)
        _comb(Pm, (2 + g) * L, Y, y0, Y, y1, 1, L)
        _comb(Pm, (4 + g) * L, Y, y0, Y, y1, -1, L)
        _set(Pm, (6 + g) * L, Y, y1, -1, L)
    for a in range(4):  # columns, (A dY) A^T: dM[4a + b] from p_a0, p_a1
        p0, p1, v0 = 2 * a * L, (2 * a + 1) * L, 4 * a * L
        _set(dMf, v0, Pm, p0, 1, L)
        _comb(dMf, v0 + L, Pm, p0, Pm, p1, 1, L)
        _comb(dMf, v0 + 2 * L, Pm, p0, Pm, p1, -1, L)
        _set(dMf, v0 + 3 * L, Pm, p1, -1, L)


def wino_out_adj_numpy(dout, dM):
    """NumPy twin: dM_q = A dY_q A^T for each 2x2 tile dY_q of dout (the adjoint of wino_out);
    0 on padding slots."""
    m, F, H, W = dout.shape
    dy = dout.reshape(m, F, H // 2, 2, W // 2, 2).transpose(0, 1, 2, 4, 3, 5)  # (.., 2, 2)
    _to_slots(dM, _AT.T @ dy @ _AT)  # A dY A^T: (m, F, Th, Tw, 4, 4)


# ----------------------------------------------------------------------------------------------
# Nearest 2x upsampling, x (m, C, H, W) -> out (m, C, 2H, 2W), and its adjoint (sum of each 2x2)


@njit(nogil=True, cache=True)
def upsample2x_fwd_numba(x, out):
    m, C, H, W = x.shape
    _expect(out.shape == (m, C, 2 * H, 2 * W))
    for n in range(m):
        for c in range(C):
            for i in range(H):
                for j in range(W):
                    v = x[n, c, i, j]
                    out[n, c, 2 * i, 2 * j] = v
                    out[n, c, 2 * i, 2 * j + 1] = v
                    out[n, c, 2 * i + 1, 2 * j] = v
                    out[n, c, 2 * i + 1, 2 * j + 1] = v


def upsample2x_fwd_numpy(x, out):
    """NumPy twin: out[n, c, i, j] = x[n, c, i // 2, j // 2] (out contiguous)."""
    m, C, H, W = x.shape
    out.reshape(m, C, H, 2, W, 2)[...] = x[:, :, :, None, :, None]


@njit(nogil=True, cache=True)
def upsample2x_bwd_numba(dout, dx):
    m, C, H, W = dx.shape
    _expect(dout.shape == (m, C, 2 * H, 2 * W))
    for n in range(m):
        for c in range(C):
            for i in range(H):
                for j in range(W):
                    s = dout[n, c, 2 * i, 2 * j] + dout[n, c, 2 * i, 2 * j + 1]
                    s += dout[n, c, 2 * i + 1, 2 * j]
                    dx[n, c, i, j] = s + dout[n, c, 2 * i + 1, 2 * j + 1]


def upsample2x_bwd_numpy(dout, dx):
    """NumPy twin: dx[n, c, i, j] = sum of dout over the 2x2 block (2i.., 2j..), same order."""
    np.add(dout[:, :, 0::2, 0::2], dout[:, :, 0::2, 1::2], out=dx)
    dx += dout[:, :, 1::2, 0::2]
    dx += dout[:, :, 1::2, 1::2]


# ----------------------------------------------------------------------------------------------
# GroupNorm on x (N, C, P), P = H W, G groups of C/G channels (statistics per (n, g))


# The two reductions below are the only code with a fastmath flag, and only "reassoc": it lets LLVM
# add the float64 partial sums in SIMD lanes (several times faster; docs/benchmarks.md). Only the
# order of the additions changes, as in NumPy's pairwise sums; no other IEEE rule is relaxed.


@njit(cache=True, fastmath={"reassoc"})
def _sum(a):
    # sum_p a[p], accumulated in float64
    s = 0.0
    for p in range(a.shape[0]):
        s += a[p]
    return s


@njit(cache=True, fastmath={"reassoc"})
def _dot(a, b, mu):
    # sum_p a[p] (b[p] - mu), accumulated in float64
    s = 0.0
    for p in range(a.shape[0]):
        s += a[p] * (b[p] - mu)
    return s


@njit(nogil=True, cache=True)
def groupnorm_fwd_numba(x, gamma, beta, G, eps, out, mean, rstd):
    N, C, P = x.shape
    _expect(out.shape == x.shape and mean.shape == rstd.shape == (N, G) and C % G == 0)
    _expect(gamma.shape[0] == C and beta.shape[0] == C)
    cg = C // G
    L = cg * P
    for n in range(N):
        xn = x[n].reshape(C * P)
        for g in range(G):
            xg = xn[g * L : (g + 1) * L]  # (C/G P,) contiguous
            mu = _sum(xg) / L
            var = _dot(xg, xg, mu) / L
            r = 1.0 / np.sqrt(var + eps)
            mean[n, g] = mu
            rstd[n, g] = r
            for c in range(g * cg, (g + 1) * cg):
                a = r * gamma[c]
                b = beta[c] - mu * a
                for p in range(P):
                    out[n, c, p] = x[n, c, p] * a + b


def groupnorm_fwd_numpy(x, gamma, beta, G, eps, out, mean, rstd):
    """NumPy twin of :func:`groupnorm_fwd_numba`: fills out (N, C, P), mean and rstd (N, G)."""
    N, C, P = x.shape
    xg = x.reshape(N, G, -1)  # (N, G, C/G P)
    mean[...] = xg.mean(axis=2)
    rstd[...] = 1.0 / np.sqrt(xg.var(axis=2) + eps)
    xhat = (xg - mean[:, :, None]) * rstd[:, :, None]  # (N, G, C/G P)
    out[...] = xhat.reshape(N, C, P) * gamma[:, None] + beta[:, None]


@njit(nogil=True, cache=True)
def groupnorm_bwd_numba(dout, x, gamma, mean, rstd, G, dx, dgamma_n, dbeta_n):
    N, C, P = x.shape
    _expect(dout.shape == x.shape and dx.shape == x.shape and rstd.shape == mean.shape == (N, G))
    _expect(dgamma_n.shape == dbeta_n.shape == (N, C) and gamma.shape[0] == C and C % G == 0)
    cg = C // G
    L = cg * P
    for n in range(N):
        for g in range(G):
            mu = mean[n, g]
            r = rstd[n, g]
            m1 = 0.0  # mean over the group of dxhat = dout gamma
            m2 = 0.0  # mean over the group of dxhat xhat
            for c in range(g * cg, (g + 1) * cg):
                s1 = _sum(dout[n, c])
                s2 = _dot(dout[n, c], x[n, c], mu) * r
                dbeta_n[n, c] = s1
                dgamma_n[n, c] = s2
                m1 += gamma[c] * s1
                m2 += gamma[c] * s2
            m1 /= L
            m2 /= L
            for c in range(g * cg, (g + 1) * cg):
                # dx = r (dxhat - m1 - xhat m2), xhat = (x - mu) r
                a = r * gamma[c]
                b = r * r * m2
                b0 = -r * m1 + b * mu
                for p in range(P):
                    dx[n, c, p] = a * dout[n, c, p] - b * x[n, c, p] + b0


def groupnorm_bwd_numpy(dout, x, gamma, mean, rstd, G, dx, dgamma_n, dbeta_n):
    """NumPy twin of :func:`groupnorm_bwd_numba`: fills dx (N, C, P) and the per-image
    parameter gradients dgamma_n, dbeta_n (N, C) (summed over n by the caller)."""
    N, C, P = x.shape
    xhat = ((x.reshape(N, G, -1) - mean[:, :, None]) * rstd[:, :, None]).reshape(N, C, P)
    dbeta_n[...] = dout.sum(axis=2)
    dgamma_n[...] = (dout * xhat).sum(axis=2)
    dxhat = (dout * gamma[:, None]).reshape(N, G, -1)  # (N, G, C/G P)
    xh = xhat.reshape(N, G, -1)
    m1 = dxhat.mean(axis=2, keepdims=True)
    m2 = (dxhat * xh).mean(axis=2, keepdims=True)
    dx[...] = (rstd[:, :, None] * (dxhat - m1 - xh * m2)).reshape(N, C, P)


# ----------------------------------------------------------------------------------------------
# SiLU, elementwise on flat arrays. The transcendental, t = tanh(x / 2), comes from NumPy (SIMD,
# far faster than Numba's scalar libm call); sigma(x) = (1 + t) / 2 never overflows.


@njit(nogil=True, cache=True)
def silu_fwd_numba(x, t, out):
    _expect(t.shape == x.shape and out.shape == x.shape)
    for i in range(x.shape[0]):
        s = 0.5 + 0.5 * t[i]  # sigma(x)
        t[i] = s
        out[i] = x[i] * s


def silu_fwd_numpy(x, t, out):
    """NumPy twin of :func:`silu_fwd_numba`: t = tanh(x/2) becomes sigma(x); out = x sigma(x)."""
    t *= 0.5
    t += 0.5
    np.multiply(x, t, out=out)


@njit(nogil=True, cache=True)
def silu_bwd_numba(dout, x, sig, dx):
    _expect(dout.shape == x.shape and sig.shape == x.shape and dx.shape == x.shape)
    for i in range(x.shape[0]):
        s = sig[i]
        dx[i] = dout[i] * (s * (1.0 + x[i] * (1.0 - s)))


def silu_bwd_numpy(dout, x, sig, dx):
    """NumPy twin of :func:`silu_bwd_numba`: dx = dout sigma (1 + x (1 - sigma))."""
    np.multiply(dout, sig * (1.0 + x * (1.0 - sig)), out=dx)


# ----------------------------------------------------------------------------------------------
# Adam (ddpm_ref.optim.adam_update), elementwise on flat arrays: one pass reading p, g, m, v and
# writing the new p, m, v, where NumPy needs about twelve. The scalars arrive in the arrays'
# dtype (c1 = 1 - beta1, c2 = 1 - beta2, step_size = lr sqrt(1 - beta2^s) / (1 - beta1^s),
# eps_hat = eps sqrt(1 - beta2^s)), so float32 arrays are updated in float32 arithmetic.


@njit(nogil=True, cache=True, error_model="numpy")  # no zero-division check: vectorises
def adam_numba(p, g, m, v, c1, c2, step_size, eps_hat, p_out, m_out, v_out):
    n = p.shape[0]
    _expect(
        g.shape[0] == n
        and m.shape[0] == n
        and v.shape[0] == n
        and p_out.shape[0] == n
        and m_out.shape[0] == n
        and v_out.shape[0] == n
    )
    for i in range(n):
        gi = g[i]
        mi = m[i] + c1 * (gi - m[i])  # beta1 m + (1 - beta1) g
        vi = v[i] + c2 * (gi * gi - v[i])  # beta2 v + (1 - beta2) g^2
        m_out[i] = mi
        v_out[i] = vi
        p_out[i] = p[i] - step_size * (mi / (np.sqrt(vi) + eps_hat))


def adam_numpy(p, g, m, v, c1, c2, step_size, eps_hat, p_out, m_out, v_out):
    """NumPy twin of :func:`adam_numba` (the same operations, whole arrays at a time)."""
    np.subtract(g, m, out=m_out)
    m_out *= c1
    m_out += m
    np.multiply(g, g, out=v_out)
    v_out -= v
    v_out *= c2
    v_out += v
    np.sqrt(v_out, out=p_out)
    p_out += eps_hat
    np.divide(m_out, p_out, out=p_out)
    p_out *= step_size
    np.subtract(p, p_out, out=p_out)


# ----------------------------------------------------------------------------------------------
# The dispatch table: every kernel with its NumPy twin. The engine room calls the dispatchers
# below, which run one or the other depending on use_numba().

_KERNELS = {
    "im2col": (im2col_numba, im2col_numpy),
    "col2im": (col2im_numba, col2im_numpy),
    "fm_to_mf_bias": (fm_to_mf_bias_numba, fm_to_mf_bias_numpy),
    "mf_to_fm": (mf_to_fm_numba, mf_to_fm_numpy),
    "upsample2x_fwd": (upsample2x_fwd_numba, upsample2x_fwd_numpy),
    "upsample2x_bwd": (upsample2x_bwd_numba, upsample2x_bwd_numpy),
    "wino_in": (wino_in_numba, wino_in_numpy),
    "wino_in_adj": (wino_in_adj_numba, wino_in_adj_numpy),
    "wino_out": (wino_out_numba, wino_out_numpy),
    "wino_out_adj": (wino_out_adj_numba, wino_out_adj_numpy),
    "groupnorm_fwd": (groupnorm_fwd_numba, groupnorm_fwd_numpy),
    "groupnorm_bwd": (groupnorm_bwd_numba, groupnorm_bwd_numpy),
    "silu_fwd": (silu_fwd_numba, silu_fwd_numpy),
    "silu_bwd": (silu_bwd_numba, silu_bwd_numpy),
    "adam": (adam_numba, adam_numpy),
}


def _dispatcher(name):
    def run(*args):  # the switch and the table are read at each call (use_numba(), a test's spy)
        kernel, twin = _KERNELS[name]
        return (kernel if _state["numba"] else twin)(*args)

    run.__name__ = name
    run.__doc__ = f"Run {name}_numba, or its twin {name}_numpy after use_numba(False)."
    return run


im2col = _dispatcher("im2col")
col2im = _dispatcher("col2im")
fm_to_mf_bias = _dispatcher("fm_to_mf_bias")
mf_to_fm = _dispatcher("mf_to_fm")
upsample2x_fwd = _dispatcher("upsample2x_fwd")
upsample2x_bwd = _dispatcher("upsample2x_bwd")
wino_in = _dispatcher("wino_in")
wino_in_adj = _dispatcher("wino_in_adj")
wino_out = _dispatcher("wino_out")
wino_out_adj = _dispatcher("wino_out_adj")
groupnorm_fwd = _dispatcher("groupnorm_fwd")
groupnorm_bwd = _dispatcher("groupnorm_bwd")
silu_fwd = _dispatcher("silu_fwd")
silu_bwd = _dispatcher("silu_bwd")
adam = _dispatcher("adam")
