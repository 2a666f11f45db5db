"""Every published recipe value against the source line it cites, as stored beside this test
(tests/fixtures/recipe_sources.json: the text of each cited line at the pinned commits, written by
tests/fixtures/make_recipe_sources.py from the released code). A value must be what its line says: a
number among the line's numbers, a string in its text, a flag passed or defaulted as the value says. The
few values no single line states (a product of two lines, a default of a library) are listed below with
why, and must still cite lines that exist."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from recipe_citations import PINS, citations, published as all_published

SOURCES = json.loads((Path(__file__).parent / "fixtures" / "recipe_sources.json").read_text())
CITED = citations()

#: (field, our value) -> how the cited line spells it (this project's vocabulary for the release's options)
SPELLED = {
    ("method", "droppos"): "--drop_pos_type mae_pos_target",  # the DropPos objective of the release
    ("multi_task", False): "--drop_pos_type mae_pos_target",  # not 'multi_task'
    ("global_pool", "avg"): "global_pool=True",  # average pooling of the patch tokens, then fc_norm
    ("clip_grad", 0.0): "'--clip_grad', type=float, default=None",  # None: no clipping (ours: 0)
    ("optimizer", "lars"): "LARS(",
    ("precision", "fp32"): "'--use_fp16', type=utils.bool_flag, default=False",
    # CUDA autocast's default dtype is float16 (the loss scaler beside it is the other cited line)
    ("precision", "fp16"): "torch.cuda.amp.autocast()",
    ("train_pos_embed", False): "if not fix_pos_emb:",  # the fixed table is frozen unless fix_pos_emb is off
}

#: (field) -> why its value is on no single cited line; the source string says how it follows from them
DERIVED: dict[str, str] = {
    "effective_batch": "per-GPU batch (the cited line) x the number of GPUs (a paper's text or the config name)",
    "clip_mode": "a name for the released clipping function's behaviour, cited by its definition",
    "decay_exempt": "a name for the released weight-decay grouping, cited by its call",
    "smooth_norm": "a name for the released normalisation of the smoothing map, cited by its three lines",
    "min_scale": "timm create_transform's default scale, cited by the call that uses it",
    "cache_features": "a per-epoch augmentation (cited) cannot be cached: the value is its consequence",
}

_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?(?![\w.])")


def numbers(text: str) -> list[float]:
    return [float(x) for x in _NUMBER.findall(text)]


def says(value, text: str) -> bool:
    """Whether ``text`` (one source line) states ``value``."""
    if isinstance(value, bool):
        if value:
            return bool(re.search(r"\bTrue\b", text)) or bool(re.search(r"--\w+\s*\\?\s*$", text.strip() + " "))
        return bool(re.search(r"\bFalse\b", text)) or "store_true" in text
    if isinstance(value, (int, float)):
        return any(math.isclose(float(value), x, rel_tol=1e-9, abs_tol=0.0) for x in numbers(text))
    if isinstance(value, str):
        return value in text
    if isinstance(value, (list, tuple)):
        return all(says(v, text) for v in value)
    return False


#: ViT-L recipes that may cite a ViT-B file, and why
BASE_FILE_OF_L = {
    "vitdet_l_100ep": "mask_rcnn_vitdet_l_100ep.py imports the schedule, optimizer and AMP of mask_rcnn_vitdet_b_100ep.py",
    "upernet_mae_l16": "mmsegmentation has no MAE ViT-L UperNet config: the ViT-B one is carried over (a derived recipe)",
}


def test_a_vit_l_recipe_cites_the_vit_l_files():
    """A ViT-L value cited from a ViT-B script is right only by chance (finetune_base.sh for ViT-L was)."""
    wrong = [(r, f, c.path) for (r, f), cs in CITED.items() for c in cs
             if ("l16" in r or "_l_" in r) and r not in BASE_FILE_OF_L and re.search(r"base|_b_|_b16", c.path)]
    assert not wrong, wrong


def test_the_stored_lines_are_at_the_pinned_commits():
    assert SOURCES["pins"] == PINS
    wanted = {c.key for cs in CITED.values() for c in cs}
    assert wanted <= set(SOURCES["lines"]), sorted(wanted - set(SOURCES["lines"]))[:5]


@pytest.mark.parametrize("recipe,field", sorted(k for k, v in CITED.items() if v))
def test_each_value_is_what_its_line_says(recipe, field):
    published = all_published()[recipe, field]
    field = field.split("~")[0]
    lines = {c.key: SOURCES["lines"][c.key] for c in CITED[recipe, field]}
    spelled = SPELLED.get((field, published.value)) if not isinstance(published.value, list) else None
    if spelled is not None:
        assert any(spelled in t for t in lines.values()), (recipe, field, lines)
        return
    if field in DERIVED:
        assert all(t.strip() for t in lines.values()), lines  # the lines it is derived from exist and say something
        return
    assert any(says(published.value, t) for t in lines.values()), (
        f"{recipe}.{field} = {published.value!r} is not what {published.source!r} says: {lines}")
