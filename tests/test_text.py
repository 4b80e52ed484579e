"""Text in, words out: a BERT-style classifier with token-id inputs (built with onnx.helper), a WordLevel
tokenizer.json made with the tokenizers library, explain_text and ``onnxplain explain --text``."""
from __future__ import annotations

import json
import sys

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

import onnxplain
from onnxplain.cli import main
from onnxplain.text import load_tokenizer
from transformer_nets import bert

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "good", "bad", "movie", "the", "was", "very", "plot", "not"]


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory):
    tk = pytest.importorskip("tokenizers")
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from tokenizers.processors import TemplateProcessing

    tok = tk.Tokenizer(WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    tok.post_processor = TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return str(path)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    model, _ = bert(seed=7, vocab=len(WORDS), bias=False)
    path = tmp_path_factory.mktemp("model") / "bert.onnx"
    path.write_bytes(model.SerializeToString())
    return str(path)


def _token_logits(model_file, ids):
    ids = np.asarray([ids], np.int64)
    sess = ort.InferenceSession(model_file)
    return sess.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids),
                           "token_type_ids": np.zeros_like(ids)})[0][0]


def test_explain_text_tokens_logits_and_conservation(model_file, tokenizer_file):
    """Tokens with the special ones; the logits of the original token model (mask 1, types 0); CP-LRP on the
    bias-free model (no position/type embeddings) conserves the target logit over the tokens."""
    ex = onnxplain.Explainer(model_file, method="lrp.cp", device="cpu")
    texts = ["the movie was very good", "bad plot", "not good not bad"]
    res = ex.explain_text(texts, tokenizer_file)
    assert res[0].tokens == ["[CLS]", "the", "movie", "was", "very", "good", "[SEP]"]
    for r in res:
        np.testing.assert_allclose(r.logits, _token_logits(model_file, r.ids), rtol=1e-5, atol=1e-6)
        assert r.relevance.shape == (len(r.tokens),)
        np.testing.assert_allclose(r.relevance.sum(), r.logits[r.target], rtol=1e-4, atol=1e-5)
    assert [r.target for r in ex.explain_text(texts, tokenizer_file, target=1)] == [1, 1, 1]


def test_integrated_gradients_and_occlusion_on_tokens(model_file, tokenizer_file):
    """IG through the embedding output: Σ_tokens R = f(embeddings) − f(baseline) (completeness) with the
    [PAD] embeddings as baseline (Captum's LayerIntegratedGradients convention; the zero embedding sits on
    the first LayerNorm's singularity); occlusion gives one value per token."""
    table = onnxplain.Explainer(model_file, device="cpu").canonical.tokens.table
    base = np.repeat(table[:1][None], 7, axis=1)  # 7 tokens: [CLS] + 5 words + [SEP]
    ex = onnxplain.Explainer(model_file, method="integrated_gradients", device="cpu", steps=64, baseline=base)
    r = ex.explain_text("the plot was not good", load_tokenizer(tokenizer_file), target=0)[0]
    f0 = ex.logits(base)[0, 0]
    np.testing.assert_allclose(r.relevance.sum(), r.logits[0] - f0, rtol=1e-2, atol=1e-3)
    occ = onnxplain.Explainer(model_file, method="occlusion", device="cpu", window=(1, 16))
    assert occ.explain_text("good movie", tokenizer_file)[0].relevance.shape == (4,)


def test_cli_text(model_file, tokenizer_file, tmp_path):
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["explain", model_file, "--text", "the movie was good", "--text", "bad",
                                    "--tokenizer", tokenizer_file, "-m", "lrp.attn", "-o", str(out)])
    assert res.exit_code == 0, res.output
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 2 and "[CLS](" in lines[0] and "movie(" in lines[0]
    data = json.loads((out / "texts.lrp.attn.json").read_text())
    rec = data["texts"][0]
    assert rec["tokens"][:3] == ["[CLS]", "the", "movie"] and len(rec["relevance"]) == len(rec["tokens"])
    assert set(rec) >= {"tokens", "relevance", "target", "logits"}
    page = (out / "texts.lrp.attn.html").read_text()
    assert "movie</span>" in page and "background: rgb" in page
    lines_file = tmp_path / "texts.txt"
    lines_file.write_text("good movie\n\nbad plot\n")
    res = CliRunner().invoke(main, ["explain", model_file, "--text-file", str(lines_file), "--tokenizer",
                                    tokenizer_file, "-m", "lrp.attn", "-o", str(out)])
    assert res.exit_code == 0 and len(res.stdout.strip().splitlines()) == 2
    bad = CliRunner().invoke(main, ["explain", model_file, "--text", "good"])
    assert bad.exit_code == 2 and "--tokenizer" in bad.output


