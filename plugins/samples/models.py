"""Build tiny models offline: transformers folders saved with ``save_pretrained``, torch files.

Machines without a model hub still need a model folder for text generation and classification:
these are real GPT-2 and BERT architectures with random weights and a byte-level BPE tokenizer
trained on a few sentences, small enough to build in a second. Their output is gibberish; the
code path (``transformers.pipeline(task, model=FOLDER)``) is the one a hub model takes.

    bulkinfer-samples tiny-gpt2 models/tiny-gpt2
    bulkinfer-samples tiny-chat models/tiny-chat
    bulkinfer-samples tiny-classifier models/tiny-classifier
    bulkinfer-samples tiny-sentence models/minilm-shaped   # MiniLM's shape, random weights

``tiny-chat`` is the one exception to "gibberish": a GPT-2 with a chat template, taught in a few
seconds to answer every chat prompt with :data:`CHAT_REPLY`, so that an OpenAI-compatible server
(``transformers serve``) started on it gives answers a test can check (JSON, stop strings).

    bulkinfer-samples tiny-image-classifier models/tiny-image-classifier
    bulkinfer-samples tiny-image-encoder models/tiny-image-encoder
    bulkinfer-samples tiny-resnet models/tiny-resnet

The image models are saved with their image processor (``preprocessor_config.json``), so
``transformers.pipeline("image-classification", model=FOLDER)`` loads them as it loads a hub model.
``tiny-resnet`` writes a torchvision-style ResNet-18 with random weights for the ``torch_module``
predictor: a TorchScript file and a state dict for the registered module ``resnet``.
"""

from __future__ import annotations

import json
import shutil
from importlib.resources import files
from pathlib import Path

#: Sentences the tokenizer is trained on (the seed's prompts and the shipped samples).
_SAMPLES = files("pipeline") / "samples" / "sample_texts.jsonl"
_SEED_TEXTS = ["Complete this", "for me"]
LABELS = ("NEGATIVE", "POSITIVE")
#: Classes of the tiny image models.
IMAGE_LABELS = ("cat", "dog", "fish", "bird")


def _corpus() -> list[str]:
    texts = list(_SEED_TEXTS)
    if _SAMPLES.is_file():
        lines = _SAMPLES.read_text().splitlines()
        texts += [json.loads(line)["text"] for line in lines if line.strip()]
    return texts


def build_tokenizer(
    special_tokens: dict[str, str],
    vocab_size: int = 512,
    extra_texts: list[str] | None = None,
    extra_special: list[str] | None = None,
):
    """A byte-level BPE tokenizer (GPT-2 style) trained on a few hundred sentences.

    ``extra_texts`` are added to the training sentences; ``extra_special`` are more special
    tokens (single ids never split), e.g. chat role markers.
    """
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        _corpus() + list(extra_texts or []),
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=list(dict.fromkeys([*special_tokens.values(), *(extra_special or [])])),
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


#: What the ``gpt2-chat`` model answers to every chat prompt (greedy decoding), then end of text.
CHAT_REPLY = '{"label": "positive"}'
#: Chat template of the ``gpt2-chat`` model: ``<|role|>content`` lines, then ``<|assistant|>``.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
CHAT_ROLES = ("<|system|>", "<|user|>", "<|assistant|>")


