"""One record per run folder, whatever file it was read from.

A :class:`RunResult` is what the aggregator knows about one run: who (backbone), what (task,
protocol, dataset, seed), the numbers, and how much to trust them (``status``):

* ``finished``  - our ``metrics.json`` with ``"status": "finished"``.
* ``recovered`` - no usable ``metrics.json``, but an engine's own log holds the final evaluation
  (detectron2 ``metrics.json`` next to ``model_final.pth``, an mmengine validation at
  ``max_iters``, a classification log that reached its planned epochs).
* ``partial``   - only an intermediate evaluation (or one whose completion cannot be checked).
* ``missing``   - a run folder (``run.json`` plan or a malformed metrics file) with no numbers.
* anything else a ``metrics.json`` says (e.g. ``failed``) is kept as written.

Only ``finished`` and ``recovered`` values enter means; the others are displayed as such.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

COUNTED = ("finished", "recovered")  # statuses whose values enter mean +- std



@dataclass
class RunResult:
    """What one run folder contributed.

    ``metrics`` maps metric name -> value in the engine's units (percent for top-1/AP/mIoU);
    ``source`` is the file the numbers came from; ``progress`` says how far an engine log got
    (e.g. ``"iter 40"``, ``"epoch 3/10"``) when that is known.
    """

    path: Path
    task: str
    protocol: str
    backbone: dict
    dataset: str
    seed: int | None
    metrics: dict[str, float] = field(default_factory=dict)
    status: str = "finished"
    source: str = "metrics.json"
    progress: str = ""
    note: str = ""
    data_id: str | None = None  # hash of the data set's build options (dataset.json)
    cost: dict = field(default_factory=dict)  # metrics.json's cost: params_M, GFLOPs, input, wall_s, peak_rss_gib

    @property
    def backbone_key(self) -> str:
        """The backbone's name (the record's ``id``): the row a run belongs to."""
        b = self.backbone
        return str(b.get("id") or backbone_label(self.identity))

    @property
    def identity(self) -> tuple[str, str, int | None]:
        """(method, arch, pretraining epochs) of the backbone record."""
        b = self.backbone
        return (str(b.get("method") or "unknown"), str(b.get("arch") or "unknown"), _epochs(b.get("epochs")))

    @property
    def task_key(self) -> tuple[str, str, str]:
        """(task, protocol, dataset): the column group a run belongs to."""
        return (self.task, self.protocol, self.dataset)

    @property
    def counted(self) -> bool:
        return self.status in COUNTED

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["path"] = str(self.path)
        return d


def _epochs(v) -> int | None:
    if v is None or v == "":
        return None
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def backbone_label(key: tuple[str, str, int | None]) -> str:
    """'droppos vit_base_p16 800ep' for (method, arch, epochs); no epochs for scratch."""
    method, arch, epochs = key
    return f"{method} {arch}" + (f" {epochs}ep" if epochs else "")
