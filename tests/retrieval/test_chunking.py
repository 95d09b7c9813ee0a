import itertools

import pytest

from rag_rerank import ChunkSpec, chunk_text, count_tokens


def test_short_text_is_one_chunk():
    assert chunk_text("a short text", ChunkSpec(size=10, overlap=2)) == ["a short text"]


def test_windows_respect_size_and_overlap():
    text = " ".join(f"word{i}" for i in range(300))
    spec = ChunkSpec(size=50, overlap=10)
    chunks = chunk_text(text, spec)
    assert len(chunks) > 1
    assert all(count_tokens(chunk) <= spec.size + 1 for chunk in chunks)
    # consecutive chunks share text (the overlap) and the last chunk ends the text
    assert chunks[0][-15:].strip().split()[-1] in chunks[1]
    assert text.endswith(chunks[-1])


def test_no_overlap_chunks_rebuild_the_text_exactly():
    text = "Zürich — naïve café ☕ résumé 😀 " * 40
    chunks = chunk_text(text, ChunkSpec(size=17, overlap=0))
    assert "".join(chunks) == text
    assert all("\ufffd" not in chunk for chunk in chunks)


def test_empty_text_gives_no_chunks():
    assert chunk_text("   \n ") == []


@pytest.mark.parametrize("size,overlap", [(0, 0), (10, 10), (10, -1)])
def test_bad_spec_is_rejected(size, overlap):
    with pytest.raises(ValueError, match="chunk"):
        ChunkSpec(size=size, overlap=overlap)


def test_a_second_limit_shortens_windows_until_they_fit():
    from rag_rerank.retrieval.chunking import chunk_spans

    text = " ".join(f"word{i}" for i in range(300))
    fits = lambda chunk: len(chunk.split()) <= 40  # a stricter tokenizer than tiktoken
    spans = chunk_spans(text, ChunkSpec(size=200, overlap=10), fits=fits)
    assert all(fits(text[a:b]) for a, b in spans)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(b2 > b1 and a2 < b1 for (a1, b1), (a2, b2) in itertools.pairwise(spans)), "windows overlap and advance"
    assert chunk_spans("short text", ChunkSpec(size=200), fits=fits) == [(0, 10)]
