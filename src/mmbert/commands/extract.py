"""``mmbert extract``: region features from images into a feature store (needs ``mmbert[vision]``).

::

    mmbert extract --images photos/ --out feats.h5 --detector butd --weights frcnn/pytorch_model.bin --boxes 36
    mmbert extract --images list.txt --out feats.tsv --detector fasterrcnn_v2 --weights default \\
        --min-boxes 10 --max-boxes 100 --batch 4
    torchrun --nproc-per-node 4 -m mmbert extract --images photos/ --out feats.h5 ...   # 4 shards
    mmbert features merge feats.rank*of4.h5 --out feats.h5
"""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("extract", help="extract region features from images (bottom-up attention, torchvision, grid)")
    p.add_argument("--images", required=True, help="a directory of images (recursive) or a text file of image paths")
    p.add_argument("--out", required=True, help="the store to write (resumed when it exists): .tsv, .h5, .lmdb, "
                   "or a directory (npz); under torchrun each rank writes STORE.rank<r>of<n>")  # fmt: skip
    p.add_argument("--detector", default="butd", choices=["butd", "fasterrcnn_v1", "fasterrcnn_v2", "grid"])
    p.add_argument("--weights", default=None,
                   help="a local weights file; 'random' (fixed-seed random init, for tests; recorded in the "
                   "metadata); 'default' (torchvision's published weights, downloaded). Required for butd")  # fmt: skip
    p.add_argument("--config", help="butd: the reference config.yaml (default: the one beside --weights)")
    p.add_argument("--boxes", type=int, help="exactly N regions per image (e.g. 36)")
    p.add_argument("--min-boxes", type=int, help="at least this many regions (e.g. 10)")
    p.add_argument("--max-boxes", type=int, help="at most this many regions (e.g. 100)")
    p.add_argument("--conf", type=float, help="score threshold of --selection bottomup (e.g. 0.2)")
    p.add_argument("--selection", default="reference", choices=["reference", "bottomup"],
                   help="reference: the LXMERT demo's class-agnostic NMS at IoU 0.5/0.6/0.7 until the count fits; "
                   "bottomup: the original Caffe rule (per-class NMS 0.3, confidence >= --conf, min/max)")  # fmt: skip
    p.add_argument("--min-size", type=int, help="resize: shorter side (butd 800; 600 = the original Caffe scale)")
    p.add_argument("--max-size", type=int, help="resize: longer side at most (butd 1333; Caffe 1000)")
    p.add_argument("--proposals", type=int, help="RPN proposals per image (butd 300, fasterrcnn 1000)")
    p.add_argument("--channel-order", choices=["bgr", "rgb"],
                   help="butd: channel order fed to the network (bgr, default: what the weights were trained with; "
                   "rgb: the reference demo's file-path behaviour)")  # fmt: skip
    p.add_argument("--batch", type=int, default=1, help="images per forward pass (equal-size images share one)")
    p.add_argument("--format", choices=["tsv", "h5", "lmdb", "npz"], help="store format (default: from --out)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (under torchrun 'cuda' = cuda:LOCAL_RANK)")
    p.add_argument("--workers", type=int, default=2, help="image-decoding threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmbert.vision import require_vision

    try:
        require_vision()
    except ImportError as e:
        print(f"mmbert extract: {e}", file=sys.stderr)
        return 1
    from mmbert.vision.extract import ExtractOptions, extract

    weights = args.weights
    if weights is None:
        if args.detector == "butd":
            raise ValueError("butd needs --weights FILE (the reference pytorch_model.bin) or --weights random")
        weights = "default"
    opts = ExtractOptions(detector=args.detector, weights=weights, config=args.config, boxes=args.boxes,
                          min_boxes=args.min_boxes, max_boxes=args.max_boxes, conf=args.conf,
                          selection=args.selection, min_size=args.min_size, max_size=args.max_size,
                          proposals=args.proposals,
                          channel_order=args.channel_order, batch=args.batch, format=args.format,
                          device=args.device, workers=args.workers, progress=not args.no_progress)  # fmt: skip
    report = extract(args.images, args.out, opts)
    print(report)
    return 0
