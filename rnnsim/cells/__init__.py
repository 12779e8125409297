r"""The cell registry: the one place that says which recurrent cells exist.

Every other module (validation, initialisation, the reference, the kernel drivers,
the sweep, the CLI and the tests) learns what a cell is from here:

>>> from rnnsim import cells
>>> cells.names()
('rnn', 'lstm', 'gru')
>>> cells.get("lstm").G, cells.get("lstm").gates
(4, ('i', 'f', 'g', 'o'))

Each cell lives in its own module (``rnn.py``, ``lstm.py``, ``gru.py``), which is the single
readable statement of its math: the NumPy float64 ``forward_step`` directly above
its ``backward_step`` (the vector-Jacobian product), and, in its docstring, the
CPU and GPU kernels that implement the same equations. A new cell is a new
module plus one line in :data:`_MODULES`.

The step contract (all arrays float64, batched over networks E and sequences B)
---------------------------------------------------------------------------------
``forward_step(params, x_t, state) -> (new_state, cache)``
    ``state`` maps each name of :attr:`Cell.state` to an (E, B, H) array (the
    state at t-1); ``x_t`` is (E, B, D). ``cache`` holds what the backward step
    needs, and nothing else.
``backward_step(params, cache, adjoint) -> (rows, previous, totals)``
    ``adjoint`` maps each state name to dL/d(state_t): for ``h`` the total
    adjoint (every path, loss terms included), for other state components the
    adjoint carried from step t+1 only. The step is linear in ``adjoint``, so the
    reference runs it on log-domain mantissas. Returns

    - ``rows``: ``{"ih": (E, B, G·H), "hh": (E, B, G·H)}``, the adjoints whose
      outer products with x_t and h_{t-1} give dW_ih, dW_hh (and whose sums give
      db_ih, db_hh); the same array twice when the biases fold into one sum;
    - ``previous``: the adjoint of the state at t-1 through this step;
    - ``totals``: the vectors whose norms are the profiles of step t
      (``log_grad_norm`` from ``totals["h"]``, ``log_grad_norm_<name>`` from the
      others; for the lstm the *total* dL/dc_t).
``tangent_step(params, cache, tangent) -> new_tangent``
    The Jacobian-vector product of the step on the full state (every component),
    for k tangent vectors at once: ``tangent`` maps each state name to (E, B, k, H).
    Its transpose is ``backward_step``'s ``previous`` map (tested); it drives the
    Lyapunov spectra of :func:`rnnsim.lyapunov`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

_MODULES = ("rnn", "lstm", "gru")  # registration order = canonical order (sweeps, figures, tests)


@dataclass(frozen=True)
class Cell:
    """What the rest of rnnsim may know about one recurrent cell."""

    name: str
    gates: tuple           # the G gate blocks of W_ih/W_hh rows, in torch's order
    state: tuple           # state components; "h" first (the readout reads h)
    cost: float            # relative cost of one step (rnn = 1): progress bars, schedulers
    folded_bias: bool      # b_ih and b_hh enter only as their sum, so their gradients are equal
    forward_step: Callable = field(repr=False)
    backward_step: Callable = field(repr=False)
    tangent_step: Callable = field(repr=False)  # forward-mode JVP on the full state (Lyapunov spectra)
    cpu_kernels: str = ""  # module under rnnsim.kernels: forward above backward, @njit
    gpu_kernels: str = ""  # module under rnnsim.kernels: the numba.cuda twin
    gate_bias: tuple = ()  # (init_params keyword, gate): a constant added to that gate's bias rows
    theory: str = ""       # where its mean-field functions live ("" = none yet)
    pascanu_gamma: float | None = None  # bound on |φ'| of the Pascanu et al. (2013) bound; see below

    # Pascanu, Mikolov & Bengio (2013): ‖∂h_t/∂h_{t-1}‖ ≤ σ_max(W_hh)·γ when the step is
    # diag(φ'(a_t)) W_hh with |φ'| ≤ γ, so σ_max(W_hh)·γ < 1 guarantees vanishing. The rnn has
    # γ = 1 (tanh). The gated cells have none: the lstm's Jacobian on (h, c) holds
    # ∂c_t/∂c_{t-1} = diag(f_t), and the gru's tends to the identity as z_t → 1; both gates
    # come arbitrarily close to 1 for large enough (Gaussian, unbounded) inputs whatever
    # W_hh is, so no condition on W_hh alone guarantees vanishing.

    @property
    def G(self) -> int:
        """Number of gate blocks: W_hh is (G·H, H)."""
        return len(self.gates)

    def gate_rows(self, gate: str, H: int) -> slice:
        """The rows of W_ih, W_hh and the biases that belong to ``gate``."""
        k = self.gates.index(gate)
        return slice(k * H, (k + 1) * H)

    def param_shapes(self, E: int, H: int, D: int, K: int) -> dict:
        """The shape of every parameter array, with the leading ensemble axis (torch's names)."""
        GH = self.G * H
        return {
            "weight_ih_l0": (E, GH, D),
            "weight_hh_l0": (E, GH, H),
            "bias_ih_l0": (E, GH),
            "bias_hh_l0": (E, GH),
            "weight_out": (E, K, H),
            "bias_out": (E, K),
        }

    def profile_keys(self) -> dict:
        """Output key of each state component's log-norm profile: h -> log_grad_norm, c -> log_grad_norm_c."""
        return {s: "log_grad_norm" if s == "h" else f"log_grad_norm_{s}" for s in self.state}

    def kernels(self, backend: str):
        """The kernel module of ``backend`` ("cpu" or "gpu") for this cell (imported on first use)."""
        name = {"cpu": self.cpu_kernels, "gpu": self.gpu_kernels}[backend]
        return importlib.import_module(f"rnnsim.kernels.{name}")


PARAM_KEYS = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "weight_out", "bias_out")
RECURRENT_KEYS = PARAM_KEYS[:4]
OUTPUT_KEYS = PARAM_KEYS[4:]

_REGISTRY = {}


def _load():
    if not _REGISTRY:
        for module in _MODULES:
            cell = importlib.import_module(f"{__name__}.{module}").CELL
            _REGISTRY[cell.name] = cell
    return _REGISTRY


def names() -> tuple:
    """The registered cell names, in canonical order."""
    return tuple(_load())


def get(name) -> Cell:
    """The :class:`Cell` called ``name``; ValueError naming the choices otherwise."""
    registry = _load()
    if not isinstance(name, str) or name not in registry:
        raise ValueError(f"unknown cell {name!r}; expected one of {', '.join(registry)}")
    return registry[name]
