"""core.latents.search: explanations indexed with MiniLM once, and found by meaning; similarities agree with a direct cosine."""

from __future__ import annotations

import numpy as np
import pytest
from app_workspace import copy_workspace

from core import store
from core.latents.search import EMBEDDING_MODEL, index_explanations, search_explanations, unindexed_explanations

TEXTS = {
    ("resid:blocks.1.hook_resid_pre", 10): "first names of people, such as Mary and John",
    ("resid:blocks.1.hook_resid_pre", 11): "a closing parenthesis ending a bracketed aside",
    ("attn:blocks.0.hook_attn_out", 5): "plural nouns like keys and cabinets",
}


@pytest.fixture
def explained(app_workspace, tmp_path):
    ws = copy_workspace(app_workspace, tmp_path)
    records = [
        store.ExplanationRecord(f"e{i}", d, lat, "openai/gpt-4o-mini", False, None, "top", text, "v1", {})
        for i, ((d, lat), text) in enumerate(TEXTS.items())
    ]
    copy = store.ExplanationRecord(
        "r0",
        "attn:blocks.0.hook_attn_out",
        6,
        "openai/gpt-4o-mini",
        True,
        "random-explanation",
        "top",
        TEXTS[("attn:blocks.0.hook_attn_out", 5)],
        "v1",
        {},
    )
    store.write_explanations(ws, [*records, copy])
    return ws


def test_index_once_then_search_by_meaning(explained):
    from core.autointerp.embedder import embed_texts

    with pytest.raises(store.WorkspaceError, match="indexed"):
        search_explanations(explained, "names")
    assert len(unindexed_explanations(explained)) == 3  # the random-explanation copy is not indexed
    assert index_explanations(explained) == 3
    assert index_explanations(explained) == 0 and unindexed_explanations(explained) == []

    found = search_explanations(explained, "names of persons", k=3)
    assert [(m.dictionary, m.latent) for m in found][0] == ("resid:blocks.1.hook_resid_pre", 10)
    assert [m.similarity for m in found] == sorted((m.similarity for m in found), reverse=True)
    q = embed_texts(["names of persons"])[0]
    direct = {m.explanation_id: float(embed_texts([m.text])[0] @ q) for m in found}
    assert all(abs(direct[m.explanation_id] - m.similarity) < 1e-5 for m in found)
    ids, vectors = store.read_explanation_embeddings(explained, EMBEDDING_MODEL)
    assert vectors.shape == (3, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)

    only_attn = search_explanations(explained, "names of persons", k=5, dictionary="attn:blocks.0.hook_attn_out")
    assert [(m.dictionary, m.latent) for m in only_attn] == [("attn:blocks.0.hook_attn_out", 5)]
    with pytest.raises(store.WorkspaceError, match="type what the latent"):
        search_explanations(explained, "   ")
