"""The pretraining loop: one loop for every method, resumable at any optimiser step.

Run folder contents: ``config.yaml``/``config.json`` (resolved config), ``log.jsonl`` and ``tb/``
(metrics), ``checkpoint.pth`` (resume: model, optimiser, scaler, progress, RNG; atomic),
``encoder.pth`` (self-describing encoder weights for the converters) and ``metrics.json``.

A resumed run continues at the exact optimiser step of its last checkpoint: the sampler order and
each image's crop and masks depend only on (seed, epoch, index), and every process's RNG states
(drop path, mixup) are saved and restored per process, so killing and resuming gives the
parameters of an uninterrupted run (no skipped or repeated epoch). A checkpoint resumes with the
number of processes it was written with (else one line naming both). Because a sample's crop and
masks do not depend on the process that draws it, N processes with batch B train as one process
with batch N x B (the DDP equivalence the tests check), up to the per-batch draws of drop path and
mixup (each process draws its own, as in DeiT and MAE).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from droppos.errors import UserError
from droppos.models.vit import build_vit
from droppos.utils import dist as du
from droppos.runs import open_run, together, write_metrics
from droppos.utils.checkpoint import atomic_save, safe_load, save_encoder
from droppos.utils.config import write_config
from droppos.utils.cost import backbone_cost
from droppos.utils.logging import RunLogger, progress
from droppos.utils.metrics import backbone_record
from droppos.utils.optim import clip_gradients, cosine_lr, set_lr
from droppos.utils.rng import check_world_size, gather_rng_states, restore_rng_state, saved_world_size

from .build import build_method, decay_groups
from .config import PretrainConfig
from .data import PretrainImages, ResumableSampler, check_labelled, find_images, iters_per_epoch, supervised_transform
from .backends import check_backend
from .dali import DaliBatches
from .datapath import on_device, sample_seed
from .masking import sample_noise


class PretrainRun:
    """Builds everything from a ``PretrainConfig`` and trains. ``resume`` continues ``cfg.output``."""

    def __init__(self, cfg: PretrainConfig, resume: bool = False, overwrite: bool = False):
        cfg.validate()
        self.cfg = cfg
        self.info = du.init_distributed(cfg.device)
        self.device = du.get_device(self.info, cfg.device)
        self.run_dir = Path(cfg.output)
        self.ckpt_path = self.run_dir / "checkpoint.pth"
        self._check_run_dir(resume, overwrite)
        together(self.info, self.device, self._build)  # inputs checked on every process, one line if any fails
        self.model = self.method
        if self.info.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = torch.nn.parallel.DistributedDataParallel(self.method, device_ids=ids)
        if cfg.compile:
            self.model = torch.compile(self.model)
        self.epoch, self.iter_in_epoch, self.step = 0, 0, 0
        # what the current epoch has summed so far (kept in checkpoints: a resumed epoch's statistics
        # and metrics.json cover the whole epoch, as the uninterrupted run's)
        self.epoch_sums: dict[str, torch.Tensor] = {}
        self.epoch_count, self.skipped, log_bytes = 0, self._zero_count(), None
        if resume and self.ckpt_path.is_file():
            log_bytes = together(self.info, self.device, self._load_checkpoint)
        self.logger = RunLogger(self.run_dir, enabled=self.info.is_main, keep_bytes=log_bytes)
        if self.info.is_main:  # --stop-after is this process's limit, not part of the run's config
            write_config({k: v for k, v in dataclasses.asdict(cfg).items() if k != "stop_after"}, self.run_dir)

    def _build(self) -> None:
        """Data, sampler, schedule, model, optimiser (no collective: :func:`droppos.runs.together` runs it)."""
        cfg = self.cfg
        torch.manual_seed(cfg.seed + self.info.rank)
        random.seed(cfg.seed + self.info.rank)
        np.random.seed(cfg.seed + self.info.rank)

        classes = check_labelled(cfg.data) if cfg.method == "supervised" else []
        transform = (supervised_transform(cfg.img_size, cfg.aa, cfg.reprob, cfg.min_scale)
                     if cfg.method == "supervised" else None)
        self.backend, note = check_backend(cfg.data_backend, cfg.method,
                                           find_images(cfg.data) if cfg.data_backend == "dali" else [])
        if note and self.info.is_main:
            print(f"note: {note}")
        self.dataset = PretrainImages(cfg.data, cfg.img_size, seed=cfg.seed, transform=transform,
                                      min_scale=cfg.min_scale, backend="fast" if self.backend == "fast" else "torch")
        self.sampler = ResumableSampler(len(self.dataset), self.info.rank, self.info.world_size, seed=cfg.seed)
        self.iters = iters_per_epoch(len(self.dataset), self.info.world_size, cfg.batch_size, cfg.accum_iter)
        self.steps = self.iters // cfg.accum_iter
        self.total_steps = self.steps * cfg.epochs
        self.warmup_steps = cfg.warmup_epochs * self.steps
        eff_batch = cfg.batch_size * cfg.accum_iter * self.info.world_size
        self.lr = cfg.lr if cfg.lr is not None else cfg.blr * eff_batch / 256

        self.encoder = build_vit(cfg.model, patch_size=cfg.patch_size, img_size=cfg.img_size,
                                 drop_path_rate=cfg.drop_path)
        self.method = build_method(cfg, self.encoder, num_classes=len(classes)).to(self.device)
        self.dataset.noise_size = self.method.noise_size
        self.params = [p for p in self.method.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            decay_groups(self.method, cfg.weight_decay, cfg.decay_exempt), lr=self.lr,
            betas=getattr(self.method, "betas", (0.9, 0.95)), fused=self.device.type == "cuda")
        self.amp_dtype = du.amp_dtype(cfg.precision, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

    # ------------------------------------------------------------------ run folder
    def _check_run_dir(self, resume: bool, overwrite: bool) -> None:
        open_run(self.run_dir, "pretrain", self.info, self.device, resume=resume, overwrite=overwrite,
                 remove=("checkpoint.pth", "encoder.pth", "metrics.json", "log.jsonl"))

    def _zero_count(self) -> torch.Tensor:
        """The count of replaced images, on the training device (it is all-reduced: NCCL has no CPU tensors)."""
        return torch.zeros((), dtype=torch.long, device=self.device)

    def meta(self) -> dict:
        return {"method": self.cfg.method, "arch": self.encoder.arch_args(), "epochs": self.cfg.epochs,
                "epochs_done": self.epoch,
                "config": {k: v for k, v in dataclasses.asdict(self.cfg).items() if k != "stop_after"}}

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self) -> None:
        """Every process's RNG states go to process 0, which writes the file (a collective: all processes call it)."""
        rng = gather_rng_states(self.device)
        if not self.info.is_main:
            return
        atomic_save({
            "meta": self.meta(),
            "model": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "progress": {"epoch": self.epoch, "iter_in_epoch": self.iter_in_epoch, "step": self.step,
                         "epoch_sums": self.epoch_sums, "epoch_count": self.epoch_count, "skipped": self.skipped,
                         "log_bytes": self.logger.size},
            "rng": rng,
            "world_size": self.info.world_size,
        }, self.ckpt_path)

    def _load_checkpoint(self) -> int | None:
        ck = safe_load(self.ckpt_path)
        elastic = check_world_size(ck, self.info.world_size, self.ckpt_path, self._why_not_elastic(ck))
        meta = ck.get("meta", {})
        if meta.get("method") != self.cfg.method or meta.get("arch") != self.encoder.arch_args():
            raise UserError(
                f"{self.ckpt_path}: checkpoint is {meta.get('method')} {meta.get('arch')}, the config asks for "
                f"{self.cfg.method} {self.encoder.arch_args()}; resume with the run's own options or use --overwrite")
        self.method.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scaler.load_state_dict(ck["scaler"])
        p = ck["progress"]
        self.epoch, self.iter_in_epoch, self.step = p["epoch"], p["iter_in_epoch"], p["step"]
        if elastic:  # the same optimiser steps, counted in this layout's micro-batches
            saved_accum = int(meta.get("config", {}).get("accum_iter", 1))
            self.iter_in_epoch = self.iter_in_epoch // saved_accum * self.cfg.accum_iter
            if self.info.is_main:
                print(f"resuming a run of {saved_world_size(ck)} process(es) with {self.info.world_size}: exact (the "
                      "same global batch and sample order, and every random draw is per sample)")
        self.epoch_sums = dict(p.get("epoch_sums") or {})
        self.epoch_count = p.get("epoch_count", 0)
        self.skipped = torch.as_tensor(p.get("skipped", 0), dtype=torch.long).to(self.device)
        restore_rng_state(ck["rng"], self.info.rank)
        if self.info.is_main:
            print(f"resumed {self.ckpt_path} at epoch {self.epoch}, iteration {self.iter_in_epoch}, step {self.step}")
        return p.get("log_bytes")

    def _why_not_elastic(self, ck: dict) -> str | None:
        """None when this checkpoint continues exactly on this number of processes (see the module docstring), else
        why not."""
        saved = ck.get("meta", {}).get("config", {})
        world = saved_world_size(ck)
        batch, accum = int(saved.get("batch_size", 0)), int(saved.get("accum_iter", 1))
        cfg = self.cfg
        if cfg.drop_path > 0 or (cfg.method == "supervised" and (cfg.mixup > 0 or cfg.cutmix > 0)):
            return "stochastic depth and mixup draw per process"
        old, new = batch * accum * world, cfg.batch_size * cfg.accum_iter * self.info.world_size
        if old != new:
            return (f"its global batch would change ({batch} x {accum} x {world} = {old} -> {cfg.batch_size} x "
                    f"{cfg.accum_iter} x {self.info.world_size} = {new}; keep batch x accum x processes equal)")
        steps_then = iters_per_epoch(len(self.dataset), world, batch, accum) // accum
        if steps_then != self.steps:
            return f"its steps per epoch would change ({steps_then} -> {self.steps}: the last partial batch differs)"
        return None

    # ------------------------------------------------------------------ training
    def _batches(self):
        """(images ready for the model, labels, replaced-file flags, mask draws) on the device, from the current
        step on."""
        self.dataset.set_epoch(self.epoch)
        self.sampler.set_epoch(self.epoch, start=self.iter_in_epoch * self.cfg.batch_size)
        if self.backend == "dali":
            dali = DaliBatches(self.dataset.files, self.dataset.labels, self.cfg.img_size, self.cfg.batch_size,
                               self.cfg.seed, self.cfg.min_scale, self.device, threads=self.cfg.workers)
            for imgs, labels, bad, indices in dali.epoch(self.epoch, list(self.sampler)):
                noise = torch.stack([sample_noise(sample_seed(self.cfg.seed, self.epoch, i), self.method.noise_size)
                                     for i in indices.tolist()])
                yield imgs, labels, bad, noise.to(self.device, non_blocking=True)
            return
        loader = DataLoader(self.dataset, batch_size=self.cfg.batch_size, sampler=self.sampler, drop_last=True,
                            num_workers=self.cfg.workers, pin_memory=self.device.type == "cuda",
                            persistent_workers=False, generator=torch.Generator().manual_seed(self.epoch))
        for imgs, labels, bad, flip, noise in loader:
            imgs = imgs.to(self.device, non_blocking=True)
            yield (on_device(imgs, flip.to(self.device, non_blocking=True)), labels.to(self.device, non_blocking=True),
                   bad.to(self.device, non_blocking=True), noise.to(self.device, non_blocking=True))

    def _sync_context(self, last_micro: bool):
        if self.info.distributed and not last_micro:
            return self.model.no_sync()
        return contextlib.nullcontext()

    def train(self) -> dict:
        cfg = self.cfg
        n_proc = self.info.world_size
        done = self.epoch * self.iters + self.iter_in_epoch
        bar = progress(cfg.epochs * self.iters, initial=done, enabled=self.info.is_main, desc=cfg.method)
        sums: dict[str, torch.Tensor] = {}
        count = 0
        t_log, n_img = time.perf_counter(), 0
        epoch_stats: dict[str, float] = {}
        steps_this_process = 0
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        while self.epoch < cfg.epochs:
            self.method.on_epoch(self.epoch, cfg.epochs)
            for imgs, labels, bad, noise in self._batches():
                if self.iter_in_epoch >= self.iters:
                    break
                last_micro = (self.iter_in_epoch + 1) % cfg.accum_iter == 0
                if self.iter_in_epoch % cfg.accum_iter == 0:
                    set_lr(self.optimizer, cosine_lr(self.step, self.total_steps, self.warmup_steps, self.lr, cfg.min_lr))
                with self._sync_context(last_micro):
                    with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                                        enabled=self.amp_dtype is not None):
                        out = self.model(imgs, labels, noise)
                    self.scaler.scale(out["loss"] / cfg.accum_iter).backward()
                if last_micro:
                    if cfg.clip_grad > 0:
                        self.scaler.unscale_(self.optimizer)
                        clip_gradients(self.params, cfg.clip_grad, cfg.clip_mode)
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                    self.optimizer.zero_grad(set_to_none=True)
                    self.step += 1
                    steps_this_process += 1
                for k, v in out.items():
                    v = v.detach().float()
                    sums[k] = sums.get(k, 0) + v
                    self.epoch_sums[k] = self.epoch_sums.get(k, 0) + v
                count += 1
                self.epoch_count += 1
                self.skipped += bad.sum()
                n_img += imgs.shape[0] * n_proc
                self.iter_in_epoch += 1
                bar.update(1)

                if self.iter_in_epoch % cfg.log_every == 0 or self.iter_in_epoch == self.iters:
                    stats = self._reduce(sums, count)
                    dt = time.perf_counter() - t_log
                    stats.update(lr=self.optimizer.param_groups[0]["lr"], img_per_s=n_img / max(dt, 1e-9),
                                 epoch=self.epoch + self.iter_in_epoch / self.iters)
                    if self.info.is_main:
                        bar.set_postfix({k: f"{v:.4g}" for k, v in stats.items() if k in ("loss", "pos_acc", "img_per_s")})
                        self.logger.log(self.step, **stats)
                    sums, count, t_log, n_img = {}, 0, time.perf_counter(), 0
                if last_micro and cfg.save_every_iters and self.step % cfg.save_every_iters == 0:
                    self._save_checkpoint()
                if last_micro and cfg.stop_after and steps_this_process >= cfg.stop_after:
                    if not (cfg.save_every_iters and self.step % cfg.save_every_iters == 0):
                        self._save_checkpoint()  # --stop-after always leaves a resumable checkpoint
                    bar.close()
                    return {"stopped_at_step": self.step}
            epoch_stats = self._reduce(self.epoch_sums, self.epoch_count)
            n_skip = int(du.all_reduce(self.skipped, self.device).item())
            self.epoch += 1
            self.iter_in_epoch = 0
            self.epoch_sums, self.epoch_count, self.skipped = {}, 0, self._zero_count()
            if self.info.is_main:
                self.logger.log(self.step, **{f"epoch_{k}": v for k, v in epoch_stats.items()}, epoch=self.epoch,
                                corrupt_images_replaced=n_skip)
                if n_skip:
                    print(f"epoch {self.epoch}: {n_skip} unreadable image(s) replaced by their neighbours")
                if cfg.keep_every_epochs and self.epoch % cfg.keep_every_epochs == 0 and self.epoch < cfg.epochs:
                    save_encoder(self.run_dir / f"encoder_ep{self.epoch:04d}.pth", self.encoder.state_dict(), self.meta())
            self._save_checkpoint()
        bar.close()
        return self._finish(epoch_stats)

    def _reduce(self, sums: dict, count: int) -> dict[str, float]:
        """Mean over iterations and processes; the one host sync of a log interval."""
        if not sums:
            return {}
        keys = sorted(sums)
        vec = du.all_reduce_mean(torch.stack([sums[k] for k in keys]) / max(count, 1), self.device).tolist()
        stats = dict(zip(keys, vec))
        if not all(np.isfinite(v) for v in vec):
            raise UserError(f"non-finite loss at epoch {self.epoch}, step {self.step}: {stats}; "
                             "lower --blr or set --clip-grad")
        return stats

    def _finish(self, last_epoch: dict) -> dict:
        if self.info.is_main:
            save_encoder(self.run_dir / "encoder.pth", self.encoder.state_dict(), self.meta())
            from droppos.backbones.source import default_name

            encoder_file = str(self.run_dir / "encoder.pth")  # by default named as a transfer run of it names it
            bb = backbone_record(self.cfg.method, self.encoder.arch_args(), self.cfg.epochs, source=encoder_file,
                                 id=self.cfg.name or default_name(encoder_file), data=self.cfg.data)
            write_metrics(self.run_dir, task="pretrain", protocol=self.cfg.method, backbone=bb,
                          dataset=Path(self.cfg.data).name, metrics=last_epoch, seed=self.cfg.seed,
                          data_root=self.cfg.data, cost=backbone_cost(self.encoder, self.cfg.img_size),
                          epochs=self.cfg.epochs, steps=self.step, config=dataclasses.asdict(self.cfg))
            self.logger.close()
            print(json.dumps({"final_epoch": last_epoch, "encoder": str(self.run_dir / "encoder.pth")}))
        du.barrier(self.device)
        return last_epoch
