"""`mmbert extract` without the vision extra says what to install (the core never imports torchvision)."""

from __future__ import annotations

import sys

from mmbert.cli import main


def test_extract_without_the_vision_extra_names_the_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # `import torchvision` now raises ImportError
    argv = ["extract", "--images", str(tmp_path), "--out", str(tmp_path / "f.h5"), "--weights", "random"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "pip install 'mmbert[vision]'" in err and "torchvision" in err
    assert not (tmp_path / "f.h5").exists()


def test_extract_is_listed_with_its_options(capsys):
    try:
        main(["extract", "--help"])
    except SystemExit as e:
        assert e.code == 0
    out = capsys.readouterr().out
    for option in ("--images", "--out", "--detector", "--weights", "--boxes", "--min-boxes", "--max-boxes",
                   "--conf", "--batch", "--format"):  # fmt: skip
        assert option in out
