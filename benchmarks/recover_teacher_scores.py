"""Rewrite the kept teacher scores of format 1 (the query-likelihood LLM fused 0.4 with the first stage)
as format 2, the LLM's own score: ``(fused - 0.6 * first stage) / 0.4``, its min-max scaled query
likelihood (the same order and per-query shape as its log-likelihood).

The header takes the provenance a run of ``make distil-label`` gives on this machine (the same offline
Gemma 3 270M weights, torch bfloat16 on the CPU, the same prompt and first stage), so that run extends
the file; ``recovered_from`` says where the rows came from.

Usage: python benchmarks/recover_teacher_scores.py OLD NEW
"""

from __future__ import annotations

import sys

from rag_rerank.retrieval.store import ChromaStore
from rag_rerank.training.teacher import first_stage_of, make_teacher, recover_pure, teacher_provenance


def main(old: str, new: str) -> None:
    teacher = make_teacher("query-likelihood")
    store = ChromaStore("recover-teacher-scores", path="/tmp/rag-rerank-recover-teacher")  # its settings only
    provenance = {"provenance": teacher_provenance(teacher), "first_stage": first_stage_of([store])}
    print(recover_pure(old, new, provenance))


if __name__ == "__main__":
    main(*sys.argv[1:])
