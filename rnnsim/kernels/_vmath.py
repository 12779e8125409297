"""Vectorizable ``exp``, ``tanh`` and ``sigmoid`` for ``@njit`` kernels.

The llvmlite build we ship has no SVML, so ``math.tanh``/``math.exp``/``np.tanh``
inside an ``@njit`` loop lower to scalar libm calls, and a call in the loop body
stops LLVM's loop vectorizer. The functions here are written only with
arithmetic, comparisons that LLVM turns into selects, ``llvm.rint`` and an
integer-to-float bitcast, so once inlined into a loop they vectorize
(AVX2/AVX-512 on x86).

Public functions (usable **only inside** ``@njit`` code)::

    from rnnsim.kernels._vmath import exp, tanh, sigmoid

    @njit(fastmath={"nsz", "arcp", "contract", "afn", "reassoc"})
    def kernel(x, out):
        for i in range(x.size):
            out[i] = tanh(x[i])      # float32 in -> float32 out, float64 -> float64

Each public name is a Python stub with a numba ``@overload`` that dispatches on
the argument type to a float32 or a float64 implementation (integers go to the
float64 one). The float32 implementation uses float32 constants only, so it is
computed in float32 and stays at the float32 vector width.

Design notes
------------
* The typed implementations are separate ``@njit`` functions compiled with
  ``fastmath={"contract"}`` (FMA contraction only improves these formulas) and
  are *not* inlined at the Numba-IR level. LLVM inlines them into the caller,
  but the instructions keep their own flags, so a caller compiled with
  ``reassoc``/``arcp``/... cannot re-associate the Cody--Waite reduction
  ``(x - k*ln2_hi) - k*ln2_lo`` into ``x - k*ln2`` or otherwise change the
  accuracy. They are compiled with ``forceinline=True`` (LLVM ``alwaysinline``)
  because tanh/sigmoid exceed LLVM's default inlining threshold.
  ``tests/test_vmath.py`` checks the accuracy from such a caller.
* No ``nnan``/``ninf`` anywhere, and every clamp is written as
  ``c if x > c else x`` (false for NaN, so NaN is kept) rather than
  ``min``/``max`` (whose NaN behaviour depends on the operand order).
* Both branches of each piecewise formula are always evaluated and the result
  picked with a select: in a SIMD loop that is what happens anyway, and it keeps
  the loop body free of control flow.
"""
import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core.errors import TypingError
from numba.extending import intrinsic, overload

__all__ = ["exp", "tanh", "sigmoid"]

# contract only: lets LLVM use FMA in the polynomials (never less accurate);
# everything that could change results (reassoc, arcp, nnan, ...) stays off.
# An explicit fastmath also stops Numba from inheriting the caller's flags.
# forceinline marks the LLVM function `alwaysinline`: tanh/sigmoid are above
# LLVM's inlining threshold, and a call left in the loop kills vectorization.
# error_model="numpy": no ZeroDivisionError check (a branch + raise) on `/`;
# the denominators here are >= 1 anyway.
# No Python or C wrapper: only @njit code calls these, and a wrapper is compiled code
# of its own on a first call.
_JIT = dict(fastmath={"contract"}, forceinline=True, error_model="numpy",
            nogil=True, cache=True, no_cpython_wrapper=True, no_cfunc_wrapper=True)


# ---------------------------------------------------------------------------
# LLVM-level helpers
# ---------------------------------------------------------------------------
@intrinsic
def _rint(typingctx, x):
    """Round a float to the nearest integer (ties to even), same type.

    Lowered to ``llvm.rint``, which x86 vectorizes to ``vrndscale``/``vround``;
    ``math.floor`` would return an int64 and ``np.rint`` may go through libm.
    """
    if not isinstance(x, types.Float):
        return None

    def codegen(context, builder, sig, args):
        (v,) = args
        fn = builder.module.declare_intrinsic("llvm.rint", [v.type])
        return builder.call(fn, [v])

    return x(x), codegen


