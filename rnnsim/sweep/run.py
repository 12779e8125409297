"""Running a sweep: data, networks, ensemble calls, measures, and the results folder."""
from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..engine import gradients, lyapunov, resolve_device
from ..init import init_params
from . import measures, store, training
from .config import SweepConfig, configure
from .plan import plan_sweep
from .provenance import now, provenance

DATA_STREAM = 0xDA7A  # spawn-key tag that separates the data streams from init_params' streams


def make_data(T, seed, batch, input_size, classes, loss="last", dtype="float64"):
    """Inputs (batch, T, input_size) ~ N(0, 1) and uniform targets for one (T, seed).

    Targets are (batch,) for ``loss="last"`` and (batch, T) for ``loss="every"``.
    The stream is ``SeedSequence(seed, spawn_key=(DATA_STREAM, T))``.
    """
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(DATA_STREAM, int(T))))
    x = rng.standard_normal((batch, T, input_size)).astype(dtype)
    y = rng.integers(0, classes, size=(batch,) if loss == "last" else (batch, T))
    return x, y


def _compute_gradients(config, cell, T, points, device, networks, data):
    """The "gradients" computation of one call: one :func:`rnnsim.gradients` call over its networks."""
    params = {k: np.concatenate([p[k] for p in networks]) for k in networks[0]}
    inputs = np.stack([data[seed][0] for _, seed in points])
    targets = np.stack([data[seed][1] for _, seed in points])
    return gradients(cell, params, inputs, targets, loss=config.loss, device=device)


def _compute_lyapunov(config, cell, T, points, device, networks, data):
    """The "lyapunov" computation of one call: :func:`rnnsim.lyapunov` over the same networks and
    inputs as the gradients, top ``lyap-k`` exponents, QR every step, warm-up
    :func:`~rnnsim.sweep.measures.lyapunov_warmup` (always on the CPU, in float64)."""
    params = {k: np.concatenate([p[k] for p in networks]) for k in networks[0]}
    inputs = np.stack([data[seed][0] for _, seed in points])
    return lyapunov(cell, params, inputs, k=config.lyap_k, qr_every=1, warmup=measures.lyapunov_warmup(T),
                    device="cpu")


def _compute_sigma_max(config, cell, T, points, device, networks, data):
    """The "sigma_max" computation: the largest singular value of every network's W_hh (G·H x H),
    in float64 (LAPACK's SVD; the same network gives the same value at every T)."""
    return np.array([np.linalg.svd(p["weight_hh_l0"][0].astype(np.float64), compute_uv=False)[0]
                     for p in networks])


COMPUTATIONS = {"gradients": _compute_gradients, "lyapunov": _compute_lyapunov,
                "sigma_max": _compute_sigma_max, "train": training.compute}
"""What measures may need computed, by name: (config, cell, T, points, device, networks, data) -> result."""


class _Caches:
    """Networks kept from one T to the next (one cell at a time), and data kept across one T's calls."""

    def __init__(self, config, plan=None):
        self.config, self.plan = config, plan  # without a plan nothing is kept from one call to the next
        self.networks, self.network_cell = {}, None
        self.data, self.data_T = {}, None

    def networks_for(self, cell, points):
        config = self.config
        if self.network_cell != cell:
            self.networks, self.network_cell = {}, cell
        keep = self.plan is not None and self.plan.keep_networks[cell]
        found = []
        for scale, seed in points:
            params = self.networks.get((scale, seed))
            if params is None:
                params = init_params(
                    cell, config.hidden, config.input_size, config.classes, 1, scheme=config.init,
                    scale=scale, input_scale=config.input_scale, bias_scale=config.bias_scale,
                    forget_bias=config.forget_bias, update_bias=config.update_bias, seed=seed,
                    dtype=config.dtype)
                if keep:
                    self.networks[(scale, seed)] = params
            found.append(params)
        return found

    def data_for(self, T, points):
        config = self.config
        if self.data_T != T or self.plan is None or not self.plan.keep_data[T]:
            self.data, self.data_T = {}, T
        for _, seed in points:
            if seed not in self.data:
                self.data[seed] = make_data(T, seed, config.batch, config.input_size, config.classes,
                                            config.loss, config.dtype)
        return self.data


