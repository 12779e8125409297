"""Tunables, in one place.

Tests patch these (for example ``GPU_THREADS_PER_BLOCK`` drops to a tiny value so
that small inputs still cover several blocks). Read them at call time, never copy
them into module-level constants of other modules.
"""

# LLVM fast-math flags for the CPU kernels. Deliberately *without* ``nnan`` and
# ``ninf``: with those, NaN/inf checks are optimised away (numba issues 2919, 9383).
# ``reassoc`` is what lets hand-written dot products vectorise.
NUMBA_FASTMATH = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})

# GPU launch configuration (used by rnnsim.kernels.gpu_*).
GPU_THREADS_PER_BLOCK = 128
# Sequences handled by one block (a tile of the batch axis of one network).
GPU_SEQUENCES_PER_BLOCK = 8
# Fraction of free device memory that one ensemble chunk may use for activations.
GPU_MEMORY_FRACTION = 0.6

# Sequences of one network handled by one CPU work item. The CPU kernels
# parallelise over (network, sequence tile) pairs; a tile batches its sequences
# so that each time step is one small matrix product.
CPU_SEQUENCE_TILE = 32
# Bytes of workspace that the CPU threads keep between calls: each thread that runs work
# items keeps at most CPU_WORKSPACE_BYTES / numba.get_num_threads() (its share of the
# whole with numba's worker threads), and a thread that ends frees its own. The
# activations of a work item come from its thread's workspace, so a repeated call
# allocates, page-faults and zeroes nothing that grows with T. Items that need more than
# the share allocate per call, as with 0 (keep nothing).
# rnnsim.kernels.cpu.release_workspaces() frees what is kept.
CPU_WORKSPACE_BYTES = 1 << 30
# Rows ((step, sequence) pairs) per partial product of the CPU weight gradients: the
# weighted factor Z of one block stays in cache and no buffer grows with T beyond the
# activations BPTT keeps anyway. Any value >= 1 gives the same gradients up to rounding.
CPU_WEIGHT_GRADIENT_ROWS = 1024
# When a call has fewer work items than threads, the free threads help the items with
# their per-step products (rnnsim.kernels.cpu_team): as many as leave each member at
# least this many multiply-adds of one step's product (nb x H by H x G·H). Measured at
# E = B = 1 with a team of 2: an lstm at H=64 (8k each) ran 0.83x, the lstm at H=128
# (32k each) 1.02x, the rnn at H=256 (32k each) 1.19x, the lstm at H=1024 1.7x.
CPU_TEAM_MIN_SHARE = 1 << 15
# Shared memory one block of the GPU recurrence kernels may use, in bytes; None = the
# device's opt-in limit (48 KB under the simulator). Tests lower it to exercise the
# W_hh-in-global fallback. Every launch is checked against the device's own limits too
# (rnnsim.kernels.gpu_launch).
GPU_MAX_SHARED_BYTES = None
# Where a GPU call's time goes: a dict here makes rnnsim.kernels.gpu synchronise the
# device around each stage (host-to-device copies, each kernel, device-to-host copies)
# and add its seconds under the stage's name. None (the default): no synchronisation.
GPU_STAGE_SECONDS = None
# Device bytes one ensemble chunk may use; None = GPU_MEMORY_FRACTION of free memory.
# Tests lower it so that a small ensemble is processed in several chunks.
GPU_MEMORY_BUDGET_BYTES = None

# Log-domain S* merge (rnnsim.logdomain.relative_weights): a term whose weight
# exp(s - S*) relative to the largest term is below tiny**LOG_WEIGHT_CUTOFF_POWER of
# the compute dtype (0.5: sqrt(tiny), 1e-19 in float32, 1e-154 in float64) is dropped.
# It lies far below the dtype's precision against the largest term, and its products
# would be denormal numbers, which cost the CPU ~100x per operation. Every backend
# (reference, CPU, GPU) applies the same cutoff.
LOG_WEIGHT_CUTOFF_POWER = 0.5

# Memory one call may use, in bytes; None = what the OS reports available
# (rnnsim._memory). Tests lower it to exercise the refusals.
MEMORY_LIMIT_BYTES = None
