"""Numbers, lists and ranges from flags, TOML files and Python callers: one set of parsers.

The sweep, the theory, the command line (and ``init_params``) read their numbers
through these functions, so that every entry point accepts and refuses the same
things with the same words:

- a number may come as a Python or NumPy number or as a numeric string
  (``"12"``, ``" 0.5 "``, ``"1e-3"``); ``bool`` is never a number;
- NaN and infinity are refused; so are integers written as non-integral floats;
- every error is one line that starts with the name of the key it read:
  ``TypeError`` for a value of the wrong type (a list where a number is expected),
  ``ValueError`` for a value of the right type that is malformed or out of range.

Ranges (``"A:B:N"``) are checked against the memory their values would take before
any of them is made.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from . import _memory, cells

MAX_SCALE = 1e6
"""Largest init scale, input scale, bias scale and |forget bias| accepted anywhere.

Far beyond it tanh is a sign function, and squares of scales come near overflow."""

MAX_LENGTH = 10**12
"""Largest sequence length a list or range may name (memory refuses far smaller ones)."""

RANGE_VALUE_BYTES = 128
"""Memory one value of a parsed range takes while it is made (array, Python float, set entry)."""


def _show(value) -> str:
    """A short repr for messages (one line, at most 60 characters)."""
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


def _is_number(value) -> bool:
    return isinstance(value, (numbers.Number, np.number)) and not isinstance(value, (bool, np.bool_))


def parse_int(name: str, value, *, minimum=None, maximum=None) -> int:
    """An integer from an int, an integral float or a numeric string.

    Raises ``TypeError`` for bools and non-numbers, ``ValueError`` for non-integral,
    non-finite or out-of-range values.
    """
    if isinstance(value, str):
        text = value.strip()
        try:
            result = int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                raise ValueError(f"{name}: {_show(value)} is not an integer") from None
            if not math.isfinite(number) or not number.is_integer():
                raise ValueError(f"{name}: {_show(value)} is not an integer") from None
            result = int(number)
    elif isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        result = int(value)
    elif isinstance(value, (float, np.floating)):
        if not math.isfinite(value) or not float(value).is_integer():
            raise ValueError(f"{name}: {_show(value)} is not an integer")
        result = int(value)
    else:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {_show(value)}")
    if minimum is not None and result < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {result}")
    if maximum is not None and result > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {result}")
    return result


def positive_int(name: str, value) -> int:
    """An integer >= 1 (see :func:`parse_int`)."""
    return parse_int(name, value, minimum=1)


def finite_float(name: str, value, *, minimum=None, strict=False, maximum=None) -> float:
    """A finite float from a number or a numeric string.

    ``minimum`` is inclusive unless ``strict``; ``maximum`` is inclusive. Raises
    ``TypeError`` for bools and non-numbers, ``ValueError`` for malformed, non-finite
    or out-of-range values.
    """
    if isinstance(value, str):
        try:
            result = float(value.strip())
        except ValueError:
            raise ValueError(f"{name}: {_show(value)} is not a number") from None
    elif _is_number(value):
        try:
            result = float(value)
        except (OverflowError, TypeError):  # ints beyond float range, complex numbers
            raise ValueError(f"{name}: {_show(value)} is not a finite real number") from None
    else:
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {_show(value)}")
    if not math.isfinite(result):
        raise ValueError(f"{name} must be finite, got {_show(value)}")
    if minimum is not None and (result < minimum or (strict and result == minimum)):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum:g}, got {result:g}")
    if maximum is not None and result > maximum:
        raise ValueError(f"{name} must be <= {maximum:g}, got {result:g}")
    return result


def parse_bool(name: str, value) -> bool:
    """A true bool (TOML ``true``/``false``); anything else is a TypeError."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be true or false, got {_show(value)}")
    return value


# --------------------------------------------------------------------------- lists and ranges

def _split(name: str, value):
    """``"a,b,c"`` -> ("list", [...]); ``"A:B:N"`` -> ("range", [A, B, N]); sequences pass as lists."""
    if isinstance(value, np.ndarray):
        if value.ndim != 1:
            raise ValueError(f"{name}: expected a 1-D array, got shape {value.shape}")
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(f"{name}: empty list")
        return "list", list(value)
    if isinstance(value, str):
        text = value.strip()
    elif _is_number(value):
        text = str(value)
    else:
        raise TypeError(f"{name}: expected a comma list or A:B:N, got {type(value).__name__} {_show(value)}")
    if ":" in text:
        parts = [p.strip() for p in text.split(":")]
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"{name}: malformed range {_show(text)}; expected A:B:N")
        return "range", parts
    items = [p.strip() for p in text.split(",")]
    if not text or not all(items):
        raise ValueError(f"{name}: malformed list {_show(text)}; expected values separated by commas")
    return "list", items


