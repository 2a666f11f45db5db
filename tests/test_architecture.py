"""The import contract: no circles, and imports flow one way, from the command down to the base.

Layers, highest first; a module may import its own layer and the layers below it, never one above.
Packages in one layer joined by ``|`` are independent (neither imports the other). Every import counts,
including those inside functions. ARCHITECTURE.md describes the same map.
"""

from __future__ import annotations

import pytest

from import_graph import cycles, edges, modules

#: highest first
LAYERS = [
    ["droppos.cli"],
    ["droppos.bench"],
    ["droppos.results"],
    ["droppos.transfer.probes"],  # probes read a classification backbone and DropPos's position masks
    ["droppos.pretrain", "droppos.transfer.classification", "droppos.transfer.detection",
     "droppos.transfer.segmentation", "droppos.tools.convert"],
    ["droppos.backbones"],
    ["droppos.runs", "droppos.tools.data"],
    ["droppos.utils"],
    ["droppos.models"],
    ["droppos.errors", "droppos.tools.install_detectron2"],  # the installer runs before the package can import
]
#: the packages' own ``__init__`` (a docstring and the version): in no layer, importing nothing of the namespace
CONTAINERS = {"droppos", "droppos.transfer", "droppos.tools"}


def _layer(module: str) -> tuple[int, str] | None:
    found = [(i, p) for i, layer in enumerate(LAYERS) for p in layer if module == p or module.startswith(p + ".")]
    return max(found, key=lambda f: len(f[1])) if found else None


def test_every_module_is_in_a_layer():
    stray = [m for m in modules() if _layer(m) is None and m not in CONTAINERS]
    assert not stray, f"modules in no layer of LAYERS: {stray}"


def test_the_graph_is_read_from_every_folder():
    """The reader of the graph finds the folders mapped in pyproject (a wrong mapping would pass vacuously)."""
    found = modules()
    for expected in ("droppos.cli", "droppos.pretrain.engine", "droppos.transfer.detection.train",
                     "droppos.backbones.readers.dino", "droppos.tools.convert.main", "droppos.results.aggregate"):
        assert expected in found
    pairs = {(e.importer, e.imported) for e in edges()}
    assert ("droppos.pretrain.data", "droppos.pretrain.datapath") in pairs
    assert ("droppos.tools.convert.main", "droppos.backbones.convert") in pairs
    assert ("droppos.cli", "droppos.errors") in pairs  # an import inside a function counts


def test_no_import_circles():
    found = cycles(edges())
    assert not found, "import circles: " + "; ".join(" <-> ".join(c) for c in found)


def test_imports_flow_down_the_layers():
    wrong = []
    for e in edges():
        if e.importer in CONTAINERS:
            wrong.append(f"{e} (a container imports the namespace)")
            continue
        a, b = _layer(e.importer), _layer(e.imported)
        if b is None:
            continue  # a container package (its docstring only)
        if b[0] < a[0]:
            wrong.append(f"{e}: upward, {a[1]} is below {b[1]}")
        elif b[0] == a[0] and a[1] != b[1]:
            wrong.append(f"{e}: {a[1]} and {b[1]} are independent")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


@pytest.mark.parametrize("importer, imported, why", [
    ("droppos.utils.metrics", "droppos.bench.plan", "upward"),
    ("droppos.pretrain.engine", "droppos.transfer.detection.train", "independent"),
])
def test_the_contract_catches_a_wrong_import(importer, imported, why):
    """The rule above rejects an upward and a sideways import (so a passing contract means something)."""
    a, b = _layer(importer), _layer(imported)
    assert (b[0] < a[0]) if why == "upward" else (b[0] == a[0] and a[1] != b[1])
