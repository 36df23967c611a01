"""One cell of the comparison: the model's pre-trained encoder (computed once per (model, setting, seed)
and cached on disk for every task's cells), fine-tuned on the task, scored on the held-out test split.

The paper setting (and text-only BERT) pre-trains exactly as ``mmbert pretrain --model <model>_tiny`` would
on the world's training captions and region features: the same ``train.recipe_setup`` builds the paper's
objectives, masking rule, ITM negatives, UNITER's one task per step, UNIMO's multi-forward objectives on its
scene-graph rewrites, and the text-only corpus stream of VL-BERT and UNIMO (and BERT's whole corpus). That
text corpus is built from the world's training captions, one document per image (``text_corpus``), the
same captions the pairs come from. The controlled setting is the demo's pre-training
(``commands.demo.experiment.pretrain``) with VOLTA's shared recipe. Fine-tuning is the demo's
``finetune_task``.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmbert.atomic import atomic_torch_save
from mmbert.commands.compare.grid import Busy, Cell, try_lock
from mmbert.commands.compare.plan import CONTROLLED, CONTROLLED_RECIPE, TEXT_MODEL, ComparePlan, preset_name
from mmbert.commands.compare.tasks import SPECS, build_task, load_split, main_score
from mmbert.commands.demo.plan import DemoPlan, build_encoder, demo_config, train_config


@dataclass
class PaperSetup:
    """A paper-setting pre-training, built and not yet run: the model, its loss, its training stream, the
    objectives and the recipe's resolved choices (``train.recipe_setup.resolve_corruption``)."""

    model: Any
    task: nn.Module
    data: Any
    objectives: list[str]
    corruption: dict[str, Any]


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def fresh_run_dir(path: Path) -> Path:
    """The trainer's directory for a claimed cell or pre-training, emptied of what a killed process left
    there (its log would otherwise continue into the new run's)."""
    shutil.rmtree(path, ignore_errors=True)
    return path


