import pytest

from rag_rerank import DEFAULT_CROSS_ENCODER, CrossEncoderReranker, ModelNotFoundError, load_bi_encoder, resolve_model


def test_bundled_bi_encoder_resolves_offline():
    path = resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    assert path.endswith("model")
    model = load_bi_encoder("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    assert model.encode(["a wing in a slipstream"]).shape == (1, 384)


def test_model_is_loaded_once_per_process():
    assert load_bi_encoder(device="cpu") is load_bi_encoder(device="cpu")


def test_missing_model_error_names_the_model_and_the_fix():
    with pytest.raises(ModelNotFoundError) as info:
        CrossEncoderReranker(DEFAULT_CROSS_ENCODER, backend="torch")
    message = str(info.value)
    assert DEFAULT_CROSS_ENCODER in message
    assert "Hugging Face cache" in message
    assert "RAG_RERANK_CROSS_ENCODER" in message


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_checkpoint_without_trained_head_is_refused():
    """The bi-encoder's BERT would get a random head: refuse it rather than rank at random."""
    with pytest.raises(ModelNotFoundError, match="no trained cross-encoder head"):
        CrossEncoderReranker("sentence-transformers/all-MiniLM-L6-v2", backend="torch")


def test_local_cross_encoder_loads_by_path(tiny_cross_encoder_path):
    reranker = CrossEncoderReranker(tiny_cross_encoder_path, device="cpu", max_length=64, backend="torch")
    assert reranker.max_length == 64
    assert len(reranker.score("q", ["a", "b"])) == 2


def test_offline_default_is_the_shipped_model_and_says_so(caplog):
    import json

    from rag_rerank.models import SHIPPED_CROSS_ENCODER

    with caplog.at_level("WARNING", logger="rag_rerank.models"):
        reranker = CrossEncoderReranker(device="cpu", backend="torch")
    assert reranker.model_name == str(SHIPPED_CROSS_ENCODER)
    assert "not available offline" in caplog.text and str(SHIPPED_CROSS_ENCODER) in caplog.text
    saved = json.loads((SHIPPED_CROSS_ENCODER / "rag_rerank.json").read_text())
    assert reranker.first_stage_weight == saved["first_stage_weight"] > 0


def test_the_shipped_model_is_one_fp16_model_with_a_card():
    from safetensors import safe_open

    from rag_rerank.models import SHIPPED_CROSS_ENCODER

    models = SHIPPED_CROSS_ENCODER.parent  # the model, and the package that ships it (build leftovers aside)
    kept = {p.name for p in models.iterdir() if not p.name.startswith(".") and not p.name.endswith(".egg-info")}
    assert kept == {SHIPPED_CROSS_ENCODER.name, "pyproject.toml"}
    weights = SHIPPED_CROSS_ENCODER / "model.safetensors"
    assert weights.stat().st_size <= 50 * 1024 * 1024
    with safe_open(str(weights), "pt") as handle:
        assert {str(handle.get_tensor(key).dtype) for key in handle.keys()}  # noqa: SIM118 - safe_open is not a dict == {"torch.float16"}
    card = (SHIPPED_CROSS_ENCODER / "README.md").read_text()
    assert "make model" in card and "licence" in card.lower()
