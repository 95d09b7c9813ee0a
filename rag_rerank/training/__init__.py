"""Training rerankers: on human judgements (``judged``: ``rag-rerank train``), or distilled from a slow
teacher's scores (``queries`` to label, the ``teacher``'s kept scores, the ``students``, ``distil``:
``rag-rerank distil``)."""

from rag_rerank.training.judged import TRAINED_ON_FILE, Candidates, mine_candidates, train_reranker, trained_on

__all__ = ["TRAINED_ON_FILE", "Candidates", "mine_candidates", "train_reranker", "trained_on"]
