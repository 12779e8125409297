"""The CPU kernels' products against NumPy, in both dtypes: the packed per-step product
and the one-call BLAS product ``matmul``."""
import numpy as np
import pytest
from numba import njit
from numba.core.errors import TypingError

from rnnsim.kernels import cpu_matmul
from rnnsim.kernels.cpu_matmul import PANEL_BYTES, matmul, pack_panels, step_product
from rnnsim.kernels.cpu_team import SIZE, TEAM_WORDS


@njit(cache=True)
def alone():
    """The control block of a team of one: step_product computes every panel itself."""
    team = np.zeros(TEAM_WORDS, np.int64)
    team[SIZE] = 1
    return team


@njit(cache=True)
def packed_product(a, w, out):
    pool = np.full(w.shape[0] * (w.shape[1] + PANEL_BYTES) + 64, np.nan, w.dtype)
    cursor = np.zeros(1, np.int64)
    panels = pack_panels(w, pool, cursor)
    step_product(a, panels, out, alone())
    return panels


# M covers the row blocks (8 rows with AVX-512, 4 otherwise) and every remainder (4, 2,
# 1); N full panels, a partial last panel, and fewer columns than one panel, in float32
# (32 a panel with AVX-512, 16 with AVX2) and float64 (16, 8).
SHAPES = [(1, 1, 1), (3, 5, 7), (7, 9, 16), (8, 16, 32), (15, 33, 47), (16, 64, 64), (29, 70, 100),
          (32, 128, 33)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "M{}K{}N{}".format(*s))
