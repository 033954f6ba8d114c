"""Run with (from the repository root, 6-8 minutes on 2 shared cores):

    cargo build --release -p rapid-knowledge
    .venv-fixtures/bin/python knowledge/bench/compare_pykeen.py

Compares `rapid-transe` with PyKEEN's TransE on the Nations, Kinships and UMLS graphs that ship in
PyKEEN's wheel, and writes `knowledge/RESULTS.md`.

Both tools see identical splits: the training, validation and test triples are exported to TSV from the
PyKEEN dataset's own triples factories, and PyKEEN trains on those same factories. Both use the same
settings (see SETTINGS below): TransE with L1 distance, margin ranking loss averaged over pairs, one
uniformly corrupted negative per positive, Adam, unit-norm entities, filtered realistic-rank evaluation on
the test split (filter: train + valid + test). PyKEEN runs on the CPU with torch.set_num_threads(THREADS);
rapid-transe with --threads THREADS. Each tool runs once per seed.

Needs a venv with pykeen (it brings torch): python3 -m venv .venv-fixtures && .venv-fixtures/bin/pip install pykeen
"""

import argparse
import importlib.metadata
import json
import logging
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from pykeen.datasets import Kinships, Nations, UMLS
from pykeen.evaluation import RankBasedEvaluator
from pykeen.models import TransE
from pykeen.pipeline import pipeline

ROOT = Path(__file__).resolve().parents[2]
BINARY = ROOT / "target" / "release" / "rapid-transe"
RESULTS = ROOT / "knowledge" / "RESULTS.md"
COMMAND = "cargo build --release -p rapid-knowledge && .venv-fixtures/bin/python knowledge/bench/compare_pykeen.py"
DATASETS = {"Nations": Nations, "Kinships": Kinships, "UMLS": UMLS}
THREADS = 2
# PyKEEN's TransE defaults (dim 50, L1, margin 1, one negative, batch 256) with Adam at lr 0.01 instead of
# its 0.001, which needs far more than 100 epochs. 100 epochs keeps PyKEEN's side to ~2-2.5 minutes per seed
# on 2 cores; both tools are close to converged there (see the notes in RESULTS.md).
SETTINGS = dict(dim=50, epochs=100, batch_size=256, lr=0.01, margin=1.0, negatives=1, norm="l1", corruption="uniform")
METRICS = {
    "mrr": "both.realistic.inverse_harmonic_mean_rank",
    "hits_at_1": "both.realistic.hits_at_1",
    "hits_at_3": "both.realistic.hits_at_3",
    "hits_at_10": "both.realistic.hits_at_10",
}


def export(dataset, directory: Path) -> dict[str, Path]:
    """Writes the dataset's own splits as head<TAB>relation<TAB>tail files."""
    paths = {}
    for split, factory in (("train", dataset.training), ("valid", dataset.validation), ("test", dataset.testing)):
        paths[split] = directory / f"{split}.tsv"
        with paths[split].open("w", encoding="utf-8") as file:
            for head, relation, tail in factory.triples:
                file.write(f"{head}\t{relation}\t{tail}\n")
    return paths


def run_pykeen(dataset, seed: int) -> dict:
    started = time.perf_counter()
    result = pipeline(
        training=dataset.training,
        validation=dataset.validation,
        testing=dataset.testing,
        model="TransE",
        model_kwargs=dict(embedding_dim=SETTINGS["dim"], scoring_fct_norm=1),
        loss="MarginRankingLoss",
        loss_kwargs=dict(margin=SETTINGS["margin"]),
        optimizer="Adam",
        optimizer_kwargs=dict(lr=SETTINGS["lr"]),
        training_loop="sLCWA",
        negative_sampler="basic",
        negative_sampler_kwargs=dict(num_negs_per_pos=SETTINGS["negatives"]),
        training_kwargs=dict(num_epochs=SETTINGS["epochs"], batch_size=SETTINGS["batch_size"], use_tqdm=False),
        evaluator="RankBasedEvaluator",
        evaluator_kwargs=dict(filtered=True),
        evaluation_kwargs=dict(use_tqdm=False),
        random_seed=seed,
        device="cpu",
    )
    wall = time.perf_counter() - started
    metrics = {name: float(result.metric_results.get_metric(key)) for name, key in METRICS.items()}
    return dict(metrics, training_seconds=result.train_seconds, wall_seconds=wall)


