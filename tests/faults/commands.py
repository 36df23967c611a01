"""The command half of the campaign: for each command a healthy setup and a table of faults against it.

A setup returns the command line (its output path last-but-not-least under ``out``); a fault damages the
setup in ``tmp`` and may edit the command line. ``test_command_faults.py`` runs every row in-process
(``mmbert.cli.main``) unless the row asks for a subprocess (``ulimit -f`` must not limit pytest itself).
"""

from __future__ import annotations

import errno
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from faults.injection import build_store, flip, truncate

from mmbert.models import build_model


@dataclass
class CommandFault:
    name: str
    item: int
    damage: Callable[[Path, list[str]], list[str]]  # (tmp, argv) -> argv to run
    expect: str
    subprocess: bool = False
    limit_file_bytes: int | None = None
    read_only: Path | str | None = None  # a path (relative to tmp) made read-only (EROFS) for the run


# --- setups ---------------------------------------------------------------------------------------------
def convert_setup(tmp: Path) -> list[str]:
    if not (tmp / "src" / "config.json").exists():
        torch.manual_seed(0)
        build_model("bert_tiny").save(tmp / "src")
    return ["convert", str(tmp / "src"), str(tmp / "out"), "--to", "hf"]


def features_convert_setup(tmp: Path) -> list[str]:
    if not (tmp / "src.h5").exists():
        build_store(tmp / "src.h5", "hdf5")
    return ["features", "convert", str(tmp / "src.h5"), str(tmp / "out"), "--no-progress"]


def score_setup(tmp: Path) -> list[str]:
    from tasks.test_nlvr2 import write_jsonl

    data = write_jsonl(tmp / "dev.json", n_sets=1)
    (tmp / "pred.csv").write_text("dev-0-0-0,False\ndev-0-0-1,True\ndev-0-1-0,False\ndev-0-1-1,False\n")
    return ["score", "--task", "nlvr2", "--data", str(data), "--predictions", str(tmp / "pred.csv"),
            "--out", str(tmp / "out" / "metrics.json")]  # fmt: skip


_WORLD: list[Path] = []  # one synthetic world per test process, made on first use (it takes seconds)


def synthetic_world() -> Path:
    if not _WORLD:
        import atexit
        import shutil
        import tempfile

        from mmbert.data.synthetic.generate import generate
        from mmbert.data.synthetic.scenes import WorldConfig

        root = Path(tempfile.mkdtemp(prefix="mmbert-faults-world-"))
        atexit.register(shutil.rmtree, root, True)
        generate(root, num_images=6, seed=0, config=WorldConfig(feat_dim=16, max_objects=3), render_images=False,
                 nlvr2_pairs=0)  # fmt: skip
        _WORLD.append(root)
    return _WORLD[0]


def pretrain_setup(tmp: Path) -> list[str]:
    """A tiny pretrain run; the inputs exist only once a fault needs a real run (``_real_world``)."""
    world = tmp / "no-world"
    return ["pretrain", "--model", "uniter_tiny", "--captions", str(world / "captions_train.json"),
            "--features", str(world / "features.tsv"), "--tokenizer", str(world), "--out", str(tmp / "out"),
            "--batch-size", "2", "--max-steps", "2", "progress=false", "save_every=1",
            "model.num_region_classes=6"]  # fmt: skip


def _real_world(tmp: Path, argv: list[str]) -> list[str]:
    world = synthetic_world()
    vocab = len((world / "vocab.txt").read_text().splitlines())
    return [a.replace(str(tmp / "no-world"), str(world)) for a in argv] + [f"model.vocab_size={vocab}"]


def finetune_setup(tmp: Path) -> list[str]:
    """Faults that must stop a fine-tuning run before it reads anything (the output is checked first)."""
    return ["finetune", "--task", "vqa", "--init", "uniter_tiny", "--out", str(tmp / "out"), "--train",
            f"questions={tmp / 'q.json'}", f"annotations={tmp / 'a.json'}"]  # fmt: skip


def _out_is_a_file(tmp: Path, argv: list[str]) -> list[str]:
    (tmp / "out").write_text("I am a file")
    return argv


def _src(tmp: Path) -> Path:
    return tmp / "src"


