"""What a ``--backbone`` string names is decided in one place: droppos.backbones.naming.parse_source."""

from __future__ import annotations

import ast

import pytest
import torch
from droppos.backbones import naming
from droppos.backbones.naming import ENGINE_SCRATCH, FILE, FOLDER, GENERIC, HUB, SCRATCH, parse_source
from droppos.backbones.options import BackboneOptions

from droppos.errors import UserError
from import_graph import modules


@pytest.mark.parametrize("text, kind, prefix, rest", [
    ("scratch", ENGINE_SCRATCH, "", ""),
    ("scratch:tiny_p4_32", SCRATCH, "scratch", "tiny_p4_32"),
    ("scratch:", SCRATCH, "scratch", ""),
    ("hf:facebook/vit-mae-base@main", HUB, "hf", "facebook/vit-mae-base@main"),
    ("timm:vit_small_patch16_224", GENERIC, "timm", "vit_small_patch16_224"),
    ("timm:convnext_tiny:/ckpt/c.safetensors", GENERIC, "timm", "convnext_tiny:/ckpt/c.safetensors"),
    ("timm:vit_base_patch16_224.augreg_in21k", GENERIC, "timm", "vit_base_patch16_224.augreg_in21k"),
    ("hf-hub:timm/vit_small_patch16_224.dino", GENERIC, "hf-hub", "timm/vit_small_patch16_224.dino"),
    ("runs/x/encoder.pth", FILE, "", ""),
    ("unknownplugin:/w.pth", FILE, "", ""),  # not registered: a file name with a ':' (the reader says it is missing)
    ("scratchy.pth", FILE, "", ""),
    ("hfx:org/repo", FILE, "", ""),
])
def test_each_syntax_names_its_kind(text, kind, prefix, rest):
    name = parse_source(text)
    assert (name.text, name.kind, name.prefix, name.rest) == (text, kind, prefix, rest)
    assert name.generic == (kind == GENERIC)
    assert name.model_folder == (kind in (HUB, FOLDER))
    assert name.scratch == (kind in (ENGINE_SCRATCH, SCRATCH))
    assert parse_source(name) is name and str(name) == text


def test_existing_paths_are_files_or_folders_even_with_a_colon(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "timm:odd.pth").write_bytes(b"")
    assert parse_source("timm:odd.pth").kind == FILE
    folder = tmp_path / "vit"
    folder.mkdir()
    assert parse_source(str(folder)).kind == FILE  # a folder without config.json is no model folder
    (folder / "config.json").write_text("{}")
    assert parse_source(str(folder)).kind == FOLDER


def test_a_registered_plugin_is_generic_and_reserved_prefixes_cannot_be_registered(monkeypatch):
    monkeypatch.setattr(naming, "_REGISTRY", {})
    assert parse_source("mine:/w.pth").kind == FILE
    naming.register("mine", lambda **kw: torch.nn.Identity())
    name = parse_source("mine:/w.pth")
    assert (name.kind, name.prefix, name.rest) == (GENERIC, "mine", "/w.pth")
    for bad in ("scratch", "timm", "hf", "hf-hub", "", "a:b"):
        with pytest.raises(UserError, match="cannot register a backbone named"):
            naming.register(bad, lambda **kw: None)


def test_options_and_readers_take_the_parsed_kind():
    assert BackboneOptions(backbone="timm:vit_small_patch16_224").source.generic
    with pytest.raises(UserError, match="--arch applies to checkpoint files, not to timm: sources"):
        BackboneOptions(backbone="timm:vit_small_patch16_224", arch="num_heads=6").read()
    with pytest.raises(UserError, match="engine's own random init exists in detect and segment only"):
        BackboneOptions(backbone="scratch").read()


#: the source syntax's own prefixes; timm's model names (``hf-hub:...``) are timm's syntax, read in .generic
_PREFIXES = {"scratch", "scratch:", "hf", "hf:", "timm", "timm:"}


def _prefix_tests(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr in ("startswith", "removeprefix", "partition") and node.args:
            arg = node.args[0]
            values = [e for e in arg.elts] if isinstance(arg, ast.Tuple) else [arg]
            if any(isinstance(v, ast.Constant) and v.value in _PREFIXES for v in values):
                yield node.lineno


def test_no_module_but_naming_reads_the_source_syntax():
    """Every other module asks parse_source; a new ``src.startswith("timm:")`` elsewhere fails here."""
    found = {name: list(_prefix_tests(ast.parse(path.read_text()))) for name, path in modules().items()
             if name != "droppos.backbones.naming"}
    assert {n: lines for n, lines in found.items() if lines} == {}
    assert list(_prefix_tests(ast.parse('src.startswith(("scratch", "x"))\nsrc.removeprefix("hf:")'))) == [1, 2]
