"""Distilling the reranker into a shallower student (issue 23): layer choice, the KL term, a tiny CPU run."""

from __future__ import annotations

import json

import pytest

from tests.test_training_cross_encoder import tiny_base, tiny_bundle, write_tiny_bundle  # noqa: F401 - fixture reused


class _Stack:
    """Just the attribute path keep_layers walks: module.encoder.encoder.layer and module.encoder.config."""

    def __init__(self, n: int):
        import types

        import torch

        self.encoder = types.SimpleNamespace(encoder=types.SimpleNamespace(
            layer=torch.nn.ModuleList([torch.nn.Linear(1, 1) for _ in range(n)])),
            config=types.SimpleNamespace(num_hidden_layers=n))


@pytest.mark.parametrize(("total", "n", "kept"), [(6, 3, [1, 3, 5]), (6, 2, [2, 5]), (6, 1, [5]), (6, 6, list(range(6))),
                                                   (12, 4, [2, 5, 8, 11])])
def test_student_keeps_evenly_spaced_layers_with_the_last(total, n, kept):
    from training.cross_encoder.trainer import keep_layers

    stack = _Stack(total)
    originals = list(stack.encoder.encoder.layer)
    assert keep_layers(stack, n) == kept
    assert list(stack.encoder.encoder.layer) == [originals[i] for i in kept]
    assert stack.encoder.config.num_hidden_layers == n


def test_student_cannot_have_more_layers_than_its_start():
    from training.cross_encoder.trainer import keep_layers

    with pytest.raises(ValueError, match="student_layers 7"):
        keep_layers(_Stack(6), 7)


def test_kl_to_teacher_is_zero_only_for_the_teachers_ranking_and_scales_with_temperature():
    import torch

    from training.cross_encoder.trainer import kl_to_teacher

    teacher = torch.tensor([[3.0, 1.0, -2.0]])
    assert float(kl_to_teacher(teacher + 5.0, teacher, 1.0)) == pytest.approx(0.0, abs=1e-6)  # shift-invariant
    wrong = torch.tensor([[-2.0, 1.0, 3.0]])
    assert float(kl_to_teacher(wrong, teacher, 1.0)) > 0.5
    # T^2 scaling keeps the gradient size comparable; a softer target is still minimised by the teacher itself
    assert float(kl_to_teacher(teacher, teacher, 4.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(kl_to_teacher(wrong, teacher, 4.0)) > 0.0


def test_config_rejects_a_model_teacher_without_its_folder():
    from training.cross_encoder.trainer import TrainConfig

    with pytest.raises(ValueError, match="teacher_model"):
        TrainConfig(teacher="model")
    with pytest.raises(ValueError, match="teacher_model"):
        TrainConfig(teacher="none", teacher_model="some/folder")
    with pytest.raises(ValueError, match="student_layers"):
        TrainConfig(student_layers=0)
    with pytest.raises(ValueError, match="label_weight"):
        TrainConfig(label_weight=-1.0)


def _group_kl(student_folder, teacher_folder):
    """Mean KL of the student's group softmax from the teacher's over every train group of the tiny bundle."""
    import random

    import torch

    from pipeline.scorers.cross_encoder_folder import read_module
    from training.cross_encoder.data.groups import make_groups
    from training.cross_encoder.trainer import TokenCache, TrainConfig, _batch_tensors, kl_to_teacher

    bundle = tiny_bundle()
    cfg = TrainConfig(negatives=3, max_length=64, device="cpu")
    groups = make_groups(bundle.queries, 3, 1, 11, ("bm25",), random.Random(5))
    queries = {q.qid: q for q in bundle.queries}
    out = []
    for folder in (student_folder, teacher_folder):
        module, tok = read_module(folder)
        module.eval()
        cache = TokenCache(tok, [q.text for q in bundle.queries] + list(bundle.docs.values()), 64)
        with torch.no_grad():
            out.append(module(*_batch_tensors(groups, queries, bundle.docs, cache, cfg, "cpu")).view(len(groups), 4))
    return float(kl_to_teacher(out[0], out[1], 1.0))


def test_cli_distils_a_one_layer_student_towards_its_teacher(tiny_base, tmp_path):  # noqa: F811 - fixture
    """A 1-layer student trained on a 2-layer teacher's scores alone (label weight 0) moves towards the teacher;
    it is saved as a 1-layer folder the serving scorer reads."""
    import torch

    from pipeline.scorers.cross_encoder import CrossEncoderScorer
    from pipeline.scorers.cross_encoder_folder import read_module, write_module
    from training.__main__ import main
    from training.cross_encoder.data.mining import write_json

    bundle_dir, rows = write_tiny_bundle(tmp_path)
    b = tiny_bundle()  # every query trains: no dev query, so the last epoch is kept (not a dev-chosen early one)
    write_json(bundle_dir / "train.json.gz", {"meta": b.meta, "docs": b.docs, "queries": [{**r, "role": "train"} for r in rows]})
    common = ["--bundle", str(bundle_dir), "--variants", "listwise", "--negatives", "3", "--rank-to", "11",
              "--groups-per-batch", "2", "--max-length", "64", "--device", "cpu", "--report-split", ""]
    assert main(["cross-encoder", "train", "--out", str(tmp_path / "teacher"), "--base-model", str(tiny_base),
                 "--epochs", "4", "--lr", "3e-3", *common]) == 0
    teacher, tok = read_module(tmp_path / "teacher")
    with torch.no_grad():  # a confident teacher: a tiny random model's scores are nearly flat
        teacher.head.weight.mul_(200.0)
    write_module(teacher, tok, tmp_path / "teacher", dtype="float32")
    student = ["cross-encoder", "train", "--base-model", str(tiny_base), "--student-layers", "1", "--teacher", "model",
               "--teacher-model", str(tmp_path / "teacher"), "--label-weight", "0", "--epochs", "30", "--patience", "100",
               "--lr", "3e-3", "--warmup-fraction", "0", *common]
    assert main([*student, "--out", str(tmp_path / "untrained"), "--max-seconds", "1e-9"]) == 0  # 0 steps: the start
    before = _group_kl(tmp_path / "untrained", tmp_path / "teacher")
    assert main([*student, "--out", str(tmp_path / "student")]) == 0
    after = _group_kl(tmp_path / "student", tmp_path / "teacher")
    assert before > 0.05 and after < 0.5 * before, (before, after)
    report = json.loads((tmp_path / "student" / "training_report.json").read_text())
    assert report["chosen"]["config"]["student_layers"] == 1
    assert report["chosen"]["config"]["teacher"] == "model"
    config = json.loads((tmp_path / "student" / "config.json").read_text())
    assert config["num_hidden_layers"] == 1
    scorer = CrossEncoderScorer(tmp_path / "student", device="cpu", precision="fp32", max_length=64)
    scores = scorer.score_pairs([("a query", "a passage"), ("a query", "another passage")])
    assert len(scores) == 2 and all(isinstance(s, float) for s in scores)
    assert torch.is_tensor(read_module(tmp_path / "student")[0].head.weight)
