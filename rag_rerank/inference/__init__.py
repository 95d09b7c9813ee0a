"""How models are run: one layer beneath both encoders (the cross-encoder reranker and the bi-encoder).

Split by job, as sentence-transformers splits its ``backend/``:

- ``backend``: the contract a cross-encoder runtime fulfils, its names, ``load_backend``, and
  ``finite`` (no NaN or infinite output is ever passed on);
- ``tokens``: pairs and texts to padded batches of token ids, each batch of similar length;
- ``export``: a model to ONNX, once per model (its ``fingerprint`` covers every weight);
- ``optimize``: ONNX Runtime's fused graph; ``quantize``: the int8 graphs (ONNX Runtime, OpenVINO);
  ``torch_int8``: int8 Linear layers for torch; ``first_token``: the last layer on [CLS] only;
- ``openvino_graph``: OpenVINO's compiled graph, cached per compiled configuration;
- ``cache``: the on-disk cache (``RAG_RERANK_CACHE``), written whole, one process at a time;
- ``cpu``: what this CPU multiplies fast (bfloat16, int8), measured once per machine;
- ``calibration``: does a lossy path (bfloat16, int8) rank or embed as float32 does, on built-in texts;
- ``auto``: the fastest path that keeps rankings on this machine; ``plan``: its decision, saved per
  CPU, model and runtimes and read before anything is built (``RAG_RERANK_PLAN`` pins it).

Then by task x runtime, as infinity splits: ``cross_encoder/`` (``pytorch``, ``onnx``, ``openvino``,
``reference``) and ``embedder/`` (``openvino``; torch is sentence-transformers itself).
"""
