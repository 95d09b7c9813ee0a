"""The second stage: reorder the first stage's candidates.

``base`` (the contract every reranker fulfils, and the checks and cut they share),
``cross_encoder.CrossEncoderReranker`` (the default reranker; how it runs is ``rag_rerank.inference``)
and ``llm`` (pointwise and listwise LLM rerankers, to compare with it).
"""
