"""What machine a result came from (for manifests and benchmark reports)."""
from __future__ import annotations

import platform


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one) and, in brackets, the
    microarchitecture numba compiles for, e.g. ``AMD EPYC (znver3)``.

    The model name alone can hide what decides the kernels' speed and last bits: one
    "AMD EPYC" has been a Zen 3 (AVX2) and another a Zen 5 (AVX-512).
    """
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), model)
    except OSError:
        pass
    try:
        from llvmlite import binding
        from numba.core import config

        # NUMBA_CPU_NAME (a portable cache, say) replaces the host's as numba's target
        return f"{model} ({config.CPU_NAME or binding.get_host_cpu_name()})"
    except Exception:  # the name is a label in a report: never worth failing the caller for
        return model
