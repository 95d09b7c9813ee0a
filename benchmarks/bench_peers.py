"""rag-rerank against the rerankers a user would pick instead: same model, same pairs, one run.

    python benchmarks/bench_peers.py [--model models/rag-rerank-minilm-l6] [--queries 10] [--depth 100]
        [--peers-python .venv-peers/bin/python] [--infinity-python .venv-infinity/bin/python]

Candidates are BM25's top ``depth`` Cranfield abstracts for held-out queries (real, mixed lengths).
Every row loads the same local model and scores the same pairs, each in its own process (so peak
memory and imports are its own), after one warm-up query. Columns: pairs/s, ms per query (p50, p95),
peak RSS of the process, Kendall tau of its scores against ``CrossEncoder.predict`` in float32 (the
first row), and nDCG@10 of the candidates ordered by its scores: "alone" by the cross-encoder's
scores, "fused" by them plus the first-stage prior the model was trained with (``rag_rerank.json``:
how the shipped model is meant to rank), the same for every row. Peers that cannot be installed beside rag-rerank's pins
run with ``--peers-python`` (a venv of their own; see ``make bench-peers``) or are reported as not run,
with why.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_common

MODEL = str(bench_common.ROOT / "models" / "rag-rerank-minilm-l6")
MAX_LENGTH = 512


# --- the rows: each a function (model, queries, candidate texts) -> one scorer per query ----------


def st_predict(model):
    from sentence_transformers import CrossEncoder

    encoder = CrossEncoder(model, device="cpu", max_length=MAX_LENGTH)
    return lambda query, texts: encoder.predict([(query, t) for t in texts], show_progress_bar=False)


def st_backend(backend, file_name=None):
    def load(model):
        from sentence_transformers import CrossEncoder

        kwargs = {"model_kwargs": {"file_name": file_name}} if file_name else {}
        encoder = CrossEncoder(model, device="cpu", max_length=MAX_LENGTH, backend=backend, **kwargs)
        return lambda query, texts: encoder.predict([(query, t) for t in texts], show_progress_bar=False)

    return load


def ours(**options):
    def load(model):
        from rag_rerank import CrossEncoderReranker

        reranker = CrossEncoderReranker(model, device="cpu", max_length=MAX_LENGTH, **options)
        print(f"rag-rerank chose backend={reranker.backend} dtype={reranker.dtype}", file=sys.stderr)
        return reranker.score

    return load


def langchain(model):
    from langchain_classic.retrievers.document_compressors import CrossEncoderReranker
    from langchain_community.cross_encoders import HuggingFaceCrossEncoder
    from langchain_core.documents import Document

    encoder = HuggingFaceCrossEncoder(model_name=model, model_kwargs={"device": "cpu", "max_length": MAX_LENGTH})

    def score(query, texts):
        compressor = CrossEncoderReranker(model=encoder, top_n=len(texts))
        docs = [Document(page_content=t, metadata={"i": i}) for i, t in enumerate(texts)]
        ranked = compressor.compress_documents(docs, query)  # returns the order only
        position = {doc.metadata["i"]: rank for rank, doc in enumerate(ranked)}
        return [-position[i] for i in range(len(texts))]

    return score


def llama_index(model):
    from llama_index.core.postprocessor import SentenceTransformerRerank
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    rerank = SentenceTransformerRerank(model=model, top_n=1000, device="cpu")

    def score(query, texts):
        nodes = [NodeWithScore(node=TextNode(text=t, id_=str(i))) for i, t in enumerate(texts)]
        ranked = rerank.postprocess_nodes(nodes, query_bundle=QueryBundle(query))
        by_id = {n.node.node_id: n.score for n in ranked}
        return [by_id[str(i)] for i in range(len(texts))]

    return score


def infinity(model):
    import asyncio
    import threading

    from infinity_emb import AsyncEngineArray, EngineArgs

    # bettertransformer=False: its default needs optimum, which infinity-emb[torch] does not install
    # (NameError: BetterTransformerManager); the CLI's --no-bettertransformer
    args = EngineArgs(model_name_or_path=model, engine="torch", device="cpu", bettertransformer=False)
    engine = AsyncEngineArray.from_args([args])[0]
    loop = asyncio.new_event_loop()  # the engine's own loop, running in a thread, as in a sync program
    threading.Thread(target=loop.run_forever, daemon=True).start()
    asyncio.run_coroutine_threadsafe(engine.astart(), loop).result()

    def score(query, texts):
        rerank = engine.rerank(query=query, docs=texts, raw_scores=True)
        results, _ = asyncio.run_coroutine_threadsafe(rerank, loop).result()
        by_index = {r.index: r.relevance_score for r in results}
        return [by_index[i] for i in range(len(texts))]

    # its worker threads are not daemons: without a stop the process never exits
    score.close = lambda: asyncio.run_coroutine_threadsafe(engine.astop(), loop).result()
    return score


def answerdotai_rerankers(model):
    from rerankers import Reranker

    ranker = Reranker(model, model_type="cross-encoder", device="cpu", verbose=0)

    def score(query, texts):
        results = ranker.rank(query=query, docs=texts, doc_ids=list(range(len(texts))))
        by_id = {r.document.doc_id: r.score for r in results.results}
        return [by_id[i] for i in range(len(texts))]

    return score


# name -> (loader, the venv it runs in, what its scores are). "peers": sentence-transformers with
# optimum, which pins transformers < 5; "infinity": infinity-emb, which pins sentence-transformers 3.4.
# Probabilities are turned back into logits before the first-stage prior is added ("fused").
ROWS = {
    "sentence-transformers CrossEncoder.predict (fp32)": (st_predict, None, "probability"),
    "rag-rerank default (backend='auto')": (ours(), None, "logit"),
    "rag-rerank backend='torch' (fp32)": (ours(backend="torch"), None, "logit"),
    "rag-rerank backend='onnx' (fp32)": (ours(backend="onnx"), None, "logit"),
    "rag-rerank backend='onnx-int8'": (ours(backend="onnx-int8"), None, "logit"),
    "rag-rerank backend='openvino' (fp32)": (ours(backend="openvino"), None, "logit"),
    "rag-rerank backend='openvino', dtype='bfloat16'": (ours(backend="openvino", dtype="bfloat16"), None, "logit"),
    "rag-rerank backend='torch', dtype='bfloat16'": (ours(backend="torch", dtype="bfloat16"), None, "logit"),
    "LangChain CrossEncoderReranker + HuggingFaceCrossEncoder": (langchain, None, "order"),
    "LlamaIndex SentenceTransformerRerank": (llama_index, None, "probability"),
    "AnswerDotAI rerankers (cross-encoder)": (answerdotai_rerankers, None, "logit"),
    "infinity-emb (engine='torch', no bettertransformer)": (infinity, "infinity", "logit"),
    "sentence-transformers backend='onnx'": (st_backend("onnx"), "peers", "probability"),
    "sentence-transformers backend='onnx' qint8 (dynamic)": (
        st_backend("onnx", "onnx/model_qint8.onnx"),
        "peers",
        "probability",
    ),
    "sentence-transformers backend='openvino'": (st_backend("openvino"), "peers", "probability"),
    "sentence-transformers backend='openvino' qint8 (static)": (
        st_backend("openvino", "openvino/openvino_model_qint8_quantized.xml"),
        "peers",
        "probability",
    ),
}
NOT_RUN = {
    "FlashRank": "runs only its own ONNX exports, downloaded at run time; cannot load this model",
}
VENV_WHY = {
    "peers": "needs optimum, which pins transformers < 5: run with --peers-python (make bench-peers)",
    "infinity": "pins sentence-transformers 3.4 and transformers 4.x: run with --infinity-python (make bench-peers)",
}


def worker(name: str, model: str, pairs_file: str) -> None:
    """One row, in its own process: scores and timings as JSON on stdout."""
    work = json.loads(Path(pairs_file).read_text())
    score = ROWS[name][0](model)
    first = work[0]
    score(first["query"], first["texts"][:16])  # warm-up
    times, scores = [], []
    for item in work:
        started = time.perf_counter()
        got = score(item["query"], item["texts"])
        times.append(time.perf_counter() - started)
        scores.append([float(x) for x in got])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux: KiB)
    print(json.dumps({"times": times, "scores": scores, "peak_mib": peak}), flush=True)
    getattr(score, "close", lambda: None)()


def export_int8(model: str, python: str, folder: str, calibration: list[str], onnx_config: str) -> str:
    """A copy of the model with sentence-transformers' own int8 exports, made in the peers' venv as
    its docs tell a user to: ONNX dynamic (``onnx_config``, the CPU class it targets) and OpenVINO
    static, calibrated on local texts (its default calibration set is downloaded, which fails offline)."""
    texts = Path(folder).with_name("calibration")
    texts.mkdir(parents=True, exist_ok=True)
    (texts / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in calibration))
    script = f"""
