"""Measuring retrieval: test collections through first stages and rerankers, with judged metrics.

``harness.evaluate`` (runs, tables, plots), ``metrics`` (nDCG, recall, MRR), ``compare``
(two rerankers on the same candidates, side by side).
"""
