"""Accuracy, special values, dtype preservation and vectorization of _vmath.

The functions are njit-only, so everything goes through small top-level
@njit(cache=True) wrappers. The accuracy loops are compiled with the fastmath
set our kernels use, so the bounds below hold *from such a kernel*.
"""
import math
import re

import numpy as np
import pytest
from numba import njit

from rnnsim.kernels._vmath import exp, sigmoid, tanh

KERNEL_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

# Max error bounds in ulp of the result's dtype, against an 80-bit long-double
# reference (so they include the final rounding). Measured (2-core Xeon,
# AVX-512, numba 0.68): f64 exp 0.98, tanh 1.50, sigmoid 2.26;
# f32 exp 1.00, tanh 1.49, sigmoid 2.25.
ULP_BOUND = {
    (np.float64, "exp"): 1.5,
    (np.float64, "tanh"): 2.0,
    (np.float64, "sigmoid"): 3.0,
    (np.float32, "exp"): 1.5,
    (np.float32, "tanh"): 2.0,
    (np.float32, "sigmoid"): 3.0,
}

HAVE_LONGDOUBLE = np.finfo(np.longdouble).nmant >= 63
needs_ld = pytest.mark.skipif(not HAVE_LONGDOUBLE,
                              reason="needs x87 80-bit long double for the reference")


# --- njit wrappers ----------------------------------------------------------
@njit(fastmath=KERNEL_FASTMATH, cache=True)
def fast_tanh(x, out):
    for i in range(x.size):
        out[i] = tanh(x[i])


@njit(fastmath=KERNEL_FASTMATH, cache=True)
def fast_sigmoid(x, out):
    for i in range(x.size):
        out[i] = sigmoid(x[i])


@njit(fastmath=KERNEL_FASTMATH, cache=True)
def fast_exp(x, out):
    for i in range(x.size):
        out[i] = exp(x[i])


@njit(cache=True)
def strict_tanh(x, out):
    for i in range(x.size):
        out[i] = tanh(x[i])


@njit(cache=True)
def strict_sigmoid(x, out):
    for i in range(x.size):
        out[i] = sigmoid(x[i])


@njit(cache=True)
def strict_exp(x, out):
    for i in range(x.size):
        out[i] = exp(x[i])


@njit(cache=True)
def scalar_tanh(x):
    return tanh(x)


@njit(cache=True)
def scalar_sigmoid(x):
    return sigmoid(x)


@njit(cache=True)
def scalar_exp(x):
    return exp(x)


@njit(fastmath=KERNEL_FASTMATH, cache=True)
def libm_tanh(x, out):
    # control for the vectorization check: libm in the loop -> a call
    for i in range(x.size):
        out[i] = math.tanh(x[i])


FAST = {"tanh": fast_tanh, "sigmoid": fast_sigmoid, "exp": fast_exp}
STRICT = {"tanh": strict_tanh, "sigmoid": strict_sigmoid, "exp": strict_exp}
SCALAR = {"tanh": scalar_tanh, "sigmoid": scalar_sigmoid, "exp": scalar_exp}
DTYPES = [np.float64, np.float32]
NAMES = ["tanh", "sigmoid", "exp"]


def run(loop, x):
    out = np.empty_like(x)
    loop(x, out)
    return out


# --- references -------------------------------------------------------------
def reference(name, x):
    """Long-double (64-bit mantissa) reference, ~2**-11 ulp of float64."""
    xl = x.astype(np.longdouble)
    with np.errstate(over="ignore", under="ignore"):
        if name == "exp":
            return np.exp(xl)
        if name == "tanh":
            return np.tanh(xl)
        e = np.exp(-np.abs(xl))
        return np.where(xl >= 0, 1 / (1 + e), e / (1 + e))


def ulp_error(out, ref, dtype):
    """|out - ref| in units of the spacing of ref rounded to `dtype`.

    Only where ref rounds to a finite number (infs are checked separately).
    The spacing of a subnormal is the smallest subnormal, so gradual
    underflow is measured in absolute subnormal steps.
    """
    with np.errstate(over="ignore"):
        rr = ref.astype(dtype)
    fin = np.isfinite(rr)
    sp = np.spacing(np.abs(rr[fin])).astype(np.longdouble)
    err = np.abs(out[fin].astype(np.longdouble) - ref[fin]) / sp
    return err, fin