def run_rapid(paths: dict[str, Path], out: Path, seed: int) -> dict:
    command = [
        str(BINARY),
        "--train", str(paths["train"]), "--valid", str(paths["valid"]), "--test", str(paths["test"]),
        "--out", str(out), "--overwrite", "--threads", str(THREADS), "--seed", str(seed),
        "--dim", str(SETTINGS["dim"]), "--epochs", str(SETTINGS["epochs"]),
        "--batch-size", str(SETTINGS["batch_size"]), "--lr", str(SETTINGS["lr"]),
        "--margin", str(SETTINGS["margin"]), "--negatives", str(SETTINGS["negatives"]),
        "--norm", SETTINGS["norm"], "--corruption", SETTINGS["corruption"], "--log-every", str(SETTINGS["epochs"]),
    ]
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if finished.returncode != 0:
        sys.exit(f"rapid-transe failed:\n{finished.stderr}")
    if "dropped" in finished.stderr:
        print(finished.stderr.strip(), file=sys.stderr)
    report = json.loads((out / "metrics.json").read_text())
    metrics = {name: report["test"][name] for name in METRICS}
    return dict(metrics, training_seconds=report["training_seconds"], wall_seconds=wall)


def check_evaluation(dataset, out: Path, outcome: dict) -> float:
    """The largest difference between rapid-transe's metrics and PyKEEN's evaluator on the same vectors."""
    reference = evaluate_with_pykeen(dataset, out)
    return max(abs(outcome[name] - reference[name]) for name in METRICS)


def evaluate_with_pykeen(dataset, out: Path) -> dict:
    """PyKEEN's own evaluator on rapid-transe's vectors: a check of rapid-transe's ranking code."""
    factory = dataset.training
    model = TransE(triples_factory=factory, embedding_dim=SETTINGS["dim"], scoring_fct_norm=1)
    with torch.no_grad():
        # `_embeddings` is the nn.Embedding behind PyKEEN 1.11's Embedding representation.
        for representation, names, vectors, to_id in (
            (model.entity_representations[0], "entities.txt", "entity_vectors.npy", factory.entity_to_id),
            (model.relation_representations[0], "relations.txt", "relation_vectors.npy", factory.relation_to_id),
        ):
            rows = torch.tensor([to_id[name] for name in (out / names).read_text(encoding="utf-8").splitlines()])
            representation._embeddings.weight[rows] = torch.from_numpy(np.load(out / vectors))
    result = RankBasedEvaluator(filtered=True).evaluate(
        model,
        dataset.testing.mapped_triples,
        additional_filter_triples=[factory.mapped_triples, dataset.validation.mapped_triples],
        use_tqdm=False,
    )
    return {name: float(result.get_metric(key)) for name, key in METRICS.items()}


def command_output(*command: str) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in command_output("lscpu").splitlines()
                if line.startswith("Model name")), platform.processor() or "unknown CPU")
    return f"{cpu}; nproc = {command_output('nproc')}; {platform.system()} {platform.release()}"


def versions() -> str:
    return (f"rapid-transe {command_output(str(BINARY), '--version').split()[-1]} ({command_output('rustc', '--version')}), "
            f"PyKEEN {importlib.metadata.version('pykeen')}, torch {torch.__version__}, Python {platform.python_version()}")


def mean(runs: list[dict], key: str) -> float:
    return statistics.fmean(run[key] for run in runs)


