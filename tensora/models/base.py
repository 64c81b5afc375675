"""What every causal language model offers on top of its architecture: logits, generate, stream.

An architecture provides `hidden_states(ids, positions, mask, cache, start)` (the final
normed hidden states), an `lm_head`, `new_cache(batch, capacity)` and its checkpoint
naming; this class turns that into `forward` (full-sequence logits, differentiable, for
tests and fine-tuning) and into `generate` / `stream` (see generation.py), and carries
the model's tokenizer once a loader attaches it.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from ..nn import Module
from ..tensor import Tensor
from .layers import KVCache, attention_mask


class CausalLM(Module):
    """Base of the decoder-only models: see the module docstring for what subclasses provide."""

    tokenizer: Any = None
    config: Any

    def hidden_states(self, ids: Tensor, positions: np.ndarray, mask: Tensor | None, cache: KVCache | None,
                      start: int) -> Tensor:
        raise NotImplementedError

    def new_cache(self, batch: int, capacity: int) -> KVCache:
        raise NotImplementedError

    def next_token_logits(self, ids: np.ndarray, positions: np.ndarray, mask: Tensor | None, cache: Any,
                          start: int, last: np.ndarray | None = None) -> np.ndarray:
        """float32 logits (B, vocab) of each row's last position (generation's step, gradients off).

        `last` (B,) picks another position per row: right-padded prompts prefilled together.
        The module path here; an architecture may override it with an inference fast path.
        """
        h = self.hidden_states(Tensor(ids), positions, mask, cache, start)
        return self.lm_head(h[:, -1] if last is None else h[np.arange(len(last)), last]).float().numpy()

    @property
    def sliding_window(self) -> int | None:
        return None

    @property
    def max_positions(self) -> int:
        return int(self.config.max_position_embeddings)

    def forward(self, input_ids: Tensor | Any, attention_mask: Any = None) -> Tensor:
        """Logits (B, T, vocab) for every position; attention_mask (B, T) marks real tokens (1) vs padding (0)."""
        ids = input_ids if isinstance(input_ids, Tensor) else Tensor(np.asarray(input_ids, dtype=np.int64))
        if ids.ndim == 1:
            ids = ids.unsqueeze(0)
        b, t = ids.shape
        keys = np.ones((b, t), bool) if attention_mask is None else np.asarray(
            attention_mask.numpy() if isinstance(attention_mask, Tensor) else attention_mask, dtype=bool)
        positions = np.maximum(np.cumsum(keys, axis=1) - 1, 0)
        mask = attention_mask_for(keys, 0, t, self.sliding_window, full=attention_mask is not None)
        return self.lm_head(self.hidden_states(ids, positions, mask, None, 0))

    def generate(self, prompt: Any, **options: Any) -> Any:
        """Generate from a text, a list of token ids, or a list of either (a batch); see generation.generate."""
        from .generation import generate

        return generate(self, prompt, **options)

    def stream(self, prompt: Any, **options: Any) -> Iterator[str]:
        """Text deltas as they are generated; see generation.stream."""
        from .generation import stream

        return stream(self, prompt, **options)

    def chat(self, messages: list[dict[str, str]], **options: Any) -> Any:
        """Reply to chat messages rendered with the tokenizer's chat template."""
        return self.generate(self.chat_prompt(messages), **options)

    def chat_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of messages rendered with the chat template, ready for the assistant's reply."""
        if self.tokenizer is None:
            raise ValueError("chat needs a model loaded with its tokenizer (and its chat template)")
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        return self.tokenizer.encode(text, add_special_tokens=False)

    # -- checkpoint naming (overridden by architectures that need it) -------------------------

    def tied_weights(self) -> dict[str, str]:
        """Parameter name -> the name whose tensor it shares (e.g. lm_head tied to the embedding)."""
        return {}

    def hf_state_dict(self, tensors: dict[str, Any]) -> dict[str, Any]:
        """A transformers checkpoint's tensors under this model's names (identity unless overridden)."""
        return tensors

    def gguf_state_dict(self, tensors: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} does not load GGUF files")


def attention_mask_for(keys: np.ndarray, start: int, steps: int, window: int | None, full: bool) -> Tensor | None:
    """The mask of layers.attention_mask, or None for plain causal attention (no padding, no window)."""
    if not full and window is None:
        return None
    return attention_mask(keys, start, steps, window)