def test_step_product_matches_numpy(shape, dtype):
    M, K, N = shape
    rng = np.random.default_rng(M * 1000 + K + N)
    a = rng.standard_normal((M, K)).astype(dtype)
    w = rng.standard_normal((K, N)).astype(dtype)
    out = np.full((M, N), np.nan, dtype)
    panels = packed_product(a, w, out)
    width = PANEL_BYTES // np.dtype(dtype).itemsize
    assert panels.shape == (-(-N // width), K, width)
    assert np.all(panels.transpose(1, 0, 2).reshape(K, -1)[:, N:] == 0)  # padding, not pool garbage
    exact = a.astype(np.float64) @ w.astype(np.float64)
    # each entry is K products summed: error at most ~K eps sum_k |a_ik w_kj|
    bound = 2 * K * np.finfo(dtype).eps * (np.abs(a).astype(np.float64) @ np.abs(w).astype(np.float64))
    assert np.all(np.abs(out - exact) <= bound)


def test_step_product_writes_only_its_columns():
    """N = 5 is less than one panel: the last row's stores stop at column N, and the
    guard elements after ``out`` in the same buffer keep their value."""
    rng = np.random.default_rng(0)
    a, w = rng.standard_normal((9, 12)), rng.standard_normal((12, 5))
    buffer = np.full(9 * 5 + 64, -7.0)
    out = buffer[:45].reshape(9, 5)
    packed_product(a, w, out)
    np.testing.assert_allclose(out, a @ w, rtol=1e-13, atol=1e-13)
    assert np.all(buffer[45:] == -7.0)


def test_step_product_rejects_strided_rows():
    a, w = np.ones((4, 6)), np.ones((3, 5))
    with pytest.raises(TypingError, match="C-contiguous"):
        packed_product(a[:, ::2], w, np.empty((4, 5)))


def _other_width_product(vector_bytes, vectors, ahead):
    """step_product's loop on tiles of other vector widths and panels (64 bytes, AVX-512,
    two vectors a row; 32, AVX2, one or two; SSE: 16) in blocks of 8 rows, prefetching
    ``ahead`` rows ahead: this machine compiles them as well (LLVM splits vectors wider
    than its registers)."""
    tile8, tile4, tile2, tile1 = (cpu_matmul._tile(rows, vector_bytes, vectors) for rows in (8, 4, 2, 1))

    @njit
    def product(a, panels, out):
        M, N, width = a.shape[0], out.shape[1], panels.shape[2]
        for p in range(panels.shape[0]):
            ncols = min(width, N - p * width)
            i0 = 0
            while M - i0 >= 8:
                tile8(a, panels, out, i0, p, ncols, ahead)
                i0 += 8
            if M - i0 >= 4:
                tile4(a, panels, out, i0, p, ncols, ahead)
                i0 += 4
            if M - i0 >= 2:
                tile2(a, panels, out, i0, p, ncols, ahead)
                i0 += 2
            if M - i0 >= 1:
                tile1(a, panels, out, i0, p, ncols, ahead)
    return product


# this host's width too: step_product prefetches only panels larger than the cache,
# so small tests reach the prefetching tiles only through here (ahead = 3 rows, which
# also runs past the last panel's end)
HOST_WIDTH = (cpu_matmul.VECTOR_BYTES, cpu_matmul.TILE_VECTORS)


@pytest.mark.parametrize("vector_bytes, vectors", sorted({(64, 2), (32, 1), (16, 1), (32, 2), HOST_WIDTH}))
@pytest.mark.parametrize("ahead", [0, 3])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_tiles_of_other_vector_widths(vector_bytes, vectors, ahead, dtype):
    product = _other_width_product(vector_bytes, vectors, ahead)
    width = vector_bytes * vectors // np.dtype(dtype).itemsize
    rng = np.random.default_rng(vector_bytes + vectors)
    for M, K, N in [(15, 33, 47), (8, 16, 2 * width), (3, 5, width - 1)]:
        a = rng.standard_normal((M, K)).astype(dtype)
        w = rng.standard_normal((K, N)).astype(dtype)
        P = -(-N // width)
        padded = np.zeros((K, P * width), dtype)
        padded[:, :N] = w
        panels = np.ascontiguousarray(padded.reshape(K, P, width).transpose(1, 0, 2))
        out = np.full((M, N), np.nan, dtype)
        product(a, panels, out)
        exact = a.astype(np.float64) @ w.astype(np.float64)
        bound = 2 * K * np.finfo(dtype).eps * (np.abs(a).astype(np.float64) @ np.abs(w).astype(np.float64))
        assert np.all(np.abs(out - exact) <= bound), (M, K, N)


@pytest.mark.parametrize("k_rows, out_rows", [(5, 4), (6, 3)], ids=["K", "M"])
def test_step_product_rejects_mismatched_shapes(k_rows, out_rows):
    """Panels with 5 rows against a's 6 columns, or an ``out`` with fewer rows than ``a``."""
    a, w = np.ones((4, 6)), np.ones((6, 5))
    pool, cursor = np.empty(1000), np.zeros(1, np.int64)
    with pytest.raises(ValueError, match="panels do not match"):
        _mismatched(a, w[:k_rows], pool, cursor, np.empty((out_rows, 5)))


@njit
def _mismatched(a, w, pool, cursor, out):
    step_product(a, pack_panels(w, pool, cursor), out, alone())


@njit(cache=True)
def blas_product(a, b, out):
    matmul(a, b, out, 0.0)


def _layout(x, order):
    return np.asfortranarray(x) if order == "F" else np.ascontiguousarray(x)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("orders", ["CC", "CF", "FC", "FF"])
@pytest.mark.parametrize("shape", [(1, 1, 1), (5, 7, 3), (33, 17, 65)], ids=lambda s: "M{}K{}N{}".format(*s))
def test_matmul_matches_numpy(shape, orders, dtype):
    """Both operands C- or F-contiguous (a transposed view, as the weight gradients pass)."""
    M, K, N = shape
    rng = np.random.default_rng(M + K * N)
    a = _layout(rng.standard_normal((M, K)).astype(dtype), orders[0])
    b = _layout(rng.standard_normal((K, N)).astype(dtype), orders[1])
    out = np.full((M, N), np.nan, dtype)
    blas_product(a, b, out)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    bound = 2 * K * np.finfo(dtype).eps * (np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64))
    assert np.all(np.abs(out - exact) <= bound)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("orders", ["CC", "FC", "CF", "FF"])
def test_matmul_empty_inner_dimension_gives_zeros(orders, dtype):
    """K = 0 (BLAS is called with leading dimensions of at least 1): the product is all
    zeros, whatever out held, NaN included."""
    out = np.full((3, 4), np.nan, dtype)
    a, b = _layout(np.empty((3, 0), dtype), orders[0]), _layout(np.empty((0, 4), dtype), orders[1])
    blas_product(a, b, out)
    assert np.all(out == 0.0)
    blas_product(np.empty((0, 2)), np.ones((2, 4)), np.empty((0, 4)))  # M = 0: nothing to do


@pytest.mark.parametrize("b_rows, out_shape", [(4, (3, 5)), (6, (2, 5)), (6, (3, 4))], ids=["K", "M", "N"])
def test_matmul_rejects_mismatched_shapes(b_rows, out_shape):
    with pytest.raises(ValueError, match="shapes of a, b and out do not match"):
        blas_product(np.ones((3, 6)), np.ones((b_rows, 5)), np.empty(out_shape))


def test_matmul_rejects_strided_or_mixed_dtype_operands():
    a, b = np.ones((4, 6)), np.ones((6, 5))
    with pytest.raises(TypingError, match="contiguous"):
        blas_product(a[:, ::2], b[:3], np.empty((4, 5)))
    with pytest.raises(TypingError, match="float dtype"):
        blas_product(a.astype(np.float32), b, np.empty((4, 5)))


@njit(cache=True)
def blas_product_added(a, b, out):
    matmul(a, b, out, 1.0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matmul_accumulates_into_out(dtype):
    """beta = 1: out += a @ b, as the weight gradients sum their blocks;
    with K = 0 out keeps its values."""
    rng = np.random.default_rng(7)
    a = np.asfortranarray(rng.standard_normal((6, 9)).astype(dtype))
    b = rng.standard_normal((9, 4)).astype(dtype)
    start = rng.standard_normal((6, 4)).astype(dtype)
    out = start.copy()
    blas_product_added(a, b, out)
    exact = start.astype(np.float64) + a.astype(np.float64) @ b.astype(np.float64)
    bound = 2 * 10 * np.finfo(dtype).eps * (np.abs(start) + np.abs(a).astype(np.float64) @ np.abs(b))
    assert np.all(np.abs(out - exact) <= bound)
    before = out.copy()
    blas_product_added(np.empty((6, 0), dtype), np.empty((0, 4), dtype), out)
    assert np.array_equal(out, before)