def grid(dtype):
    """~1.1e6 deterministic points, both signs, covering every regime."""
    rng = np.random.default_rng(12345)
    if dtype == np.float64:
        tiny = np.logspace(-323.5, 0, 150_001)      # down into the subnormals
        wide = np.logspace(0, 308, 20_001)          # up to ~DBL_MAX
        deep = np.linspace(0, 750, 60_001)          # exp / sigmoid tails
    else:
        tiny = np.logspace(-45.2, 0, 150_001)
        wide = np.logspace(0, 38.5, 20_001)
        deep = np.linspace(0, 105, 60_001)
    dense = np.linspace(0, 25, 250_001)             # tanh switch 0.625, saturation
    rand = rng.uniform(0, 8, 70_000)
    pos = np.concatenate([tiny, wide, deep, dense, rand]).astype(dtype)
    pos = pos[np.isfinite(pos)]
    # the tanh switch point and its float neighbours, exactly
    sw = dtype(0.625)
    edges = np.array([np.nextafter(sw, dtype(0)), sw, np.nextafter(sw, dtype(1))], dtype)
    pos = np.concatenate([pos, edges])
    return np.concatenate([pos, -pos])


GRIDS = {dt: grid(dt) for dt in DTYPES}


# --- accuracy ---------------------------------------------------------------
@needs_ld
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("name", NAMES)
def test_max_ulp_error_from_fastmath_kernel(name, dtype):
    x = GRIDS[dtype]
    out = run(FAST[name], x)
    assert out.dtype == dtype
    ref = reference(name, x)
    err, fin = ulp_error(out, ref, dtype)
    worst = int(np.argmax(err))
    assert err.max() <= ULP_BOUND[(dtype, name)], (
        f"{name}[{dtype.__name__}] {err.max():.3f} ulp at x={x[fin][worst]!r}"
    )
    # where the true result overflows the dtype we must give +inf, not NaN/finite
    with np.errstate(over="ignore"):
        inf_ref = ~np.isfinite(ref.astype(dtype))
    assert np.all(out[inf_ref] == np.inf)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_tanh_close_to_numpy(dtype):
    # the contract the kernels rely on: a few ulp of np.tanh itself
    x = GRIDS[dtype]
    out = run(fast_tanh, x)
    ref = np.tanh(x)
    diff = np.abs(out.astype(np.float64) - ref) / np.spacing(np.abs(ref)).astype(np.float64)
    assert diff.max() <= 3.0


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_tanh_tiny_keeps_relative_accuracy(dtype):
    # tanh(x) = x (exactly, after rounding) once x**3/3 < half an ulp of x
    fi = np.finfo(dtype)
    x = np.array([fi.smallest_subnormal, fi.smallest_normal, 1e-30, 1e-9, 1e-4], dtype)
    x = x[x > 0]
    out = run(strict_tanh, np.concatenate([x, -x]))
    ref = np.tanh(np.concatenate([x, -x]).astype(np.float64))
    rel = np.abs(out.astype(np.float64) - ref) / np.abs(ref)
    assert rel.max() <= 2 * fi.eps


@needs_ld
def test_sigmoid_left_tail_relative_accuracy():
    x = np.array([-30.0, -100.0, -300.0, -700.0, -708.0])
    out = run(fast_sigmoid, x)
    ref = reference("sigmoid", x)
    rel = np.abs(out.astype(np.longdouble) - ref) / ref
    assert float(rel.max()) < 1e-15
    # float32 where the result is still normal
    x32 = np.array([-10, -30, -60, -87], np.float32)
    out32 = run(fast_sigmoid, x32)
    rel32 = np.abs(out32.astype(np.longdouble) - reference("sigmoid", x32)) / reference("sigmoid", x32)
    assert float(rel32.max()) < 3 * np.finfo(np.float32).eps


