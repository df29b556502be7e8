"""A latent's activation on text the user types ("test your own text" on the latents page).

The text is tokenized as the cache tokenizes its contexts (no special tokens) after one BOS token, the
model runs up to the dictionary's input hook, and the dictionary encodes that hook's activations; the
BOS position is dropped, as the cache drops it. So a sentence taken from a cached context gives the
activations the card's examples show for it (up to the context the tokens before it supply).
"""

from __future__ import annotations

from core.cache.compute import forward_hooks
from core.cache.plan import _encode_ids, bos_token_id
from core.errors import UserError

MAX_CHARS = 20_000  # longer text is refused before tokenizing (the context limit is far below this anyway)


class TextInputError(UserError):
    """Text the user typed that can't be run: empty, or longer than the model's context."""


def activations_on_text(model, dictionary, text: str, latent: int) -> list[tuple[str, float]]:
    """Latent `latent` of `dictionary` on each token of `text`: `[n_tokens]` pairs (decoded token text, activation).

    `model` is a HookedTransformer with a tokenizer; `dictionary` a core.subjects.dictionaries.Dictionary of
    it. Raises TextInputError for empty text, text over the model's context (`n_ctx`, counting the BOS
    token), or a latent outside the dictionary."""
    import torch

    if not 0 <= latent < dictionary.d_sae:
        raise TextInputError(f"latent {latent} is not in {dictionary.id}: it has {dictionary.d_sae} latents")
    if not text.strip():
        raise TextInputError("type some text to see this latent's activation on each of its tokens")
    n_ctx = int(model.cfg.n_ctx)
    if len(text) > MAX_CHARS:
        raise TextInputError(
            f"the text is {len(text):,} characters; this model's context is {n_ctx} tokens: shorten it"
        )
    tokenizer = model.tokenizer
    ids = _encode_ids(tokenizer, text)
    if len(ids) + 1 > n_ctx:
        raise TextInputError(
            f"the text is {len(ids)} tokens (plus BOS); this model's context is {n_ctx} tokens: shorten it"
        )
    tokens = torch.tensor([[bos_token_id(tokenizer), *ids]], dtype=torch.long, device=model.cfg.device)
    cache = forward_hooks(model, tokens, [dictionary.hook_in])
    with torch.inference_mode():
        acts = dictionary.encode(cache[dictionary.hook_in][0, 1:])  # [n_tokens, d_sae]
    values = acts[:, latent].float().cpu().tolist()
    return [(tokenizer.decode([i]), float(v)) for i, v in zip(ids, values, strict=True)]
