"""``python -m eval``: the eval job's command line, dispatched on the first argument.

    python -m eval --dataset DIR --split test --pipeline NAME [--run-file OUT]   # one dataset, print metrics
    python -m eval report --datasets DIR [DIR ...] --out reports/                # every servable pipeline
    python -m eval score --qrels DIR_OR_QRELS --run A.trec --run B.trec          # existing run files
    python -m eval regress [eval/regressions/*.yaml] [--pipeline NAME]           # regression matrix
    python -m eval convert --collection C.tsv --topics T --qrels Q --out DIR     # MS MARCO/TREC -> BEIR
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from pathlib import Path

from eval.arguments import add_common_options, eval_parser
from pipeline.core.errors import PipelineError
from pipeline.runtime.logging_quiet import quiet_optional_probes

SUBCOMMANDS = ("report", "score", "regress", "convert")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    quiet_optional_probes()
    command = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    handlers = {None: _plain, "report": _report, "score": _score, "regress": _regress, "convert": _convert}
    try:
        return handlers[command](argv[1:] if command else argv)
    except (PipelineError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _plain(argv: list[str]) -> int:
    from eval.metrics import parse_measures
    from eval.runner import check_pipelines, judged_queries, run_eval
    from eval.trec import write_run
    from pipeline.registry import load_config

    args = eval_parser().parse_args(argv)
    pipelines = args.pipeline or ["bm25"]
    config = load_config(args.config)
    check_pipelines(config, pipelines)
    measures = parse_measures(args.measures)
    judged_queries(args.dataset, args.split, max_queries=args.max_queries)  # a wrong split or dataset: now, not after loading
    for name in pipelines:
        started = time.perf_counter()
        logging.getLogger("eval").info("%s: loading (indexes are built first if missing), then searching", name)
        res = run_eval(args.dataset, args.split, name, config, args.index_root, args.models_dir, collection=args.collection,
                       max_queries=args.max_queries, measures=measures)
        total = time.perf_counter() - started  # loading, index checks and searching: what the user waited
        if args.run_file:
            path = args.run_file / f"{_file_name(name)}.trec" if len(pipelines) > 1 else args.run_file
            write_run(res.results, path, tag=_file_name(name))
        if args.json:
            print(json.dumps({"dataset": res.dataset, "split": res.split, "pipeline": name, **res.metrics,
                              "queries": res.num_queries, "search_seconds": round(res.seconds, 4),
                              "seconds": round(total, 4)}))
        else:
            cols = "  ".join(f"{k}={v:.4f}" for k, v in res.metrics.items())
            print(f"{res.dataset}\t{res.split}\t{name}\t{cols}\t({res.num_queries} queries: {res.seconds:.1f} s searching, "
                  f"{total:.1f} s in all)")
    return 0


def _report(argv: list[str]) -> int:
    from eval.experiment import DEFAULT_DEPTHS, Experiment
    from eval.isolation import run_isolated
    from eval.report import build_report, write_report
    from eval.runner import check_pipelines, judged_queries
    from eval.trec import write_run
    from pipeline.registry import load_config

    parser = argparse.ArgumentParser(prog="python -m eval report", description="Evaluate every servable pipeline "
                                     "on each dataset; write report.md/.json, per-query JSON, run files and plots.")
    parser.add_argument("--datasets", type=Path, nargs="+", required=True, help="BEIR-layout folders")
    parser.add_argument("--out", type=Path, required=True, help="output folder (e.g. reports/)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--pipelines", "--pipeline", dest="pipelines", action="extend", nargs="+", metavar="NAME",
                        help="default: every pipeline in the config (repeatable, or several after one flag)")
    parser.add_argument("--skip", nargs="+", default=[], help="pipelines to leave out (listed as skipped)")
    parser.add_argument("--skip-reason", default="excluded on the command line (--skip)", help="shown for --skip")
    parser.add_argument("--baseline", default="bm25")
    parser.add_argument("--depths", type=int, nargs="*", default=list(DEFAULT_DEPTHS),
                        help="rerank depths for the trade-off curves (none: no curves)")
    parser.add_argument("--trials", type=int, default=10_000, help="randomisation-test trials")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--max-queries", type=int, help="only the first N judged queries of each dataset (same for "
                        "every pipeline; for rerankers on a CPU); the report says so")
    parser.add_argument("--stage-cache", type=Path, help="folder of first-stage results: read when present, written "
                        "when computed (fill it where Java and the indexes are, rerank where the GPU is; see eval/stage_cache.py)")
    parser.add_argument("--first-stages-only", action="store_true", help="with --stage-cache: only compute and store "
                        "every pipeline's first stage (no reranking, no report)")
    parser.add_argument("--in-process", action="store_true", help="run every pipeline in this process (a native "
                        "crash then ends the report); default: pipelines grouped by first stage, one child process each")
    add_common_options(parser)
    args = parser.parse_args(argv)
    config = load_config(args.config)
    names = args.pipelines or list(config.pipelines)
    check_pipelines(config, names + args.skip)
    for dataset in args.datasets:  # a wrong split or folder fails now, not after the first dataset's pipelines
        judged_queries(dataset, args.split, max_queries=args.max_queries)
    if args.first_stages_only:
        if args.stage_cache is None:
            parser.error("--first-stages-only needs --stage-cache")
        for dataset in args.datasets:
            exp = Experiment(dataset, args.split, config, args.index_root, args.models_dir, max_queries=args.max_queries,
                             stage_cache=args.stage_cache)
            for name, status in exp.fill_stage_cache([n for n in names if n not in args.skip]).items():
                print(f"{exp.collection} {name}: {status}")
        return 0
    outcomes = []
    for dataset in args.datasets:
        if args.in_process:
            exp = Experiment(dataset, args.split, config, args.index_root, args.models_dir, max_queries=args.max_queries,
                             stage_cache=args.stage_cache)
            outcome = exp.run_all(names, depths=args.depths, exclude=args.skip)
        else:
            outcome = run_isolated(dataset, args.split, config, args.index_root, args.models_dir, names,
                                   depths=args.depths, exclude=args.skip, max_queries=args.max_queries,
                                   stage_cache=args.stage_cache)
        outcome.skipped.update({name: args.skip_reason for name in args.skip if name in outcome.skipped})
        for name, results in outcome.results.items():
            write_run(results, args.out / "runs" / outcome.dataset / f"{_file_name(name)}.trec", tag=_file_name(name))
        outcomes.append(outcome)
        _print_summary(outcome)
    report = build_report(outcomes, args.baseline, command="python -m eval report " + shlex.join(argv), trials=args.trials)
    for path in write_report(report, outcomes, args.out, plots=not args.no_plots):
        print(f"wrote {path}")
    return 0


def _score(argv: list[str]) -> int:
    from eval.experiment import MISSING_POLICIES, outcome_from_runs
    from eval.formats import load_judgements
    from eval.metrics import DEFAULT_MEASURES, DISPLAY, parse_measures
    from eval.report import build_report, write_report
    from eval.trec import read_run

    parser = argparse.ArgumentParser(prog="python -m eval score", description="Evaluate existing TREC run files "
                                     "(no pipeline is run), with significance tests against a baseline run.")
    parser.add_argument("--qrels", type=Path, required=True, help="BEIR folder (with --split) or a TREC/BEIR qrels file")
    parser.add_argument("--split", default="test")
    parser.add_argument("--run", action="append", required=True, help="FILE or NAME=FILE (repeatable)")
    parser.add_argument("--baseline", help="name of the baseline run (default: the first)")
    parser.add_argument("--out", type=Path, help="also write a report folder")
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--measures", nargs="+", metavar="M", help="measures to print, e.g. nDCG@10 P@5 MAP "
                        "(default: nDCG@10 RR@10 R@100 R@1000 MAP; the report and its tests always include the defaults)")
    parser.add_argument("--missing", choices=MISSING_POLICIES, default="error",
                        help="a judged query absent from a run: error (default); covered: score only the judged queries "
                        "every run covers (warned, counted); zero: count it as 0 (trec_eval -c)")
    args = parser.parse_args(argv)
    qrels, _ = load_judgements(args.qrels, args.split)
    runs = {}
    for spec in args.run:
        name, _, file = spec.rpartition("=") if "=" in spec else (Path(spec).stem, "", spec)
        if name in runs:
            raise ValueError(f"two runs are named {name!r}: use NAME=FILE")
        runs[name] = read_run(Path(file))
    label = args.qrels.name if args.qrels.is_dir() else args.qrels.stem
    shown = [DISPLAY.get(str(m), str(m)) for m in parse_measures(args.measures)]
    measures = list({str(m): m for m in [*DEFAULT_MEASURES, *parse_measures(args.measures)]}.values())
    outcome = outcome_from_runs(label, args.split, qrels, runs, missing=args.missing, measures=measures)
    coverage = outcome.provenance["coverage"]
    if coverage["missing"]:
        absent = ", ".join(f"{name}: {n}" for name, n in coverage["missing"].items())
        scored = coverage["scored"] if args.missing == "covered" else coverage["judged"]
        print(f"WARNING: runs miss judged queries ({absent}); --missing {args.missing}: scored on {scored} of "
              f"{coverage['judged']} judged queries", file=sys.stderr)
    report = build_report([outcome], args.baseline or next(iter(runs)), command="python -m eval score " + shlex.join(argv),
                          trials=args.trials)
    ds = report["datasets"][0]
    marks = {c["system"]: c for c in ds["comparisons"] if c["measure"] == "nDCG@10"}
    for name, sys_ in ds["systems"].items():
        cols = "  ".join(f"{k}={sys_['metrics'][k]:.4f}" for k in shown)
        comp = marks.get(name)
        sig = (f"\tvs {comp['baseline']}: Δ={comp['delta']:+.4f} p_t={comp['t_p_holm']:.3g} p_rand={comp['rand_p_holm']:.3g} "
               f"W/T/L={comp['wins']}/{comp['ties']}/{comp['losses']} {comp['mark']}") if comp else ""
        print(f"{label}\t{name}\t{cols}{sig}\t({ds['num_queries']} of {coverage['judged']} judged queries)")
    if args.out:
        for path in write_report(report, [outcome], args.out):
            print(f"wrote {path}")
    return 0


def _regress(argv: list[str]) -> int:
    from eval.regression import check_matrix, load_matrix, matrix_files
    from pipeline.registry import load_config

    parser = argparse.ArgumentParser(prog="python -m eval regress", description="Run regression matrices fresh and "
                                     "compare with the expected scores; exit 1 on any deviation.")
    parser.add_argument("matrices", type=Path, nargs="*", help="default: eval/regressions/*.yaml")
    parser.add_argument("--pipeline", "--pipelines", dest="pipeline", action="extend", nargs="+", metavar="NAME",
                        help="only these conditions (repeatable, or several after one flag)")
    add_common_options(parser)
    args = parser.parse_args(argv)
    config = load_config(args.config)
    failed = 0
    for path in args.matrices or matrix_files():
        matrix = load_matrix(path)
        names = [p for p in args.pipeline if p in matrix.conditions] if args.pipeline else None
        for check in check_matrix(matrix, config, args.index_root, args.models_dir, pipelines=names):
            if check.pending:
                print(f"PENDING\t{path.stem}\t{check.pipeline}\tno expected numbers yet: {check.pending}")
                continue
            status = "OK  " if check.ok else "FAIL"
            detail = check.error or "; ".join(map(str, check.deviations)) or "  ".join(f"{k}={v:.4f}" for k, v in check.measured.items())
            print(f"{status}\t{path.stem}\t{check.pipeline}\t{detail}")
            failed += not check.ok
    return 1 if failed else 0


def _convert(argv: list[str]) -> int:
    from eval.formats import convert_to_beir

    parser = argparse.ArgumentParser(prog="python -m eval convert", description="Write a BEIR folder from an MS MARCO "
                                     "tsv collection, TREC topics (or a queries tsv) and TREC qrels.")
    parser.add_argument("--collection", type=Path, required=True)
    parser.add_argument("--topics", type=Path, required=True)
    parser.add_argument("--qrels", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="new folder (refused if it exists)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--field", default="title", choices=["title", "desc", "narr"], help="TREC topic field")
    args = parser.parse_args(argv)
    print(f"wrote {convert_to_beir(args.collection, args.topics, args.qrels, args.out, args.split, args.field)}")
    return 0


def _print_summary(outcome) -> None:
    for name, system in outcome.systems.items():
        cols = "  ".join(f"{k}={v:.4f}" for k, v in system.metrics.items())
        print(f"{outcome.dataset}\t{outcome.split}\t{name}\t{cols}\t({system.ms_per_query:.1f} ms/query)")
    for name, reason in outcome.skipped.items():
        print(f"{outcome.dataset}\t{outcome.split}\t{name}\tSKIPPED: {reason}")


def _file_name(pipeline: str) -> str:
    """A pipeline name as a file name / run tag: ``bm25>>ce`` -> ``bm25__ce``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in pipeline)


if __name__ == "__main__":
    sys.exit(main())
