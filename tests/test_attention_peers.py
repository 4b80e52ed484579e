"""lrp.attn / lrp.cp against lxt 2.1 (the AttnLRP authors' PyTorch implementation) on the same weights, and
the gradient on exported transformers against torch autograd (marker ``torch``).

* BERT: a Hugging Face ``BertForSequenceClassification`` (small random config, trained a few seconds on a
  keyword task so that relevance is meaningful), exported with torch.onnx; lxt's efficient BERT patch
  (``monkey_patch(modeling_bert)``): relevance = word embeddings × modified gradient, summed over the
  hidden axis, against our ``explain_text`` on the exported token model.
* ViT: a torchvision-style ViT (conv patches, class token, pre-LN blocks, GELU MLP) with an eager attention
  function, trained on "which quadrant holds the bright square"; lxt's own patches: ``layer_norm_forward``
  on LayerNorm, ``non_linear_forward`` (identity rule) on GELU, and its attention wrappers
  ``wrap_attention_forward`` (AttnLRP: q, k ÷ 4, v ÷ 2) or ``cp_wrap_attention_forward`` (CP-LRP: q, k
  detached) around the attention function — as lxt patches Hugging Face attention functions; with Zennit's
  γ-rule on Conv2d/Linear through lxt's Zennit patch (lxt's ViT recipe).
* A post-LN BERT-style encoder with the same eager attention: CP-LRP and AttnLRP through lxt's wrappers
  (lxt 2.1's Hugging Face BERT patch is AttnLRP only).
* Hugging Face DistilBERT, RoBERTa and ViT exports: every op has a rule, logits and gradients as torch's.

lxt patches classes globally; every patch is undone after its use (:func:`_restored`).
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import math
import sys

import numpy as np
import pytest
from module_stubs import stub_modules

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("lxt")
pytestmark = pytest.mark.torch

import onnxplain  # noqa: E402

nn = torch.nn
MEDIAN_R = 0.99


def _lxt():
    """lxt.efficient (and zennit, where installed), importable without torchvision: lxt 2.1 imports
    torchvision's vision_transformer only to name the torch.nn classes of its ViT patch map, zennit imports
    torchvision's ResNet blocks for its canonizers; stub modules stand in while they import and are removed
    afterwards (as tests/test_zennit.py does)."""
    for name in ("llama", "qwen2", "qwen3", "gemma3", "gpt2", "bert"):  # first: transformers probes for
        importlib.import_module(f"transformers.models.{name}.modeling_{name}")  # torchvision itself
    if "lxt.efficient" in sys.modules or importlib.util.find_spec("torchvision") is not None:
        import lxt.efficient as efficient
        import lxt.efficient.patches as patches
        return efficient, patches
    block = {"BasicBlock": type("BasicBlock", (nn.Module,), {}), "Bottleneck": type("Bottleneck", (nn.Module,), {})}
    with stub_modules({"torchvision": {}, "torchvision.models": {}, "torchvision.models.vision_transformer": {"nn": nn},
                       "torchvision.models.resnet": block}):
        if importlib.util.find_spec("zennit") is not None:
            import zennit  # noqa: F401  (before lxt, whose Zennit patch needs it)
        import lxt.efficient as efficient
        import lxt.efficient.patches as patches
    return efficient, patches


@contextlib.contextmanager
def _restored(*modules, classes=()):
    """Undo lxt's global patches: module attributes and class forwards as they were."""
    saved = [(m, dict(vars(m))) for m in modules]
    fwd = [(c, c.__dict__.get("forward"), c.__dict__.get("original_forward")) for c in classes]
    try:
        yield
    finally:
        for m, attrs in saved:
            for k in list(vars(m)):
                if k not in attrs:
                    delattr(m, k)
            for k, v in attrs.items():
                setattr(m, k, v)
        for c, f, orig in fwd:
            c.forward = f
            if orig is None and "original_forward" in c.__dict__:
                del c.original_forward


def _pearson(a, b):
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))


def _export(model, args, names, dynamic, path):
    torch.onnx.export(model, args, str(path), input_names=names, output_names=["logits"], dynamic_axes=dynamic,
                      opset_version=17, dynamo=False)
    return str(path)


# ---- BERT -------------------------------------------------------------------------------------------
VOCAB, KEY, T = 40, 7, 12


