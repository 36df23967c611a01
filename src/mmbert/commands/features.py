"""``mmbert features convert|check|info``: move region features between stores, validate them, describe them."""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "features", help="convert, check and describe region-feature stores (TSV, HDF5, LMDB, npz)"
    )
    actions = p.add_subparsers(dest="features_command", metavar="ACTION")

    c = actions.add_parser("convert", help="copy every record of SRC into DST (any format to any; resumable)")
    c.add_argument("src", help="source store: .tsv, .h5/.hdf5, LMDB directory (or .lmdb), npz directory")
    c.add_argument(
        "dst",
        help="destination; its format comes from the suffix (a bare name = npz directory); "
        "an existing destination is resumed: ids already there are skipped",
    )
    c.add_argument(
        "--src-format", choices=["tsv", "hdf5", "lmdb", "npz"], help="override the detected source format"
    )
    c.add_argument(
        "--dst-format", choices=["tsv", "hdf5", "lmdb", "npz"], help="override the destination format"
    )
    c.add_argument(
        "--tsv-layout",
        choices=["auto", "lxmert", "lxmert+cls_prob", "bottomup"],
        default="auto",
        help="TSV destination layout (auto: 10-field LXMERT when records carry labels, else 6-field)",
    )
    c.add_argument("--compression", help="HDF5 destination compression (e.g. gzip)")
    c.add_argument(
        "--skip-bad", action="store_true", help="skip unreadable source records (listed) instead of stopping"
    )
    c.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow reading a pickled VOLTA/ViLBERT LMDB source (unpickling can run code: trusted files only)",
    )
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.set_defaults(func=run_convert)

    k = actions.add_parser("check", help="check every record; list each bad one by image id; exit 1 if any")
    k.add_argument("path")
    k.add_argument("--feat-dim", type=int, help="expected feature width (default: the first record's)")
    k.add_argument("--min-boxes", type=int, default=1)
    k.add_argument("--max-boxes", type=int)
    k.add_argument(
        "--tolerance", type=float, default=1.0, help="pixels a box may overshoot the image (default 1)"
    )
    k.add_argument(
        "--trust-pickle", action="store_true", help="allow reading a pickled VOLTA/ViLBERT LMDB store"
    )
    k.add_argument("--progress", action="store_true", help="show a progress bar")
    k.set_defaults(func=run_check)

    i = actions.add_parser("info", help="count, feature width, boxes per image and box statistics")
    i.add_argument("path")
    i.add_argument(
        "--sample",
        type=int,
        default=1000,
        help="records read for the statistics, spread evenly "
        "over the store (0 = all); the count is always exact",
    )
    i.add_argument("--json", action="store_true", help="print JSON")
    i.add_argument(
        "--trust-pickle", action="store_true", help="allow reading a pickled VOLTA/ViLBERT LMDB store"
    )
    i.set_defaults(func=run_info)

    g = actions.add_parser("merge", help="join the shards of a multi-process `mmbert extract` into one store, "
                           "checking that no image is missing or duplicated")  # fmt: skip
    g.add_argument("shards", nargs="+", help="the shard stores (STORE.rank<r>of<n>...)")
    g.add_argument("--out", required=True, help="the merged store (must not exist)")
    g.add_argument("--format", choices=["tsv", "h5", "lmdb", "npz"], help="store format (default: from --out)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.set_defaults(func=run_merge)

    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_convert(args: argparse.Namespace) -> int:
    from mmbert.data.features.convert import convert

    options: dict = {}
    dst_format = args.dst_format
    if dst_format is None:
        from mmbert.data.features import detect_format

        dst_format = detect_format(args.dst)
    if dst_format == "tsv" and args.tsv_layout != "auto":
        options["layout"] = args.tsv_layout
    if dst_format == "hdf5" and args.compression:
        options["compression"] = args.compression
    report = convert(
        args.src,
        args.dst,
        src_format=args.src_format,
        dst_format=dst_format,
        trust_pickle=args.trust_pickle,
        skip_bad=args.skip_bad,
        progress=not args.no_progress,
        dst_options=options,
    )
    for problem in report.failed:
        print(f"skipped {problem}", file=sys.stderr)
    print(f"{args.src} -> {args.dst}: {report}")
    return 1 if report.failed else 0


def run_merge(args: argparse.Namespace) -> int:
    from mmbert.data.features.merge import merge_shards

    fmt = {"h5": "hdf5"}.get(args.format, args.format)
    report = merge_shards(args.shards, args.out, format=fmt, progress=not args.no_progress)
    print(f"{args.out}: {report}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from mmbert.data import features
    from mmbert.data.features.validate import check_store

    with features.open(args.path, trust_pickle=args.trust_pickle) as store:
        total = len(store)
        if total == 0:
            print(f"{args.path}: {_no_records(store)}", file=sys.stderr)
            return 1
        bad: set[str] = set()
        count = 0
        for problem in check_store(
            store, args.feat_dim, args.min_boxes, args.max_boxes, args.tolerance, progress=args.progress
        ):
            print(problem)
            bad.add(problem.image_id)
            count += 1
        incomplete = store.incomplete
    if incomplete:
        print(f"{args.path}: {INCOMPLETE_MESSAGE}", file=sys.stderr)
    if bad:
        print(f"{args.path}: {len(bad)} of {total} records have problems ({count} problems)", file=sys.stderr)
    if bad or incomplete:
        return 1
    print(f"{args.path}: all {total} records OK")
    return 0


INCOMPLETE_MESSAGE = (
    "incomplete: a conversion into this store started and did not finish (killed or failed); "
    "run the same `mmbert features convert` again to resume it"
)


def _no_records(store) -> str:
    if store.format == "npz" and not any(store.path.iterdir()):
        return "empty directory: not a feature store (no <image_id>.npz files, no LMDB data.mdb)"
    if store.format == "npz":
        return "holds no <image_id>.npz files: not an npz feature store (or an empty one)"
    return f"the {store.format} store holds no records"


def store_info(store, sample: int = 1000) -> dict:
    """Count, widths and box statistics of a store (statistics over an even sample of ``sample`` records)."""
    ids = store.keys()
    if sample and len(ids) > sample:
        ids = [ids[int(i)] for i in np.linspace(0, len(ids) - 1, sample)]
    widths: dict[int, int] = {}
    counts, rel_w, rel_h, heights, img_w = [], [], [], [], []
    optional: dict[str, int] = {}
    unreadable = 0
    for image_id in ids:
        try:
            rec = store[image_id]
        except ValueError:
            unreadable += 1
            continue
        width = int(rec.feats.shape[1]) if rec.feats.ndim == 2 else -1
        widths[width] = widths.get(width, 0) + 1
        counts.append(rec.num_regions)
        h, w = rec.image_size
        heights.append(h)
        img_w.append(w)
        if len(rec.boxes) and h > 0 and w > 0:
            rel_w.append((rec.boxes[:, 2] - rec.boxes[:, 0]) / w)
            rel_h.append((rec.boxes[:, 3] - rec.boxes[:, 1]) / h)
        for name in ("cls_prob", "obj_id", "obj_conf", "attr_id", "attr_conf"):
            if getattr(rec, name) is not None:
                optional[name] = optional.get(name, 0) + 1
        if rec.cls_prob is not None:
            optional["cls_prob classes"] = int(rec.cls_prob.shape[1])

    def stats(values) -> dict | None:
        if not len(values):
            return None
        a = np.asarray(values, dtype=np.float64)
        return {
            "min": round(float(a.min()), 4),
            "mean": round(float(a.mean()), 4),
            "max": round(float(a.max()), 4),
        }

    rel_w_all = np.concatenate(rel_w) if rel_w else []
    rel_h_all = np.concatenate(rel_h) if rel_h else []
    return {
        "path": str(store.path),
        "format": store.format,
        "complete": not store.incomplete,
        "images": len(store),
        "sampled": len(ids),
        "unreadable_in_sample": unreadable,
        "feature_width": widths,
        "boxes_per_image": stats(counts),
        "image_height": stats(heights),
        "image_width": stats(img_w),
        "box_width_fraction": stats(rel_w_all),
        "box_height_fraction": stats(rel_h_all),
        "optional_fields": optional,
    }


def run_info(args: argparse.Namespace) -> int:
    from mmbert.data import features

    with features.open(args.path, trust_pickle=args.trust_pickle) as store:
        info = store_info(store, args.sample)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    unreadable = f", {info['unreadable_in_sample']} unreadable" if info["unreadable_in_sample"] else ""
    print(
        f"{info['path']}: {info['format']} store, {info['images']} images "
        f"(statistics over {info['sampled']}{unreadable})"
    )
    if not info["complete"]:
        print(f"  {INCOMPLETE_MESSAGE}")
    for key in (
        "feature_width",
        "boxes_per_image",
        "image_height",
        "image_width",
        "box_width_fraction",
        "box_height_fraction",
        "optional_fields",
    ):
        print(f"  {key:<20} {info[key]}")
    return 0