def test_cli_text_with_several_methods(model_file, tokenizer_file, tmp_path):
    """Each method explains every text: one line per text and method, each method's files."""
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["explain", model_file, "--text", "the movie was good", "--text", "bad",
                                    "--tokenizer", tokenizer_file, "-m", "lrp.attn", "-m", "gradient", "-o", str(out)])
    assert res.exit_code == 0, res.output
    lines = res.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["lrp.attn", "lrp.attn", "gradient", "gradient"]
    ex = onnxplain.Explainer(model_file, method="gradient", device="cpu")
    want = ex.explain_text(["the movie was good", "bad"], tokenizer_file)
    got = json.loads((out / "texts.gradient.json").read_text())["texts"]
    for w, g in zip(want, got):  # the gradient file holds the gradient method's relevance
        np.testing.assert_allclose(g["relevance"], w.relevance, rtol=1e-5, atol=1e-7)
    assert (out / "texts.lrp.attn.html").exists()


def test_missing_tokenizers_library_is_one_line(monkeypatch, tokenizer_file):
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    with pytest.raises(onnxplain.OnnxplainError, match=r"onnxplain\[text\]"):
        load_tokenizer(tokenizer_file)


def test_image_model_has_no_text(tokenizer_file):
    from nets import relu_cnn
    ex = onnxplain.Explainer(relu_cnn().SerializeToString(), device="cpu")
    with pytest.raises(onnxplain.OnnxplainError, match="no token-id inputs"):
        ex.explain_text("good", tokenizer_file)


def test_inspect_text_model_names_the_token_inputs_and_no_image_layers(model_file):
    """inspect on a BERT: the token ids are explained through the embeddings, the other token inputs are
    filled; attention's [N, heads, T, d] tensors are not image layers (no CAM layer, no --size note)."""
    from onnxplain.canonical import canonicalize
    from onnxplain.methods.layers import cam_layers, path_layers

    res = CliRunner().invoke(main, ["inspect", model_file])
    assert res.exit_code == 0, res.output
    out = res.output
    assert "input_ids: int64 [N, T]  token ids: explained through their word embeddings 'embeddings'" in out
    assert "attention_mask: int64 [N, T]  filled with 1" in out and "not used by the explained output" not in out
    assert "explained input: embeddings [N, T, 16] (token embeddings)" in out
    assert "image input" not in out and "--size H W" not in out
    layers = path_layers(canonicalize(model_file))
    heads = [lay for lay in layers if len(lay.shape) == 4]
    assert heads and {lay.layout for lay in heads} == {"heads"} and cam_layers(canonicalize(model_file)) == []


def test_vit_attention_tensors_are_heads_and_its_patch_grid_stays_an_image():
    from transformer_nets import vit

    from onnxplain.canonical import canonicalize
    from onnxplain.methods.layers import default_cam_layer, path_layers

    model = vit(seed=0)
    canonical = canonicalize((model[0] if isinstance(model, tuple) else model).SerializeToString())
    layers = path_layers(canonical)
    by_layout = {}
    for lay in layers:
        by_layout.setdefault(lay.layout, []).append(lay)
    assert [lay.op for lay in by_layout["nchw"] if lay.op != "input"] == ["Conv"]  # the patch embedding
    assert by_layout["heads"] and all(lay.op in ("Reshape", "Transpose", "MatMul", "Div", "Softmax", "Add", "Mul")
                                      for lay in by_layout["heads"])
    assert default_cam_layer(canonical).layout == "tokens"
