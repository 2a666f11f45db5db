"""Every random number generator a training step draws from, saved and restored exactly.

torch (CPU and CUDA), Python's ``random`` (timm's RandAugment in the main process) and numpy's
global ``RandomState`` (timm's Mixup/CutMix, including its cached Gaussian), as tensors and plain
types so that checkpoints keep loading with ``weights_only=True``. Each process has its own
streams (seeded with seed + rank): a checkpoint keeps every process's (:func:`gather_rng_states`)
and each process restores its own (:func:`restore_rng_state`). Per-sample draws (crops,
augmentations, masks) are seeded from the sample itself and need nothing here.
"""

from __future__ import annotations

import random
from contextlib import contextmanager

import numpy as np
import torch


def rng_state() -> dict:
    """The state of every generator (see the module docstring)."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {"torch": torch.get_rng_state(), "python": list(py_state), "python_gauss": py_gauss,
             "numpy": torch.from_numpy(keys.astype(np.int64)), "numpy_pos": int(pos),
             "numpy_has_gauss": int(has_gauss), "numpy_cached_gauss": float(cached)}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore :func:`rng_state` (older checkpoints without the Gaussian caches restore without them)."""
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), state.get("python_gauss")))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"],
                         state.get("numpy_has_gauss", 0), state.get("numpy_cached_gauss", 0.0)))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_rng_states(device) -> list[dict]:
    """:func:`rng_state` of every process, in rank order (a collective: every process calls it; what travels is
    serialised through tensors on ``device``). One process: a list of one."""
    from droppos.utils import dist as du

    return du.all_gather_object(rng_state(), device)


def restore_rng_state(states: list[dict] | dict, rank: int) -> None:
    """Restore this process's own states from a checkpoint's ``rng`` (a list per process; older checkpoints
    hold one dict, the only process's). A process the checkpoint did not have (a run resumed on more
    processes, where nothing is drawn per process) takes process 0's."""
    if isinstance(states, list):
        set_rng_state(states[rank] if rank < len(states) else states[0])
    else:
        set_rng_state(states)


def saved_world_size(ck: dict) -> int:
    rng = ck.get("rng")
    return int(ck.get("world_size", len(rng) if isinstance(rng, list) else 1))


def check_world_size(ck: dict, world_size: int, path, why_not_exact: str | None = "") -> bool:
    """Whether a checkpoint resumes with another number of processes than wrote it (True), which is allowed only
    where the continuation stays exact (``why_not_exact`` None: the same global batch and sample order, and no
    draw made per process); otherwise one line naming both numbers and the reason."""
    from droppos.errors import UserError

    saved = saved_world_size(ck)
    if saved == world_size:
        return False
    if why_not_exact is not None:
        reason = why_not_exact or "each process's random streams and share of every batch belong to its rank"
        raise UserError(f"{path}: written by a run of {saved} process(es), resumed with {world_size}: {reason}; resume "
                        f"it with {saved} (torchrun --nproc-per-node / --nnodes, or srun --ntasks {saved}), or start "
                        "over with --overwrite")
    return True


# ---------------------------------------------------------------------------------------- per-sample streams
def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one sample's draws: a function of (seed, epoch, index) only, whatever the process."""
    return (seed * 1_000_003 + epoch) * 10_000_019 + index


@contextmanager
def seeded(seed: int, epoch: int, index: int):
    """torch's, Python's and numpy's global generators seeded from a sample's (seed, epoch, index), for
    transforms that draw from them (RandAugment draws its ops from numpy and their magnitudes from Python;
    random erasing from torch); the caller's states are restored afterwards."""
    state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        value = sample_seed(seed, epoch, index)
        torch.default_generator.manual_seed(value)
        random.seed(value)
        np.random.seed(value % 2**32)
        try:
            yield
        finally:
            random.setstate(state)
            np.random.set_state(np_state)
