"""CLI: ``python -m localaws.algorithms.image_classification {train,serve} ...``.

``train`` imports torch; ``serve`` does not (it runs the exported ONNX model).
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localaws.algorithms.image_classification",
                                     description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a model from an /opt/ml-style directory")
    train.add_argument("--ml-root", required=True, help="directory laid out like /opt/ml")
    serve = sub.add_parser("serve", help="serve a trained model over HTTP")
    serve.add_argument("--model-dir", required=True, help="the extracted model.tar.gz")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--threads", type=int, default=None,
                       help="onnxruntime intra-op threads (default 1, or "
                            "LOCALAWS_IC_SERVE_THREADS)")
    args = parser.parse_args(argv)
    if args.command == "train":
        from .train import main as train_main

        return train_main(args.ml_root)
    from .serve import main as serve_main

    return serve_main(args.model_dir, args.host, args.port, args.threads)


if __name__ == "__main__":
    sys.exit(main())
