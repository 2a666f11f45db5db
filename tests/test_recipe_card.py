"""Recipe cards: `paper` and `fair` equal their sources except named deliberate differences; per-backbone
recipes reach the commands; bad recipe entries are one line naming the spec key."""

import copy

import pytest
import yaml

from droppos.bench.card import UNDECLARED, build_card
from droppos.bench.plan import build_plan
from droppos.bench.recipes import RECIPES
from droppos.bench.spec import SpecError, load_spec, parse_spec, shipped_specs
from droppos.cli import main as cli


def raw_spec(name: str) -> dict:
    return yaml.safe_load(shipped_specs()[name].read_text())


@pytest.mark.parametrize("name", ["paper", "fair"])
def test_shipped_cards_differ_only_where_a_reason_is_named(name, tmp_path, capsys):
    spec = load_spec(shipped_specs()[name])
    sections, without = build_card(spec)
    assert not [(s.task, r.field) for s in sections for r in s.undeclared]
    deliberate = {(s.task, r.field) for s in sections for r in s.rows if r.verdict.startswith("differs (deliberate")}
    assert deliberate == {("segmentation", "optim_wrapper.type")}
    assert without == ["knn", "position", "order"]
    # every backbone of every recipe task has a table, under its own size's recipe
    for task in ("finetune", "linear", "detection", "segmentation"):
        covered = {(b, s.recipe.name) for s in sections if s.task == task for b in s.backbones}
        assert {b for b, _ in covered} == {b.name for b in spec.backbones}
        assert all(r.endswith(("l16", "l_100ep")) == b.endswith("_l") for b, r in covered)
    assert cli(["bench", name, "--recipe-card", "--out", str(tmp_path)]) == 0
    md = (tmp_path / "recipe_card.md").read_text()
    assert "Every field equals its source, except the deliberate differences and declared choices named above." in md
    assert (tmp_path / "recipe_card.json").is_file() and "| field | ours | published | source |" in capsys.readouterr().out


def test_paper_runs_each_backbone_with_its_own_recipe():
    spec = load_spec(shipped_specs()["paper"])
    sections, _ = build_card(spec)
    by = {(s.task, b): s for s in sections for b in s.backbones}
    assert by["pretrain", "droppos"].recipe.name == "droppos_pretrain_b16"
    assert by["finetune", "droppos"].recipe.name == "droppos_finetune_b16"
    assert by["finetune", "mae"].recipe.name == "mae_finetune_b16"
    assert by["finetune", "mae_l"].recipe.name == "mae_finetune_l16"
    rows = {r.field: r for r in by["pretrain", "droppos"].rows}
    for field, value in [("smooth_norm", "released"), ("clip_grad", 5.0), ("clip_mode", "official"),
                         ("precision", "fp32"), ("decay_exempt", "official")]:
        assert rows[field].ours == value and rows[field].verdict == "same"
    batch = rows["effective_batch"]  # three official statements: the paper's is followed, and the card says why
    assert batch.ours == 4096 and batch.verdict.startswith("sources disagree; follows the first source (declared:")
    assert [v for v, _ in batch.others] == [2048, 512] and "PRETRAIN.md:4" in batch.others[0][1]
    cmds = {r.id: r.args for r in build_plan(spec, "OUT")}
    ft_dp, ft_mae = cmds["droppos/finetune/seed0"], cmds["mae/finetune/seed0"]
    assert ft_dp[ft_dp.index("--blr") + 1] == "0.001" and ft_dp[ft_dp.index("--train-pos-embed") + 1] == "false"
    assert ft_mae[ft_mae.index("--blr") + 1] == "0.0005" and ft_mae[ft_mae.index("--layer-decay") + 1] == "0.65"
    assert cmds["droppos_l/detection/seed0"][2] == "mask_rcnn_vitdet_l_100ep"
    assert cmds["droppos/detection/seed0"][2] == "mask_rcnn_vitdet_b_100ep"
    seg_l = cmds["mae_l/segmentation/seed0"]
    assert seg_l[seg_l.index("--config") + 1] == "upernet_mae_l16_ade20k_512"


