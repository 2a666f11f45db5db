"""Package discovery for the one import namespace ``droppos``, whose subpackages are the repository's
top-level folders (``[tool.setuptools] package-dir`` in pyproject.toml, the one place that mapping is
written): setuptools' ``find_packages`` lists every package under each mapped folder, so a new
subpackage needs no edit here. Everything else is in pyproject.toml."""

import sys
from pathlib import Path

from setuptools import find_packages, setup

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

HERE = Path(__file__).resolve().parent
PACKAGE_DIR = tomllib.loads((HERE / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]


def namespace_packages() -> list[str]:
    """Every package of the namespace: each mapped folder and the packages found under it, named in the
    namespace (``pretrain/configs`` -> ``droppos.pretrain.configs``)."""
    found = []
    for name, folder in PACKAGE_DIR.items():
        found.append(name)
        found += [f"{name}.{sub}" for sub in find_packages(str(HERE / folder), exclude=["*.tests", "tests"])]
    return sorted(set(found))


setup(packages=namespace_packages())