def _keyword_batch(rng, n):
    ids = rng.integers(4, VOCAB, (n, T))
    ids[ids == KEY] = 8
    y = rng.integers(0, 2, n)
    for i in np.flatnonzero(y):
        ids[i, rng.integers(1, T - 1)] = KEY
    ids[:, 0], ids[:, -1] = 2, 3  # [CLS] … [SEP]
    return ids, y


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=T, num_labels=2, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0, attn_implementation="eager")
    model = BertForSequenceClassification(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(150):
        ids, y = _keyword_batch(rng, 32)
        loss = nn.functional.cross_entropy(model(input_ids=torch.tensor(ids)).logits, torch.tensor(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    ids, y = _keyword_batch(np.random.default_rng(1), 24)
    acc = (model(input_ids=torch.tensor(ids)).logits.argmax(1).numpy() == y).mean()
    assert acc >= 0.9, f"the keyword task did not train (accuracy {acc})"
    ones = torch.ones(1, T, dtype=torch.long)
    path = _export(model, (torch.tensor(ids[:1]), ones, ones * 0), ["input_ids", "attention_mask", "token_type_ids"],
                   {n: {0: "N", 1: "T"} for n in ("input_ids", "attention_mask", "token_type_ids")},
                   tmp_path_factory.mktemp("bert") / "bert.onnx")
    return model, cfg, path, ids


def _word_tokenizer():
    tk = pytest.importorskip("tokenizers")
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, **{f"w{i}": i for i in range(4, VOCAB)}}
    tok = tk.Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    tok.add_special_tokens(["[CLS]", "[SEP]"])
    return tok


def _texts(ids):
    return [" ".join(["[CLS]"] + [f"w{i}" for i in row[1:-1]] + ["[SEP]"]) for row in ids]


def test_bert_gradient_matches_torch_autograd(bert):
    model, _, path, ids = bert
    emb = model.bert.embeddings.word_embeddings(torch.tensor(ids)).detach().requires_grad_()
    logits = model(inputs_embeds=emb).logits
    target = logits.argmax(1)
    logits[torch.arange(len(ids)), target].sum().backward()
    ours = onnxplain.Explainer(path, method="gradient", device="cpu").explain(emb.detach().numpy(), target.numpy())
    np.testing.assert_allclose(ours.logits, logits.detach().numpy(), rtol=1e-4, atol=1e-5)
    g = emb.grad.numpy()
    np.testing.assert_allclose(ours.relevance, g, rtol=1e-4, atol=1e-4 * np.abs(g).max())


def test_bert_attn_lrp_agrees_with_lxt(bert):
    model, cfg, path, ids = bert
    efficient, _ = _lxt()
    from transformers import BertForSequenceClassification
    from transformers.models.bert import modeling_bert
    with _restored(modeling_bert, classes=(nn.LayerNorm, nn.Dropout)):
        efficient.monkey_patch(modeling_bert)
        patched = modeling_bert.BertForSequenceClassification(cfg)
        assert type(patched) is not BertForSequenceClassification
        patched.load_state_dict(model.state_dict())
        patched.eval()
        emb = patched.bert.embeddings.word_embeddings(torch.tensor(ids)).detach().requires_grad_()
        logits = patched(inputs_embeds=emb).logits
        target = logits.argmax(1)
        logits[torch.arange(len(ids)), target].sum().backward()
        ref = (emb * emb.grad).sum(-1).detach().numpy()
    res = onnxplain.Explainer(path, method="lrp.attn", device="cpu").explain_text(_texts(ids), _word_tokenizer(),
                                                                                  target.numpy())
    ours = np.stack([r.relevance for r in res])
    assert [r.ids for r in res] == ids.tolist()
    r = _pearson(ours, ref)
    gxi = onnxplain.Explainer(path, method="input_t_gradient", device="cpu").explain_text(
        _texts(ids), _word_tokenizer(), target.numpy())
    other = np.median(_pearson(np.stack([g.relevance for g in gxi]), ref))
    print(f"BERT lrp.attn vs lxt: median Pearson r = {np.median(r):.7f} (min {r.min():.7f}, n={len(r)}); "
          f"input_t_gradient vs lxt: {other:.4f}")
    assert np.median(r) >= MEDIAN_R


# ---- ViT ------------------------------------------------------------------------------------------------
def eager_attention(module, q, k, v):
    a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    return a @ v


class Attention(nn.Module):
    attention = staticmethod(eager_attention)  # lxt's wrappers go here

    def __init__(self, h, heads):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.out = (nn.Linear(h, h) for _ in range(4))

    def forward(self, x):
        n, t, h = x.shape
        split = lambda y: y.reshape(n, t, self.heads, h // self.heads).transpose(1, 2)  # noqa: E731
        o = type(self).attention(self, split(self.q(x)), split(self.k(x)), split(self.v(x)))
        return self.out(o.transpose(1, 2).reshape(n, t, h))


class Block(nn.Module):
    def __init__(self, h, heads, ff):
        super().__init__()
        self.ln_1, self.attn, self.ln_2 = nn.LayerNorm(h), Attention(h, heads), nn.LayerNorm(h)
        self.mlp = nn.Sequential(nn.Linear(h, ff), nn.GELU(), nn.Linear(ff, h))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class ViT(nn.Module):
    """torchvision's VisionTransformer layout, small."""

    def __init__(self, image=16, patch=4, h=32, heads=2, ff=64, layers=2, classes=4):
        super().__init__()
        self.conv_proj = nn.Conv2d(3, h, patch, patch)
        self.class_token = nn.Parameter(torch.zeros(1, 1, h))
        self.pos = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, h) * 0.02)
        self.blocks = nn.Sequential(*[Block(h, heads, ff) for _ in range(layers)])
        self.ln, self.head = nn.LayerNorm(h), nn.Linear(h, classes)

    def forward(self, x):
        p = self.conv_proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.expand(p.shape[0], -1, -1), p], 1) + self.pos
        return self.head(self.ln(self.blocks(x))[:, 0])


