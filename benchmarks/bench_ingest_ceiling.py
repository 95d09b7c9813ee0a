"""How fast float32 ingest could be on this CPU at most: is "3x torch float32" reachable without a
lower precision?

    python benchmarks/bench_ingest_ceiling.py [medline]

Ingests one collection whole twice into fresh embedded Chromas: with the bi-encoder in torch float32
(the baseline) and in OpenVINO float32, timing the transformer graph apart from the rest (tokenising,
chunking, pooling, Chroma). Then times plain float32 MatMuls of the model's own shapes through the
same OpenVINO path and prints the ingest rate the collection would reach if the whole graph ran at
that MatMul rate with the rest unchanged: a ceiling no float32 kernel passes (the graph also has
attention, LayerNorm and GELU). What bfloat16 and int8 give is measured on the real graph by
``bench_bi_encoder.py``. Name the CPU beside any figure you quote.
"""

import sys
import tempfile
import time

import bench_common
import numpy as np

from rag_rerank import BiEncoder, load_collection
from rag_rerank.inference import openvino_graph as ov_backend

TARGET = 3.0  # the ingest target, x torch float32


class GraphTimer:
    """Wraps ``CompiledGraph.__call__``: seconds inside the graph and its floating-point work."""

    def __init__(self, config):
        self.hidden, self.inner, self.layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
        self.seconds = self.flop = 0.0
        self.real_tokens = self.padded_tokens = 0
        self._call = ov_backend.CompiledGraph.__call__

    def __call__(self, graph, batch):
        rows, length = batch["input_ids"].shape
        started = time.perf_counter()
        out = self._call(graph, batch)
        self.seconds += time.perf_counter() - started
        self.padded_tokens += rows * length
        self.real_tokens += int(batch["attention_mask"].sum())
        per_token = self.layers * (2 * (4 * self.hidden**2 + 2 * self.hidden * self.inner) + 4 * length * self.hidden)
        self.flop += rows * length * per_token
        return out


def matmul_rate(rows: int, inner: int, cols: int) -> float:
    """GFLOP/s of one float32 [rows, inner] x [inner, cols] MatMul compiled as the bi-encoder's graph is."""
    import openvino
    import openvino.opset13 as ops

    x = ops.parameter([rows, inner], openvino.Type.f32, name="x")
    weight = ops.constant(np.random.default_rng(0).standard_normal((inner, cols)).astype(np.float32))
    path = f"{tempfile.mkdtemp()}/matmul.xml"
    openvino.save_model(openvino.Model([ops.matmul(x, weight, False, False)], [x]), path)
    config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}  # as CompiledGraph has it
    request = openvino.Core().compile_model(path, "CPU", config).create_infer_request()
    data = [np.random.default_rng(1).standard_normal((rows, inner)).astype(np.float32)]
    for _ in range(5):
        request.infer(data)
    repeats, started = 40, time.perf_counter()
    for _ in range(repeats):
        request.infer(data)
    return 2 * rows * inner * cols * repeats / (time.perf_counter() - started) / 1e9


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "medline"
    print(f"CPU: {bench_common.cpu_description()}")
    corpus = load_collection(bench_common.ROOT.parent / "shared" / "data" / name, "test").corpus
    _, torch_seconds = bench_common.ingested(BiEncoder(backend="torch", dtype="float32"), corpus, "ceiling-torch")
    baseline = len(corpus) / torch_seconds
    print(f"{name}, {len(corpus)} documents: torch float32 {baseline:.1f} docs/s (1.00x)")

    bi = BiEncoder(backend="openvino", dtype="float32")
    timer = GraphTimer(bi._model[0].auto_model.config)
    ov_backend.CompiledGraph.__call__ = lambda graph, batch: timer(graph, batch)  # type: ignore[method-assign]
    _, seconds = bench_common.ingested(bi, corpus, "ceiling-openvino")
    ov_backend.CompiledGraph.__call__ = timer._call  # type: ignore[method-assign]
    rest = seconds - timer.seconds
    graph_rate = timer.flop / timer.seconds / 1e9
    print(
        f"openvino float32: {len(corpus) / seconds:.1f} docs/s ({torch_seconds / seconds:.2f}x); "
        f"graph {timer.seconds:.1f} s of {seconds:.1f} s ({timer.seconds / seconds:.0%}), {timer.flop / 1e9:.0f} GFLOP "
        f"at {graph_rate:.0f} GFLOP/s; {timer.real_tokens} tokens, {timer.padded_tokens} with padding"
    )
    budget = torch_seconds / TARGET - rest
    print(
        f"{TARGET:.0f}x torch = {TARGET * baseline:.1f} docs/s: the graph in {budget:.1f} s "
        f"({timer.flop / budget / 1e9:.0f} GFLOP/s) beside the rest's {rest:.1f} s"
        if budget > 0
        else f"{TARGET:.0f}x torch is out of reach: the rest alone takes {rest:.1f} s"
    )
    hidden, inner = timer.hidden, timer.inner
    rate = max(matmul_rate(2048, a, b) for a, b in ((hidden, inner), (inner, hidden), (hidden, hidden)))
    ceiling = len(corpus) / (timer.flop / (rate * 1e9) + rest)
    print(
        f"float32 MatMul: {rate:.0f} GFLOP/s (the fastest of the model's 3 shapes); the graph at that rate: "
        f"ingest {ceiling:.1f} docs/s = {ceiling / baseline:.2f}x torch, the most float32 can give here"
    )


if __name__ == "__main__":
    main()
