"""``python -m training adapt``: phases on a small synthetic collection (CPU), resumable and re-runnable."""

from __future__ import annotations

import json

import pytest

from tests.test_training_cross_encoder import tiny_base  # noqa: F401 - fixture reused

TOPICS = ["wing flutter at supersonic speed", "heat transfer in laminar boundary layers", "shock waves on blunt bodies",
          "buckling of thin cylindrical shells", "propeller slipstream over a wing", "creep of metals at high temperature",
          "vortex shedding behind cylinders", "ablation of re-entry heat shields", "noise from turbulent jets",
          "stability of hypersonic flows", "fatigue cracks in aluminium panels", "drag of slender cones"]


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    root = tmp_path_factory.mktemp("adaptcoll")
    docs = []
    for i, topic in enumerate(TOPICS):
        body = (f"we report experiments on {' '.join(topic.split()[:2])} . the measurements of {topic.split()[-1]} agree "
                f"with theory over the whole range studied , and a simple model for case {i} is proposed and compared .")
        docs.append({"_id": f"d{i}", "title": f"{topic} .", "text": f"{topic} . {body}"})
    (root / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in docs))
    return root


@pytest.fixture(scope="module")
def base_ce(tiny_base, tmp_path_factory):  # noqa: F811 - the fixture
    from pipeline.scorers.cross_encoder_folder import write_module
    from training.cross_encoder.model import new_model

    module, tokenizer = new_model(tiny_base, seed=1)
    return write_module(module, tokenizer, tmp_path_factory.mktemp("base") / "ce", dtype="float32")


def test_adapt_runs_every_phase_then_resumes(collection, base_ce, tmp_path, caplog):
    from training.__main__ import main

    work, out = tmp_path / "work", tmp_path / "adapted"
    argv = ["adapt", "--dataset", str(collection), "--base", str(base_ce), "--out", str(out), "--work", str(work),
            "--device", "cpu", "--negatives", "3", "--groups-per-batch", "2", "--max-steps", "2"]
    extra = ["--extra-eval", str(work / "bundle" / "train.json.gz"), "--dump-scores", str(tmp_path / "dumps")]
    assert main(argv + extra) == 0
    report = json.loads((out / "training_report.json").read_text())
    tests = report["chosen"]["test"]
    assert any(k.startswith("base ") for k in tests) and any(not k.startswith("base ") for k in tests)
    assert sorted(p.name.split("--")[0] for p in (tmp_path / "dumps").glob("*.json")) == ["adapted", "base"]
    assert report["adaptation"]["base"] == str(base_ce)
    assert set(report["adaptation"]) >= {"base_pseudo_dev", "adapted_pseudo_dev", "kept"}
    assert (out / "2_Dense" / "model.safetensors").is_file() and (out / "MODEL_CARD.md").is_file()
    corpus = [json.loads(line) for line in (work / "pseudo" / "corpus.jsonl").read_text().splitlines()]
    assert all(d["title"] == "" and not d["text"].startswith(TOPICS[int(d["_id"][1:])]) for d in corpus)
    caplog.clear()
    with caplog.at_level("INFO"):
        assert main(argv[:-2] + ["--phases", "queries,mine,dense"]) == 0      # nothing to redo
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 3


def test_adapt_says_what_is_missing(tmp_path, capsys):
    from training.__main__ import main

    assert main(["adapt", "--out", str(tmp_path / "m"), "--work", str(tmp_path / "w"), "--phases", "train"]) == 2
    assert "bundle" in capsys.readouterr().err
    assert main(["adapt", "--out", str(tmp_path / "m"), "--work", str(tmp_path / "w"), "--phases", "dense"]) == 2
    assert "mine phase" in capsys.readouterr().err
    assert main(["adapt", "--out", str(tmp_path / "m"), "--work", str(tmp_path / "w"), "--phases", "bogus"]) == 2
    assert "unknown phases" in capsys.readouterr().err