@intrinsic
def _scale_pow2(typingctx, p, k):
    """Return ``p * 2**k`` for an integer-valued float ``k`` of p's type.

    ``2**h`` is built directly from its bits, ``(h + bias) << mantissa_bits``
    reinterpreted as a float (an ``int -> float`` bitcast, free in SIMD).
    ``k`` is split as ``h = k >> 1``, ``l = k - h`` and ``p`` is multiplied by
    ``2**h`` then ``2**l``: each factor stays a normal number for every ``k``
    the callers produce (|k| <= 1076 for float64, <= 150 for float32), so the
    product overflows to inf and underflows gradually through the subnormals
    with a single rounding, exactly like a true ``ldexp``.
    ``k`` must not be NaN (``fptosi`` of NaN is poison in LLVM).
    """
    if not (isinstance(p, types.Float) and p == k):
        return None

    def codegen(context, builder, sig, args):
        pv, kv = args
        if sig.return_type == types.float64:
            ity, bias, mant = ir.IntType(64), 1023, 52
        else:
            ity, bias, mant = ir.IntType(32), 127, 23
        ki = builder.fptosi(kv, ity)
        h = builder.ashr(ki, ity(1))
        lo = builder.sub(ki, h)
        s1 = builder.bitcast(builder.shl(builder.add(h, ity(bias)), ity(mant)), pv.type)
        s2 = builder.bitcast(builder.shl(builder.add(lo, ity(bias)), ity(mant)), pv.type)
        return builder.fmul(builder.fmul(pv, s1), s2)

    return p(p, k), codegen


# ---------------------------------------------------------------------------
# Constants. Module-level np.float32 globals are frozen by Numba as float32
# constants; a bare Python float would promote float32 arithmetic to float64.
# ---------------------------------------------------------------------------
_f4 = np.float32

# exp, float64: Cody-Waite split of ln2 from fdlibm e_exp.c. ln2_hi has its
# low 32 bits zero, so k*ln2_hi is exact for |k| < 2**20.
_D_LOG2E = 1.4426950408889634
_D_LN2_HI = 6.93147180369123816490e-01
_D_LN2_LO = 1.90821492927058770002e-10
_D_EXP_HI = 710.0      # > log(DBL_MAX) = 709.78: result overflows to inf
_D_EXP_LO = -746.0     # < log(2**-1075) = -745.13: result underflows to 0
_D_K_NAN = -1100.0     # any finite value: only keeps fptosi away from NaN
# Taylor coefficients 1/n!, n = 2..13 (|r| <= ln2/2: the first omitted term,
# r**14/14!, is < 4.2e-18 = 0.04 ulp of exp(r)).
_D_E2 = 1.0 / 2
_D_E3 = 1.0 / 6
_D_E4 = 1.0 / 24
_D_E5 = 1.0 / 120
_D_E6 = 1.0 / 720
_D_E7 = 1.0 / 5040
_D_E8 = 1.0 / 40320
_D_E9 = 1.0 / 362880
_D_E10 = 1.0 / 3628800
_D_E11 = 1.0 / 39916800
_D_E12 = 1.0 / 479001600
_D_E13 = 1.0 / 6227020800

# exp, float32: Cephes expf.c (S. L. Moshier) Cody-Waite split and minimax
# polynomial; C1 has 9 significant bits so k*C1 is exact for |k| < 2**15.
_F_LOG2E = _f4(1.44269504088896341)
_F_LN2_HI = _f4(0.693359375)
_F_LN2_LO = _f4(-2.12194440e-4)
_F_EXP_HI = _f4(89.0)    # > log(FLT_MAX) = 88.72
_F_EXP_LO = _f4(-104.0)  # < log(2**-150) = -103.97
_F_K_NAN = _f4(-160.0)
_F_E0 = _f4(1.9875691500e-4)
_F_E1 = _f4(1.3981999507e-3)
_F_E2 = _f4(8.3334519073e-3)
_F_E3 = _f4(4.1665795894e-2)
_F_E4 = _f4(1.6666665459e-1)
_F_E5 = _f4(5.0000001201e-1)