def compute_call(config, cell, T, points, device, needed, caches=None):
    """The results of one ensemble call: every computation in ``needed`` over the networks ``points``.

    The networks are :func:`rnnsim.init_params` of each (scale, seed), the data
    :func:`make_data` of each (T, seed); then each entry of :data:`COMPUTATIONS` named
    in ``needed`` runs, in that order. ``caches`` (a :class:`_Caches`) only saves
    redrawing networks and data; without it the result is the same.

    Returns
    -------
    (dict, float)
        ``{name: result}`` and the seconds spent inside the computations.
    """
    caches = _Caches(config) if caches is None else caches
    networks = caches.networks_for(cell, points)
    data = caches.data_for(T, points)
    results, seconds = {}, 0.0
    for name in needed:
        start = time.perf_counter()
        results[name] = COMPUTATIONS[name](config, cell, T, points, device, networks, data)
        seconds += time.perf_counter() - start
    return results, seconds


def call_outputs(config, cell, T, points, device, needed, prepared, caches=None):
    """One ensemble call from start to measures: :func:`compute_call`, then every chosen
    measure's ``evaluate`` (``prepared``: ``{measure: its prepare(config)}``).

    The one function both runners use, the local loop and the Dask tasks of
    :mod:`rnnsim.sweep.distributed`: a pure function of its arguments, so a point's
    numbers do not depend on where it ran. On a cluster the measures run on the
    worker too, because they reduce the call's results (O(E·G·H²) parameter gradients)
    to what the client writes (O(E·B·T)).

    Returns
    -------
    (list, float)
        The measures' :class:`~rnnsim.sweep.measures.Output`, in the order of
        ``config.measure``, and the seconds spent inside the computations.
    """
    results, seconds = compute_call(config, cell, T, points, device, needed, caches)
    call = measures.Call(config, cell, T, tuple(points), results)
    return [m.evaluate(call, prepared[m.name]) for m in measures.chosen(config.measure)], seconds


def _local(config, device, plan, calls, needed, prepared):
    """The local runner: the calls one after another in this process; yields ([finished], label)."""
    caches = _Caches(config, plan)
    for cell, T, points in calls:
        outputs, seconds = call_outputs(config, cell, T, points, device, needed, prepared, caches)
        yield [(cell, T, points, outputs, seconds)], f"{cell} T={T}"


def _settings(config, out, device, **run):
    """(SweepConfig, RunOptions) from a SweepConfig or a mapping of flag names; explicit arguments win."""
    explicit = {k: v for k, v in (("out", out), ("device", device), *run.items()) if v is not None}
    if isinstance(config, SweepConfig):
        return config, configure(explicit)[1]
    if isinstance(config, Mapping):
        return configure(config, explicit)
    raise TypeError(f"config must be a SweepConfig or a mapping of flag names, got {type(config).__name__}")