def build_gpt2_chat(
    path: str | Path, reply: str = CHAT_REPLY, seed: int = 0, steps: int = 120
) -> Path:
    """A 2-layer GPT-2 with a chat template that answers every chat prompt with ``reply``.

    The tokenizer learns ``reply`` as a few distinct tokens (it is in its training text), and
    ``steps`` Adam steps on random prompts teach the model to write them after
    ``<|assistant|>`` and then end the text: a few seconds on one CPU core. Positions go up to
    1280, so a server's default of 1024 new tokens fits. Without the chat template (a plain
    completion) the model writes gibberish like :func:`build_gpt2`'s.
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    eos = "<|endoftext|>"
    tokenizer = build_tokenizer(
        {"bos_token": eos, "eos_token": eos, "unk_token": eos},
        extra_texts=[reply] * 50,
        extra_special=list(CHAT_ROLES),
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=1280,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    _teach_reply(model, tokenizer, reply, steps, seed)
    return _save(model, tokenizer, path)


def _teach_reply(model, tokenizer, reply: str, steps: int, seed: int) -> None:
    """Train ``model`` to write ``reply`` + end of text after ``<|assistant|>``, whatever the
    (random, 1 to 120 tokens) prompt before it. One thread: on matrices this small, more
    threads only wait for each other, badly so on a busy machine (minutes instead of seconds)."""
    import torch

    marker = tokenizer.convert_tokens_to_ids("<|assistant|>")
    target = torch.tensor([*tokenizer(reply)["input_ids"], tokenizer.eos_token_id])
    first_plain = max(tokenizer.convert_tokens_to_ids(list(CHAT_ROLES))) + 1  # after specials
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = 16
    from transformers.utils import logging as transformers_logging

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    transformers_logging.set_verbosity_error()  # "loss_type=None ... unrecognized", per step
    model.train()
    try:
        for _ in range(steps):
            n = int(torch.randint(1, 121, (1,), generator=generator))
            prompt = torch.randint(first_plain, len(tokenizer), (batch, n), generator=generator)
            answer = target.repeat(batch, 1)
            ids = torch.cat([prompt, torch.full((batch, 1), marker), answer], dim=1)
            labels = ids.clone()
            labels[:, : n + 1] = -100  # learn only the answer
            loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    finally:
        torch.set_num_threads(threads)


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


def build_sentence_encoder(
    path: str | Path,
    hidden: int = 384,
    layers: int = 6,
    heads: int = 12,
    intermediate: int = 1536,
    vocab_size: int = 8000,
    seed: int = 0,
    pooling: str = "mean",
    dense: int | None = None,
    normalize: bool = False,
    prompt: str | None = None,
) -> Path:
    """A sentence-transformers model (BERT + mean pooling) with random weights, saved at ``path``.

    The defaults give all-MiniLM-L6-v2's shape (6 layers, width 384, 12 heads), so it costs what
    MiniLM costs per token: a stand-in for timing where the packaged MiniLM cannot be installed.
    The tokenizer is trained on the shipped sample sentences with room for every word, so their
    words (and sentences built from them) are about one token each. The vectors mean nothing.

    Other module stacks, for the ONNX export's tests: ``pooling`` (``mean``, ``cls``, ``max``,
    ``mean_sqrt_len_tokens``), a ``Dense`` layer to ``dense`` features (tanh), a ``Normalize``
    module, a default ``prompt`` prepended to every text.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import BertConfig, BertModel

    tokenizer = build_tokenizer(
        {
            "pad_token": "[PAD]",
            "unk_token": "[UNK]",
            "cls_token": "[CLS]",
            "sep_token": "[SEP]",
            "mask_token": "[MASK]",
        },
        vocab_size=vocab_size,
    )
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    path = Path(path)
    encoder = _save(BertModel(config), tokenizer, path / "encoder")
    # A plain transformers folder loads with mean pooling; saving it makes a complete
    # sentence-transformers folder (modules.json, pooling config).
    model = SentenceTransformer(str(encoder), device="cpu")
    if (pooling, dense, normalize, prompt) != ("mean", None, False, None):
        from sentence_transformers.models import Dense, Normalize, Pooling

        modules = [model[0], Pooling(hidden, pooling_mode=pooling)]
        if dense:
            width = modules[1].get_sentence_embedding_dimension()
            modules.append(Dense(width, dense, activation_function=torch.nn.Tanh()))
        if normalize:
            modules.append(Normalize())
        prompts = {"query": prompt} if prompt else None
        model = SentenceTransformer(
            modules=modules,
            device="cpu",
            prompts=prompts,
            default_prompt_name="query" if prompt else None,
        )
    model.save(str(path))
    shutil.rmtree(encoder)  # the saved model holds its own copy of the weights
    return path


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
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # "Writing model shards" for a 100 kB model
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)  # a tokenizer or an image processor
    return path
