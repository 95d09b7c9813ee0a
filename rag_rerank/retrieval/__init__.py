"""The first stage: chunk and embed documents into Chroma, then find candidates for a query.

``store.ChromaStore`` (ingest, retrieve: dense, BM25 or hybrid), ``embedding.BiEncoder``,
``chunking`` (tiktoken-sized chunks), ``lexical`` (BM25 over whole documents), ``fusion``
(weighted and reciprocal-rank), ``chroma_client`` (embedded or server Chroma, with retries).
"""
