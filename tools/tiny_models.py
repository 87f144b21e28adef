"""Build tiny transformers models offline, saved with ``save_pretrained``.

Machines without a model hub still need a model folder for text generation and classification:
these are real GPT-2 and BERT architectures with random weights and a byte-level BPE tokenizer
trained on a few sentences, small enough to build in a second. Their output is gibberish; the
code path (``transformers.pipeline(task, model=FOLDER)``) is the one a hub model takes.

    python -m tools.tiny_models gpt2 models/tiny-gpt2
    python -m tools.tiny_models classifier models/tiny-classifier
    python -m tools.tiny_models image-classifier models/tiny-image-classifier
    python -m tools.tiny_models image-encoder models/tiny-image-encoder
    python -m tools.tiny_models torch-resnet models/tiny-resnet

The image models are saved with their image processor (``preprocessor_config.json``), so
``transformers.pipeline("image-classification", model=FOLDER)`` loads them as it loads a hub model.
``torch-resnet`` writes a torchvision-style ResNet-18 with random weights for the ``torch_module``
predictor: a TorchScript file and a state dict for the registered module ``resnet``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

#: Sentences the tokenizer is trained on (the seed's prompts and the shipped samples).
_SAMPLES = Path(__file__).resolve().parent.parent / "pipeline" / "samples" / "sample_texts.jsonl"
_SEED_TEXTS = ["Complete this", "for me"]
LABELS = ("NEGATIVE", "POSITIVE")
#: Classes of the tiny image models.
IMAGE_LABELS = ("cat", "dog", "fish", "bird")


def _corpus() -> list[str]:
    texts = list(_SEED_TEXTS)
    if _SAMPLES.exists():
        with _SAMPLES.open() as lines:
            texts += [json.loads(line)["text"] for line in lines if line.strip()]
    return texts


def build_tokenizer(special_tokens: dict[str, str], vocab_size: int = 512):
    """A byte-level BPE tokenizer (GPT-2 style) trained on a few hundred sentences."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        _corpus(),
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=list(dict.fromkeys(special_tokens.values())),
        show_progress=False,
    )
    return PreTrainedTokenizerFast(tokenizer_object=bpe, **special_tokens)