# tanh, float64: Cephes tanh.c rational x + x**3 P(x**2)/Q(x**2), |x| < 0.625.
_D_TP0 = -9.64399179425052238628e-1
_D_TP1 = -9.92877231001918586564e1
_D_TP2 = -1.61468768441708447952e3
_D_TQ0 = 1.12811678491632931402e2
_D_TQ1 = 2.23548839060100448583e3
_D_TQ2 = 4.84406305325125486048e3
_D_TANH_SWITCH = 0.625

# tanh, float32: Cephes tanhf.c polynomial x + x**3 P(x**2), |x| < 0.625.
_F_TP0 = _f4(-5.70498872745e-3)
_F_TP1 = _f4(2.06390887954e-2)
_F_TP2 = _f4(-5.37397155531e-2)
_F_TP3 = _f4(1.33314422036e-1)
_F_TP4 = _f4(-3.33332819422e-1)
_F_TANH_SWITCH = _f4(0.625)

_F_0 = _f4(0.0)
_F_1 = _f4(1.0)
_F_M2 = _f4(-2.0)


# ---------------------------------------------------------------------------
# Typed implementations
# ---------------------------------------------------------------------------
@njit(**_JIT)
def _exp_f64(x):
    # clamps written so that NaN compares false and passes through unchanged
    x = _D_EXP_HI if x > _D_EXP_HI else x
    x = _D_EXP_LO if x < _D_EXP_LO else x
    k = _rint(x * _D_LOG2E)
    # NaN only: give fptosi a finite value; r below is still NaN
    k = k if k == k else _D_K_NAN
    r = (x - k * _D_LN2_HI) - k * _D_LN2_LO
    q = _D_E13
    q = q * r + _D_E12
    q = q * r + _D_E11
    q = q * r + _D_E10
    q = q * r + _D_E9
    q = q * r + _D_E8
    q = q * r + _D_E7
    q = q * r + _D_E6
    q = q * r + _D_E5
    q = q * r + _D_E4
    q = q * r + _D_E3
    q = q * r + _D_E2
    # 1 + (r + r^2 q): the correction is added to r before the leading 1 so
    # the only large rounding is the final one.
    p = 1.0 + (r + (r * r) * q)
    return _scale_pow2(p, k)


@njit(**_JIT)
def _exp_f32(x):
    x = _F_EXP_HI if x > _F_EXP_HI else x
    x = _F_EXP_LO if x < _F_EXP_LO else x
    k = _rint(x * _F_LOG2E)
    k = k if k == k else _F_K_NAN
    r = (x - k * _F_LN2_HI) - k * _F_LN2_LO
    q = _F_E0
    q = q * r + _F_E1
    q = q * r + _F_E2
    q = q * r + _F_E3
    q = q * r + _F_E4
    q = q * r + _F_E5
    p = _F_1 + (r + (r * r) * q)
    return _scale_pow2(p, k)


@njit(**_JIT)
def _tanh_f64(x):
    a = abs(x)
    is_small = a < _D_TANH_SWITCH      # False for NaN -> the exp formula
    # |x| < 0.625: x + x z P(z)/Q(z) keeps full relative accuracy down to the
    # subnormals (the correction underflows to 0 and x is returned) and -0.
    z = a * a
    p = (_D_TP0 * z + _D_TP1) * z + _D_TP2
    q = ((z + _D_TQ0) * z + _D_TQ1) * z + _D_TQ2
    # |x| >= 0.625: (1 - e)/(1 + e) with e = exp(-2|x|) in (0, 0.287]; no
    # cancellation, no overflow, and e -> 0 for large |x| gives exactly 1.
    e = _exp_f64(-2.0 * a)
    # One division serves both formulas: pick numerator and denominator first
    # (a vector divide costs as much as the whole polynomial). Inf/NaN make
    # p/q NaN, but that pair is not selected for them.
    num = p if is_small else 1.0 - e
    den = q if is_small else 1.0 + e
    t = num / den
    # both formulas on |x|, sign restored last with copysign (a bit select):
    # x + x z t would turn -0 into +0, since the correction is +0 there
    small = a + (a * z) * t
    r = small if is_small else t
    # NaN: e, t and r are NaN and copysign keeps that
    return math.copysign(r, x)


