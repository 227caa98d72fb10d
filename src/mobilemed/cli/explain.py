"""mobilemed explain CHECKPOINT IMAGES...: Grad-CAM overlays (PNG) for the predicted or a chosen class."""
from __future__ import annotations

import sys
from pathlib import Path

from mobilemed.errors import MobilemedError
from mobilemed.fsutil import check_output_dir


def add_arguments(parser) -> None:
    parser.add_argument("checkpoint", help="best.pt from a run folder")
    parser.add_argument("images", nargs="+", help="image / DICOM files or folders")
    parser.add_argument("--class", dest="target_class", metavar="NAME",
                        help="class (multi-label: finding) to explain; default: the predicted class "
                             "(multi-label: the most probable finding)")
    parser.add_argument("--out", default="gradcam", help="folder for the overlays (default: ./gradcam)")
    parser.add_argument("--skip-bad", action="store_true", help="skip unreadable files and count them")
    parser.add_argument("--allow-incomplete", action="store_true", help="use a checkpoint of an unfinished run (warns)")


def run(args) -> int:
    from mobilemed.data.transforms import to_model_input
    from mobilemed.decision import class_probabilities
    from mobilemed.explain.gradcam import compute_gradcam, default_targets, save_overlay
    from mobilemed.inference import Predictor, expand_inputs

    check_output_dir(args.out)
    predictor = Predictor.from_checkpoint(args.checkpoint, allow_incomplete=args.allow_incomplete)
    spec = predictor.spec
    chosen = class_index(spec, args.target_class)
    files = expand_inputs(args.images)
    out_dir = Path(args.out)
    skipped = []
    for file, png in zip(files, output_names(files)):
        try:
            image = predictor.read_image(file)  # (H, W) or (H, W, 3) uint8
        except MobilemedError as err:
            if not args.skip_bad:
                raise
            print(f"skipped {file}: {err}", file=sys.stderr)
            skipped.append(file)
            continue
        prediction = predictor.predict_images(image[None], [file])
        predicted = prediction.labels[0]
        target = int(default_targets(prediction.probabilities, spec)[0]) if chosen is None else chosen
        prob = class_probabilities(prediction.probabilities, spec)[0, target]
        heatmap = compute_gradcam(predictor.model, to_model_input(image[None], spec), spec=spec,
                                  target_classes=[target])[0]
        explained = f"Grad-CAM for {spec.class_names[target]} (p = {prob:.2f})"
        save_overlay(out_dir / png, image, heatmap, title=f"{Path(file).name}   predicted: {predicted}\n{explained}")
        print(f"{file}: predicted {predicted}; {explained} -> {out_dir / png}")
    if len(skipped) == len(files):
        raise MobilemedError("no readable image among the inputs")
    print(f"wrote {len(files) - len(skipped)} overlay(s) to {out_dir}"
          + (f"; skipped {len(skipped)} unreadable file(s)" if skipped else ""))
    return 0


def class_index(spec, name: str | None) -> int | None:
    """Index of --class NAME (exact, else case-insensitive), None when not given."""
    if name is None:
        return None
    if name in spec.class_names:
        return spec.class_names.index(name)
    folded = [i for i, n in enumerate(spec.class_names) if n.casefold() == name.casefold()]
    if len(folded) == 1:
        return folded[0]
    raise MobilemedError(f"--class {name!r} is not a class of this model; choose one of: "
                         f"{', '.join(spec.class_names)}")


def output_names(files: list[str]) -> list[str]:
    """<stem>_gradcam.png, numbered when two inputs share a stem (e.g. the same name in two folders)."""
    names, seen = [], {}
    for file in files:
        stem = Path(file).stem
        seen[stem] = seen.get(stem, 0) + 1
        names.append(f"{stem}_gradcam.png" if seen[stem] == 1 else f"{stem}_{seen[stem]}_gradcam.png")
    return names
