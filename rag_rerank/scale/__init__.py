"""Work that outgrows one process: reranking whole files, and Ray for ingest, reranking and serving.

Everything here runs in-process without Ray; the Ray paths need the optional extra
(``pip install rag-rerank[ray]``) and run on a local Ray or on a cluster's address. Each Ray
actor loads its models once and keeps them for every batch it is given.

- ``rerank_file``: a JSONL or Parquet file of (query, candidates) rows in, the same with scores out;
- ``RayReranker``: reranks many queries at once in a pool of actors (``rerank_file``, ``evaluate``);
- ``ingest_on_ray``: chunk, embed and write a corpus to a Chroma server from a pool of actors;
- ``rag_rerank.scale.ray_serve``: the reranker as a Ray Serve deployment.
"""

from rag_rerank.scale.batch import read_rows, rerank_file, rerank_row
from rag_rerank.scale.ray_ingest import ingest_on_ray
from rag_rerank.scale.ray_rerank import RayReranker
from rag_rerank.scale.runtime import start_ray

__all__ = ["RayReranker", "ingest_on_ray", "read_rows", "rerank_file", "rerank_row", "start_ray"]
