"""The cell registry: what every cell module must state, and the one-hop path to its kernels."""
import inspect

import numpy as np
import pytest

from rnnsim import cells


def test_names_and_unknown_cells():
    names = cells.names()
    assert len(names) == len(set(names)) >= 2
    assert [cells.get(n).name for n in names] == list(names)
    for bad in ("elman", "", None, 3, "RNN"):
        with pytest.raises(ValueError, match="unknown cell .*; expected one of " + ", ".join(names)):
            cells.get(bad)


@pytest.mark.parametrize("name", cells.names())
def test_cell_states_its_shape(name):
    cell = cells.get(name)
    assert cell.G == len(cell.gates) >= 1 and cell.state[0] == "h" and cell.cost > 0
    shapes = cell.param_shapes(E=2, H=5, D=3, K=4)
    assert set(shapes) == set(cells.PARAM_KEYS)
    assert shapes["weight_hh_l0"] == (2, cell.G * 5, 5) and shapes["weight_ih_l0"] == (2, cell.G * 5, 3)
    rows = [cell.gate_rows(g, 5) for g in cell.gates]
    assert [(r.start, r.stop) for r in rows] == [(5 * k, 5 * k + 5) for k in range(cell.G)]
    for keyword, gate in cell.gate_bias:
        assert gate in cell.gates and keyword.endswith("_bias")
    assert set(cell.profile_keys()) == set(cell.state)


@pytest.mark.parametrize("name", cells.names())
def test_one_hop_from_the_cell_module_to_every_backend(name):
    """The cell module's docstring names its CPU and GPU kernels, and those exist."""
    cell = cells.get(name)
    doc = inspect.getmodule(cell.forward_step).__doc__
    for backend, module_name in (("cpu", cell.cpu_kernels), ("gpu", cell.gpu_kernels)):
        assert f"rnnsim.kernels.{module_name}" in doc, (backend, module_name)
        module = cell.kernels(backend)
        assert module.__name__ == f"rnnsim.kernels.{module_name}"
    cpu = cell.kernels("cpu")
    assert hasattr(cpu, "gradients_item") and hasattr(cpu, "forward_item")
    # the backward step sits directly below the forward step
    source = inspect.getsource(inspect.getmodule(cell.forward_step))
    assert source.index("def forward_step") < source.index("def backward_step")


@pytest.mark.parametrize("name", cells.names())
def test_backward_step_is_the_vjp_of_forward_step(name):
    """<adjoint, J v> = <J^T adjoint, v> for a random state direction v (finite differences)."""
    cell = cells.get(name)
    rng = np.random.default_rng(3)
    E, B, D, H = 2, 3, 2, 4
    from rnnsim import init_params
    p = init_params(name, H, D, 2, E, scale=1.3, bias_scale=0.4, seed=1)
    x = rng.standard_normal((E, B, D))
    state = {s: 0.5 * rng.standard_normal((E, B, H)) for s in cell.state}
    direction = {s: rng.standard_normal((E, B, H)) for s in cell.state}
    adjoint = {s: rng.standard_normal((E, B, H)) for s in cell.state}
    new, cache = cell.forward_step(p, x, state)
    _, previous, totals = cell.backward_step(p, cache, adjoint)
    eps = 1e-6

    def moved(sign):
        out, _ = cell.forward_step(p, x, {s: state[s] + sign * eps * direction[s] for s in cell.state})
        return out

    up, down = moved(1), moved(-1)
    # the adjoint of h is total; other components are the carried part, paired with the new state
    lhs = sum(np.sum(adjoint[s] * (up[s] - down[s]) / (2 * eps)) for s in cell.state)
    rhs = sum(np.sum(previous[s] * direction[s]) for s in cell.state)
    assert lhs == pytest.approx(rhs, rel=1e-7)
    assert set(totals) == set(cell.state)


@pytest.mark.parametrize("name", cells.names())
def test_tangent_step_is_the_transpose_of_backward_step(name):
    """<adjoint, J v> = <Jᵀ adjoint, v> exactly: tangent_step (JVP) against backward_step (VJP)."""
    from rnnsim import init_params
    cell = cells.get(name)
    rng = np.random.default_rng(5)
    E, B, D, H, k = 2, 3, 2, 4, 3
    p = init_params(name, H, D, 2, E, scale=1.4, bias_scale=0.5, seed=2)
    state = {s: 0.5 * rng.standard_normal((E, B, H)) for s in cell.state}
    _, cache = cell.forward_step(p, rng.standard_normal((E, B, D)), state)
    tangent = {s: rng.standard_normal((E, B, k, H)) for s in cell.state}
    image = cell.tangent_step(p, cache, tangent)
    for j in range(k):
        adjoint = {s: rng.standard_normal((E, B, H)) for s in cell.state}
        _, previous, _ = cell.backward_step(p, cache, adjoint)
        lhs = sum(np.sum(adjoint[s] * image[s][:, :, j]) for s in cell.state)
        rhs = sum(np.sum(previous[s] * tangent[s][:, :, j]) for s in cell.state)
        assert lhs == pytest.approx(rhs, rel=1e-12)
