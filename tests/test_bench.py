"""droppos bench (droppos/bench): spec checks, the plan and its dry-run, commands, and real runs of a
tiny spec through the CLI: skip finished, resume partial, carry on past a failure, SLURM path."""

from __future__ import annotations

import json
import re
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from droppos.bench.commands import Launch, flags, launch_command, overrides
from droppos.bench.plan import build_plan, select
from droppos.bench.spec import SpecError, load_spec, parse_spec, resolve_spec_path, shipped_specs
from droppos.bench.state import status
from droppos.cli import main


def make_imagefolder(root, n_train=6, n_val=3, size=16, classes=3, seed=0):
    """Noisy colour-coded classes, tiny."""
    rng = np.random.default_rng(seed)
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
    for split, n in (("train", n_train), ("val", n_val)):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                a = np.clip(np.array(colours[c])[None, None] + rng.normal(0, 40, (size, size, 3)), 0, 255)
                Image.fromarray(a.astype(np.uint8)).save(d / f"{i}.png")
    return root


TINY = """\
name: tiny
seeds: [0]
data:
  imagefolder: {{path: {data}, build: false}}
backbones:
  - name: dp
    pretrain: {{method: droppos, model: tiny, patch_size: 4, img_size: 16, epochs: 1, warmup_epochs: 0,
               batch_size: 6, workers: 0, log_every: 1, decoder_dim: 32, decoder_heads: 2}}
  - name: scratch
    checkpoint: scratch:tiny_p4_16
  - name: bad                     # its pretraining data do not exist: it fails, its tasks are blocked
    pretrain: {{method: mae, model: tiny, patch_size: 4, img_size: 16, epochs: 1, warmup_epochs: 0, data: {data}/../none}}
tasks:
  - {{name: broken, kind: classify, protocol: linear, backbones: [scratch], options: {{img_size: 18, workers: 0}}}}
  - {{name: knn, kind: classify, protocol: knn, options: {{k: 3, batch_size: 16, workers: 0}}}}
"""


