"""Text in, words out: explain a text classifier's decision token by token.

A model with token-id inputs is read through its word-embedding output (:mod:`onnxplain.canonical.tokens`):
the explained input is ``embeddings`` [N, T, H] = table[input_ids]. :func:`explain_texts` tokenizes each
text (the tokenizer's special tokens included), looks the ids up in the model's own table, runs the
Explainer's method on the embeddings and sums the relevance over the hidden axis: one signed number per
token — the convention of lxt's efficient BERT (relevance = embeddings × modified gradient, summed over
the hidden axis) and of Captum's ``LayerIntegratedGradients`` on the embedding layer (attributions summed
over the last axis). Any method applies: ``lrp.attn``/``lrp.cp``, ``input_t_gradient``,
``integrated_gradients`` (its baseline zeros is the zero embedding), ``occlusion``.

The tokenizer is a Hugging Face ``tokenizer.json`` path (read with the ``tokenizers`` library, the
optional extra ``onnxplain[text]``), a ``tokenizers.Tokenizer`` or a ``transformers`` tokenizer.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .errors import OnnxplainError


@dataclass
class TextExplanation:
    """One explained text: its tokens (special tokens included), one relevance per token, the class
    explained and the logits."""

    text: str
    tokens: list
    ids: list
    relevance: np.ndarray
    target: int
    logits: np.ndarray

    def record(self) -> dict:
        """The JSON record: text, tokens, relevance, target, logits (plain Python values)."""
        return {"text": self.text, "tokens": list(self.tokens), "ids": [int(i) for i in self.ids],
                "relevance": [float(r) for r in self.relevance], "target": int(self.target),
                "logits": [float(v) for v in self.logits]}


def load_tokenizer(tokenizer):
    """A tokenizer object from a ``tokenizer.json`` path (needs ``tokenizers``), or the object itself."""
    if not isinstance(tokenizer, (str, os.PathLike)):
        return tokenizer
    path = os.fspath(tokenizer)
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise OnnxplainError("reading a tokenizer.json needs the 'tokenizers' library: "
                             "pip install 'onnxplain[text]'") from None
    if not os.path.isfile(path):
        raise OnnxplainError(f"tokenizer file not found: {path}")
    try:
        return Tokenizer.from_file(path)
    except Exception as exc:  # the library's own parse errors
        raise OnnxplainError(f"{path} is not a tokenizer.json the tokenizers library can read "
                             f"({' '.join(str(exc).split())[:120]})") from None


def encode(tokenizer, text: str):
    """(ids, tokens) of ``text`` with the tokenizer's special tokens."""
    if hasattr(tokenizer, "encode") and hasattr(tokenizer, "get_vocab_size"):  # tokenizers.Tokenizer
        enc = tokenizer.encode(text)
        return list(enc.ids), list(enc.tokens)
    if callable(tokenizer) and hasattr(tokenizer, "convert_ids_to_tokens"):  # transformers tokenizer
        ids = list(tokenizer(text)["input_ids"])
        return ids, list(tokenizer.convert_ids_to_tokens(ids))
    raise OnnxplainError("tokenizer must be a tokenizer.json path, a tokenizers.Tokenizer or a transformers "
                         f"tokenizer, not {type(tokenizer).__name__}")


def explain_texts(explainer, texts, tokenizer, target=None) -> list:
    """:class:`TextExplanation` per text. ``explainer``: an :class:`onnxplain.Explainer` of a token model;
    ``target``: None (each text's top class), a class index, or one per text. Texts of one length run as
    one batch."""
    tokens_info = explainer.canonical.tokens
    if tokens_info is None:
        raise OnnxplainError("this model has no token-id inputs; explain_text needs a text classifier whose "
                             "inputs are input_ids (and attention_mask, token_type_ids)")
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise OnnxplainError("no text to explain")
    tok = load_tokenizer(tokenizer)
    targets = [None] * len(texts) if target is None else list(np.broadcast_to(np.asarray(target), (len(texts),)))
    table = tokens_info.table
    encoded = [encode(tok, t) for t in texts]
    for (ids, _), text in zip(encoded, texts):
        bad = [i for i in ids if not 0 <= i < len(table)]
        if bad:
            raise OnnxplainError(f"the tokenizer gives id {bad[0]} for {text[:40]!r}, but the model's embedding "
                                 f"table has {len(table)} rows: tokenizer and model do not belong together")
        if not ids:
            raise OnnxplainError(f"the tokenizer gives no tokens for {text!r}")
    out = [None] * len(texts)
    by_len: dict = {}
    for i, (ids, _) in enumerate(encoded):
        by_len.setdefault((len(ids), targets[i] is None), []).append(i)
    for (_, top), rows in by_len.items():
        emb = table[np.array([encoded[i][0] for i in rows])].astype(explainer.runner.dtype, copy=False)
        res = explainer.explain(emb, None if top else np.array([targets[i] for i in rows], np.int64))
        rel = res.relevance.reshape(len(rows), emb.shape[1], -1).sum(-1)
        for j, i in enumerate(rows):
            out[i] = TextExplanation(texts[i], encoded[i][1], encoded[i][0], rel[j], int(res.target[j]),
                                     res.logits[j])
    return out