@njit(**_JIT)
def _tanh_f32(x):
    a = abs(x)
    z = a * a
    p = (((_F_TP0 * z + _F_TP1) * z + _F_TP2) * z + _F_TP3) * z + _F_TP4
    small = a + (a * z) * p
    e = _exp_f32(_F_M2 * a)
    big = (_F_1 - e) / (_F_1 + e)
    r = small if a < _F_TANH_SWITCH else big
    return math.copysign(r, x)


@njit(**_JIT)
def _sigmoid_f64(x):
    # e = exp(-|x|) <= 1 never overflows; sigmoid = 1/(1+e) for x >= 0 and
    # e/(1+e) for x < 0 -- the latter keeps full relative accuracy in the
    # left tail (down to the subnormals, where exp itself underflows
    # gradually) instead of the absolute accuracy of 1 - sigmoid(-x).
    e = _exp_f64(-abs(x))
    num = 1.0 if x >= 0.0 else e   # NaN -> e, which is NaN
    return num / (1.0 + e)


@njit(**_JIT)
def _sigmoid_f32(x):
    e = _exp_f32(-abs(x))
    num = _F_1 if x >= _F_0 else e
    return num / (_F_1 + e)


# ---------------------------------------------------------------------------
# Public, type-dispatching entry points
# ---------------------------------------------------------------------------
def _njit_only(name):
    raise TypeError(
        f"rnnsim.kernels._vmath.{name} is only callable from @njit code; "
        f"use numpy for array/Python use"
    )


def exp(x):
    """Exponential, vectorizable inside ``@njit`` loops.

    Parameters
    ----------
    x : float32 or float64 (integers are treated as float64)

    Returns
    -------
    float32 or float64
        ``e**x`` in the type of `x`. Overflows to ``+inf`` (x > log(max
        float)), underflows gradually through the subnormals to ``+0``,
        ``exp(-inf) = 0``, ``exp(inf) = inf``, NaN propagates.

    Notes
    -----
    Cody--Waite range reduction: ``k = rint(x / ln 2)``,
    ``r = (x - k*ln2_hi) - k*ln2_lo`` with ``|r| <= ln(2)/2`` and ``ln 2``
    split so that ``k*ln2_hi`` is exact (fdlibm ``e_exp.c`` split for float64,
    Cephes ``expf.c`` for float32). Then ``exp(x) = 2**k * exp(r)``.

    * float64: ``exp(r) = 1 + r + r**2 Q(r)`` with the Taylor polynomial
      ``Q`` of degree 11 (so ``exp(r)`` to degree 13); the truncation error
      ``r**14/14! < 4.2e-18`` is well below half an ulp.
    * float32: the degree-7 Cephes minimax polynomial
      ``1 + r + r**2 P(r)``, ``deg P = 5`` (S. L. Moshier, Cephes Math
      Library, ``expf.c``; peak relative error 4.2e-9 on [-0.5, 0.5]).

    ``2**k`` is built from its IEEE bits by an integer->float bitcast and
    applied as ``2**(k//2) * 2**(k - k//2)`` so overflow and gradual
    underflow come out right. The argument is clamped first (a NaN-preserving
    select) to a range where that holds.

    Measured max error against a long-double reference, in ulp of the result
    type: 0.98 (float64), 1.0 (float32); see ``tests/test_vmath.py``.
    """
    _njit_only("exp")


