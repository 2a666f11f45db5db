"""The key report every conversion prints: where each source weight went, and what is wrong.

A conversion is accepted only when ``unmapped`` (source backbone weights with no place in the
target) and ``missing`` (target backbone keys that received nothing) are both empty.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class KeyReport:
    """Outcome of one conversion.

    Attributes:
        source, target: what was converted into what (file or spec; framework name).
        mapped: (source key, target key) pairs, the weight copied (possibly resampled).
        dropped: (source key, reason) for weights deliberately left out: pretext-only heads,
            a classifier head, or backbone weights the target architecture has no use for.
        filled: (target key, reason) for target keys written with identity values because the
            source has no such weight (e.g. mmseg's layer scale = 1).
        resampled: "key: old -> new" lines for resampled position embeddings.
        unmapped: source backbone keys with no target key (an error).
        missing: target backbone keys that received no weight (an error).
        notes: anything inferred (architecture, heads) worth telling the user.
    """

    source: str
    target: str
    mapped: list[tuple[str, str]] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)
    filled: list[tuple[str, str]] = field(default_factory=list)
    resampled: list[str] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.unmapped and not self.missing

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        return d

    def lines(self) -> list[str]:
        return self.summary().splitlines()

    def summary(self, verbose: bool = False) -> str:
        """Human-readable report; ``verbose`` lists every mapped pair."""
        lines = [f"{self.source} -> {self.target}: {len(self.mapped)} weights mapped, {len(self.dropped)} dropped, "
                 f"{len(self.filled)} filled, {len(self.unmapped)} unmapped, {len(self.missing)} missing"]
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  resampled {r}" for r in self.resampled]
        for title, pairs in (("dropped", self.dropped), ("filled", self.filled)):
            for reason, keys in _group(pairs).items():
                lines.append(f"  {title} ({reason}): {_keys(keys)}")
        if verbose:
            lines += [f"  {s} -> {t}" for s, t in self.mapped]
        if self.unmapped:
            lines.append(f"  ERROR unmapped backbone weights: {_keys(self.unmapped)}")
        if self.missing:
            lines.append(f"  ERROR target keys without a weight: {_keys(self.missing)}")
        return "\n".join(lines)


def _group(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, reason in pairs:
        out.setdefault(reason, []).append(key)
    return out


def _keys(keys: list[str], n: int = 6) -> str:
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")
