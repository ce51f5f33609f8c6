"""Tokenize a corpus mix into fixed-length contexts, streaming (RAM does not grow with
the corpus). The mix is general text plus the *training-split* stories and neutral
dialogues: held-out topics never enter an SAE's training data.

Each context carries, per token, the id of the document it came from; `documents`
records (id, source, index) so a cached activation row can be traced to its text.
Documents are joined with the tokenizer's EOS token and packed back to back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from emosae import data
from emosae.core.errors import EmosaeError
from emosae.lm.chat import dialogue_text


@dataclass(frozen=True)
class CorpusConfig:
    """What text the activation cache is computed on."""

    sources: tuple[str, ...] = data.BUNDLED_CORPUS
    """General text: bundled corpus names, .txt/.txt.gz/.jsonl paths, or hf:<dataset>."""
    include_emotion_data: bool = True
    """Mix in the training-split stories and neutral dialogues (never held-out topics)."""
    emotion_every: int = 8
    """Insert one story/dialogue after every this many general documents."""
    context_len: int = 128
    """Tokens per context."""
    max_tokens: int = 400_000
    """Stop after this many tokens (contexts x context_len)."""

    def __post_init__(self):
        if self.context_len < 2:
            raise EmosaeError("context_len must be at least 2")
        if self.max_tokens < self.context_len:
            raise EmosaeError("max_tokens must be at least context_len")
        if self.emotion_every < 1:
            raise EmosaeError("emotion_every must be >= 1")


class Context(NamedTuple):
    index: int
    tokens: torch.Tensor  # [context_len] int64
    doc_ids: torch.Tensor  # [context_len] int32


@dataclass
class DocumentLog:
    """Documents seen while packing: id -> (source, index within source)."""

    rows: list[tuple[str, int]] = field(default_factory=list)

    def add(self, source: str, index: int) -> int:
        self.rows.append((source, index))
        return len(self.rows) - 1


def emotion_documents(model_tokenizer: Any) -> list[tuple[str, str]]:
    """Training-split stories (plain text) and dialogues (rendered as chat)."""
    docs = [(f"story:{s.id}", s.text) for s in data.load_stories("train")]
    docs += [
        (d.id, dialogue_text(model_tokenizer, d.user, d.assistant))
        for d in data.load_dialogues("train")
    ]
    return docs


def _mixed_documents(cfg: CorpusConfig, tokenizer: Any) -> Iterator[tuple[str, int, str]]:
    """(source, index, text) in a fixed order: general docs with emotion docs interleaved."""
    emo = emotion_documents(tokenizer) if cfg.include_emotion_data else []
    counters: dict[str, int] = {}
    e = 0
    for n, (src, text) in enumerate(data.iter_corpus(list(cfg.sources))):
        i = counters.get(src, 0)
        counters[src] = i + 1
        yield src, i, text
        if emo and (n + 1) % cfg.emotion_every == 0 and e < len(emo):
            yield emo[e][0], 0, emo[e][1]
            e += 1
    for src, text in emo[e:]:
        yield src, 0, text


def iter_contexts(
    cfg: CorpusConfig, tokenizer: Any, log: DocumentLog | None = None
) -> Iterator[Context]:
    """Pack the mix into contexts of `cfg.context_len` tokens, up to `cfg.max_tokens`."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise EmosaeError("the tokenizer has no EOS token to separate documents")
    log = log if log is not None else DocumentLog()
    L = cfg.context_len
    n_ctx = cfg.max_tokens // L
    buf_t: list[int] = []
    buf_d: list[int] = []
    k = 0
    for src, i, text in _mixed_documents(cfg, tokenizer):
        doc = log.add(src, i)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [eos]
        buf_t += ids
        buf_d += [doc] * len(ids)
        while len(buf_t) >= L:
            yield Context(k, torch.tensor(buf_t[:L]), torch.tensor(buf_d[:L], dtype=torch.int32))
            del buf_t[:L], buf_d[:L]
            k += 1
            if k >= n_ctx:
                return
    if k == 0:
        raise EmosaeError("the corpus is empty: no document produced a full context")


def corpus_fingerprint(cfg: CorpusConfig, tokenizer_name: str) -> str:
    """sha256 over the corpus config, the bytes of every local source and the emotion data."""
    h = hashlib.sha256(repr((cfg, tokenizer_name)).encode())
    paths: Sequence = []
    for src in cfg.sources:
        if src in data.BUNDLED_CORPUS:
            paths = [*paths, data.corpus_path(src)]
        elif not src.startswith("hf:"):
            paths = [*paths, src]
    if cfg.include_emotion_data:
        paths = [*paths, *data.emotion_data_files()]
    for p in paths:
        with open(p, "rb") as f:
            h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()
