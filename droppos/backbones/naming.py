"""How a backbone is named: the one reader of ``--backbone``'s syntax, and the plug-in names it knows.

Every command, engine adapter and the bench learn what a source is from :func:`parse_source`, never
from the string itself::

    scratch                                  ENGINE_SCRATCH  the engine's own random init (detect, segment)
    scratch:<size>_p<patch>_<img>[_s<seed>]  SCRATCH         a random ViT of this project (spec: the part after ':')
    hf:<org>/<repo>[@revision]               HUB             a transformers ViT on the Hugging Face hub
    DIR with a config.json                   FOLDER          a local transformers model folder
    timm:<model>[.<tag>][:<weights>]         GENERIC         any timm architecture (prefix "timm")
    hf-hub:<org>/<repo>                      GENERIC         timm's name of a hub model (prefix "hf-hub")
    <plugin>:<weights>                       GENERIC         a registered plug-in (prefix: its name)
    FILE                                     FILE            a checkpoint any reader reads

An existing path always names a file or a folder, even with a ``:`` in it. Plug-ins are registered with
:func:`register` or as entry points of the group ``droppos.backbones`` (:func:`providers`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from droppos.errors import UserError

ENGINE_SCRATCH, SCRATCH, HUB, FOLDER, GENERIC, FILE = "engine_scratch", "scratch", "hub", "folder", "generic", "file"
TIMM_PREFIXES = ("timm", "hf-hub")  # generic sources that timm builds by name
ENTRY_POINT_GROUP = "droppos.backbones"
_RESERVED = {"scratch", "timm", "hf-hub", "hf"}  # source prefixes of the project: never a plug-in's name
_REGISTRY: dict[str, Callable] = {}


@dataclass(frozen=True)
class SourceName:
    """A parsed ``--backbone``: its text, its kind (module docstring), and the parts its kind has."""

    text: str
    kind: str
    prefix: str = ""  # GENERIC: "timm", "hf-hub" or the plug-in's name
    rest: str = ""  # what follows the first ':' (SCRATCH: the spec; HUB: <org>/<repo>[@rev]; GENERIC: model/weights)

    @property
    def generic(self) -> bool:
        """Built by name (timm, a plug-in) rather than read as a ViT."""
        return self.kind == GENERIC

    @property
    def model_folder(self) -> bool:
        """A transformers model folder, local or on the hub."""
        return self.kind in (HUB, FOLDER)

    @property
    def scratch(self) -> bool:
        """A random init: the engine's own, or this project's ``scratch:<spec>``."""
        return self.kind in (ENGINE_SCRATCH, SCRATCH)

    def __str__(self) -> str:
        return self.text


def parse_source(src: str | Path | SourceName) -> SourceName:
    """What ``src`` names (see the module docstring)."""
    if isinstance(src, SourceName):
        return src
    text = str(src)
    head, sep, rest = text.partition(":")
    if text == "scratch":
        return SourceName(text, ENGINE_SCRATCH)
    if head == "scratch" and sep:
        return SourceName(text, SCRATCH, head, rest)
    if head == "hf" and sep:
        return SourceName(text, HUB, head, rest)
    path = Path(text)
    if path.is_dir() and (path / "config.json").is_file():
        return SourceName(text, FOLDER)
    if sep and not path.exists() and (head in TIMM_PREFIXES or head in providers()):
        return SourceName(text, GENERIC, head, rest)
    return SourceName(text, FILE)


def register(name: str, builder: Callable) -> None:
    """Make ``--backbone name:<weights>`` build ``builder(**kwargs)`` (see :mod:`.generic`)."""
    if not name or ":" in name or name in _RESERVED:
        raise UserError(f"cannot register a backbone named {name!r}: choose a name without ':' other than "
                        f"{', '.join(sorted(_RESERVED))}")
    _REGISTRY[name] = builder


def providers() -> dict[str, Callable]:
    """Registered builders, with the installed packages' entry points (group ``droppos.backbones``)."""
    from importlib.metadata import entry_points

    found = dict(_REGISTRY)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in found:
            found[ep.name] = ep.load()
    return found