def write(tmp_path, raw, name="spec.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(raw, sort_keys=False))
    return p


def test_an_undeclared_difference_fails_the_card_and_a_reason_makes_it_deliberate(tmp_path, capsys):
    raw = raw_spec("paper")
    raw["tasks"][0]["per_backbone"]["droppos"]["options"]["blr"] = 2.0e-3
    raw["backbones"][0]["pretrain"]["precision"] = "bf16"
    assert cli(["bench", str(write(tmp_path, raw)), "--recipe-card", "--out", str(tmp_path / "a")]) == 1
    md = (tmp_path / "a" / "recipe_card.md").read_text()
    assert f"| blr | 0.002 | 0.001 |" in md and UNDECLARED in md and "2 field(s) differ without a declared reason" in md
    raw["tasks"][0]["per_backbone"]["droppos"]["deviations"] = {"blr": "tuned for this data"}
    raw["backbones"][0]["deviations"]["precision"] = "bf16 on H100s"
    assert cli(["bench", str(write(tmp_path, raw)), "--recipe-card", "--out", str(tmp_path / "b")]) == 0
    assert "differs (deliberate: tuned for this data)" in (tmp_path / "b" / "recipe_card.md").read_text()


@pytest.mark.parametrize("edit,message", [
    (lambda r: r["tasks"][0].update(recipe="nope"), "tasks[0] (finetune).recipe: no published recipe named 'nope'"),
    (lambda r: r["tasks"][0].update(recipe="vitdet_b_100ep"), "'vitdet_b_100ep' is a detect recipe, not a classify one"),
    (lambda r: r["tasks"][0].update(recipe="mae_linear_b16"), "'mae_linear_b16' is a linear recipe; this task runs finetune"),
    (lambda r: r["tasks"][0]["per_backbone"].update(ghost={"options": {}}),
     "tasks[0] (finetune).per_backbone.ghost: 'ghost' is not a backbone this task runs on"),
    (lambda r: r["tasks"][0]["per_backbone"]["droppos"].update(protocol="linear"),
     "tasks[0] (finetune).per_backbone.droppos: unknown key(s) ['protocol']"),
    (lambda r: r["tasks"][0].update(deviations={"blr": ""}), "tasks[0] (finetune).deviations.blr: a deliberate difference needs its reason"),
    (lambda r: r["backbones"][1].update(recipe="droppos_pretrain_b16"), "backbones[1] (mae).recipe: applies to backbones pretrained here"),
    (lambda r: r.update(gpus=0), "gpus: expected a positive integer"),
    (lambda r: r["tasks"][0]["per_backbone"]["droppos"]["options"].update(nope=1), "per_backbone.droppos.options: unknown key(s) ['nope']"),
])
def test_bad_recipe_entries_are_one_line_naming_the_key(edit, message):
    raw = copy.deepcopy(raw_spec("paper"))
    edit(raw)
    with pytest.raises(SpecError) as e:
        parse_spec(raw, "paper.yaml")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_every_recipe_value_has_a_source():
    for r in RECIPES.values():
        assert r.fields and all(p.source.strip() for p in r.fields.values()), r.name


@pytest.mark.parametrize("name", ["paper", "fair"])
def test_the_cards_in_docs_are_what_the_command_writes(name, tmp_path):
    from pathlib import Path

    from droppos.bench.card import write_card

    md, _ = write_card(load_spec(shipped_specs()[name]), tmp_path)
    shipped = Path(__file__).resolve().parents[1] / "docs" / f"recipe_card_{name}.md"
    assert md.read_text() == shipped.read_text(), f"regenerate: droppos bench {name} --recipe-card, copy to {shipped}"


def test_a_spec_without_recipes_says_so(tmp_path):
    assert cli(["bench", "smoke", "--recipe-card", "--out", str(tmp_path)]) == 0
    md = (tmp_path / "recipe_card.md").read_text()
    assert "No run of this spec names a published recipe" in md and "Every field equals" not in md


def test_a_field_whose_sources_disagree_needs_the_spec_to_name_its_choice(tmp_path):
    """The DropPos ViT-B batch: paper 4096, PRETRAIN.md 2048, the script 512. Following any of them without
    saying which fails the card; following PRETRAIN.md with a reason names that source."""
    from droppos.bench.card import UNCHOSEN

    raw = raw_spec("paper")
    del raw["backbones"][0]["deviations"]
    assert cli(["bench", str(write(tmp_path, raw)), "--recipe-card", "--out", str(tmp_path / "a")]) == 1
    md = (tmp_path / "a" / "recipe_card.md").read_text()
    assert f"| effective_batch | 4096 | 4096 |" in md and UNCHOSEN in md and "1 field(s) differ" in md
    assert "| effective_batch (other source 1) | | 2048 |" in md and "| effective_batch (other source 2) | | 512 |" in md
    raw["backbones"][0]["pretrain"]["accum_iter"] = 4
    raw["backbones"][0]["deviations"] = {"effective_batch": "the repository's own instructions"}
    assert cli(["bench", str(write(tmp_path, raw)), "--recipe-card", "--out", str(tmp_path / "b")]) == 0
    assert ("| effective_batch | 2048 | 4096 |" in (tmp_path / "b" / "recipe_card.md").read_text()
            and "follows other source 1 (declared: the repository's own instructions)" in (tmp_path / "b" / "recipe_card.md").read_text())
    raw["backbones"][0]["pretrain"]["accum_iter"] = 3  # 1536: none of the sources, so a plain deliberate difference
    assert cli(["bench", str(write(tmp_path, raw)), "--recipe-card", "--out", str(tmp_path / "c")]) == 0
    assert "differs (deliberate: the repository's own instructions)" in (tmp_path / "c" / "recipe_card.md").read_text()
