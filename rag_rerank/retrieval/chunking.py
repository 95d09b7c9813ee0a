"""Token-aware chunking with tiktoken.

Windows are cut on token boundaries but the chunk text is sliced from the original
string (via token character offsets), so no character is mangled at a cut and joining
the non-overlapping parts gives back the input exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tiktoken

DEFAULT_ENCODING = "cl100k_base"


@dataclass(frozen=True)
class ChunkSpec:
    """How to cut: window size and overlap in tiktoken tokens (what an LLM context counts), and
    the encoding. ``fit_bi_encoder``: the store also shortens any window its bi-encoder would
    truncate (MiniLM reads 256 word pieces, often fewer words than 256 tiktoken tokens)."""

    size: int = 256
    overlap: int = 32
    encoding: str = DEFAULT_ENCODING
    fit_bi_encoder: bool = True

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"chunk size must be at least 1 token, got {self.size}")
        if not 0 <= self.overlap < self.size:
            raise ValueError(
                f"chunk overlap must be >= 0 and smaller than the chunk size ({self.size}), got {self.overlap}"
            )


def make_chunk_id(source_id: str, index: int, version: str) -> str:
    """A chunk's id in the store: ``"<source_id>#<chunk_index>@<version>"``."""
    return f"{source_id}#{index}@{version}"


def source_of(chunk_id: str) -> str:
    """A chunk id back to its source id (source ids may hold '#')."""
    return chunk_id.rsplit("#", 1)[0]


def encoding_for(model_name: str) -> str:
    """tiktoken's encoding for OpenAI model names; cl100k_base (a fair estimate) for others."""
    try:
        import tiktoken

        return tiktoken.encoding_name_for_model(model_name)
    except (ImportError, KeyError):  # tiktoken knows only OpenAI's model names
        return "cl100k_base"


@lru_cache(maxsize=8)
def get_encoding(name: str) -> tiktoken.Encoding:
    import tiktoken

    try:
        return tiktoken.get_encoding(name)
    except ValueError as error:
        raise ValueError(f"unknown tiktoken encoding {name!r}: {error}") from error
    except Exception as error:  # the BPE file could not be downloaded
        raise RuntimeError(
            f"tiktoken could not load the {name!r} encoding ({error}). Offline, set "
            "TIKTOKEN_CACHE_DIR to a folder holding tiktoken's cached encoding files."
        ) from error


def count_tokens(text: str, encoding: str = DEFAULT_ENCODING) -> int:
    return len(get_encoding(encoding).encode(text, disallowed_special=()))


def chunk_text(text: str, spec: ChunkSpec = ChunkSpec(), fits: Callable[[str], bool] | None = None) -> list[str]:
    """Split ``text`` into windows of ``spec.size`` tokens overlapping by ``spec.overlap``."""
    return [text[begin:end] for begin, end in chunk_spans(text, spec, fits)]


def chunk_spans(
    text: str, spec: ChunkSpec = ChunkSpec(), fits: Callable[[str], bool] | None = None
) -> list[tuple[int, int]]:
    """Character spans of the chunks of ``text``: windows of at most ``spec.size`` tokens,
    overlapping by ``spec.overlap``.

    ``fits`` is a second limit, e.g. ``BiEncoder.fits``: a window it rejects is shortened
    (10% at a time) until it passes, so an embedding model never truncates a chunk even when
    its own tokenizer counts more tokens than tiktoken does.
    """
    enc = get_encoding(spec.encoding)
    tokens = enc.encode(text, disallowed_special=())
    if not text.strip():
        return []
    if len(tokens) <= spec.size and (fits is None or fits(text)):
        return [(0, len(text))]
    _, offsets = enc.decode_with_offsets(tokens)
    starts = _char_starts(text, offsets) + [len(text)]
    spans, first = [], 0
    while True:
        last = min(first + spec.size, len(tokens))
        while fits is not None and last - first > 1 and not fits(text[starts[first] : starts[last]]):
            last = first + max(1, (last - first) * 9 // 10)
        begin, end = starts[first], starts[last]
        if text[begin:end].strip():
            spans.append((begin, end))
        if last == len(tokens):
            return spans
        first = max(first + 1, last - spec.overlap)


def _char_starts(text: str, offsets: list[int]) -> list[int]:
    """Token start offsets made monotonic and clamped to the text.

    A token that starts inside a multi-byte character reports that character's offset,
    so cutting there keeps the whole character in the next chunk.
    """
    starts, previous = [], 0
    for offset in offsets:
        previous = max(previous, min(offset, len(text)))
        starts.append(previous)
    return starts
