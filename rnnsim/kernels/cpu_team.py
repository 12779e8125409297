r"""A team of threads on one work item's per-step products (@njit building blocks).

When a call has fewer work items than threads (one network and one sequence, say),
the threads left over join an item's *team*: at every step the item's own thread,
the *leader*, publishes the product ``out = a @ w`` on a shared control block
(``team``, an int64 array of :data:`TEAM_WORDS`), computes its share of the weight
panels, and waits until each *helper* has computed its own share
(:func:`rnnsim.kernels.cpu_matmul.step_product`, :func:`~rnnsim.kernels.cpu_matmul.team_helper`).
Each output column is computed by exactly one thread with the same code, summing in
the same order as one thread alone would.

Ordering: the leader's plain stores (the inputs of the step, the block's fields) come
before its release store of ``GEN``; a helper reads them after its acquire load of
``GEN``. A helper's plain stores into ``out`` come before its acquire-release
increment of ``DONE``, which the leader reads with an acquire load before it reads
``out``. Every wait spins a short while, then yields the core to the OS (POSIX
``sched_yield``), so a team larger than the free cores is slower, never stuck.
"""
from __future__ import annotations

import os

import llvmlite.binding as llvm
from llvmlite import ir
from numba import carray, types
from numba.core import cgutils
from numba.extending import intrinsic

from .cpu_common import entry, jit, stage

# Word offsets in a team's control block. The leader writes GEN, the helpers DONE:
# 128 bytes apart, so that they never share a cache line (nor its neighbour).
GEN, DONE = 0, 16
QUIT, SIZE, A_ADDRESS, M_ROWS, K_ROWS, PANELS_ADDRESS, N_PANELS, OUT_ADDRESS, N_COLUMNS, AHEAD = range(32, 42)
TEAM_WORDS = 48
SPINS = 2000  # waits that spin before each further one yields the core
_X86 = llvm.get_process_triple().startswith(("x86_64", "i386", "i686"))
_POSIX = os.name == "posix"  # sched_yield; elsewhere a long wait keeps spinning


def _word_pointer(context, builder, arr_type, arr, word):
    array = context.make_array(arr_type)(context, builder, arr)
    return cgutils.get_item_pointer(context, builder, arr_type, array, [word], wraparound=False)


@intrinsic
def load_acquire(typingctx, team, word):
    """``team[word]``, read with acquire ordering."""
    def codegen(context, builder, sig, args):
        return builder.load_atomic(_word_pointer(context, builder, sig.args[0], *args), "acquire", 8)
    return types.int64(team, word), codegen


@intrinsic
def store_release(typingctx, team, word, value):
    """``team[word] = value``, written with release ordering."""
    def codegen(context, builder, sig, args):
        pointer = _word_pointer(context, builder, sig.args[0], args[0], args[1])
        builder.store_atomic(args[2], pointer, "release", 8)
        return context.get_dummy_value()
    return types.void(team, word, types.int64), codegen


@intrinsic
def add_acquire_release(typingctx, team, word, value):
    """``team[word] += value`` as one atomic read-modify-write."""
    def codegen(context, builder, sig, args):
        pointer = _word_pointer(context, builder, sig.args[0], args[0], args[1])
        builder.atomic_rmw("add", pointer, args[2], "acq_rel")
        return context.get_dummy_value()
    return types.void(team, word, types.int64), codegen


@intrinsic
def _relax(typingctx, spins):
    """Spin politely (x86's pause) for the first :data:`SPINS` waits, then give the
    core away (``sched_yield``) on each further one."""
    def codegen(context, builder, sig, args):
        module = builder.module
        i32 = ir.IntType(32)
        below = builder.icmp_signed("<", args[0], ir.Constant(ir.IntType(64), SPINS))
        with builder.if_else(below) as (spin, give_away):
            with spin:
                if _X86:
                    pause = cgutils.get_or_insert_function(module, ir.FunctionType(ir.VoidType(), []),
                                                           "llvm.x86.sse2.pause")
                    builder.call(pause, [])
            with give_away:
                if _POSIX:
                    give_core = cgutils.get_or_insert_function(module, ir.FunctionType(i32, []),
                                                               "sched_yield")
                    builder.call(give_core, [])
        return context.get_dummy_value()
    return types.void(types.int64), codegen


@stage
def wait_for_change(team, word, seen):
    """Wait until ``team[word]`` differs from ``seen``; return its new value."""
    spins = 0
    while True:
        value = load_acquire(team, word)
        if value != seen:
            return value
        _relax(spins)
        spins += 1


@stage
def wait_for_value(team, word, target):
    """Wait until ``team[word] == target``."""
    spins = 0
    while load_acquire(team, word) != target:
        _relax(spins)
        spins += 1


@stage
def share(n, rank, size):
    """Member ``rank``'s range [start, stop) of ``n`` panels split between ``size``
    members, as evenly as whole panels allow (the leader is rank 0)."""
    return n * rank // size, n * (rank + 1) // size


@intrinsic
def _pointer(typingctx, address, like):
    """The int64 ``address`` as a pointer to ``like``'s dtype."""
    pointer_type = types.CPointer(like.dtype)

    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], context.get_value_type(pointer_type))
    return pointer_type(types.int64, like), codegen


@jit
def view(address, shape, like):
    """The C-contiguous array of ``shape`` at ``address``, of ``like``'s dtype (a helper's
    view of an array that the leader published)."""
    return carray(_pointer(address, like), shape)


@entry
def dismiss(team):
    """Tell the helpers of ``team`` to return (the leader's item is done)."""
    team[QUIT] = 1
    store_release(team, GEN, team[GEN] + 1)