class Runner:
    """Computes cells for one process: the world and tokenizer loaded once, task datasets and the last
    pre-trained encoder kept in memory between the cells that share them."""

    def __init__(self, out: Path, world: Path, plan: ComparePlan, model_plans: dict[str, DemoPlan],
                 log=print) -> None:  # fmt: skip
        from mmbert.data.tokenizer import Tokenizer

        self.out, self.world, self.plan, self.model_plans, self.log = out, world, plan, model_plans, log
        # made here, before any lock: a lock that creates its own directory removes it (and its lock file)
        # on release when nothing else is there, which could pull a lock file from under another process
        (out / "pretrained").mkdir(parents=True, exist_ok=True)
        self.tok = Tokenizer.from_pretrained(world)
        self.num_answers = len(json.loads((world / "vqa" / "answers.json").read_text()))
        self._data: dict[tuple[str, bool], tuple[Any, Any, Any]] = {}
        self._encoder: tuple[tuple, dict, dict] | None = None  # (key, state dict, pre-training info)

    def config(self, model: str):
        return demo_config(preset_name(model), self.model_plans[model], self.tok.vocab_size, self.num_answers)

    # ---- pre-training --------------------------------------------------------------------------------
    def pretrained_path(self, key: tuple[str, str, int]) -> Path:
        model, setting, seed = key
        return self.out / "pretrained" / f"{model}--{setting}--s{seed}.pt"

    def pretrained(self, key: tuple[str, str, int]) -> tuple[dict, dict]:
        """The encoder state and pre-training info for ``key``: from memory, from the cache on disk, or
        computed here (under its lock; ``Busy`` while another live process is computing it)."""
        if self._encoder is not None and self._encoder[0] == key:
            return self._encoder[1], self._encoder[2]
        path = self.pretrained_path(key)
        if not path.exists():
            lock = try_lock(path, "pre-training", self.log)
            if lock is None:
                raise Busy(path.name)
            try:
                if not path.exists():
                    state, info = self._pretrain(key)
                    atomic_torch_save({"encoder": state, "info": info}, path)
            finally:
                lock.release()
        saved = torch.load(path, map_location="cpu", weights_only=True)
        self._encoder = (key, saved["encoder"], saved["info"])
        return saved["encoder"], saved["info"]

    def _pretrain(self, key: tuple[str, str, int]) -> tuple[dict, dict]:
        from mmbert.train.loop import train

        model, setting, seed = key
        plan = self.model_plans[model]
        steps = (self.plan.text_pretrain_steps or plan.pretrain_steps) if model == TEXT_MODEL else plan.pretrain_steps
        run_dir = fresh_run_dir(self.out / "runs" / f"pretrain--{model}--{setting}--s{seed}")
        self.log(f"pre-training {model} ({setting}, seed {seed}, {steps} steps)")
        start = time.perf_counter()
        recipe = None
        if setting == CONTROLLED:
            from mmbert.commands.demo.experiment import pretrain

            pre, objectives, metrics, _ = pretrain(self.world, self.tok, plan, preset_name(model), self.num_answers,
                                                   run_dir, seed, True, recipe=CONTROLLED_RECIPE)  # fmt: skip
        else:  # the paper's recipe (text-only BERT's included), as `mmbert pretrain` runs it
            setup = self.paper_setup(model, seed, run_dir)
            cfg = train_config(steps, plan.pretrain_batch, plan.pretrain_lr, seed, True, plan.workers)
            metrics = train(setup.task, setup.data, setup.data.collate, cfg, run_dir,
                            run_info={"compare": "pretrain", "model": model, "setting": setting}).metrics  # fmt: skip
            pre, objectives, recipe = setup.model, setup.objectives, setup.corruption
        info = {"objectives": list(objectives), "steps": steps, "batch": plan.pretrain_batch,
                "wall_s": round(time.perf_counter() - start, 2), "recipe": recipe,
                "final": {k: round(float(v), 4) for k, v in metrics.items()
                          if isinstance(v, (int, float))}}  # fmt: skip
        return pre.encoder.state_dict(), info

    def text_corpus(self) -> Path:
        """The text-only corpus of the paper setting (VL-BERT's and UNIMO's text stream, BERT's whole corpus):
        the world's training captions, one document per image, written once beside the pre-trainings."""
        from mmbert.atomic import atomic_write_text
        from mmbert.data.captions import read_coco_captions

        path = self.out / "pretrained" / "text_corpus.txt"
        if not path.exists():
            documents: dict[Any, list[str]] = {}
            for c in read_coco_captions(self.world / "captions_train.json"):
                documents.setdefault(c.image_id, []).append(" ".join(c.caption.split()))
            atomic_write_text(path, "\n\n".join("\n".join(d) for d in documents.values()) + "\n")
        return path

    def paper_setup(self, model: str, seed: int, run_dir: Path) -> PaperSetup:
        """``model``'s pre-training by its paper's recipe, built by ``train.recipe_setup`` as ``mmbert
        pretrain --model <model>_tiny --captions --features`` builds it on the world, with ``--text-corpus``
        for the recipes that read a text-only corpus (BERT, VL-BERT, UNIMO) and ``--scenes`` for UNIMO."""
        from mmbert.models.pretraining import PretrainingModel
        from mmbert.objectives import recipe_for
        from mmbert.train.recipe_setup import (
            DataConfig,
            PretrainSources,
            pretraining_data,
            pretraining_task,
            resolve_corruption,
        )

        config = self.config(model)
        text_only = model == TEXT_MODEL
        recipe = recipe_for(config)
        # `--text-corpus` only where the paper has a text-only stream: it would mix one into any recipe
        unimo = config.model_type == "unimo"
        corpus = str(self.text_corpus()) if text_only or unimo or recipe.text_ratio > 0 else None
        sources = PretrainSources(
            model=preset_name(model), text_corpus=corpus, out=str(run_dir),
            captions=None if text_only else str(self.world / "captions_train.json"),
            features=None if text_only else str(self.world / "features.tsv"),
            scenes=str(self.world / "scenes.json") if unimo else None,
        )  # fmt: skip
        data_config = DataConfig(max_text_length=self.model_plans[model].max_text_len)
        corruption = resolve_corruption(recipe, data_config)
        data, _, objectives, _ = pretraining_data(sources, config, self.tok, data_config, seed, recipe, corruption,
                                                  log=lambda _: None)  # fmt: skip
        torch.manual_seed(seed)
        pre = PretrainingModel(build_encoder(config))
        task = pretraining_task(pre, objectives, data_config, corruption)
        return PaperSetup(pre, task, data, objectives, corruption)

    # ---- fine-tuning ---------------------------------------------------------------------------------
    def data(self, task_name: str, text_only: bool):
        key = (task_name, text_only)
        if key not in self._data:
            task = build_task(task_name, self.world, self.plan)
            train = load_split(task, task_name, self.world, "train", self.tok, text_only, self.plan)
            test = load_split(task, task_name, self.world, "test", self.tok, text_only, self.plan)
            self._data[key] = (task, train, test)
        return self._data[key]

    def prepare(self, cell: Cell) -> None:
        """The cell's pre-trained encoder, computed here or by another process (``Busy`` meanwhile)."""
        if cell.pretraining is not None:
            self.pretrained(cell.pretraining)

    def compute(self, cell: Cell) -> dict[str, Any]:
        """Fine-tune the cell's encoder on its task and score the test split; the cell's result record."""
        from mmbert.commands.demo.experiment import finetune_task

        text_only = cell.model == TEXT_MODEL
        task, train_data, test_data = self.data(cell.task, text_only)
        info = None
        if cell.pretraining is not None:
            state, info = self.pretrained(cell.pretraining)
        start = time.perf_counter()
        torch.manual_seed(1000 + cell.seed)
        encoder = build_encoder(self.config(cell.model))
        if info is not None:
            encoder.load_state_dict(state)
        run_dir = fresh_run_dir(self.out / "runs" / cell.id)
        model = finetune_task(task, encoder, train_data, self.plan.finetune_steps, self.plan.finetune_batch,
                              self.plan.finetune_lr, cell.seed, run_dir, self.tok.pad_id, True)  # fmt: skip
        metrics, _ = task.evaluate(model, test_data, batch_size=256)
        return {
            "cell": cell.id, "model": cell.model, "setting": cell.setting, "task": cell.task, "seed": cell.seed,
            "metric": SPECS[cell.task].metric, "value": round(main_score(task, metrics), 4),
            "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))},
            "wall_s": round(time.perf_counter() - start, 2),  # the fine-tuning and scoring of this cell
            "pretraining": info, "parameters": count_parameters(encoder),
            "train_examples": len(train_data), "test_examples": len(test_data),
            "finetune_steps": self.plan.finetune_steps,
        }  # fmt: skip
