"""``bulkinfer-samples``: sample data and tiny models for the examples, offline.

    bulkinfer-samples images data/images --count 200   # JPEG files of varied sizes
    bulkinfer-samples texts reviews.parquet            # the 300 shipped sentences (id, text)
    bulkinfer-samples tiny-gpt2 models/tiny-gpt2       # a 2-layer GPT-2 and its tokenizer
    bulkinfer-samples tiny-chat models/tiny-chat       # a GPT-2 that answers chats in JSON
    bulkinfer-samples list                             # every kind, what it needs

Every example of bulkinfer's README and documentation that needs data or a model builds it with
this command, so the examples run from the installed wheel on a machine without a model hub.
Each kind needs the libraries of one extra (``tiny-gpt2``: ``bulkinfer[transformers]``); where
they are missing the command says which extra to install, in one line, with exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROG = "bulkinfer-samples"


@dataclass(frozen=True)
class Kind:
    """One thing the command builds: what it is, the extra it needs, how it is built."""

    help: str
    extra: str | None
    build: Callable[[argparse.Namespace], str]


def _images(args: argparse.Namespace) -> str:
    from plugins.samples.images import write_benchmark_images

    written = write_benchmark_images(args.path, args.count or 200)
    return f"wrote {len(written)} JPEG files under {args.path}"


def _test_images(args: argparse.Namespace) -> str:
    from plugins.samples.images import write_test_images

    written = write_test_images(args.path)
    return f"wrote {len(written)} files (2 of them not readable images) under {args.path}"


def _texts(args: argparse.Namespace) -> str:
    from plugins.samples.tables import write_texts

    path = write_texts(args.path, args.count)
    return f"wrote {args.count or 300} rows (id, text) to {path}"


def _model(builder: str, *extra: Any) -> Callable[[argparse.Namespace], str]:
    def build(args: argparse.Namespace) -> str:
        from plugins.samples import models

        found = getattr(models, builder)(args.path, *extra)
        where = Path(args.path) if not isinstance(found, Path) else found
        return f"saved the model in {where}"

    return build


def _tiny_resnet(args: argparse.Namespace) -> str:
    from plugins.samples.models import build_torch_resnet

    paths = build_torch_resnet(args.path)
    return "wrote " + ", ".join(str(p) for p in paths.values())


def _tiny_xgboost(args: argparse.Namespace) -> str:
    from plugins.samples.tables import build_xgboost

    return "wrote " + ", ".join(str(p) for p in build_xgboost(args.path).values())


def _tiny_mlp(args: argparse.Namespace) -> str:
    from plugins.samples.tables import build_mlp

    return "wrote " + ", ".join(str(p) for p in build_mlp(args.path).values())


#: Every kind, by the name on the command line.
KINDS: dict[str, Kind] = {
    "images": Kind(
        "RGB JPEG files, 160-320 pixels a side, in folders of 500 (--count, default 200)",
        "images",
        _images,
    ),
    "test-images": Kind(
        "a small tree that tests an image reader: modes, formats, EXIF, 2 bad files",
        "images",
        _test_images,
    ),
    "texts": Kind(
        "the 300 shipped sentences (id, text) as .parquet, .csv or .jsonl (--count rows)",
        None,
        _texts,
    ),
    "tiny-gpt2": Kind(
        "a 2-layer GPT-2 (width 32) with a byte-level BPE tokenizer, random weights",
        "transformers",
        _model("build_gpt2"),
    ),
    "tiny-chat": Kind(
        'a tiny GPT-2 with a chat template that answers every chat {"label": "positive"}',
        "transformers",
        _model("build_gpt2_chat"),
    ),
    "tiny-classifier": Kind(
        "a 2-layer BERT text classifier (NEGATIVE, POSITIVE), random weights",
        "transformers",
        _model("build_encoder", "classifier"),
    ),
    "tiny-token-classifier": Kind(
        "a 2-layer BERT token classifier, random weights",
        "transformers",
        _model("build_encoder", "token-classifier"),
    ),
    "tiny-masked-lm": Kind(
        "a 2-layer BERT masked language model, random weights",
        "transformers",
        _model("build_encoder", "masked-lm"),
    ),
    "tiny-encoder": Kind(
        "a 2-layer BERT without a head (feature extraction), random weights",
        "transformers",
        _model("build_encoder", "none"),
    ),
    "tiny-sentence": Kind(
        "a sentence-transformers model of all-MiniLM-L6-v2's shape, random weights",
        "embeddings",
        _model("build_sentence_encoder"),
    ),
    "tiny-image-classifier": Kind(
        "a 2-stage transformers ResNet classifier (cat, dog, fish, bird) with its image processor",
        "transformers",
        _model("build_image_classifier"),
    ),
    "tiny-image-encoder": Kind(
        "a 2-layer ViT without a head, with its image processor",
        "transformers",
        _model("build_image_encoder"),
    ),
    "tiny-resnet": Kind(
        "a ResNet-18 layout (width 8) for torch_module: resnet.pt, resnet_state.pt, labels.txt",
        "torch",
        _tiny_resnet,
    ),
    "tiny-mlp": Kind(
        "a torch.export MLP (x, y, z -> 1) as model.pt2, and features.parquet to run it on",
        "torch",
        _tiny_mlp,
    ),
    "tiny-xgboost": Kind(
        "scikit-learn's breast-cancer features.parquet and an XGBoost model.json trained on them",
        "xgboost",
        _tiny_xgboost,
    ),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Sample data and tiny models for bulkinfer's examples, built offline.",
        epilog=f"'{PROG} list' prints every kind with what it builds and the extra it needs.",
    )
    parser.add_argument("kind", help="what to build (see 'list')")
    parser.add_argument("path", nargs="?", help="the folder (or, for texts, the file) to write")
    parser.add_argument("--count", type=int, default=None, help="images, texts: how many")
    return parser


def _error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def describe() -> list[str]:
    """One line per kind: its name, the extra it needs and what it builds."""
    width = max(map(len, KINDS))
    return [
        f"{name:<{width}}  {('[' + k.extra + ']') if k.extra else '(core)':<15} {k.help}"
        for name, k in KINDS.items()
    ]


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit status (0, or 2 with one ``error:`` line on stderr)."""
    args = _parser().parse_args(argv)
    if args.kind == "list":
        print("\n".join(describe()))
        return 0
    kind = KINDS.get(args.kind)
    if kind is None:
        return _error(f"no kind {args.kind!r}; one of: list, {', '.join(KINDS)}")
    if not args.path:
        example = "data.parquet" if args.kind == "texts" else "out/"
        return _error(
            f"{args.kind}: give the folder (or file) to write, e.g. {PROG} {args.kind} {example}"
        )
    if args.count is not None and args.count < 1:
        return _error("--count: must be at least 1")
    try:
        print(kind.build(args))
    except ModuleNotFoundError as exc:
        missing = (exc.name or str(exc)).split(".")[0]
        install = f"pip install 'bulkinfer[{kind.extra}]'" if kind.extra else "reinstall bulkinfer"
        return _error(f"{args.kind} needs {missing}, which is not installed: {install}")
    except (OSError, ValueError) as exc:
        return _error(f"{args.kind}: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
