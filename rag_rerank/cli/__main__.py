"""``python -m rag_rerank.cli``: the same as ``rag-rerank``."""

import sys

from rag_rerank.cli import main

sys.exit(main())