def _quadrants(rng, n):
    x = rng.normal(0, 0.3, (n, 3, 16, 16)).astype(np.float32)
    y = rng.integers(0, 4, n)
    for i, q in enumerate(y):
        r, c = 8 * (q // 2) + rng.integers(0, 5), 8 * (q % 2) + rng.integers(0, 5)
        x[i, :, r:r + 4, c:c + 4] += 2.0
    return x, y


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    torch.manual_seed(0)
    model = ViT()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    rng = np.random.default_rng(0)
    for _ in range(150):
        x, y = _quadrants(rng, 32)
        loss = nn.functional.cross_entropy(model(torch.tensor(x)), torch.tensor(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x, y = _quadrants(np.random.default_rng(1), 16)
    acc = (model(torch.tensor(x)).argmax(1).numpy() == y).mean()
    assert acc >= 0.8, f"the quadrant task did not train (accuracy {acc})"
    path = _export(model, (torch.tensor(x[:1]),), ["pixel_values"], {"pixel_values": {0: "N"}},
                   tmp_path_factory.mktemp("vit") / "vit.onnx")
    return model, path, x


def test_vit_gradient_matches_torch_autograd(vit):
    model, path, x = vit
    xt = torch.tensor(x).requires_grad_()
    logits = model(xt)
    target = logits.argmax(1)
    logits[torch.arange(len(x)), target].sum().backward()
    ours = onnxplain.Explainer(path, method="gradient", device="cpu").explain(x, target.numpy())
    g = xt.grad.numpy()
    np.testing.assert_allclose(ours.relevance, g, rtol=1e-4, atol=1e-4 * np.abs(g).max())


@pytest.mark.parametrize("method", ["lrp.attn", "lrp.cp"])
def test_vit_agrees_with_lxt(vit, method):
    model, path, x = vit
    _, patches = _lxt()
    wrap = patches.wrap_attention_forward if method == "lrp.attn" else patches.cp_wrap_attention_forward
    with _restored(classes=(nn.LayerNorm, nn.GELU)):
        patches.patch_method(patches.layer_norm_forward, nn.LayerNorm)
        patches.patch_method(patches.non_linear_forward, nn.GELU, keep_original=True)
        Attention.attention = staticmethod(wrap(eager_attention))
        try:
            xt = torch.tensor(x).requires_grad_()
            logits = model(xt)
            target = logits.argmax(1)
            logits[torch.arange(len(x)), target].sum().backward()
            ref = (xt * xt.grad).detach().numpy()
        finally:
            Attention.attention = staticmethod(eager_attention)
    ours = onnxplain.Explainer(path, method=method, device="cpu").explain(x, target.numpy()).relevance
    r = _pearson(ours, ref)
    gxi = onnxplain.Explainer(path, method="input_t_gradient", device="cpu").explain(x, target.numpy()).relevance
    print(f"ViT {method} vs lxt: median Pearson r = {np.median(r):.7f} (min {r.min():.7f}, n={len(r)}); "
          f"input_t_gradient vs lxt: {np.median(_pearson(gxi, ref)):.4f}")
    assert np.median(r) >= MEDIAN_R


# ---- more Hugging Face exports: every op has an AttnLRP rule, the text path reproduces the logits ---------
def _hf(kind):
    from transformers import (DistilBertConfig, DistilBertForSequenceClassification, RobertaConfig,
                              RobertaForSequenceClassification, ViTConfig, ViTForImageClassification)
    small = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, attn_implementation="eager")
    torch.manual_seed(0)
    if kind == "distilbert":
        return DistilBertForSequenceClassification(DistilBertConfig(
            vocab_size=VOCAB, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=T,
            dropout=0.0, attention_dropout=0.0, attn_implementation="eager")).eval()
    if kind == "roberta":  # position ids computed from input_ids != padding_idx (1)
        return RobertaForSequenceClassification(RobertaConfig(
            vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=T + 2, pad_token_id=1, **small)).eval()
    return ViTForImageClassification(ViTConfig(
        image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=3, **small)).eval()


@pytest.mark.parametrize("kind", ["distilbert", "roberta", "vit"])
def test_hugging_face_exports_explained(kind, tmp_path):
    """DistilBERT, RoBERTa and ViT from transformers (random small configs), exported with torch.onnx: the
    token path gives the model's logits, lrp.attn and lrp.cp find a rule for every op, and the gradient at
    the explained tensor (the word-embedding output, the pixels) is torch autograd's (rel 1e-4)."""
    model = _hf(kind)
    if kind == "vit":
        x = np.random.default_rng(0).standard_normal((3, 3, 16, 16)).astype(np.float32)
        path = _export(model, (torch.tensor(x),), ["pixel_values"], {"pixel_values": {0: "N"}}, tmp_path / "m.onnx")
        xt = torch.tensor(x).requires_grad_()
        logits = model(pixel_values=xt).logits
        ours_in = x
    else:
        ids, _ = _keyword_batch(np.random.default_rng(2), 3)
        ids = ids[:, :T - 2] if kind == "roberta" else ids
        names = ["input_ids", "attention_mask"]
        path = _export(model, (torch.tensor(ids), torch.ones(ids.shape, dtype=torch.long)), names,
                       {n: {0: "N", 1: "T"} for n in names}, tmp_path / "m.onnx")
        words = model.get_input_embeddings()
        xt = words(torch.tensor(ids)).detach().requires_grad_()
        if kind == "roberta":  # through inputs_embeds with the positions RoBERTa derives from the ids
            from transformers.models.roberta.modeling_roberta import create_position_ids_from_input_ids
            pos = create_position_ids_from_input_ids(torch.tensor(ids), 1)
            logits = model(inputs_embeds=xt, position_ids=pos).logits
        else:
            logits = model(inputs_embeds=xt).logits
        ours_in = xt.detach().numpy()
    target = logits.argmax(1)
    logits[torch.arange(len(target)), target].sum().backward()
    ex = onnxplain.Explainer(path, method="gradient", device="cpu")
    ours = ex.explain(ours_in, target.numpy())
    np.testing.assert_allclose(ours.logits, logits.detach().numpy(), rtol=1e-4, atol=1e-5)
    g = xt.grad.numpy()
    np.testing.assert_allclose(ours.relevance, g, rtol=1e-4, atol=1e-4 * np.abs(g).max())
    for method in ("lrp.attn", "lrp.cp"):
        res = onnxplain.Explainer(path, method=method, device="cpu").explain(ours_in, target.numpy())
        assert np.isfinite(res.relevance).all() and np.abs(res.relevance).sum() > 0


@pytest.mark.parametrize("method", ["lrp.cp", "lrp.attn"])
def test_vit_gamma_agrees_with_lxt_and_zennit(vit, method):
    """lxt's ViT recipe: Zennit's γ-rule on Conv2d (γ = 0.25) and Linear (γ = 0.05) through lxt's gradient ×
    input patch of Zennit (R = output × gradient in, relevance ÷ input out), with lxt's attention wrapper."""
    model, path, x = vit
    _, patches = _lxt()
    zennit = pytest.importorskip("zennit")
    from lxt.efficient import monkey_patch_zennit
    from zennit.composites import LayerMapComposite
    from zennit.core import BasicHook
    from zennit.rules import Gamma
    wrap = patches.wrap_attention_forward if method == "lrp.attn" else patches.cp_wrap_attention_forward
    with _restored(classes=(nn.LayerNorm, nn.GELU, BasicHook)):
        hook_forward, hook_backward = BasicHook.forward, BasicHook.backward
        monkey_patch_zennit()
        patches.patch_method(patches.layer_norm_forward, nn.LayerNorm)
        patches.patch_method(patches.non_linear_forward, nn.GELU, keep_original=True)
        Attention.attention = staticmethod(wrap(eager_attention))
        comp = LayerMapComposite([(nn.Conv2d, Gamma(0.25)), (nn.Linear, Gamma(0.05))])
        try:
            with comp.context(model):
                xt = torch.tensor(x).requires_grad_()
                logits = model(xt)
                target = logits.argmax(1)
                logits[torch.arange(len(x)), target].sum().backward()
                ref = (xt * xt.grad).detach().numpy()
        finally:
            Attention.attention = staticmethod(eager_attention)
            BasicHook.forward, BasicHook.backward = hook_forward, hook_backward
    assert zennit is not None
    rules = {"Conv": "gamma:gamma=0.25", "dense": "gamma:gamma=0.05"}
    ours = onnxplain.Explainer(path, method=method, device="cpu", rules=rules).explain(x, target.numpy())
    r = _pearson(ours.relevance, ref)
    print(f"ViT {method} with γ vs lxt + Zennit: median Pearson r = {np.median(r):.7f} (min {r.min():.7f}, "
          f"n={len(r)})")
    assert np.median(r) >= MEDIAN_R


# ---- a BERT-style encoder with lxt's attention wrappers: CP-LRP on text ------------------------------------
class TinyBert(nn.Module):
    """Post-LN BERT layout (word + position embeddings, LayerNorm, 2 layers, tanh pooler on [CLS]) with the
    eager :class:`Attention` above, so that lxt's attention wrappers apply (lxt 2.1's BERT patch is AttnLRP
    only)."""

    def __init__(self, h=32, heads=2, ff=64, layers=2):
        super().__init__()
        self.words, self.pos = nn.Embedding(VOCAB, h), nn.Parameter(torch.randn(1, T, h) * 0.1)
        self.ln = nn.LayerNorm(h)
        self.attn = nn.ModuleList(Attention(h, heads) for _ in range(layers))
        self.ln1 = nn.ModuleList(nn.LayerNorm(h) for _ in range(layers))
        self.mlp = nn.ModuleList(nn.Sequential(nn.Linear(h, ff), nn.GELU(), nn.Linear(ff, h)) for _ in range(layers))
        self.ln2 = nn.ModuleList(nn.LayerNorm(h) for _ in range(layers))
        self.pool, self.act, self.cls = nn.Linear(h, h), nn.Tanh(), nn.Linear(h, 2)

    def forward(self, emb):
        x = self.ln(emb + self.pos[:, :emb.shape[1]])
        for attn, ln1, mlp, ln2 in zip(self.attn, self.ln1, self.mlp, self.ln2):
            x = ln1(x + attn(x))
            x = ln2(x + mlp(x))
        return self.cls(self.act(self.pool(x[:, 0])))


@pytest.mark.parametrize("method", ["lrp.cp", "lrp.attn"])
def test_bert_style_encoder_agrees_with_lxt(method, tmp_path):
    torch.manual_seed(1)
    model = TinyBert()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(3)
    for _ in range(150):
        ids, y = _keyword_batch(rng, 32)
        loss = nn.functional.cross_entropy(model(model.words(torch.tensor(ids))), torch.tensor(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    ids, y = _keyword_batch(np.random.default_rng(4), 24)
    emb = model.words(torch.tensor(ids)).detach()
    assert (model(emb).argmax(1).numpy() == y).mean() >= 0.9
    path = _export(model, (emb[:1],), ["embeddings"], {"embeddings": {0: "N", 1: "T"}}, tmp_path / "tb.onnx")
    _, patches = _lxt()
    wrap = patches.wrap_attention_forward if method == "lrp.attn" else patches.cp_wrap_attention_forward
    with _restored(classes=(nn.LayerNorm, nn.GELU, nn.Tanh)):
        patches.patch_method(patches.layer_norm_forward, nn.LayerNorm)
        for act in (nn.GELU, nn.Tanh):  # lxt's BERT: identity rule on the GELU and the pooler's tanh
            patches.patch_method(patches.non_linear_forward, act, keep_original=True)
        Attention.attention = staticmethod(wrap(eager_attention))
        try:
            et = emb.clone().requires_grad_()
            logits = model(et)
            target = logits.argmax(1)
            logits[torch.arange(len(ids)), target].sum().backward()
            ref = (et * et.grad).sum(-1).detach().numpy()
        finally:
            Attention.attention = staticmethod(eager_attention)
    ours = onnxplain.Explainer(path, method=method, device="cpu").explain(emb.numpy(), target.numpy())
    r = _pearson(ours.relevance.sum(-1), ref)
    print(f"BERT-style {method} vs lxt: median Pearson r = {np.median(r):.7f} (min {r.min():.7f}, n={len(r)})")
    assert np.median(r) >= MEDIAN_R
