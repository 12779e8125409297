"""Shared test utilities: problem builders and the llm.c-style closeness check."""
from __future__ import annotations

import numpy as np

import rnnsim
from rnnsim.losses import MASKED_LOSSES, is_class_loss, target_shape

# Relative tolerances by dtype for fast kernels against the float64 reference.
RTOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}
# Share of an array's largest magnitude added to every entry's bound: sums of B*T
# terms that cancel keep only an absolute accuracy of (a few eps) * max|term|;
# float32 kernels accumulate in float32 (eps 6e-8), so their floor is wider.
FLOOR = {np.dtype(np.float64): 1e-2, np.dtype(np.float32): 1e-1}


def make_problem(cell, E, B, T, D, H, K, *, loss="last", dtype=np.float64, seed=0, scale=1.1,
                 bias_scale=0.3, forget_bias=0.5):
    """Random parameters (with nonzero b_hh and b_out), inputs and targets (class indices,
    or standard normal floats for the MSE losses)."""
    rng = np.random.default_rng(seed)
    params = rnnsim.init_params(cell, H, D, K, E, scale=scale, bias_scale=bias_scale,
                                forget_bias=forget_bias, seed=seed, dtype=dtype)
    params["bias_hh_l0"] = (0.2 * rng.standard_normal(params["bias_hh_l0"].shape)).astype(dtype)
    params["bias_out"] = (0.2 * rng.standard_normal(params["bias_out"].shape)).astype(dtype)
    inputs = rng.standard_normal((E, B, T, D)).astype(dtype)
    if is_class_loss(loss):
        targets = rng.integers(0, K, size=target_shape(loss, E, B, T))
    else:
        targets = rng.standard_normal(target_shape(loss, E, B, T, K)).astype(dtype)
    return params, inputs, targets


def make_mask(loss, E, B, T, *, seed=0):
    """None for a loss without a mask; else a random (E, B, T) bool mask that selects
    about half the pairs, and at least one of every network (its last step of sequence 0)."""
    if loss not in MASKED_LOSSES:
        return None
    mask = np.random.default_rng(seed + 1).random((E, B, T)) < 0.5
    mask[:, 0, -1] = True
    return mask


def assert_close(actual, reference, rtol, *, floor=1e-2, name=""):
    """|actual - ref| <= rtol * (|ref| + floor * max|ref|) on finite entries.

    Non-finite reference entries must be matched exactly (same inf sign). The floor
    makes the check relative to the array's scale for entries that are near zero
    by cancellation, where no dtype can promise a relative error.
    """
    actual = np.asarray(actual, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    assert actual.shape == reference.shape, f"{name}: shape {actual.shape} != {reference.shape}"
    finite = np.isfinite(reference)
    np.testing.assert_array_equal(actual[~finite], reference[~finite], err_msg=f"{name}: non-finite entries")
    assert np.isfinite(actual[finite]).all(), f"{name}: non-finite values where the reference is finite"
    if not finite.any():
        return
    ref = reference[finite]
    err = np.abs(actual[finite] - ref)
    bound = rtol * (np.abs(ref) + floor * np.max(np.abs(ref)))
    worst = np.argmax(err - bound)
    assert np.all(err <= bound), (f"{name}: max excess at flat index {worst}: |{actual[finite][worst]!r} - "
                                  f"{ref[worst]!r}| = {err[worst]:.3g} > {bound[worst]:.3g}")


def assert_outputs_close(actual: dict, reference: dict, dtype):
    """Every key of the gradients dict, with the dtype's tolerance."""
    assert set(actual) == set(reference)
    rtol, floor = RTOL[np.dtype(dtype)], FLOOR[np.dtype(dtype)]
    for key in reference:
        assert_close(actual[key], reference[key], rtol, floor=floor, name=key)