def run_sweep(config, out=None, *, device=None, resume=False, overwrite=False, progress=None,
              scheduler=None, workers=None) -> dict:
    """Run the sweep ``config`` into the results folder ``out``.

    Parameters
    ----------
    config : SweepConfig or mapping
        A mapping of flag-named keys (for example the table of
        :func:`rnnsim.sweep.load_config_file`) may also hold the run keys ``out``,
        ``device`` and ``quiet``; they apply exactly as on the command line
        (:func:`rnnsim.sweep.configure`), below the explicit arguments here.
    out : path, optional
        The results folder (default: the mapping's ``out``, else ``rnnsim-sweep``);
        created if missing. An existing results folder needs ``resume`` (continue
        it; the configuration must match) or ``overwrite`` (replace the files
        rnnsim wrote there; other files are left alone).
    device : {"cpu", "cuda", "auto"}, optional
        Default: the mapping's ``device``, else "cpu".
    progress : callable, optional
        Called as ``progress(advance, total, label)`` once with ``advance=0`` before
        the first call and then after every ensemble call (every task on a cluster);
        ``advance`` and ``total`` are in units of estimated work (network·steps
        weighted by the cells' cost).
    scheduler : str, optional
        The address of a running Dask scheduler: the ensemble calls run as tasks on
        its workers (:mod:`rnnsim.sweep.distributed`, needs ``rnnsim[distributed]``).
        Default: the mapping's ``scheduler``, else none (run here).
    workers : int, optional
        Start a Dask LocalCluster of this many worker processes for this sweep
        (instead of ``scheduler``). The results are the same either way.

    Returns
    -------
    dict
        ``points_total``, ``points_computed``, ``points_skipped``, ``calls``,
        ``wall_seconds`` (the whole call), ``kernel_seconds`` (inside the computations:
        :func:`rnnsim.gradients`, and :func:`rnnsim.lyapunov` and the SVDs of W_hh where
        a measure needs them; on a cluster the sum over the tasks, so the share may
        exceed 1), ``kernel_share`` (None without calls). Also stored
        in the manifest. A resume of a finished sweep writes nothing and returns
        ``calls == 0`` and ``nothing_to_do`` True.

    Notes
    -----
    Every check (configuration, device, memory, folder) happens before the first
    byte is written; the folder is locked for the whole run (see
    :mod:`rnnsim.sweep.store`). See :mod:`rnnsim.sweep.plan` for how points are
    grouped into ensemble calls.
    """
    wall_start = time.perf_counter()
    config, options = _settings(config, out, device, scheduler=scheduler, workers=workers)
    resolved = resolve_device(options.device)
    plan = plan_sweep(config, resolved)
    out = Path(options.out)
    cluster = options.scheduler is not None or options.workers is not None
    if cluster:
        from . import distributed  # checks that dask is installed before the folder is touched
        distributed.require_dask()
    with contextlib.ExitStack() as stack:
        folder = stack.enter_context(store.open_sweep(out, config, resume=resume, overwrite=overwrite))
        calls = plan.calls(config, folder.done)
        if (resume and not calls and folder.manifest.get("status") == "complete"
                and (out / store.SUMMARY).is_file()):  # nothing left to do: write nothing
            return {"points_total": config.n_points, "points_computed": 0, "points_skipped": config.n_points,
                    "calls": 0, "wall_seconds": time.perf_counter() - wall_start, "kernel_seconds": 0.0,
                    "kernel_share": None, "nothing_to_do": True}
        execute = _local
        if cluster:  # connected (or started) before the first write: a bad address writes nothing
            execute = stack.enter_context(distributed.connect(options.scheduler, options.workers, resolved))
        folder.start()
        return _run(config, out, resolved, plan, calls, folder.done, folder.manifest, progress, wall_start,
                    execute)


def _refreshed(config, done, chosen, prepared):
    """The finished rows with the columns of the measures that need no computation (the mean
    field) evaluated again: they depend only on the configuration and the point, so a folder
    resumed by a newer rnnsim holds one theory in every row (and the same numbers otherwise)."""
    pure = [m for m in chosen if not m.needs]
    by_call = {}
    for key in done:
        by_call.setdefault(key[:2], []).append(key)
    rows = {}
    for (cell, T), keys in by_call.items():
        call = measures.Call(config, cell, T, tuple((k[2], k[3]) for k in keys), {})
        outputs = [m.evaluate(call, prepared[m.name]) for m in pure]
        for e, key in enumerate(keys):
            row = dict(done[key])
            for output in outputs:
                row.update(output.rows[e])
            rows[key] = row
    return rows