def _no_duplicates(name: str, values) -> list:
    seen = set()
    for v in values:
        if v in seen:
            raise ValueError(f"{name}: {v!r} appears twice")
        seen.add(v)
    return sorted(values)


def _require_range_memory(name: str, count: int) -> None:
    _memory.require(count * RANGE_VALUE_BYTES, f"{name}: a range of {count} values")


def parse_lengths(value, name: str = "lengths") -> tuple:
    """Sequence lengths from ``"25,50,100"``, ``"A:B:N"`` (N log-spaced integers) or a list.

    Raises ``ValueError`` for malformed text, values < 1 or > :data:`MAX_LENGTH`,
    duplicates, or a range that cannot hold N distinct integers. Returns a sorted
    tuple of ints.
    """
    kind, items = _split(name, value)
    if kind == "range":
        lo, hi, n = (parse_int(name, p) for p in items)
        if lo < 1 or hi < lo or n < 1 or (n == 1 and lo != hi):
            raise ValueError(f"{name}: range {_show(value)} needs 1 <= A <= B and N >= 1 "
                             "(N = 1 only if A = B)")
        if hi > MAX_LENGTH:
            raise ValueError(f"{name} must be <= {MAX_LENGTH}, got {hi}")
        if n > hi - lo + 1:
            raise ValueError(f"{name}: {_show(value)} cannot hold {n} distinct integers, "
                             f"only {hi - lo + 1} lie in [{lo}, {hi}]; use a smaller N")
        _require_range_memory(name, n)
        lengths = np.unique(np.rint(np.geomspace(lo, hi, n)).astype(np.int64))
        if len(lengths) != n:
            raise ValueError(f"{name}: {_show(value)} holds only {len(lengths)} distinct integers; "
                             "use a smaller N")
        return tuple(int(t) for t in lengths)
    lengths = [parse_int(name, item) for item in items]
    for t in lengths:
        if t < 1:
            raise ValueError(f"{name} must be >= 1, got {t}")
        if t > MAX_LENGTH:
            raise ValueError(f"{name} must be <= {MAX_LENGTH}, got {t}")
    return tuple(_no_duplicates(name, lengths))


def _tidy(x: float) -> float:
    """Round away linspace noise (0.6000000000000001 -> 0.6) so that keys read back exactly."""
    return float(f"{x:.12g}")


def parse_scales(value, name: str = "scales") -> tuple:
    """Init scales from ``"0.5,1,2"``, ``"A:B:N"`` (N evenly spaced, ends included) or a list.

    Every scale must be finite, > 0 and <= :data:`MAX_SCALE`; values are rounded to
    12 significant digits. Returns a sorted tuple of floats.
    """
    kind, items = _split(name, value)
    if kind == "range":
        lo, hi = (finite_float(name, p) for p in items[:2])
        n = parse_int(name, items[2])
        if n < 1 or hi < lo or (n == 1 and lo != hi):
            raise ValueError(f"{name}: range {_show(value)} needs A <= B and N >= 1 (N = 1 only if A = B)")
        if lo <= 0:
            raise ValueError(f"{name} must be > 0, got {lo:g}")
        if hi > MAX_SCALE:
            raise ValueError(f"{name} must be <= {MAX_SCALE:g}, got {hi:g}")
        _require_range_memory(name, n)
        values = [_tidy(s) for s in np.linspace(lo, hi, n)]
    else:
        values = [_tidy(finite_float(name, item)) for item in items]
    for s in values:
        if s <= 0:
            raise ValueError(f"{name} must be > 0, got {s:g}")
        if s > MAX_SCALE:
            raise ValueError(f"{name} must be <= {MAX_SCALE:g}, got {s:g}")
    return tuple(_no_duplicates(name, values))


def parse_cells(value, name: str = "cell") -> tuple:
    """Cell names from ``"rnn,lstm"`` or a list, in the registry's order (:func:`rnnsim.cells.names`).

    Unknown or repeated names are a ``ValueError``; a value that is neither text nor
    a list of text is a ``TypeError``.
    """
    if isinstance(value, str):
        items = [p.strip() for p in value.split(",")]
    elif isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(f"{name}: empty list; expected names such as {','.join(cells.names())}")
        if not all(isinstance(item, str) for item in value):
            raise TypeError(f"{name}: expected names, got {_show(value)}")
        items = [item.strip() for item in value]
    else:
        raise TypeError(f"{name}: expected a comma list such as {','.join(cells.names())!r}, "
                        f"got {type(value).__name__} {_show(value)}")
    if not all(items):
        raise ValueError(f"{name}: malformed list {_show(value)}; expected names separated by commas")
    names = [cells.get(item).name for item in items]
    _no_duplicates(name, names)
    return tuple(n for n in cells.names() if n in names)
