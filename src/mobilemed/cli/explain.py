"""mobilemed explain CHECKPOINT IMAGES...: Grad-CAM overlays (PNG) for the predicted or a chosen class."""
from __future__ import annotations

import sys


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
    from mobilemed.explain.edge_heat import edge_heat
    from mobilemed.explain.files import cam_caption, explain_files

    done = explain_files(args.checkpoint, args.images, args.out, target=args.target_class, skip_bad=args.skip_bad,
                         allow_incomplete=args.allow_incomplete)
    for file, why in done.skipped:
        print(f"skipped {file}: {why}", file=sys.stderr)
    for image in done.images:
        caption, edge = cam_caption(image.target, image.probability), edge_heat(image.heatmap)
        print(f"{image.file}: predicted {image.predicted}; {caption}; {edge.share:.0%} of the heat on the edge"
              + (" (peaks there: markers, text or borders?)" if edge.peak_at_edge else "") + f" -> {image.png}")
    print(f"wrote {len(done.images)} overlay(s) to {args.out}"
          + (f"; skipped {len(done.skipped)} unreadable file(s)" if done.skipped else ""))
    print(f"heatmaps: {done.cam.describe()}")
    return 0