def write_spec(tmp_path, text: str, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    data = make_imagefolder(root / "imgs")
    return write_spec(root, TINY.format(data=data))


# ------------------------------------------------------------------------------------ spec checks
GOOD = {"name": "s", "data": {"imagefolder": {"path": "d"}},
        "backbones": [{"name": "a", "checkpoint": "scratch:tiny_p4_16"}],
        "tasks": [{"name": "knn", "kind": "classify", "protocol": "knn"}]}


def _with(path: str, value):
    """GOOD with the value at a dotted path (list indices as numbers) replaced; None deletes it."""
    spec = json.loads(json.dumps(GOOD))
    *parents, last = path.split(".")
    node = spec
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if value is None:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return spec


@pytest.mark.parametrize("path, value, key, words", [
    ("seeds", [0, 0], "seeds", "repeated"),
    ("seeds", "zero", "seeds", "non-negative integers"),
    ("tasks", [], "tasks", "non-empty"),
    ("backbones.0.name", "pre train", "backbones[0].name", "usable name"),
    ("backbones.0.name", "results", "backbones[0].name", "reserved"),
    ("backbones.0.checkpoint", None, "backbones[0] (a)", "exactly one of"),
    ("backbones.0.from", "pickle", "backbones[0] (a).from", "converter format"),
    ("backbones.0", {"name": "a", "pretrain": {"epochz": 3}}, "backbones[0] (a).pretrain",
     "'epochz': did you mean 'epochs'?"),
    ("tasks.0.options", {"temprature": 0.1}, "tasks[0] (knn).options", "'temprature': did you mean 'temperature'?"),
    ("backbones.0", {"name": "a", "pretrain": {"output": "x"}}, "backbones[0] (a).pretrain.output", "set by the bench"),
    ("backbones.0", {"name": "a", "pretrain": {"img_size": 30, "patch_size": 16}}, "backbones[0] (a).pretrain",
     "not divisible"),
    ("tasks.0.kind", "classification", "tasks[0] (knn).kind", "not a task kind"),
    ("tasks.0.protocol", "lin", "tasks[0] (knn).protocol", "finetune"),
    ("tasks.0.options", {"epochs": 3}, "tasks[0] (knn).options", "epochs"),
    ("tasks.0.options", {"output": "x"}, "tasks[0] (knn).options.output", "set by the bench"),
    ("tasks.0.options", {"k": {"a": 1}}, "tasks[0] (knn).options.k", "expected a number"),
    ("tasks.0.data", "coco", "tasks[0] (knn).data", "no data named"),
    ("tasks.0.schedule", {"steps": 3}, "tasks[0] (knn).schedule", "epochs: N"),
    ("tasks.0.backbones", ["b"], "tasks[0] (knn).backbones", "unknown backbone"),
    ("tasks.0.needs", ["knn"], "tasks[0] (knn)", "cannot wait for itself"),
    ("tasks.0.options", {"k": "{data:nope}"}, "tasks[0] (knn).options", "names no data"),
    ("tasks.0", {"name": "det", "kind": "detect", "config": "x"}, "tasks[0] (det).data", "coco dataset"),
    ("data.imagefolder.kind", "folder", "data.imagefolder.kind", "not a data kind"),
    ("data.imagefolder.build", {"size": 32, "canvas": 9}, "data.imagefolder.build", "canvas"),
    ("data.imagefolder.path", None, "data.imagefolder", "path"),
    ("colour", "red", "", "unknown key"),
])
def test_spec_errors_name_the_file_and_key(path, value, key, words):
    with pytest.raises(SpecError) as e:
        parse_spec(_with(path, value), "my_spec.yaml")
    msg = str(e.value)
    assert msg.startswith(f"my_spec.yaml: {key}") and words in msg, msg


def test_spec_cycle_and_missing_reference():
    tasks = [{"name": "a", "kind": "classify", "protocol": "knn", "needs": ["b"]},
             {"name": "b", "kind": "classify", "protocol": "knn", "options": {"dataset": "{task:a}"}}]
    with pytest.raises(SpecError, match=r"cycle: (a -> b -> a|b -> a -> b)"):
        parse_spec(_with("tasks", tasks), "s.yaml")
    with pytest.raises(SpecError, match="waits for task 'zz'"):
        parse_spec(_with("tasks", [{**tasks[0], "needs": ["zz"]}]), "s.yaml")


def test_spec_file_errors(tmp_path):
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "none.yaml")
    bad = write_spec(tmp_path, "name: [unclosed\n")
    with pytest.raises(SpecError, match=f"{bad}: not valid YAML"):
        load_spec(bad)
    with pytest.raises(SpecError, match="shipped: .*paper.*smoke"):
        resolve_spec_path("nonesuch")
    assert resolve_spec_path("smoke") == shipped_specs()["smoke"]


def test_shipped_specs_plan_every_task():
    smoke = load_spec(resolve_spec_path("smoke"))
    runs = build_plan(smoke, "OUT")
    kinds = {r.kind for r in runs}
    assert kinds == {"data", "pretrain", "classify", "detect", "segment", "probe"}
    assert {b.name for b in smoke.backbones} == {"droppos", "mae", "supervised", "scratch"}
    # 3 pretrainings; per backbone fine-tune, order probe, detection, segmentation and k-NN once, linear, the
    # position probe and the two dense probes over three seeds
    assert len([r for r in runs if r.kind != "data"]) == 3 + 4 * (5 + 4 * 3)
    dense = next(r for r in runs if r.id == "mae/dense4/seed2")  # a probe's own column: its config's protocol
    assert dense.plan["protocol"] == "linear4" and dense.args[dense.args.index("--config") + 1] == "linear4_vit_fmnist"
    assert next(r for r in runs if r.id == "mae/segmentation/seed0").plan["protocol"] == "upernet"
    # every downstream run of a pretrained backbone waits for its pretraining and reads its encoder
    ft = next(r for r in runs if r.id == "mae/finetune/seed0")
    assert "mae/pretrain" in ft.deps and "data/imagefolder" in ft.deps
    assert ft.args[ft.args.index("--backbone") + 1] == "OUT/mae/pretrain/encoder.pth"
    seg = next(r for r in runs if r.id == "droppos/segmentation/seed0")
    assert "model.backbone.patch_size=8" in seg.args and "randomness.seed=0" in seg.args
    seg_task = next(t for t in smoke.tasks if t.name == "segmentation")
    assert seg.plan == {"task": "segmentation", "protocol": "upernet", "dataset": "fmnist", "seed": 0,
                        "schedule": {"iters": seg_task.options["train_cfg.max_iters"]}}
    pt = next(r for r in runs if r.id == "droppos/pretrain")  # its own unlabelled image set
    assert "data/pretrain_images" in pt.deps and "data/imagefolder" not in pt.deps
    paper = load_spec(resolve_spec_path("paper"))
    assert {t.name for t in paper.tasks} >= {"finetune", "linear", "knn", "detection", "segmentation"}
    assert next(b for b in paper.backbones if b.name == "droppos").pretrain["epochs"] == 800
    assert build_plan(paper, "OUT")  # plans without the data or checkpoints being there
    # smoke3 extends smoke: the same backbones and tasks, three seeds of every seeded downstream task (k-NN once)
    smoke3 = load_spec(resolve_spec_path("smoke3"))
    runs3 = build_plan(smoke3, "OUT3")
    assert smoke3.name == "smoke3" and [b.name for b in smoke3.backbones] == [b.name for b in smoke.backbones]
    assert len([r for r in runs3 if r.kind != "data"]) == 3 + 4 * (8 * 3 + 1)
    assert {r.seed for r in runs3 if r.kind == "detect"} == {0, 1, 2}


