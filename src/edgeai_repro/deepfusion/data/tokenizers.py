"""One tokenizer per model family, so the cross-tokenizer problem is real at every scale.

Paper scale loads each checkpoint's own tokenizer from the hub. Tiny scale trains one per family
with the `tokenizers` library on the run's own text: byte-level BPE for the GPT-2, OLMo, BLOOM,
Qwen and DeepSeek families and a SentencePiece-style (metaspace) BPE for Llama, each with its own
vocabulary size and special tokens, as the real families differ.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from edgeai_repro.core import cache
from edgeai_repro.core.errors import ConfigError

# family -> (style, end-of-text token, padding token)
FAMILIES = {
    "gpt2": ("bytelevel", "<|endoftext|>", "<|endoftext|>"),
    "llama": ("metaspace", "</s>", "<unk>"),
    "olmo": ("bytelevel", "<|endoftext|>", "<|padding|>"),
    "bloom": ("bytelevel", "</s>", "<pad>"),
    "qwen": ("bytelevel", "<|endoftext|>", "<|endoftext|>"),
    "deepseek": ("bytelevel", "<｜end▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
}


def _wrap(tok: Tokenizer, family: str) -> PreTrainedTokenizerFast:
    _, eos, pad = FAMILIES[family]
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=pad, unk_token=None)
    fast.padding_side = "right"
    return fast


def train_tokenizer(family: str, texts: list[str], vocab_size: int) -> Tokenizer:
    if family not in FAMILIES:
        raise ConfigError(f"tokenizer family {family!r} is unknown; use one of: {', '.join(FAMILIES)}.")
    style, eos, pad = FAMILIES[family]
    specials = list(dict.fromkeys([eos, pad]))
    if style == "bytelevel":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        alphabet = []
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator(texts, trainer=trainer)
    if tok.get_vocab_size() > vocab_size:
        raise ConfigError(
            f"the {family} tokenizer needs more than vocab_size={vocab_size} entries for its base "
            f"alphabet; raise the tiny vocab_size in its conf/deepfusion/student (or teacher) YAML."
        )
    return tok


TOKENIZERS = cache.get("deepfusion/tokenizers")


def tiny_tokenizer(family: str, texts: list[str], vocab_size: int, store: Path) -> PreTrainedTokenizerFast:
    """Train (or reuse from the cache "deepfusion/tokenizers" under `store`) the family's tokenizer on `texts`."""
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:12]
    path = TOKENIZERS.path(store, {"family": family, "vocab_size": vocab_size, "texts": digest}, ".json")
    return TOKENIZERS.load_or_make(
        path,
        lambda p: _cached(p, family),
        lambda: train_tokenizer(family, texts, vocab_size),
        lambda p, trained: TOKENIZERS.write(p, lambda tmp: tmp.write_text(trained.to_str())),
    )


@functools.lru_cache(maxsize=32)
def _cached(path: Path, family: str) -> PreTrainedTokenizerFast:
    return _wrap(Tokenizer.from_file(str(path)), family)


def hub_tokenizer(source: str) -> PreTrainedTokenizerFast:
    """A published checkpoint's own tokenizer, from its local folder or its hub id."""
    try:
        tok = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"could not load the tokenizer of {source!r} ({exc.__class__.__name__}); paper scale needs "
            "the hub, a pre-filled HF cache or a checkpoint folder with its tokenizer files "
            "(paths.checkpoints.<model>)."
        ) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return tok