def tanh(x):
    """Hyperbolic tangent, vectorizable inside ``@njit`` loops.

    Parameters
    ----------
    x : float32 or float64 (integers are treated as float64)

    Returns
    -------
    float32 or float64
        ``tanh(x)`` in the type of `x`; ``tanh(+-0) = +-0``,
        ``tanh(+-inf) = +-1``, exactly ``+-1`` once ``1 - |tanh x|`` is below
        half an ulp, NaN propagates.

    Notes
    -----
    Two formulas, both evaluated, one selected (no branch in the loop body):

    * ``|x| < 0.625``: ``tanh x = x + x**3 R(x**2)`` (Cody & Waite form), with
      ``R = P/Q`` the Cephes ``tanh.c`` rational (deg P = 2, deg Q = 3) in
      float64 and the Cephes ``tanhf.c`` polynomial (degree 4 in ``x**2``) in
      float32. Since the correction is at most ~11 % of ``x`` this has full
      relative accuracy for tiny and subnormal ``x``.
    * ``|x| >= 0.625``: ``tanh|x| = (1 - e) / (1 + e)``, ``e = exp(-2|x|)``
      (see :func:`exp`). ``e <= 0.287`` so there is no cancellation, and
      ``e -> 0`` saturates exactly to 1 without overflow.

    Both are evaluated on ``|x|`` (in float64 with a single division: the
    numerator/denominator pair is selected before dividing) and the sign is
    restored with ``copysign``, which also keeps ``tanh(-0) = -0``.

    Measured max error against a long-double reference, in ulp of the result
    type: 1.5 (float64), 1.5 (float32); see ``tests/test_vmath.py``.
    """
    _njit_only("tanh")


def sigmoid(x):
    """Logistic sigmoid ``1 / (1 + exp(-x))``, vectorizable inside ``@njit``.

    Parameters
    ----------
    x : float32 or float64 (integers are treated as float64)

    Returns
    -------
    float32 or float64
        ``sigmoid(x)`` in the type of `x`; ``sigmoid(-inf) = 0``,
        ``sigmoid(inf) = 1``, ``sigmoid(+-0) = 0.5``, NaN propagates.

    Notes
    -----
    With ``e = exp(-|x|)`` (see :func:`exp`; ``0 <= e <= 1``, never overflows)

    ``sigmoid(x) = n / (1 + e)``, ``n = 1`` for ``x >= 0`` and ``n = e`` for
    ``x < 0``,

    i.e. ``e**x / (1 + e**x)`` on the left. This keeps the *relative* error
    of a few ulp all the way down the left tail (e.g. ``sigmoid(-30)``,
    ``sigmoid(-700)``, and gradual underflow below ``x = -708.4``), where the
    textbook ``1 - sigmoid(-x)`` or ``0.5*(1 + tanh(x/2))`` would only be
    accurate in absolute terms. One exp and one division per element.

    Measured max error against a long-double reference, in ulp of the result
    type: 2.3 (float64), 2.3 (float32); see ``tests/test_vmath.py``.
    """
    _njit_only("sigmoid")


def _make_overload(pyfunc, impl_f32, impl_f64):
    # The returned implementations just call the typed @njit functions; they
    # are compiled separately (not inlined at Numba-IR level, so the caller's
    # fastmath flags do not reach the range reduction) and LLVM inlines them.
    @overload(pyfunc, jit_options=dict(fastmath={"contract"}, forceinline=True, error_model="numpy",
                                       no_cpython_wrapper=True, no_cfunc_wrapper=True))
    def _ol(x):
        if x == types.float32:
            return lambda x: impl_f32(x)
        if x == types.float64:
            return lambda x: impl_f64(x)
        if isinstance(x, (types.Integer, types.Boolean)):
            return lambda x: impl_f64(np.float64(x))
        raise TypingError(
            f"{pyfunc.__name__}: expected a float32/float64 scalar, got {x}"
        )

    return _ol


_make_overload(exp, _exp_f32, _exp_f64)
_make_overload(tanh, _tanh_f32, _tanh_f64)
_make_overload(sigmoid, _sigmoid_f32, _sigmoid_f64)