def test_a_spec_extends_another_and_cycles_are_refused(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\nname: a\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\nname: b\n")
    with pytest.raises(SpecError, match="a cycle"):
        load_spec(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: nowhere\nname: c\n")
    with pytest.raises(SpecError, match="nowhere: no such spec file"):
        load_spec(tmp_path / "c.yaml")


def test_dry_run_table_and_select(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["bench", str(tiny), "--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    lines = [line for line in text.splitlines() if line.startswith(("dp/", "scratch/", "data/"))]
    assert [line.split()[0] for line in lines] == ["data/imagefolder", "dp/pretrain", "dp/knn/seed0",
                                                    "scratch/broken/seed0", "scratch/knn/seed0"]
    assert "bad/pretrain" in text and "bad/knn/seed0" in text
    knn = next(line for line in lines if line.startswith("scratch/knn/seed0"))
    assert knn.split()[1:6] == ["scratch", "knn", "0", str(out / "scratch/knn/seed0"), "todo"]
    assert "droppos classify knn --resume --backbone scratch:tiny_p4_16" in knn and "--k 3" in knn
    assert "7 runs: 1 done, 6 todo" in text and not out.exists()  # a dry run writes nothing
    runs = build_plan(load_spec(tiny), out)
    assert [r.id for r in select(runs, ["dp/knn/*"])] == ["data/imagefolder", "dp/pretrain", "dp/knn/seed0"]
    assert main(["bench", str(tiny), "--out", str(out), "--only", "nope/*"]) == 2


def test_bad_options_are_refused(tiny, capsys):
    assert main(["bench", str(tiny), "--partition", "gpu"]) == 2
    assert "--partition applies to --slurm only" in capsys.readouterr().err
    assert main(["bench", str(tiny), "--slurm", "--jobs", "2"]) == 2
    assert main(["bench", str(tiny), "--jobs", "0"]) == 2


# ------------------------------------------------------------------------------------ commands
def test_flags_overrides_and_launchers():
    assert flags({"warmup_epochs": 1, "aa": "", "train_pos_embed": False, "lr": None}) == \
        ["--warmup-epochs", "1", "--aa", "", "--train-pos-embed", "false", "--lr", "none"]
    assert overrides({"a.b": [2, 0.5], "c": True, "d": "x"}) == ["a.b=[2,0.5]", "c=True", "d=x"]
    one = launch_command("classify", ["classify", "knn"], Launch(), "py")
    assert one == ["py", "-m", "droppos.cli", "classify", "knn"]
    assert launch_command("probe", ["probe", "order"], Launch(gpus=4), "py") == ["py", "-m", "droppos.cli", "probe", "order"]
    multi = launch_command("pretrain", ["pretrain"], Launch(gpus=8, nodes=2, node_rank=1, master_addr="n0"), "py")
    assert multi[:3] == ["py", "-m", "torch.distributed.run"] and multi[-3:] == ["-m", "droppos.cli", "pretrain"]
    assert multi[multi.index("--node-rank") + 1] == "1" and multi[multi.index("--master-addr") + 1] == "n0"
    seg = launch_command("segment", ["segment", "--resume", "--cfg-options", "a=1"], Launch(gpus=2), "py")
    assert "--standalone" in seg and seg[-4:] == ["--launcher", "pytorch", "--cfg-options", "a=1"]
    det = launch_command("detect", ["detect", "--resume", "train.max_iter=3"], Launch(gpus=4, nodes=2, master_addr="h"))
    assert det[3:] == ["detect", "--num-gpus", "4", "--num-machines", "2", "--machine-rank", "0",
                       "--dist-url", "tcp://h:29500", "--resume", "train.max_iter=3"]


# ------------------------------------------------------------------------------------ real runs
@pytest.mark.slow
def test_bench_runs_skips_resumes_and_carries_on_past_failures(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "out"
    # an interrupted earlier attempt of scratch/knn: resumed (started again with --resume)
    stale = out / "scratch" / "knn" / "seed0"
    stale.mkdir(parents=True)
    (stale / "run.json").write_text(json.dumps({"status": "running", "attempts": 1}))
    runs = {r.id: r for r in build_plan(load_spec(tiny), out)}
    assert status(runs["scratch/knn/seed0"]) == "partial"

    rc = main(["bench", str(tiny), "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 1  # the broken task failed ...
    for bb in ("dp", "scratch"):  # ... and everything else finished, scratch/knn after the failure
        m = json.loads((out / bb / "knn" / "seed0" / "metrics.json").read_text())
        assert m["status"] == "finished" and m["protocol"] == "knn" and 0 <= m["metrics"]["top1"] <= 100
    plan = json.loads((out / "scratch" / "broken" / "seed0" / "run.json").read_text())
    assert plan["status"] == "failed" and plan["returncode"] == 2 and "exit code 2" in plan["error"]
    assert "--img-size 18" in plan["command"] and "18" in plan["error"].split("\n", 1)[1]
    assert plan["backbone"]["method"] == "scratch" and plan["task"] == "classification" and plan["protocol"] == "linear"
    assert (out / "scratch" / "broken" / "seed0" / "bench.log").is_file()
    assert text.index("scratch/broken/seed0: FAILED") < text.index("scratch/knn/seed0: start")
    assert (out / "dp" / "pretrain" / "encoder.pth").is_file()
    resumed = json.loads((stale / "run.json").read_text())
    assert resumed["status"] == "finished" and resumed["attempts"] == 2
    assert resumed["schema"] == "droppos-bench/run/v1" and resumed["backbone"]["arch"] == "vit_tiny_p4"
    assert "scratch/knn/seed0: start (resuming)" in text
    assert "runs: 1 blocked, 1 done, 2 failed, 3 finished" in text
    assert "failed: scratch/broken/seed0: exit code 2" in text and "bad/pretrain: FAILED" in text
    # a failed pretraining blocks the runs that need it, and only those
    assert "bad/knn/seed0: BLOCKED: needs bad/pretrain, which did not finish" in text
    assert json.loads((out / "bad" / "knn" / "seed0" / "run.json").read_text())["status"] == "blocked"
    # the aggregator ran: finished runs in the table, the failed one listed as a run without numbers
    md = (out / "results" / "results.md").read_text()
    assert f"table:  {out / 'results' / 'results.md'}" in text and (out / "results" / "results.png").is_file()
    assert "cls knn" in md and "scratch/broken/seed0" in md
    assert "| failed |" in md  # the failed task's cell says so (not 'missing')
    assert json.loads((out / "plan.json").read_text())["runs"][0]["run"] == "data/imagefolder"

    # again: finished runs are skipped (no new attempt, metrics untouched), only the failed ones rerun
    before = (out / "dp" / "knn" / "seed0" / "metrics.json").stat().st_mtime_ns
    assert main(["bench", str(tiny), "--out", str(out), "--only", "dp/*", "scratch/knn/*", "--no-results"]) == 0
    text = capsys.readouterr().out
    assert ": start" not in text and "runs: 4 done" in text and "dp/knn/seed0: already finished, skipped" in text
    assert (out / "dp" / "knn" / "seed0" / "metrics.json").stat().st_mtime_ns == before
    assert main(["bench", str(tiny), "--out", str(out), "--dry-run"]) == 0
    table = capsys.readouterr().out
    assert "7 runs: 4 done, 2 failed, 1 todo" in table
    # a finished run made with other options than the spec's now: still skipped, but said
    knn_plan = out / "dp" / "knn" / "seed0" / "run.json"
    knn_plan.write_text(json.dumps({**json.loads(knn_plan.read_text()), "command": "droppos classify knn --old"}))
    assert main(["bench", str(tiny), "--out", str(out), "--dry-run"]) == 0
    table = capsys.readouterr().out
    assert "1 done*" in table and "delete its folder to redo it" in table
    assert main(["bench", str(tiny), "--out", str(out), "--only", "dp/knn/*", "--no-results"]) == 0
    assert "dp/knn/seed0: already finished, skipped (made with other options" in capsys.readouterr().out


def test_slurm_without_submitit_is_a_clear_error(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if not installed
    assert main(["bench", str(tiny), "--out", str(tmp_path / "o"), "--slurm", "--only", "scratch/knn/*"]) == 2
    err = capsys.readouterr().err.strip()
    assert re.search(r"needs submitit.*pip install 'droppos-bench\[cluster\]'", err) and len(err.splitlines()) == 1


@pytest.mark.slow
def test_slurm_path_through_submitit_local_executor(tiny, tmp_path, capsys, monkeypatch):
    pytest.importorskip("submitit")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "out"
    rc = main(["bench", str(tiny), "--out", str(out), "--slurm", "--slurm-cluster", "local", "--wait",
               "--only", "scratch/knn/*", "--no-results"])
    assert rc == 0, capsys.readouterr()
    plan = json.loads((out / "scratch" / "knn" / "seed0" / "run.json").read_text())
    assert plan["status"] == "finished" and plan["job_id"]
    assert json.loads((out / "scratch" / "knn" / "seed0" / "metrics.json").read_text())["status"] == "finished"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_run_dies_with_a_killed_bench(tmp_path):
    """kill -9 of the bench must not leave its run writing on: the restarted bench would race it."""
    import os
    import signal
    import subprocess
    import time

    parent = textwrap.dedent("""
        import subprocess, sys, time
        from droppos.bench.local import die_with_parent
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], preexec_fn=die_with_parent)
        print(child.pid, flush=True)
        time.sleep(60)
    """)
    bench = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    child = int(bench.stdout.readline())
    os.kill(bench.pid, signal.SIGKILL)
    bench.wait()
    for _ in range(100):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        try:
            with open(f"/proc/{child}/stat") as f:  # a zombie awaiting init counts as gone
                if f.read().split(") ")[1][0] == "Z":
                    break
        except FileNotFoundError:
            break
        time.sleep(0.05)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the run outlived the bench")


@pytest.mark.slow
def test_three_external_backbones_of_one_size_give_three_named_rows(tmp_path, capsys):
    """DINO-, MoCo v3- and DeiT-style files of one width: three rows named by their spec keys, with
    deltas only against the row the spec marks as reference."""
    import csv

    import torch
    from layout_files import timm_vit, write_dino_full, write_mocov3

    data = make_imagefolder(tmp_path / "imgs")
    write_dino_full(tmp_path / "dino_full.pth")
    write_mocov3(tmp_path / "vit-s-300ep.pth.tar")
    torch.save({"model": timm_vit(width=384, heads=6, num_classes=3, seed=3).state_dict()}, tmp_path / "deit_s.pth")
    spec = write_spec(tmp_path, f"""\
        name: three
        data:
          imagefolder: {{path: {data}, build: false}}
        backbones:
          - {{name: dino, checkpoint: {tmp_path}/dino_full.pth, method: dino}}
          - {{name: mocov3, checkpoint: {tmp_path}/vit-s-300ep.pth.tar, method: mocov3, epochs: 300}}
          - {{name: deit, checkpoint: {tmp_path}/deit_s.pth, method: supervised, arch: num_heads=6}}
        reference: [deit]
        tasks:
          - {{name: knn, kind: classify, protocol: knn, options: {{k: 3, batch_size: 16, workers: 0}}}}
        """)
    out = tmp_path / "out"
    assert main(["bench", str(spec), "--out", str(out)]) == 0
    rows = [r for r in csv.DictReader((out / "results" / "results.csv").open()) if r["kind"] == "run"
            and r["metric"] == "top1"]
    assert {r["backbone"]: r["method"] for r in rows} == {"dino": "dino", "mocov3": "mocov3", "deit": "supervised"}
    assert [k for k in rows[0] if k.startswith("delta_vs_")] == ["delta_vs_deit"]
    delta = {r["backbone"]: r["delta_vs_deit"] for r in rows}
    assert delta["deit"] == "" and delta["dino"] != "" and delta["mocov3"] != ""
    for r in rows:
        assert float(r["delta_vs_deit"] or 0) == pytest.approx(
            float(r["mean"]) - float(next(x["mean"] for x in rows if x["backbone"] == "deit")), abs=1e-5)


def test_a_generic_backbone_in_a_spec_is_planned_with_its_record(tmp_path):
    from droppos.bench.backbones import backbone_records

    spec = write_spec(tmp_path, """\
        name: g
        data:
          imagefolder: {path: d, build: false}
        backbones:
          - {name: convnext, checkpoint: "timm:test_convnext"}
        tasks:
          - {name: knn, kind: classify, protocol: knn}
        """)
    s = load_spec(spec)
    records, warnings = backbone_records(s.backbones, tmp_path)
    assert warnings == [] and records["convnext"]["id"] == "convnext" and records["convnext"]["arch"] == "test_convnext"
    run = next(r for r in build_plan(s, tmp_path / "out") if r.kind == "classify")
    assert run.args[run.args.index("--backbone") + 1] == "timm:test_convnext"


# ------------------------------------------------------------------------------------ on a cluster
def test_jobs_with_gpus_get_their_own_devices_and_matching_processes(monkeypatch):
    """Defect 6: --jobs 2 --gpus-per-node 8 gave each job 4 GPUs and started torchrun --nproc-per-node 8."""
    from droppos.bench.local import LocalExecutor
    from droppos.errors import UserError

    ex = LocalExecutor({}, jobs=2, launch=Launch(gpus=4))
    monkeypatch.setattr(ex, "_gpu_count", lambda: 8)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert ex._env(0)["CUDA_VISIBLE_DEVICES"] == "0,1,2,3" and ex._env(1)["CUDA_VISIBLE_DEVICES"] == "4,5,6,7"
    cmd = launch_command("pretrain", ["pretrain"], ex.launch, "py")
    assert cmd[cmd.index("--nproc-per-node") + 1] == "4"
    ex.check_devices()
    monkeypatch.setattr(ex, "_gpu_count", lambda: 6)
    with pytest.raises(UserError, match=r"--jobs 2 x --gpus-per-node 4 = 8 GPUs, but 6 are visible"):
        ex.check_devices()
    cpu = LocalExecutor({}, jobs=2, launch=Launch(gpus=2))
    monkeypatch.setattr(cpu, "_gpu_count", lambda: 0)
    cpu.check_devices()  # CPU processes need no GPU
    assert "CUDA_VISIBLE_DEVICES" not in cpu._env(1) and cpu._env(1)["OMP_NUM_THREADS"] == str(
        max(1, (__import__("os").cpu_count() or 1) // 4))


def test_multi_node_jobs_take_their_port_from_the_job_id():
    """Defect 8: every multi-node job used port 29500, so two jobs sharing a first node collided."""
    from droppos.utils.dist import job_port

    a, b = (launch_command("detect", ["detect", "x=1"], Launch(gpus=8, nodes=2, master_addr="n1",
                                                               master_port=job_port(j)), "py") for j in ("101", "102"))
    url_a, url_b = a[a.index("--dist-url") + 1], b[b.index("--dist-url") + 1]
    assert url_a != url_b and url_a == f"tcp://n1:{job_port('101')}"


def test_batches_that_do_not_divide_over_the_processes_are_refused_before_anything_starts(tmp_path, capsys):
    """Defect 8: bench smoke --gpus-per-node 8 broke detectron2's batch divisibility, with no check before."""
    pytest.importorskip("detectron2.config")
    out = tmp_path / "o"
    rc = main(["bench", "smoke", "--out", str(out), "--gpus-per-node", "8", "--only", "droppos/detection/*",
               "scratch/detection/*"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 2
    assert all("dataloader.train.total_batch_size=4 does not divide over 8 processes" in e for e in err)
    assert err[0].startswith("droppos bench: error: droppos/detection/seed0:")
    assert not (out / "plan.json").exists() and not (out / "droppos").exists()  # nothing started
    assert main(["bench", "smoke", "--out", str(out), "--gpus-per-node", "2", "--only", "scratch/detection/*",
                 "--dry-run"]) == 0


SLOW = """\
name: slow
seeds: [0]
data:
  imagefolder: {{path: {data}, build: false}}
backbones:
  - name: dp
    pretrain: {{method: mae, model: tiny, patch_size: 4, img_size: 16, epochs: 150, warmup_epochs: 0,
               batch_size: 6, workers: 0, log_every: 1, decoder_dim: 32, decoder_heads: 2, decoder_depth: 1}}
tasks:
  - {{name: knn, kind: classify, protocol: knn, options: {{k: 3, batch_size: 16, workers: 0}}}}
"""


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and every process it started (a job lost with its node)."""
    import os
    import signal
    from pathlib import Path

    def children(p):
        out = []
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                out += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
        return out

    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += children(p)
    for p in seen:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_slurm_submission_is_idempotent(tiny, tmp_path, capsys, monkeypatch):
    """Defect 7: running bench --slurm again submitted every queued run again. Through submitit's local
    executor: a job still running is not submitted again, and a run that needs it waits for it; a job that
    died is submitted again, and the bench says so; a finished run is skipped."""
    import time

    pytest.importorskip("submitit")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    spec = write_spec(tmp_path, SLOW.format(data=tiny.parent / "imgs"), "slow.yaml")
    out = tmp_path / "out"
    bench = ["bench", str(spec), "--out", str(out), "--slurm", "--slurm-cluster", "local", "--no-results"]
    record = out / "dp" / "pretrain" / "run.json"

    assert main([*bench, "--only", "dp/pretrain"]) == 0
    first = json.loads(record.read_text())["job_id"]
    capsys.readouterr()
    assert main([*bench, "--only", "dp/pretrain"]) == 0
    assert f"dp/pretrain: job {first} is RUNNING, not submitted again" in capsys.readouterr().out
    assert json.loads(record.read_text())["job_id"] == first

    _kill_tree(int(first))
    for _ in range(100):
        try:
            import os

            os.waitpid(int(first), os.WNOHANG)
        except ChildProcessError:
            pass
        if _gone(int(first)):
            break
        time.sleep(0.1)
    assert main([*bench, "--only", "dp/pretrain"]) == 0
    said = capsys.readouterr().out
    assert f"dp/pretrain: job {first} ended GONE without finishing the run: submitting it again" in said
    second = json.loads(record.read_text())["job_id"]
    assert second != first

    assert main([*bench, "--wait"]) == 0  # knn needs the live pretraining job: it waits for it, then runs
    said = capsys.readouterr().out
    assert f"dp/pretrain: job {second} is RUNNING, not submitted again" in said
    assert json.loads((out / "dp" / "knn" / "seed0" / "metrics.json").read_text())["status"] == "finished"
    assert json.loads((out / "dp" / "pretrain" / "metrics.json").read_text())["status"] == "finished"
    assert main(bench) == 0
    said = capsys.readouterr().out
    assert "dp/pretrain: done, not submitted" in said and "dp/knn/seed0: done, not submitted" in said


def _gone(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ")[1][0] == "Z"


def test_knn_runs_once_whatever_the_seeds_and_refuses_a_list_of_several():
    """k-NN on fixed features is deterministic: three seeds would be three copies of one number (a spread of
    0 that ranks anything). The plan runs it once; asking for several seeds on it is one line."""
    import copy

    import yaml

    from droppos.bench.plan import build_plan
    from droppos.bench.spec import SpecError, load_spec, parse_spec, shipped_specs

    plan3 = build_plan(load_spec(shipped_specs()["smoke3"]), "OUT")
    knn = [r.id for r in plan3 if r.task == "knn"]
    assert knn == [f"{b}/knn/seed0" for b in ("droppos", "mae", "supervised", "scratch")]
    assert {r.seed for r in plan3 if r.task == "finetune"} == {0, 1, 2}  # seeded tasks keep every seed
    raw = yaml.safe_load(shipped_specs()["smoke"].read_text())
    bad = copy.deepcopy(raw)
    next(t for t in bad["tasks"] if t["name"] == "knn")["seeds"] = [0, 1]
    with pytest.raises(SpecError) as e:
        parse_spec(bad, "smoke.yaml")
    assert "(knn).seeds: knn does not depend on its seed" in str(e.value) and "\n" not in str(e.value)


def test_pretrain_seeds_make_one_pretraining_and_its_runs_per_seed():
    """``pretrain_seeds: [0, 1, 2]``: three pretrainings (their ``--seed``), each with its own downstream runs named
    ``NAME@pt<seed>`` (the rows ``droppos results`` pools into NAME); per_backbone entries still apply."""
    import copy

    import yaml

    raw = yaml.safe_load(shipped_specs()["smoke"].read_text())
    raw["backbones"][0]["pretrain_seeds"] = [0, 1, 2]
    raw["tasks"][0].setdefault("per_backbone", {})["droppos"] = {"options": {"epochs": 3}}
    spec = parse_spec(copy.deepcopy(raw), "smoke.yaml")
    runs = build_plan(spec, "OUT")
    pre = [r for r in runs if r.kind == "pretrain" and r.backbone.startswith("droppos")]
    assert [r.id for r in pre] == ["droppos@pt0/pretrain", "droppos@pt1/pretrain", "droppos@pt2/pretrain"]
    assert [r.args[r.args.index("--seed") + 1] for r in pre] == ["0", "1", "2"]
    # each pretraining is named as its downstream runs are: its cost joins their row, pooled into droppos
    assert [r.args[r.args.index("--name") + 1] for r in pre] == ["droppos@pt0", "droppos@pt1", "droppos@pt2"]
    ft = next(r for r in runs if r.id == "droppos@pt1/finetune/seed0")
    assert ft.args[ft.args.index("--backbone") + 1] == "OUT/droppos@pt1/pretrain/encoder.pth"
    assert ft.args[ft.args.index("--name") + 1] == "droppos@pt1" and "droppos@pt1/pretrain" in ft.deps
    assert ft.args[ft.args.index("--epochs") + 1] == "3"  # the per_backbone entry of 'droppos'
    assert not any(r.backbone == "droppos" for r in runs)
    assert [r.id for r in runs if r.backbone == "mae" and r.kind == "pretrain"] == ["mae/pretrain"]  # others as before
    for edit, message in [
        (lambda r: r["backbones"][0]["pretrain"].update(seed=4), "pretrain.seed: give the pretraining seeds once"),
        (lambda r: r["backbones"][0]["pretrain"].update(name="x"), "pretrain.name: set by the bench"),
        (lambda r: r["backbones"][3].update(pretrain_seeds=[0, 1]), "(scratch).pretrain_seeds: applies to backbones pretrained here"),
    ]:
        bad = copy.deepcopy(raw)
        edit(bad)
        with pytest.raises(SpecError) as e:
            parse_spec(bad, "smoke.yaml")
        assert message in str(e.value) and "\n" not in str(e.value)


def test_smoke_pt3_is_the_smokes_droppos_and_mae_over_three_pretraining_seeds():
    """``smoke_pt3`` restates the smoke's DropPos and MAE pretrainings and four of its tasks (YAML anchors do not
    cross files): each pretraining is the smoke's command plus its ``--seed``, each downstream run the smoke's
    command with the backbone folder renamed. A value changed in smoke.yaml and not here fails this test."""
    from droppos.bench.plan import build_plan

    smoke = {r.id: r for r in build_plan(load_spec(shipped_specs()["smoke"]), "OUT")}
    pt3 = build_plan(load_spec(shipped_specs()["smoke_pt3"]), "OUT")
    tasks = ("linear", "knn", "position", "dense")
    assert sorted(r.id for r in pt3 if r.kind != "data") == sorted(
        [f"{m}@pt{s}/pretrain" for m in ("droppos", "mae") for s in range(3)]
        + [f"{m}@pt{s}/{t}/seed0" for m in ("droppos", "mae") for s in range(3) for t in tasks])
    for run in pt3:
        if run.kind == "data":
            continue
        method, _, seed = run.backbone.partition("@pt")
        if run.kind == "pretrain":
            ours = run.args[:run.args.index("--seed")] + run.args[run.args.index("--seed") + 2:]
            assert [a.replace(run.backbone, method) for a in ours] == smoke[f"{method}/pretrain"].args, run.id
            assert run.args[run.args.index("--seed") + 1] == seed
        else:
            theirs = smoke[run.id.replace(run.backbone, method)].args
            assert [a.replace(run.backbone, method) for a in run.args] == theirs, run.id
