"""Regression matrices: structure of the committed files, the checker on the tiny fixture,
and (slow) every condition run fresh against its expected scores."""

from __future__ import annotations

import pytest
import yaml

from eval.__main__ import main as eval_main
from eval.regression import (
    REPO,
    Matrix,
    check_command,
    check_matrix,
    compare_scores,
    load_matrix,
    matrix_files,
)
from pipeline.core.errors import ConfigError
from pipeline.core.settings_paths import default_config_path, default_index_root, default_models_dir
from pipeline.registry import load_config, parse_config
from tests.conftest import TINY_CONFIG


def test_committed_matrices_are_valid_and_name_configured_pipelines():
    files = matrix_files()
    assert {p.stem for p in files} >= {"scifact", "cranfield"}
    configured = set(load_config(default_config_path()).pipelines)
    for path in files:
        matrix = load_matrix(path)  # validates fields, measures and each command
        assert matrix.split == "test"
        assert not matrix.dataset.startswith("/"), "no absolute machine paths in the repo"
        assert set(matrix.conditions) <= configured, f"{path.name} names pipelines not in the config"
        for cond in matrix.conditions.values():
            assert cond.pending or ("nDCG@10" in cond.scores and 0 < cond.scores["nDCG@10"] < 1)


def test_compare_scores_flags_deviations():
    assert compare_scores({"nDCG@10": 0.5}, {"nDCG@10": 0.5015}, 0.002) == []
    (dev,) = compare_scores({"nDCG@10": 0.5, "R@100": 0.9}, {"nDCG@10": 0.5, "R@100": 0.89}, 0.002)
    assert dev.measure == "R@100" and "expected 0.9000 ± 0.002, got 0.8900" in str(dev)
    (missing,) = compare_scores({"MAP": 0.3}, {}, 0.01)
    assert "missing" in str(missing)


def tiny_matrix(tiny_dataset, ndcg: float) -> Matrix:
    return Matrix(dataset=str(tiny_dataset), split="test", conditions={"bm25": {
        "command": f"python -m eval --dataset {tiny_dataset} --split test --pipeline bm25", "scores": {"nDCG@10": ndcg}}})


def test_checker_passes_and_flags_on_tiny_fixture(tiny_dataset, tiny_index_root):
    config = parse_config(TINY_CONFIG)
    (ok,) = check_matrix(tiny_matrix(tiny_dataset, 1.0), config, tiny_index_root, REPO / "models")
    assert ok.ok and ok.measured["nDCG@10"] == pytest.approx(1.0)
    (bad,) = check_matrix(tiny_matrix(tiny_dataset, 0.9), config, tiny_index_root, REPO / "models")
    assert not bad.ok and bad.deviations[0].measure == "nDCG@10"


def test_condition_with_max_queries_runs_on_that_subset(tiny_dataset, tiny_index_root):
    config = parse_config(TINY_CONFIG)
    cmd = f"python -m eval --dataset {tiny_dataset} --split test --pipeline bm25"
    matrix = Matrix(dataset=str(tiny_dataset), split="test", conditions={"bm25": {
        "command": cmd + " --max-queries 1", "scores": {"nDCG@10": 1.0}}})
    assert matrix.conditions["bm25"].max_queries == 1
    check_command(matrix.conditions["bm25"].command, matrix, "bm25")
    (ok,) = check_matrix(matrix, config, tiny_index_root, REPO / "models")
    assert ok.ok


def test_checker_builds_missing_index_and_refuses_unknown_conditions(tiny_dataset, tiny_index_root):
    config = parse_config({**TINY_CONFIG, "pipelines": {"bm25": {"stages": [{"type": "bm25", "index": "lucene"}]}}})
    matrix = tiny_matrix(tiny_dataset, 1.0)
    (check,) = check_matrix(matrix, config, tiny_index_root / "missing-root-is-built", REPO / "models")
    assert check.ok  # the index is built on demand
    with pytest.raises(ConfigError, match="no condition"):
        check_matrix(matrix, config, tiny_index_root, REPO / "models", pipelines=["dense"])