# --- special values ---------------------------------------------------------
SPECIAL = {
    # name: [(x, expected), ...]  expected compared with sign of zero
    "tanh": [(0.0, 0.0), (-0.0, -0.0), (np.inf, 1.0), (-np.inf, -1.0),
             (30.0, 1.0), (-30.0, -1.0), (1e300, 1.0), (-1e300, -1.0)],
    "sigmoid": [(0.0, 0.5), (-0.0, 0.5), (np.inf, 1.0), (-np.inf, 0.0),
                (50.0, 1.0), (-1e300, 0.0), (1e300, 1.0), (-800.0, 0.0)],
    "exp": [(0.0, 1.0), (-0.0, 1.0), (np.inf, np.inf), (-np.inf, 0.0),
            (1000.0, np.inf), (-1000.0, 0.0)],
}


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("name", NAMES)
def test_special_values_and_nan(name, dtype):
    xs, expect = zip(*SPECIAL[name])
    with np.errstate(over="ignore"):       # 1e300 -> inf in float32: fine
        x = np.array(xs + (np.nan, -np.nan), dtype)
    for loop in (STRICT[name], FAST[name]):
        out = run(loop, x)
        assert out.dtype == dtype
        assert np.isnan(out[-2:]).all(), f"{name}: NaN must propagate"
        np.testing.assert_array_equal(out[:-2], np.array(expect, dtype))
    # sign of zero only without nsz (a fastmath kernel may drop it)
    out = run(STRICT[name], x)
    np.testing.assert_array_equal(np.signbit(out[:-2]), np.signbit(np.array(expect, dtype)))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_tanh_saturates_exactly_and_monotone(dtype):
    x = np.linspace(0, 30, 300_001).astype(dtype)
    out = run(fast_tanh, x)
    assert out.max() == 1 and np.all(out <= 1)
    assert np.all(np.diff(out) >= 0)
    assert np.all(np.abs(out) <= 1)


@pytest.mark.parametrize("name", NAMES)
def test_scalar_dtype_preserved(name):
    f = SCALAR[name]
    f(np.float32(0.3))
    f(np.float64(0.3))
    f(2)    # integers go to float64
    rtypes = {str(args[0]): str(cres.signature.return_type)
              for args, cres in f.overloads.items()}
    assert rtypes["float32"] == "float32"
    assert rtypes["float64"] == "float64"
    assert rtypes["int64"] == "float64"
    assert f(2) == pytest.approx({"tanh": math.tanh, "exp": math.exp,
                                  "sigmoid": lambda v: 1 / (1 + math.exp(-v))}[name](2), rel=1e-15)


def test_not_callable_from_python():
    with pytest.raises(TypeError, match="njit"):
        tanh(0.5)


# --- vectorization ----------------------------------------------------------
def _main_function(text, pyname, label_re):
    """The body of the native (non-wrapper) function of `pyname`."""
    chunks = re.split(label_re, text)
    # re.split with one group gives [pre, name1, body1, name2, body2, ...]
    for name, body in zip(chunks[1::2], chunks[2::2]):
        if pyname in name and not name.startswith(("_ZN7cpython", "cfunc.")):
            return body
    raise AssertionError(f"native function for {pyname} not found")


def _asm_and_ir(cached, dtype):
    # a function loaded from the on-disk cache has no IR/asm to inspect, so
    # recompile the same Python function into an uncached dispatcher
    loop = njit(fastmath=KERNEL_FASTMATH)(cached.py_func)
    x = np.ones(8, dtype)
    loop(x, np.empty_like(x))
    sig = next(s for s in loop.signatures if str(s[0].dtype) == np.dtype(dtype).name)
    asm = _main_function(loop.inspect_asm(sig), cached.__name__, r"(?m)^([^\s.][^\s:]*):\s*$")
    ll = _main_function(loop.inspect_llvm(sig), cached.__name__, r"(?m)^define[^@]*@([^\s(]+)\(")
    return asm, ll


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("loop", [fast_tanh, fast_sigmoid, fast_exp], ids=NAMES)
def test_loop_vectorizes_without_calls(loop, dtype):
    asm, ll = _asm_and_ir(loop, dtype)
    sfx = "pd" if dtype == np.float64 else "ps"
    # packed arithmetic on 256/512-bit registers
    assert re.search(rf"\bv(fmadd|fnmadd|fmsub|mul|div)\w*{sfx}\s+[^\n]*%[yz]mm", asm), \
        "loop was not vectorized"
    # the only calls left in the native function are NRT refcounting and LLVM
    # intrinsics (inlined by the backend); no tanh/exp/libm symbol anywhere
    called = set(re.findall(r"\bcall\b[^@\n]*@([\w.$]+)", ll))
    assert all(c.startswith(("llvm.", "NRT_")) for c in called), called
    assert not re.search(r"\b(tanh|exp|expf|tanhf|numba_\w+)\b", asm)


def test_libm_control_is_a_call():
    # guards the check above against passing vacuously
    asm, ll = _asm_and_ir(libm_tanh, np.float64)
    called = set(re.findall(r"\bcall\b[^@\n]*@([\w.$]+)", ll))
    assert any("tanh" in c for c in called), called