def _run(config, out, device, plan, calls, done, old_manifest, progress, wall_start, execute=_local):
    chosen = measures.chosen(config.measure)
    names = measures.column_names(config.measure)
    prepared = {m.name: m.prepare(config) for m in chosen}
    needed = [name for name in COMPUTATIONS if any(name in m.needs for m in chosen)]
    earlier = [{k: old_manifest.get(k) for k in ("started", "finished", "status", "device", "device_name",
                                                 "git_commit", "versions", "stats")}] if old_manifest else []
    manifest = {
        "format": store.MANIFEST_FORMAT,
        "tool": "rnnsim sweep",
        "config": config.as_dict(),
        "points_total": config.n_points,
        "status": "running",
        "started": now(), "finished": None, **provenance(device), "dtype": config.dtype,
        "runner": getattr(execute, "description", "local"),
        "stats": None,
        "earlier_runs": old_manifest.get("earlier_runs", []) + earlier,
    }
    store.write_json(out / store.MANIFEST, manifest)

    total = sum(plan.work(config, c, T, len(p)) for c, T, p in calls)
    if progress is not None:
        progress(0, total, "")
    grid = {(scale, seed) for scale in config.scales for seed in range(config.seeds)}
    order = {c: i for i, c in enumerate(config.cell)}
    lines = {(order[r["cell"]], r["T"], r["scale"], r["seed"]): store.csv_line(r, names)
             for r in _refreshed(config, done, chosen, prepared).values()}
    kernel_seconds, computed, n_calls = 0.0, 0, 0
    # On a cluster the calls finish in any order, several at once; what is written does not
    # depend on either (rows are sorted, profiles merged by (scale, seed)).
    for batch, label in execute(config, device, plan, calls, needed, prepared):
        by_file = {}
        for cell, T, points, outputs, seconds in batch:
            kernel_seconds += seconds
            n_calls += 1
            arrays = {"scale": np.array([p[0] for p in points], dtype=np.float64),
                      "seed": np.array([p[1] for p in points], dtype=np.int64)}
            for output in outputs:
                arrays.update(output.arrays)
            by_file.setdefault((cell, T), []).append(arrays)
        # Profiles first: a summary row never points at a profile that is not on disk.
        for (cell, T), parts in by_file.items():
            arrays = {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}
            store.merge_profiles(out, cell, T, arrays, grid, config)
        for cell, T, points, outputs, _ in batch:
            for e, (scale, seed) in enumerate(points):
                row = {"cell": cell, "init": config.init, "hidden": config.hidden, "T": T, "scale": scale,
                       "seed": seed}
                for output in outputs:
                    row.update(output.rows[e])
                row["profile_file"] = store.profile_name(cell, T)
                lines[(order[cell], T, scale, seed)] = store.csv_line(row, names)
        ordered = [lines[k] for k in sorted(lines)]
        store.atomic_write(out / store.SUMMARY, lambda fh: fh.write(store.summary_bytes(ordered, names)))
        computed += sum(len(points) for _, _, points, _, _ in batch)
        if progress is not None:
            progress(sum(plan.work(config, cell, T, len(points)) for cell, T, points, _, _ in batch), total,
                     label)

    if not calls and not (out / store.SUMMARY).is_file():
        store.atomic_write(out / store.SUMMARY, lambda fh: fh.write(store.summary_bytes([], names)))
    wall = time.perf_counter() - wall_start
    stats = {
        "points_total": config.n_points,
        "points_computed": computed,
        "points_skipped": config.n_points - computed,
        "calls": n_calls,
        "wall_seconds": wall,
        "kernel_seconds": kernel_seconds,
        "kernel_share": kernel_seconds / wall if wall > 0 and calls else None,
    }
    manifest.update(status="complete", finished=now(), stats=stats)
    store.write_json(out / store.MANIFEST, manifest)
    return stats