@pytest.mark.parametrize("command, message", [
    ("bash -c 'rm -rf /'", "must start with 'python -m eval'"),
    ("python -m eval --dataset ../shared/data/scifact --pipeline dense", "--pipeline should be"),
    ("python -m eval --dataset ../shared/data/cranfield --pipeline bm25", "--dataset should be"),
    ("python -m eval --dataset ../shared/data/scifact --split dev --pipeline bm25", "--split should be"),
    ("python -m eval --pipeline bm25", "does not parse"),
])
def test_inconsistent_commands_are_refused(command, message):
    matrix = Matrix(dataset="../shared/data/scifact", conditions={"bm25": {"command": "x", "scores": {"nDCG@10": 0.5}}})
    with pytest.raises(ConfigError, match=message):
        check_command(command, matrix, "bm25")


def test_bad_matrix_files_are_config_errors(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("dataset: x\nconditions: {bm25: {command: 'python -m eval --dataset x --pipeline bm25', scores: {P@7: 0.1}}}\n")
    with pytest.raises(ConfigError, match="unknown measures"):
        load_matrix(path)
    path.write_text("dataset: x\nconditions: {bm25: {command: 'python -m eval --dataset x --pipeline bm25'}}\n")
    with pytest.raises(ConfigError, match="either expected 'scores' or a 'pending' reason"):
        load_matrix(path)
    path.write_text("dataset: x\nconditions: {}\n")
    with pytest.raises(ConfigError, match="conditions"):
        load_matrix(path)
    with pytest.raises(ConfigError, match="not found"):
        load_matrix(tmp_path / "nope.yaml")


def test_regress_cli_exit_codes(tiny_dataset, tiny_index_root, tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(TINY_CONFIG))
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(yaml.safe_dump(tiny_matrix(tiny_dataset, 1.0).model_dump()))
    bad.write_text(yaml.safe_dump(tiny_matrix(tiny_dataset, 0.5).model_dump()))
    common = ["--config", str(cfg), "--index-root", str(tiny_index_root)]
    assert eval_main(["regress", str(good), *common]) == 0
    assert eval_main(["regress", str(good), str(bad), *common]) == 1
    out = capsys.readouterr().out
    assert "OK  \tgood\tbm25" in out and "FAIL\tbad\tbm25\tnDCG@10: expected 0.5000" in out
    pending = tmp_path / "pending.yaml"
    cond = {"command": f"python -m eval --dataset {tiny_dataset} --split test --pipeline bm25", "pending": "no GPU"}
    pending.write_text(yaml.safe_dump({"dataset": str(tiny_dataset), "conditions": {"bm25": cond}}))
    assert eval_main(["regress", str(pending), *common]) == 0
    assert "PENDING\tpending\tbm25\tno expected numbers yet: no GPU" in capsys.readouterr().out


@pytest.mark.slow
def test_every_configured_pipeline_matches_its_matrix_fresh():
    """Runs every condition of every matrix on the real collections (minutes of CPU)."""
    config = load_config(default_config_path())
    for path in matrix_files():
        matrix = load_matrix(path)
        if not (matrix.dataset_path() / "corpus.jsonl").is_file():
            pytest.skip(f"{matrix.dataset} not found (set SEARCH_DATA_DIR)")
        missing = set(config.pipelines) - set(matrix.conditions)
        assert not missing, f"{path.name} has no condition (scores or a pending reason) for {sorted(missing)}"
        checks = check_matrix(matrix, config, default_index_root(), default_models_dir())
        failures = [f"{c.pipeline}: {c.error or '; '.join(map(str, c.deviations))}" for c in checks if not c.ok and not c.pending]
        assert not failures, f"{path.name}: {failures}"
