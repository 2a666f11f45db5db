"""Run logging: JSON-lines metrics, TensorBoard scalars and a progress bar, on the main process only."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


class RunLogger:
    """``log(step, **scalars)`` appends to ``run_dir/log.jsonl`` and TensorBoard ``run_dir/tb``."""

    def __init__(self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = True,
                 keep_bytes: int | None = None):
        """``keep_bytes``: on resume, the log's size when the checkpoint was written; lines written after
        it (by the run that was killed) are cut, so that the log has no repeated steps."""
        self.enabled = enabled
        self.path = Path(run_dir) / "log.jsonl"
        if enabled and keep_bytes is not None and self.path.is_file() and self.path.stat().st_size > keep_bytes:
            with self.path.open("r+b") as f:
                f.truncate(keep_bytes)
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(log_dir=str(Path(run_dir) / "tb"))
            except ImportError:  # tensorboard is a core dependency; tolerate its absence
                print("tensorboard not installed: TensorBoard scalars are not written", file=sys.stderr)

    def log(self, step: int, **scalars) -> None:
        if not self.enabled:
            return
        record = {"step": step, "time": round(time.time(), 3), **scalars}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in scalars.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, step)

    @property
    def size(self) -> int:
        """Bytes written so far (stored in checkpoints for :attr:`keep_bytes`)."""
        return self.path.stat().st_size if self.path.is_file() else 0

    def close(self) -> None:
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()


def progress(total: int, initial: int = 0, enabled: bool = True, desc: str = ""):
    """A tqdm bar over iterations (ETA included); quieter refresh when not on a terminal."""
    from tqdm.auto import tqdm

    tty = sys.stderr.isatty()
    return tqdm(total=total, initial=initial, disable=not enabled, desc=desc, dynamic_ncols=True,
                mininterval=0.5 if tty else 10.0, unit="it")
