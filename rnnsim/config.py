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
# A call with fewer items than threads halves its tiles (more items, one network's
# sequences on several threads) only while each halved tile keeps at least
# CPU_SPLIT_MIN_SEQUENCES sequences and CPU_SPLIT_MIN_WORK multiply-adds of its forward
# recurrence (sequences x T x G·H x (H + D); rnnsim.kernels.cpu.sequence_tile). A smaller
# item costs more than its thread gives: a handoff between threads (~0.1 ms), fixed costs
# of its own, and a per-step product that streams all of W_hh for fewer rows.
# Measured with benchmarks/bench_threads.py (one network, 2 threads against 1, 2-core
# Zen 3, results/bench/2026-12-07-cpu-threads-zen3.txt): halving every tile that left a
# thread idle took 1.7-2.2x the time of one thread at B=4 H=64 T=32 and 1.5-2.8x at B=4
# H=256-1024; the halves kept by these two settings (an lstm or gru at B=16 H=64 T=128 or
# B=32 H=64 T=64, every cell at B=32 H=128 T=64) ran 0.60-0.81x.
CPU_SPLIT_MIN_SEQUENCES = 8
CPU_SPLIT_MIN_WORK = 1 << 23
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
# least this many entries of W_hh (H x G·H), the columns of the product it computes, when
# the item has one sequence, and CPU_TEAM_MIN_SHARE_SEQUENCES when it has more
# (rnnsim.kernels.cpu._team_size says why). Measured at E = B = 1 with a team of 2 on a
# Zen 5: an lstm at H=64 (8k each) ran 0.83x, the lstm at H=128 (32k each) 1.02x, the rnn
# at H=256 (32k each) 1.19x, the lstm at H=1024 1.7x. Items of 2-8 sequences on a 2-core
# Zen 3 (benchmarks/bench_threads.py --teams, results/bench/2026-12-07-cpu-teams-zen3.txt):
# teams by the rule before (32k multiply-adds of a step's product each) ran 1.1-1.6x the
# time of one thread at H=128, 0.9-1.3x at H=256 and 0.84-1.24x at H=512 (the lstm's 524k
# entries each, below this setting); the teams of this setting at B=4 H=1024 (lstm and
# gru, 1.6M-2.1M entries each) 0.84-0.94x.
CPU_TEAM_MIN_SHARE = 1 << 15
CPU_TEAM_MIN_SHARE_SEQUENCES = 1 << 20
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
