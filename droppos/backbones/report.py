"""The one key report: where each weight of a backbone source went, and what is wrong.

Two steps write it: a conversion (:mod:`.targets`: source keys renamed into an engine's names,
``stage="convert"``) and a load (:mod:`.into_engine`, :mod:`.generic`: weights checked against a built
model, ``stage="load"``). Either is accepted only when nothing is ``unmapped`` (a source weight with
no place in the target), ``missing`` (a target backbone key that received nothing) or of the
``wrong_shape``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class KeyReport:
    """Outcome of one conversion or load.

    Attributes:
        source, target: what went into what (file or spec; framework name or model).
        stage: ``convert`` (renaming into the target's names) or ``load`` (into a built model).
        mapped: (source key, target key) pairs, the weight copied (possibly resampled).
        loaded: model keys that received a weight of the file.
        dropped: (source key, reason) for weights deliberately left out: pretext-only heads,
            a classifier head, or backbone weights the target architecture has no use for.
        filled: (target key, reason) for target keys written with identity values because the
            source has no such weight (e.g. mmseg's layer scale = 1).
        recipe_init: model key -> how the recipe sets it (expected not in the file).
        random_init: model keys outside the backbone that the file lacks (necks, heads).
        resampled: "key: old -> new" lines for resampled position embeddings.
        unmapped: source weights with no place in the target (an error).
        missing: target backbone keys that received no weight (an error).
        wrong_shape: (key, file shape, model shape) (an error).
        notes: anything inferred (architecture, heads) worth telling the user.
    """

    source: str
    target: str = ""
    stage: str = "convert"
    mapped: list[tuple[str, str]] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)
    filled: list[tuple[str, str]] = field(default_factory=list)
    recipe_init: dict[str, str] = field(default_factory=dict)
    random_init: list[str] = field(default_factory=list)
    resampled: list[str] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    wrong_shape: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.unmapped or self.missing or self.wrong_shape)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["wrong_shape"] = [[k, list(a), list(b)] for k, a, b in self.wrong_shape]
        d["ok"] = self.ok
        return d

    def lines(self, verbose: bool = False) -> list[str]:
        return self.summary(verbose).splitlines()

    def summary(self, verbose: bool = False) -> str:
        """Human-readable report; ``verbose`` lists every mapped pair."""
        if self.stage == "load":
            lines = [f"init: {len(self.loaded)} tensors loaded from {self.source}"]
            lines += [f"  {n}" for n in self.notes]
        else:
            lines = [f"{self.source} -> {self.target}: {len(self.mapped)} weights mapped, {len(self.dropped)} dropped, "
                     f"{len(self.filled)} filled, {len(self.unmapped)} unmapped, {len(self.missing)} missing"]
            lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  resampled {r}" for r in self.resampled]
        for title, pairs in (("dropped", self.dropped), ("filled", self.filled)):
            for reason, keys in _group(pairs).items():
                lines.append(f"  {title} ({reason}): {short(keys)}")
        for how, keys in _group(list(self.recipe_init.items())).items():
            lines.append(f"  not in the file, set by the recipe: {len(keys)} x {how}")
        if self.random_init:
            tops = sorted({".".join(k.split(".")[:2]) for k in self.random_init})
            lines.append(f"  random init (not in the file): {len(self.random_init)} tensors of {', '.join(tops[:6])}")
        if verbose:
            lines += [f"  {s} -> {t}" for s, t in self.mapped]
        if self.unmapped:
            lines.append(f"  ERROR {'file weights with no place in the model' if self.stage == 'load' else 'unmapped backbone weights'}: "
                         f"{short(self.unmapped)}")
        if self.missing:
            lines.append(f"  ERROR {'backbone weights not in the file' if self.stage == 'load' else 'target keys without a weight'}: "
                         f"{short(self.missing)}")
        lines += [f"  ERROR shape mismatch {k}: file {tuple(a)}, model {tuple(b)}" for k, a, b in self.wrong_shape[:6]]
        return "\n".join(lines)


def _group(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, reason in pairs:
        out.setdefault(reason, []).append(key)
    return out


def short(keys: list[str], n: int = 6) -> str:
    """The first ``n`` keys, and how many more."""
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")
