"""Each server setting declared once (``ServerConfig``) is a flag of ``rag-rerank serve`` and an
environment variable, with the field's default, type and choices."""

from __future__ import annotations

import dataclasses

import pytest

from rag_rerank.cli import build_parser
from rag_rerank.serve import ServerConfig
from rag_rerank.settings import flags, from_flags


def serve_config(*argv: str) -> ServerConfig:
    return from_flags(ServerConfig, build_parser().parse_args(["serve", *argv]))


def test_no_flag_and_no_variable_gives_the_fields_defaults(monkeypatch):
    for one in flags(ServerConfig):
        monkeypatch.delenv(one.env, raising=False)
    assert serve_config() == ServerConfig()


def test_every_setting_is_a_flag_and_a_variable(monkeypatch):
    parser_help = build_parser()._subparsers._group_actions[0].choices["serve"].format_help()
    declared = flags(ServerConfig)
    assert {one.name for one in declared} == {field.name for field in dataclasses.fields(ServerConfig)}
    for one in declared:
        assert one.flag in parser_help and one.env in parser_help, one.name
    monkeypatch.setenv("RAG_RERANK_MAX_DOCUMENTS", "3")
    monkeypatch.setenv("RAG_RERANK_SERVE_COLLECTIONS", "a, b")
    monkeypatch.setenv("RAG_RERANK_METRICS_NEED_KEY", "yes")
    monkeypatch.setenv("RAG_RERANK_TIMEOUT", "2.5")
    config = serve_config("--max-queue", "7", "--backend", "onnx", "--serve-collection", "c")
    assert (config.max_documents, config.max_queue, config.backend) == (3, 7, "onnx")
    assert (config.collections, config.metrics_need_key, config.request_timeout) == (["a", "b", "c"], True, 2.5)
    assert serve_config("--max-documents", "9").max_documents == 9  # a flag beats the variable
    assert serve_config("--no-metrics-need-key").metrics_need_key is False


@pytest.mark.parametrize(
    "variable,value,says",
    [
        ("RAG_RERANK_MAX_DOCUMENTS", "many", "not a valid int"),
        ("RAG_RERANK_BACKEND", "tensorrt", "must be one of auto, torch"),
        ("RAG_RERANK_COMPILE", "maybe", "not a valid bool"),
    ],
)
def test_a_bad_variable_is_named(monkeypatch, variable, value, says):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit, match=f"{variable}='{value}': {says}"):
        build_parser()


def test_choices_come_from_the_literal_types():
    from typing import get_args

    from rag_rerank.inference.backend import BackendName

    backend = next(one for one in flags(ServerConfig) if one.name == "backend")
    assert backend.choices == get_args(BackendName)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--backend", "tensorrt"])
