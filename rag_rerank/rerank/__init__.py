"""The second stage: reorder the first stage's candidates.

``cross_encoder.CrossEncoderReranker`` (the default reranker; its scoring backends in
``backends/``, one module each, ``backends.auto`` choosing for this machine), ``llm`` (pointwise
and listwise LLM rerankers, to compare with it) and ``quantization`` (the int8 layers).
"""
