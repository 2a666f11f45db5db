"""Published reference numbers (``published.csv`` beside this file) and how they meet our runs.

Each CSV row is one number: ``method, arch, pretrain_epochs, task, protocol, dataset, metric,
value, schedule, source, reference, comparable``. ``source`` says what kind of document it is
(paper / repo README / model zoo page; ``third party ...`` when only someone else's listing has it,
which is then never comparable), ``reference`` where, ``comparable`` the condition under which a
run of ours may be set against it (same dataset and schedule). An empty ``arch`` or ``pretrain_epochs``
means the source does not state it: unknown, never guessed.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from droppos.results.aggregate import Column, Table
from droppos.results.records import backbone_label

DEFAULT_FILE = Path(__file__).with_name("published.csv")
FIELDS = ("method", "arch", "pretrain_epochs", "task", "protocol", "dataset", "metric", "value",
          "schedule", "source", "reference", "comparable")


@dataclass
class Published:
    method: str
    arch: str
    pretrain_epochs: int | None
    column: Column
    value: float
    text: str  # the value as published (its precision)
    schedule: str
    source: str
    reference: str
    comparable: str

    @property
    def key(self) -> tuple[str, str, int | None]:
        return (self.method, self.arch, self.pretrain_epochs)

    @property
    def third_party(self) -> bool:
        """Read from someone else's listing, not from the paper or its code: never comparable as it stands."""
        return self.source.lower().startswith("third party")

    @property
    def label(self) -> str:
        if not self.arch:  # the source does not state the backbone (third-party listings)
            return f"published: {self.method}, architecture and epochs unknown [{self.source}]"
        return f"published: {backbone_label(self.key)} [{self.source}]"

    def to_dict(self) -> dict:
        return {"method": self.method, "arch": self.arch, "pretrain_epochs": self.pretrain_epochs,
                "task": self.column.task, "protocol": self.column.protocol, "dataset": self.column.dataset,
                "metric": self.column.metric, "value": self.value, "schedule": self.schedule,
                "source": self.source, "reference": self.reference, "comparable": self.comparable}


def load_published(path: str | Path = DEFAULT_FILE) -> list[Published]:
    """Read the published-numbers CSV; a missing column or a non-numeric value names file and line."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ValueError(f"{path}: cannot read published numbers ({e})") from None
    reader = csv.DictReader(text.splitlines())
    missing = [f for f in FIELDS if f not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"{path}: published-numbers CSV lacks columns {missing} (expected {list(FIELDS)})")
    out = []
    for lineno, r in enumerate(reader, start=2):
        try:
            value = float(r["value"])
            epochs = int(r["pretrain_epochs"]) if r["pretrain_epochs"].strip() else None
        except ValueError:
            raise ValueError(f"{path}:{lineno}: value and pretrain_epochs must be numbers") from None
        if not r["source"].strip():
            raise ValueError(f"{path}:{lineno}: every published number needs a source")
        col = Column(r["task"], r["protocol"], r["dataset"], r["metric"])
        out.append(Published(r["method"], r["arch"], epochs, col, value, r["value"].strip(), r["schedule"], r["source"],
                             r["reference"], r["comparable"]))
    return out


def comparability(pub: Published, table: Table) -> str:
    """How a published number meets the runs in ``table``.

    'same backbone and dataset: <row>' when a run of the same method, arch and pretraining
    epochs sits in the same column (the schedule must still match: see ``comparable``);
    'same dataset, other backbone' when only the column matches; otherwise 'no run on <dataset>'.
    """
    if pub.third_party:
        return f"not comparable ({pub.source}): {pub.comparable}"
    rows = [r for r in table.rows if pub.column in r.cells]
    if not rows:
        return f"reference only: no run of {pub.column.task}/{pub.column.protocol} on {pub.column.dataset}"
    same = [r.label for r in rows if (r.method, r.arch, r.epochs) == pub.key]
    if same:
        return f"same backbone and dataset as {same[0]}; comparable {pub.comparable}"
    return f"same dataset, other backbones ({', '.join(r.label for r in rows)}); not the same pretraining"