def build_gpt2(path: str | Path, seed: int = 0) -> Path:
    """A 2-layer GPT-2 language model (vocabulary 512, width 32) saved at ``path``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    eos = "<|endoftext|>"
    tokenizer = build_tokenizer({"bos_token": eos, "eos_token": eos, "unk_token": eos})
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=256,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    return _save(GPT2LMHeadModel(config), tokenizer, path)


def build_encoder(path: str | Path, head: str = "classifier", seed: int = 0) -> Path:
    """A 2-layer BERT with a ``head``: classifier, token-classifier, masked-lm or none."""
    import torch
    from transformers import (
        BertConfig,
        BertForMaskedLM,
        BertForSequenceClassification,
        BertForTokenClassification,
        BertModel,
    )

    tokenizer = build_tokenizer(
        {
            "pad_token": "[PAD]",
            "unk_token": "[UNK]",
            "cls_token": "[CLS]",
            "sep_token": "[SEP]",
            "mask_token": "[MASK]",
        }
    )
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    )
    classes = {
        "classifier": BertForSequenceClassification,
        "token-classifier": BertForTokenClassification,
        "masked-lm": BertForMaskedLM,
        "none": BertModel,
    }
    torch.manual_seed(seed)
    return _save(classes[head](config), tokenizer, path)


def build_image_classifier(path: str | Path, seed: int = 0, image_size: int = 32) -> Path:
    """A 2-stage transformers ResNet classifier (labels ``IMAGE_LABELS``) saved at ``path``.

    Saved with a ConvNeXt-style image processor, as the hub's ResNets are: resize the shorter
    side to ``image_size / 0.875``, center crop ``image_size``, ImageNet mean/std. Widths 8 and
    16: it builds and runs in milliseconds.
    """
    import torch
    from transformers import ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(
        num_channels=3,
        embedding_size=8,
        hidden_sizes=[8, 16],
        depths=[1, 1],
        layer_type="basic",
        id2label=dict(enumerate(IMAGE_LABELS)),
        label2id={label: i for i, label in enumerate(IMAGE_LABELS)},
    )
    torch.manual_seed(seed)
    return _save(
        ResNetForImageClassification(config), _image_processor("convnext", image_size), path
    )


def build_image_encoder(path: str | Path, seed: int = 0, image_size: int = 32) -> Path:
    """A 2-layer ViT (patches of 8, width 32) without a head, saved at ``path``.

    Its ``pooler_output`` (the [CLS] token through a dense layer and tanh) is a 32-float
    vector. Saved with a ViT image processor: resize to ``image_size`` x ``image_size``,
    mean/std 0.5.
    """
    import torch
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(
        image_size=image_size,
        patch_size=8,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    torch.manual_seed(seed)
    return _save(
        ViTModel(config, add_pooling_layer=True), _image_processor("vit", image_size), path
    )


def _image_processor(kind: str, image_size: int):
    """A ConvNeXt or ViT image processor (torchvision backend when it imports, else PIL)."""
    from transformers import AutoImageProcessor  # noqa: F401 (registers the processor classes)

    if kind == "convnext":
        from transformers import ConvNextImageProcessor as processor

        return processor(
            size={"shortest_edge": image_size},
            crop_pct=0.875,
            image_mean=[0.485, 0.456, 0.406],
            image_std=[0.229, 0.224, 0.225],
        )
    from transformers import ViTImageProcessor as processor

    return processor(size={"height": image_size, "width": image_size})


def build_torch_resnet(
    folder: str | Path,
    num_classes: int = len(IMAGE_LABELS),
    width: int = 8,
    seed: int = 0,
    image_size: int = 32,
) -> dict[str, Path]:
    """A torchvision-style ResNet-18 with random weights, for the ``torch_module`` predictor.

    Writes ``resnet.pt`` (TorchScript: ``model_file``), ``resnet_state.pt`` (a state dict for
    ``module: resnet`` with ``module_kwargs: {num_classes, width}``) and ``labels.txt`` (one
    class name per line) into ``folder``; returns their paths by those keys (``model_file``,
    ``state_dict``, ``labels``). ``width`` is the first stage's channels (64 in torchvision's
    resnet18); the TorchScript file is traced on ``[1, 3, image_size, image_size]`` input but
    accepts any size.
    """
    import torch

    from plugins.predictors.torch_modules import ResNet

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = ResNet(num_classes=num_classes, width=width).eval()
    paths = {
        "model_file": folder / "resnet.pt",
        "state_dict": folder / "resnet_state.pt",
        "labels": folder / "labels.txt",
    }
    with torch.inference_mode():
        traced = torch.jit.trace(model, torch.zeros(1, 3, image_size, image_size))
    torch.jit.save(traced, paths["model_file"])
    torch.save(model.state_dict(), paths["state_dict"])
    names = list(IMAGE_LABELS) + [f"class_{i}" for i in range(len(IMAGE_LABELS), num_classes)]
    paths["labels"].write_text("\n".join(names[:num_classes]) + "\n")
    return paths


def _save(model, tokenizer, path: str | Path) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)  # a tokenizer or an image processor
    return path


def main(argv: list[str] | None = None) -> None:
    """``python -m tools.tiny_models {gpt2,classifier,...} FOLDER``."""
    parser = argparse.ArgumentParser(prog="python -m tools.tiny_models", description=__doc__)
    parser.add_argument(
        "kind",
        choices=[
            "gpt2",
            "classifier",
            "token-classifier",
            "masked-lm",
            "encoder",
            "image-classifier",
            "image-encoder",
            "torch-resnet",
        ],
    )
    parser.add_argument("folder", help="where to save the model (created if needed)")
    args = parser.parse_args(argv)
    if args.kind == "gpt2":
        path = build_gpt2(args.folder)
    elif args.kind == "image-classifier":
        path = build_image_classifier(args.folder)
    elif args.kind == "image-encoder":
        path = build_image_encoder(args.folder)
    elif args.kind == "torch-resnet":
        path = build_torch_resnet(args.folder)["model_file"].parent
    else:
        path = build_encoder(args.folder, "none" if args.kind == "encoder" else args.kind)
    print(f"saved a tiny {args.kind} model in {path}")


if __name__ == "__main__":
    main()
