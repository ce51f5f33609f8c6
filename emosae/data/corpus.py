"""General text for SAE training: the bundled public-domain corpus, text files and
JSON-lines files of the user's, or a Hugging Face dataset; checked before any work."""

from __future__ import annotations

import gzip
from collections.abc import Iterator, Sequence
from pathlib import Path

from emosae.core.errors import EmosaeError
from emosae.data.io import RESOURCES, read_jsonl, read_text, records

BUNDLED_CORPUS = ("jane_austen", "moby_dick", "state_of_the_union")


def corpus_path(name: str) -> Path:
    """The file of a bundled general-text corpus."""
    return RESOURCES / "corpus" / f"{name}.txt.gz"


def emotion_data_files(root: Path = RESOURCES) -> list[Path]:
    """The files behind the stories and dialogues (for content fingerprints)."""
    return [
        root / "dialogues.jsonl",
        root / "topics.json",
        *sorted((root / "stories").glob("*.jsonl")),
    ]


def _docs_from_text(text: str) -> Iterator[str]:
    for para in text.split("\n\n"):
        para = para.strip()
        if para:
            yield para


def check_sources(sources: Sequence[str]) -> None:
    """Fail fast, before any model loads or file is written, on a corpus source that
    cannot be read: a missing file, a wrong suffix, or a bad start (the first 64 KiB
    must be UTF-8, and a .jsonl file's first records valid)."""
    for src in sources:
        if src in BUNDLED_CORPUS or src.startswith("hf:"):
            continue
        p = Path(src)
        if not p.is_file():
            raise EmosaeError(
                f"{src}: no such corpus file or bundled corpus ({', '.join(BUNDLED_CORPUS)})"
            )
        if not p.name.endswith((".txt", ".txt.gz", ".jsonl")):
            raise EmosaeError(f"{src}: corpus files must be .txt, .txt.gz or .jsonl")
        opener = gzip.open if p.name.endswith(".gz") else open
        try:
            with opener(p, "rb") as f:
                head = f.read(1 << 16)
        except (OSError, EOFError) as e:
            raise EmosaeError(f"{src}: cannot read ({e})") from None
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError as e:
            if e.start < len(head) - 4:  # not just a character cut at the 64 KiB mark
                raise EmosaeError(f"{src}: not UTF-8 text (byte {e.start}: {e.reason})") from None
            text = head[: e.start].decode("utf-8")
        if p.suffix == ".jsonl":
            lines = text.splitlines()[:-1] if len(head) == 1 << 16 else text.splitlines()
            for _ in records(p, lines, ("text",)):
                pass


def iter_corpus(sources: Sequence[str] | None = None) -> Iterator[tuple[str, str]]:
    """Yield (source, document) pairs of general text.

    `sources` entries may be bundled corpus names (default: all of `BUNDLED_CORPUS`),
    paths to `.txt`/`.txt.gz` files (documents separated by blank lines) or `.jsonl`
    files (a "text" field per line), or `hf:<dataset>` for a Hugging Face dataset's
    train split (needs the `datasets` package and hub access).
    """
    for src in sources or BUNDLED_CORPUS:
        if src in BUNDLED_CORPUS:
            yield from ((src, d) for d in _docs_from_text(read_text(corpus_path(src))))
        elif src.startswith("hf:"):
            try:
                import datasets  # type: ignore[import-not-found]
            except ImportError:
                raise EmosaeError(
                    f"{src}: Hugging Face datasets need `pip install datasets`"
                ) from None
            try:
                ds = datasets.load_dataset(src[3:], split="train", streaming=True)
            except Exception as e:  # noqa: BLE001 - hub errors come in many types
                raise EmosaeError(
                    f"{src}: could not load from the hub: {str(e).splitlines()[0]}"
                ) from None
            yield from ((src, r["text"]) for r in ds)
        else:
            p = Path(src)
            if not p.is_file():
                raise EmosaeError(
                    f"{src}: no such corpus file or bundled corpus ({', '.join(BUNDLED_CORPUS)})"
                )
            if p.suffix == ".jsonl":
                yield from ((src, r["text"]) for _, r in read_jsonl(p, ("text",)))
            elif p.name.endswith((".txt", ".txt.gz")):
                yield from ((src, d) for d in _docs_from_text(read_text(p)))
            else:
                raise EmosaeError(f"{src}: corpus files must be .txt, .txt.gz or .jsonl")