def write_results(results: dict, seeds: list[int], elapsed: float, evaluation_gap: float) -> None:
    lines = [
        "# TransE: rapid-transe against PyKEEN",
        "",
        "Reproduce (from the repository root; 6-8 minutes on 2 shared cores):",
        "",
        "```sh",
        COMMAND,
        "```",
        "",
        f"- Machine: {machine()}. The machine is shared: timings vary by ±20% between runs.",
        f"- Versions: {versions()}.",
        f"- Threads: {THREADS} for both (torch.set_num_threads({THREADS}); `--threads {THREADS}`). Seeds: "
        f"{', '.join(map(str, seeds))}; each tool runs once per seed. Whole comparison: {elapsed / 60:.1f} minutes.",
        "- Splits: PyKEEN's own train/valid/test factories, exported to TSV for rapid-transe (identical triples).",
        "- Settings (both tools): TransE, dim {dim}, L1 distance, margin ranking loss (margin {margin}, mean over "
        "positive-negative pairs), {negatives} negative per positive, uniform head/tail corruption that never "
        "re-draws the original entity, Adam lr {lr} (betas 0.9/0.999, eps 1e-8), batch {batch_size}, {epochs} "
        "epochs, entities renormalised to unit L2 norm after every step, relations normalised once at "
        "initialisation.".format(**SETTINGS),
        "- Optimiser detail: PyKEEN's Adam is dense (every row moves every step); rapid-transe's is lazy (rows "
        "touched by the batch). On these graphs a batch touches nearly every entity and relation, so the two "
        "coincide up to initialisation: PyKEEN draws Xavier-uniform vectors (entities normalised from the first "
        "step on), rapid-transe the paper's uniform(±6/√k), normalised at once.",
        "- Metrics: filtered (train + valid + test), both head and tail prediction, realistic rank for ties "
        "(PyKEEN's `both.realistic.*`), on the test split.",
        "- Training seconds: PyKEEN's `train_seconds` (training loop only) and rapid-transe's `training_seconds` "
        "(training loop only). Whole run: loading, training and evaluation, measured around the call/process.",
        "",
        f"## Mean over seeds {', '.join(map(str, seeds))}",
        "",
        "| dataset | tool | MRR | Hits@1 | Hits@3 | Hits@10 | training s | whole run s | MRR per seed |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for dataset, tools in results.items():
        for tool, runs in tools.items():
            per_seed = " / ".join(f"{run['mrr']:.3f}" for run in runs)
            cells = [f"{mean(runs, key):.3f}" for key in METRICS] + [
                f"{mean(runs, 'training_seconds'):.2f}", f"{mean(runs, 'wall_seconds'):.2f}", per_seed]
            lines.append(f"| {dataset} | {tool} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Training speed-up of rapid-transe over PyKEEN (ratio of mean training seconds): "
        + ", ".join(f"{dataset} {mean(tools['PyKEEN'], 'training_seconds') / mean(tools['rapid-transe'], 'training_seconds'):.0f}×"
                    for dataset, tools in results.items()) + ".",
        "",
        "MRR difference, rapid-transe minus PyKEEN (means): "
        + ", ".join(f"{dataset} {mean(tools['rapid-transe'], 'mrr') - mean(tools['PyKEEN'], 'mrr'):+.3f}"
                    for dataset, tools in results.items()) + ".",
        "",
        "Evaluation cross-check: every rapid-transe run's vectors were also loaded into a PyKEEN TransE model and "
        "ranked by PyKEEN's `RankBasedEvaluator` (filtered, same filter). Largest difference from rapid-transe's "
        f"own MRR/Hits@k over all runs: {evaluation_gap:.1e}.",
        "",
    ]
    lines += NOTES
    RESULTS.write_text("\n".join(lines) + "\n", encoding="utf-8")


# Written once by hand while choosing the settings; this script does not re-run these experiments.
NOTES = [
    "## Notes (measured once while choosing the settings; not re-run by this script)",
    "",
    "- Epochs: rapid-transe alone at 50/100/200/400 epochs, seed 0, other settings as above (test MRR, filter "
    "including validation): Nations 0.437/0.449/0.477/0.451, UMLS 0.607/0.653/0.636/0.642, Kinships "
    "0.257/0.266/0.290/0.291 (run on PyKEEN's packaged files, whose entity order differs from the export, so "
    "seed 0 there is not seed 0 here). 100 epochs is close to converged and keeps PyKEEN's side near 2-2.5 "
    "minutes per seed on 2 cores.",
    "- Seed spread on Kinships at 100 epochs (same packaged files): rapid-transe 0.266-0.285 over seeds 0-4 "
    "with uniform corruption, 0.263-0.283 with Bernoulli; PyKEEN 0.261-0.286 over seeds 0-2. Differences of "
    "1-2 points MRR between the tools are within one tool's seed-to-seed spread.",
    "- Nations, the smallest graph (14 entities), shows a small gap: rapid-transe over seeds 0-19 on the "
    "exported splits has mean MRR 0.437 (sd 0.012), PyKEEN 0.452/0.462/0.450 over seeds 0-2. Tried, 20 seeds "
    "each: dense Adam (every row moves every step, as torch's Adam) 0.437; PyKEEN's entity initialisation "
    "(Xavier-uniform, not normalised before the first step) 0.441. Neither closes it, so neither was kept; "
    "the cause is not known. Kinships and UMLS show no gap. The evaluation is not the cause (see the "
    "cross-check above).",
    "- Otherwise nothing was tuned: the trainer was written to match PyKEEN's TransE (loss reduction, "
    "sampler, constraint, optimiser) and run with these settings.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds, one run of each tool per seed")
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    if not BINARY.exists():
        sys.exit(f"{BINARY} not found: build it with `cargo build --release -p rapid-knowledge`")
    torch.set_num_threads(THREADS)
    logging.getLogger("pykeen").setLevel(logging.ERROR)
    started = time.perf_counter()
    results: dict[str, dict[str, list[dict]]] = {}
    evaluation_gaps: list[float] = []
    with tempfile.TemporaryDirectory(prefix="compare-pykeen-") as work:
        for name, dataset_class in DATASETS.items():
            dataset = dataset_class()
            directory = Path(work) / name
            directory.mkdir()
            paths = export(dataset, directory)
            results[name] = {"PyKEEN": [], "rapid-transe": []}
            for seed in seeds:
                for tool, run in (("PyKEEN", lambda: run_pykeen(dataset, seed)),
                                  ("rapid-transe", lambda: run_rapid(paths, directory / "out", seed))):
                    outcome = run()
                    if tool == "rapid-transe":
                        evaluation_gaps.append(check_evaluation(dataset, directory / "out", outcome))
                    results[name][tool].append(outcome)
                    print(f"{name} {tool} seed {seed}: MRR {outcome['mrr']:.3f}, "
                          f"training {outcome['training_seconds']:.2f} s", flush=True)
    write_results(results, seeds, time.perf_counter() - started, max(evaluation_gaps))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