import shutil
from sentence_transformers import CrossEncoder, export_dynamic_quantized_onnx_model, export_static_quantized_openvino_model
shutil.copytree({model!r}, {folder!r}, dirs_exist_ok=True)
onnx = CrossEncoder({folder!r}, backend="onnx", device="cpu")
onnx.save_pretrained({folder!r})
export_dynamic_quantized_onnx_model(onnx, {onnx_config!r}, {folder!r})
import glob  # model_qint8_avx512_vnni.onnx, model_quint8_avx2.onnx: the name follows the weights' type
shutil.copy(*glob.glob({folder!r} + "/onnx/model_*int8_{onnx_config}.onnx"), {folder!r} + "/onnx/model_qint8.onnx")
ov = CrossEncoder({folder!r}, backend="openvino", device="cpu")
ov.save_pretrained({folder!r})
export_static_quantized_openvino_model(ov, None, {folder!r}, dataset_name={str(texts)!r},
    dataset_config_name="default", dataset_split="train", column_name="text")
"""
    subprocess.run([python, "-c", script], check=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--queries", type=int, default=10)
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument(
        "--peers-python", default=None, help="python of a venv with sentence-transformers[onnx,openvino]"
    )
    parser.add_argument("--infinity-python", default=None, help="python of a venv with infinity-emb[torch]")
    parser.add_argument(
        "--only", default=None, help="run only the rows whose name contains this (the baseline row always runs)"
    )
    parser.add_argument(
        "--row-timeout",
        type=float,
        default=900,
        help="seconds a row may take before it is stopped and reported as such (a path this CPU runs "
        "very slowly, e.g. bfloat16 without BF16 kernels, would otherwise stall the whole run)",
    )
    parser.add_argument(
        "--onnx-int8-config",
        default="avx512_vnni",
        choices=["arm64", "avx2", "avx512", "avx512_vnni"],
        help="the CPU class sentence-transformers' dynamic int8 ONNX export targets, as its docs tell a user "
        "to pick: avx512_vnni on CPUs with VNNI, avx2 on AVX2-only ones",
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--pairs", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.model, args.pairs)
        return

    import numpy as np
    import torch
    from scipy.stats import kendalltau

    from rag_rerank import load_cranfield
    from rag_rerank.data import split_queries
    from rag_rerank.evaluation.harness import BM25
    from rag_rerank.evaluation.metrics import ndcg

    weight_file = Path(args.model) / "rag_rerank.json"
    weight = json.loads(weight_file.read_text())["first_stage_weight"] if weight_file.exists() else 0.0

    def prior(n: int) -> np.ndarray:
        return weight * -np.log(np.arange(1, n + 1))  # rag_rerank.rerank.cross_encoder.first_stage_prior, scaled

    data = load_cranfield(bench_common.CRANFIELD)
    _, test_ids = split_queries(data)
    query_ids = test_ids[: args.queries]
    bm25 = BM25(data.corpus)
    candidates = {q: bm25.search(data.queries[q], args.depth) for q in query_ids}
    work = [{"query": data.queries[q], "texts": [d.text for d in candidates[q]]} for q in query_ids]
    pairs_file = Path(tempfile.mkdtemp()) / "pairs.json"
    pairs_file.write_text(json.dumps(work))
    exported = None
    if args.peers_python:
        train_ids, _ = split_queries(data)
        calibration = [d.text for q in train_ids[:30] for d in bm25.search(data.queries[q], 10)]
        exported = export_int8(
            args.model, args.peers_python, str(Path(tempfile.mkdtemp()) / "model"), calibration, args.onnx_int8_config
        )

    rows, baseline, skipped = [], None, dict(NOT_RUN)
    pythons = {None: sys.executable, "peers": args.peers_python, "infinity": args.infinity_python}
    for index, (name, (_, venv, kind)) in enumerate(ROWS.items()):
        if index and args.only and args.only not in name:
            continue
        python = pythons[venv]
        if python is None:
            skipped[name] = VENV_WHY[venv]
            continue
        model = exported if venv == "peers" else args.model
        command = [python, __file__, "--worker", name, "--model", model, "--pairs", str(pairs_file)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=args.row_timeout)
        except subprocess.TimeoutExpired:
            skipped[name] = f"stopped after {args.row_timeout:.0f} s (--row-timeout): far slower than the others here"
        else:
            if done.returncode != 0:
                skipped[name] = "failed: " + (done.stderr.strip().splitlines() or ["?"])[-1][:200]
        if name in skipped:
            if index == 0:  # every ratio and tau is against it
                raise SystemExit(f"the baseline row did not run, so nothing can be compared: {name}: {skipped[name]}")
            continue
        for line in done.stderr.splitlines():  # what rag-rerank's backend="auto" chose, for the record
            if line.startswith("rag-rerank chose"):
                print(f"{name}: {line}", file=sys.stderr)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        scores = [np.asarray(s) for s in result["scores"]]
        logits = [np.log(s / (1 - s)) if kind == "probability" else s for s in scores]
        total = sum(result["times"])
        pairs = sum(len(s) for s in scores)
        if baseline is None:
            baseline = {"scores": scores, "rate": pairs / total}
        tau = statistics.mean(kendalltau(b, s).statistic for b, s in zip(baseline["scores"], scores))
        ndcg10 = statistics.mean(
            ndcg([candidates[q][i].id for i in np.argsort(-s, kind="stable")], data.qrels.get(q, {}), 10)
            for q, s in zip(query_ids, scores)
        )
        fused = statistics.mean(  # the shipped model's own use: its score plus the first-stage prior
            ndcg(
                [candidates[q][i].id for i in np.argsort(-(s + prior(len(s))), kind="stable")],
                data.qrels.get(q, {}),
                10,
            )
            for q, s in zip(query_ids, logits)
        )
        ms = [1000 * t for t in result["times"]]
        rows.append(
            {
                "row": name,
                "pairs/s": f"{pairs / total:.1f}",
                "vs predict": f"{pairs / total / baseline['rate']:.2f}x",
                "ms/query p50": f"{statistics.median(ms):.0f}",
                "p95": f"{bench_common.percentile(ms, 0.95):.0f}",
                "peak RSS (MiB)": f"{result['peak_mib']:.0f}",
                "tau vs fp32": f"{tau:.3f}",
                "nDCG@10 alone": f"{ndcg10:.4f}",
                "nDCG@10 fused": "n/a (order only)" if kind == "order" else f"{fused:.4f}",
            }
        )
    print(
        f"CPU: {bench_common.cpu_description()}; torch {torch.__version__}\n"
        f"model: {args.model}; {len(query_ids)} held-out Cranfield queries x {args.depth} BM25 candidates; "
        f"sentence-transformers' dynamic int8 ONNX export for {args.onnx_int8_config}\n"
    )
    bench_common.print_table(rows)
    for name, why in skipped.items():
        print(f"- not run: {name}: {why}")


if __name__ == "__main__":
    main()
