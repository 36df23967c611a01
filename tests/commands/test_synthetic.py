"""`mmbert synthetic generate`: writes the world, prints its counts, refuses bad arguments clearly."""

from __future__ import annotations

import json

from mmbert.cli import main


def test_generate_writes_the_world_and_reports_counts(tmp_path, capsys):
    out = tmp_path / "world"
    args = [
        "synthetic",
        "generate",
        "--out",
        str(out),
        "--images",
        "6",
        "--seed",
        "3",
        "--feat-dim",
        "8",
        "--quiet",
    ]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    manifest = json.loads((out / "manifest.json").read_text())
    assert printed["seed"] == manifest["seed"] == 3
    assert printed["splits"] == manifest["splits"] and sum(manifest["splits"].values()) == 6
    assert manifest["config"]["feat_dim"] == 8
    for name in manifest["files"]:
        assert (out / name).is_file(), name
    assert len(list((out / "images").glob("*.png"))) == 6


def test_generate_refuses_a_non_empty_directory_and_too_few_images(tmp_path, capsys):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.txt").write_text("keep me")
    assert main(["synthetic", "generate", "--out", str(tmp_path / "busy"), "--images", "5", "--quiet"]) == 1
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "busy" / "x.txt").read_text() == "keep me"
    assert main(["synthetic", "generate", "--out", str(tmp_path / "few"), "--images", "2", "--quiet"]) == 1
    assert "at least 3" in capsys.readouterr().err