def _with(fn: Callable[[Path], None]) -> Callable[[Path, list[str]], list[str]]:
    def damage(tmp: Path, argv: list[str]) -> list[str]:
        fn(tmp)
        return argv

    return damage


def _malicious_bin(tmp: Path) -> None:
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (_src(tmp) / "model.safetensors").unlink()
    (_src(tmp) / "pytorch_model.bin").write_bytes(pickle.dumps({"x": Evil()}))


def _shard_outside(tmp: Path) -> None:
    (_src(tmp) / "model.safetensors").rename(tmp / "elsewhere.safetensors")
    index = {"weight_map": {"embeddings.word_embeddings.weight": "../elsewhere.safetensors"}}
    (_src(tmp) / "model.safetensors.index.json").write_text(json.dumps(index))


def _foreign_dst(tmp: Path, argv: list[str]) -> list[str]:
    (tmp / "out").mkdir()
    (tmp / "out" / "task.json").write_text("{}")  # e.g. a fine-tuned model
    return argv


COMMAND_FAULTS: dict[str, tuple[Callable[[Path], list[str]], list[CommandFault]]] = {
    "convert": (convert_setup, [
        CommandFault("DST is not empty (another model)", 2, _foreign_dst, "not empty"),
        CommandFault("DST is SRC", 2, lambda t, a: [*a[:2], a[1], *a[3:]], "is the source directory"),
        CommandFault("DST is a file", 9, _out_is_a_file, "not a directory"),
        CommandFault("truncated model.safetensors", 9, _with(lambda t: truncate(_src(t) / "model.safetensors", 0.5)),
                     "model.safetensors: not a readable safetensors file"),
        CommandFault("empty model.safetensors", 9, _with(lambda t: truncate(_src(t) / "model.safetensors", 0)),
                     "model.safetensors: not a readable safetensors file"),
        CommandFault("garbage model.safetensors", 9, _with(lambda t: flip(_src(t) / "model.safetensors", 0.0, 16)),
                     "model.safetensors: not a readable safetensors file"),
        CommandFault("config.json is a list", 9, _with(lambda t: (_src(t) / "config.json").write_text("[1, 2]")),
                     "expected a JSON object"),
        CommandFault("malicious pytorch_model.bin", 9, _with(_malicious_bin), "pytorch_model.bin: refused"),
        CommandFault("shard index points outside the checkpoint", 11, _with(_shard_outside),
                     "outside the checkpoint directory"),
        CommandFault("read-only output", 9, lambda t, a: a, "Read-only file system", read_only="out"),
        CommandFault("ulimit -f", 9, lambda t, a: a, "file size limit", subprocess=True, limit_file_bytes=20000),
    ]),
    "features convert": (features_convert_setup, [
        CommandFault("DST is a file that is no store", 9, _out_is_a_file, "refusing to append"),
        CommandFault("read-only output", 9, lambda t, a: a, "Read-only file system", read_only="out"),
        CommandFault("ulimit -f (HDF5 crashed with SIGSEGV)", 9, lambda t, a: [*a[:3], str(t / "out.h5"), *a[4:]],
                     "file size limit",
                     subprocess=True, limit_file_bytes=3000),
    ]),
    "pretrain": (pretrain_setup, [
        CommandFault("--out is a file", 9, _out_is_a_file, "a file stands where a directory is needed"),
        CommandFault("read-only --out", 9, lambda t, a: a, "Read-only file system", read_only="out"),
        CommandFault("ulimit -f (checkpoint write fails)", 9, _real_world, "file size limit", subprocess=True,
                     limit_file_bytes=60000),
    ]),
    "finetune": (finetune_setup, [
        CommandFault("--out is a file", 9, _out_is_a_file, "a file stands where a directory is needed"),
        CommandFault("read-only --out", 9, lambda t, a: a, "Read-only file system", read_only="out"),
    ]),
    "score": (score_setup, [
        CommandFault("output folder is a file", 9, _out_is_a_file, "a file stands where a directory is needed"),
        CommandFault("read-only output", 9, lambda t, a: a, "Read-only file system", read_only="out"),
    ]),
}

EROFS = errno.EROFS
