"""Fine-tuning speed-ups side by side: plain full fine-tuning, each speed-up alone, the combined recipe, a probe.

    python bench/bench_finetune.py --data ../shared/data/kermany_cxr_224 \
        --weights ../shared/weights/mobilenet_v2_imagenet.pth

Prints one table per data set (--data may repeat). Two kinds of rows, labelled in the table:
- "timed": plain full fine-tuning (channels_last, as `train` runs it) and each speed-up alone (progressive resizing's
  small epochs, head-only warm-up epochs, the frozen prefix, torch.compile with --compile): plain costs
  minutes per epoch at 224 px here, so each is timed in this process on --steps training batches (after
  one warm-up batch) with the very functions `mobilemed train` uses (image_batches or CachedPrefixPlan,
  train_one_epoch), plus the validation pass timed on --val-images images; both are extrapolated to one
  epoch of the data set (the frozen prefix's one-off cache pass likewise, from the images it cached).
  These rows train nothing to the end: they have no accuracy. Each starts from the same seeded head and
  batches, so the mean loss over the timed batches (printed under the table) must agree between a row and
  its torch.compile twin; a torch.compile row's one-off is the compilation (its first batch beyond a timed one).
- "run": a complete `mobilemed train` (a child process, cold MOBILEMED_HOME shared by the runs of one data
  set, so the decode is paid once); seconds per epoch are the mean of history.json's epochs after the
  head-only warm-up (train + validation), "one-off" is the frozen-prefix cache or the probe's feature pass,
  total is metrics.json's train_seconds. An --ensemble run's epochs are all its members' (epochs counts them
  all), its one-off the members' one shared prefix pass. Test accuracy at the operating point chosen on
  validation and at 0.5, and AUROC, with 95% bootstrap CIs (1000 resamples of the test images).
"x faster" divides plain full fine-tuning's seconds per epoch by the row's, at the same resolution (not given for
the linear probe, whose epoch runs on cached features). Rows of
--add-run summarise run folders trained before (labelled with the folder): their times were measured then.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

BLOCKS = 12
KERMANY_PATIENTS = r"^(person\d+|NORMAL2-IM-\d+|IM-\d+)"  # the patient id in Kermany's file names
RECIPE = ["--mode", "finetune", "--freeze-blocks", str(BLOCKS), "--prefix-views", "8", "--crop-scale", "0.35",
          "--intensity", "0.3",
          "--head-warmup-epochs", "1", "--epochs", "8", "--backbone-lr-scale", "0.3", "--label-smoothing", "0.1",
          "--ema", "0.998", "--lr", "1e-3", "--batch-size", "32", "--threshold-views", "4"]
PROBE = ["--mode", "linear-probe", "--epochs", "10"]
COMMON = ["--quiet", "--no-gallery", "--patience", "0", "--overwrite"]


def load_split_images(data: str, image_size: int):
    """(spec, {split: SplitData-like}) decoded exactly as `mobilemed train` decodes them."""
    from mobilemed.data.cache import decoded_images, take_splits
    from mobilemed.data.sources import load_table
    from mobilemed.training.config import ModelChoice, TrainConfig
    from mobilemed.training.fit import make_spec

    table = load_table(data)
    images, keep = decoded_images(table, image_size, progress=False)
    table = table.subset(keep)
    config = TrainConfig(data=data, model=ModelChoice(mode="finetune", image_size=image_size))
    spec = make_spec(config, table, in_chans=1 if images.ndim == 3 else 3, image_size=image_size)
    pixels = take_splits(images, table.splits)
    return spec, {s: (pixels[s], table.labels[table.splits == s]) for s in ("train", "val")}


def time_plain(spec, parts: dict, weights: str, *, steps: int, batch_size: int, val_images: int,
               size: int | None = None, head_only: bool = False,
               compile_model: bool = False) -> dict:
    """Seconds per epoch of the plain fine-tuning path, extrapolated from `steps` timed batches."""
    from mobilemed.batch_predict import predict_logits
    from mobilemed.checkpoint import load_state_dict_file
    from mobilemed.models import build_model
    from mobilemed.training.loop import build_optimizer, build_scheduler, image_batches, make_loss, train_one_epoch

    torch.manual_seed(0)  # every row starts from the same head: the compiled row's loss is comparable
    model = build_model(spec, load_state_dict_file(weights))
    model = model.to(memory_format=torch.channels_last)
    model.freeze_backbone(head_only)
    images, labels = parts["train"]
    optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], name="adamw", lr=1e-4,
                                weight_decay=1e-4)
    scheduler = build_scheduler(optimizer, name="none", epochs=1, steps_per_epoch=steps)
    trained = torch.compile(model) if compile_model else model
    batches = image_batches(images, labels, spec, batch_size=batch_size, generator=torch.Generator().manual_seed(0),
                            augment=True, size=size)
    loss_fn = make_loss(spec.task, labels, "balanced")
    tic = time.perf_counter()
    train_one_epoch(trained, itertools.islice(batches, 1), loss_fn, optimizer, scheduler, total=1, progress=False)
    warmup = time.perf_counter() - tic
    tic = time.perf_counter()
    loss = train_one_epoch(trained, itertools.islice(batches, steps), loss_fn, optimizer, scheduler, total=steps,
                           progress=False)
    per_step = (time.perf_counter() - tic) / steps
    val, _ = parts["val"]
    tic = time.perf_counter()
    predict_logits(model, val[:val_images], spec)
    per_val_image = (time.perf_counter() - tic) / min(val_images, len(val))
    epoch = per_step * -(-len(images) // batch_size) + per_val_image * len(val)
    compiling = warmup - per_step if compile_model else None  # the first batch's time beyond a timed one
    return {"seconds_per_epoch": epoch, "first_step": warmup, "per_step": per_step, "steps_timed": steps,
            "one_off": compiling, "timed_loss": loss}


def time_frozen_prefix(spec, parts: dict, weights: str, *, blocks: int, steps: int, batch_size: int,
                       val_images: int, compile_model: bool = False) -> dict:
    """Seconds per epoch of `--freeze-blocks blocks` alone (no warm-up), from `steps` timed batches on the cached
    maps of (steps + 1) x batch_size training images; "one-off" is the prefix pass extrapolated to every image
    (with compile_model, plus the compilation: the first batch's time beyond a timed one)."""
    from mobilemed.checkpoint import load_state_dict_file
    from mobilemed.models import build_model
    from mobilemed.training.loop import build_optimizer, build_scheduler, make_loss, train_one_epoch
    from mobilemed.training.prefix_cache import prefix_maps
    from mobilemed.training.prefix_finetune import CachedPrefixPlan, PrefixTail

    torch.manual_seed(0)
    model = build_model(spec, load_state_dict_file(weights)).to(memory_format=torch.channels_last)
    tail = PrefixTail(model, blocks)
    (images, labels), (val, val_labels) = parts["train"], parts["val"]
    subset = np.arange(min(len(images), (steps + 1) * batch_size))
    tic = time.perf_counter()
    train_maps = prefix_maps(tail.prefix, images[subset], spec, progress=False)
    val_maps = prefix_maps(tail.prefix, val[:val_images], spec, progress=False)
    per_image_cache = (time.perf_counter() - tic) / (len(subset) + len(val_maps[0]))
    plan = CachedPrefixPlan(tail, labels[subset], batch_size, train_maps, val_maps, spec.task)
    optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], name="adamw", lr=1e-4,
                                weight_decay=1e-4)
    scheduler = build_scheduler(optimizer, name="none", epochs=1, steps_per_epoch=steps)
    batches = plan.batches(torch.Generator().manual_seed(0))
    loss_fn = make_loss(spec.task, labels, "balanced")
    trained = torch.compile(tail) if compile_model else tail
    tic = time.perf_counter()
    train_one_epoch(trained, itertools.islice(batches, 1), loss_fn, optimizer, scheduler, total=1, progress=False)
    first_step = time.perf_counter() - tic
    tic = time.perf_counter()
    loss = train_one_epoch(trained, itertools.islice(batches, steps), loss_fn, optimizer, scheduler, total=steps,
                           progress=False)
    per_step = (time.perf_counter() - tic) / steps
    tic = time.perf_counter()
    plan.val_logits(tail)  # eager: validation's batch of 256 and eval mode would each compile again
    per_val_image = (time.perf_counter() - tic) / len(val_maps[0])
    one_off = per_image_cache * (len(images) + len(val)) + (first_step - per_step if compile_model else 0.0)
    return {"seconds_per_epoch": per_step * -(-len(images) // batch_size) + per_val_image * len(val),
            "one_off": one_off, "first_step": first_step, "per_step": per_step, "steps_timed": steps,
            "timed_loss": loss}


def run_cli(data: str, weights: str, options: list, run_dir: Path, home: str, *, image_size: int | None) -> dict:
    size = ["--image-size", str(image_size)] if image_size else []
    argv = [sys.executable, "-m", "mobilemed", "train", data, "--weights", weights, "--out", str(run_dir),
            *COMMON, *size, *options]
    tic = time.perf_counter()
    code = subprocess.run(argv, env={**os.environ, "MOBILEMED_HOME": home}).returncode
    if code != 0:
        raise SystemExit(f"{' '.join(argv)} failed with exit code {code}")
    return summarise_run(run_dir, options, wall=time.perf_counter() - tic)


def summarise_run(run_dir: Path, options: list, *, wall: float) -> dict:
    from mobilemed.evaluation.metrics import compute_metrics
    from mobilemed.run_files import read_split_predictions

    warm = int(options[options.index("--head-warmup-epochs") + 1]) if "--head-warmup-epochs" in options else 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    members = sorted((run_dir / "members").glob("member*"))  # --ensemble: every member's epochs count
    histories = [json.loads((folder / "history.json").read_text()) for folder in members or [run_dir]]
    test = metrics["test"]
    pred = read_split_predictions(run_dir, "test")
    at_half = compute_metrics(pred.y_true, pred.y_prob, task=pred.task, class_names=pred.class_names,
                              thresholds=[0.5], n_bootstrap=1000)
    one_off = next((json.loads((run_dir / name).read_text())["seconds"] for name in
                    ("prefix_cache.json", "feature_pass.json") if (run_dir / name).exists()), None)
    if members:  # the members share one prefix pass, timed by the run
        one_off = metrics["ensemble"].get("shared_prefix_seconds")
    tuned = [r for history in histories for r in (history[warm:] or history)]
    return {"seconds_per_epoch": float(np.mean([r["seconds"] for r in tuned])),
            "epochs": sum(len(history) for history in histories),
            "one_off": one_off, "total": metrics["train_seconds"], "wall": wall,
            "accuracy": test["accuracy"], "accuracy_at_half": at_half.to_dict()["accuracy"],
            "auroc": test["auroc_macro"], "threshold": test.get("thresholds")}


def _ci(entry: dict | None) -> str:
    if not entry:
        return "-"
    ci = entry.get("ci")
    return f"{entry['value']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def print_table(name: str, rows: dict, plain_key: str) -> None:
    """One markdown table; "x faster" is plain full fine-tuning's seconds per epoch over the row's."""
    plain = rows[plain_key]["seconds_per_epoch"]
    print(f"\n### {name}\n")
    print("| method | kind | s / epoch | x faster | one-off (s) | epochs | total train (s) | test acc @ op. point "
          "| test acc @ 0.5 | test AUROC |")
    print("|---|---|---:|---:|---:|---:|---:|---|---|---|")
    for method, row in rows.items():
        one_off = f"{row['one_off']:.0f}" if row.get("one_off") is not None else "-"
        total = f"{row['total']:.0f}" if row.get("total") is not None else "-"
        # A probe epoch on cached features is not a fine-tuning epoch: a ratio of the two means nothing.
        faster = "-" if method == "linear probe" else f"{plain / row['seconds_per_epoch']:.1f}"
        print(f"| {method} | {row['kind']} | {row['seconds_per_epoch']:.1f} | {faster} "
              f"| {one_off} | {row.get('epochs', '-')} | {total} | {_ci(row.get('accuracy'))} "
              f"| {_ci(row.get('accuracy_at_half'))} | {_ci(row.get('auroc'))} |")
    losses = {method: row["timed_loss"] for method, row in rows.items() if "timed_loss" in row}
    if losses:  # same head and batches in every timed row of one kind: torch.compile's loss should match eager's
        print("\nmean training loss over the timed batches: "
              + "; ".join(f"{method} {loss:.4f}" for method, loss in losses.items()))


def bench_data_set(data: str, args) -> dict:
    """Every row for one data set: the timed rows first, then the complete runs."""
    from mobilemed.training.fit import seed_everything

    seed_everything(0)
    size = args.image_size
    spec, parts = load_split_images(data, size)
    timed = dict(steps=args.steps, batch_size=32, val_images=args.val_images)
    rows = {f"plain full fine-tune @{size} (channels_last)": time_plain(spec, parts, args.weights, **timed),
            f"head-only warm-up epoch @{size}": time_plain(spec, parts, args.weights, head_only=True, **timed),
            f"progressive resizing: epoch @{args.low_res}": time_plain(spec, parts, args.weights, size=args.low_res,
                                                                       **timed)}
    if args.compile:
        rows[f"plain full fine-tune @{size} + torch.compile"] = time_plain(spec, parts, args.weights,
                                                                            compile_model=True, **timed)
    rows[f"frozen prefix alone (--freeze-blocks {BLOCKS}) @{size}"] = time_frozen_prefix(
        spec, parts, args.weights, blocks=BLOCKS, **timed)
    if args.compile:
        rows[f"frozen prefix (--freeze-blocks {BLOCKS}) @{size} + torch.compile"] = time_frozen_prefix(
            spec, parts, args.weights, blocks=BLOCKS, compile_model=True, **timed)
    for row in rows.values():
        row["kind"] = f"timed ({row['steps_timed']} steps)"
    del parts
    for spec_text in args.add_run or []:
        method, _, run_dir = spec_text.partition("=")
        rows[method] = {"kind": f"run folder {run_dir}", **summarise_run(Path(run_dir), _warmup_option(run_dir),
                                                                         wall=None)}
    if args.timed_only:
        return rows
    out = Path(args.run_root) / Path(data).name
    patients = ["--group-pattern", KERMANY_PATIENTS] if "kermany" in Path(data).name.lower() else []
    with tempfile.TemporaryDirectory() as home:
        runs = {"single": (f"combined recipe @{size}", RECIPE + patients),
                # the README's Kermany recipe: the combined recipe's network trained N times
                "ensemble": (f"combined recipe @{size} --ensemble {args.ensemble}",
                             RECIPE + patients + ["--ensemble", str(args.ensemble)]),
                "probe": ("linear probe", PROBE)}
        chosen = [runs[name] for name in ("single", "ensemble", "probe") if name in args.runs
                  and (name != "ensemble" or args.ensemble > 1)]
        for method, options in chosen:
            folder = "ensemble" if "--ensemble" in options else method.split()[0]
            rows[method] = {"kind": "run", **run_cli(data, args.weights, options, out / folder, home,
                                                     image_size=size)}
    return rows


def _warmup_option(run_dir: str) -> list:
    """["--head-warmup-epochs", N] from a run folder's config.yaml, so its warm-up epochs are left out."""
    from mobilemed.run_config import read_config

    config = read_config(run_dir)
    return ["--head-warmup-epochs", str(config["optim"]["head_warmup_epochs"])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", help="data set (repeat for more); default Kermany")
    parser.add_argument("--weights", default="../shared/weights/mobilenet_v2_imagenet.pth")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--low-res", type=int, default=128, help="progressive resizing's small size")
    parser.add_argument("--steps", type=int, default=10, help="timed batches per timed row")
    parser.add_argument("--val-images", type=int, default=128, help="validation images timed per timed row")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (compiles for minutes)")
    parser.add_argument("--run-root", default="runs/bench-finetune")
    parser.add_argument("--timed-only", action="store_true", help="only the timed rows (no complete runs)")
    parser.add_argument("--ensemble", type=int, default=1, metavar="N",
                        help="also run the combined recipe with --ensemble N (N trainings; 1: not)")
    parser.add_argument("--runs", nargs="+", choices=("single", "ensemble", "probe"),
                        default=["single", "ensemble", "probe"],
                        help="which complete runs to make: the combined recipe, its --ensemble N, the probe")
    parser.add_argument("--add-run", action="append", metavar="METHOD=RUN_DIR",
                        help="also summarise a finished run folder as a row (labelled with its folder)")
    parser.add_argument("--results", default="bench/results_finetune.json")
    args = parser.parse_args()
    results = {}
    for data in args.data or ["../shared/data/kermany_cxr_224"]:
        rows = bench_data_set(data, args)
        results[data] = rows
        print_table(data, rows, f"plain full fine-tune @{args.image_size} (channels_last)")
    Path(args.results).write_text(json.dumps(results, indent=2))
    print(f"\ncombined recipe: mobilemed train DATA {' '.join(RECIPE)} --image-size {args.image_size} (Kermany: "
          f"--group-pattern '{KERMANY_PATIENTS}')")


if __name__ == "__main__":
    main()
