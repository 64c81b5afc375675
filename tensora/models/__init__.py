"""Real models: architectures (Llama family, GPT-2, BERT), loading from Hugging Face
directories and GGUF files, tokenizers and KV-cache generation.

    >>> model = tensora.models.load("SmolLM2-135M-Instruct.Q4_1.gguf")      # doctest: +SKIP
    >>> model.chat([{"role": "user", "content": "Hi!"}], max_new_tokens=32).text  # doctest: +SKIP
"""

from . import bert, gpt2, llama  # noqa: F401  (register the architectures)
from .default import DefaultModelMissing, default_model_path
from .generation import Completion, TextStream
from .loading import load
from .registry import ARCHITECTURES, UnsupportedModelError
from .tokenizer import Tokenizer, load_tokenizer

__all__ = ["ARCHITECTURES", "Completion", "DefaultModelMissing", "TextStream", "Tokenizer", "UnsupportedModelError",
           "default_model_path", "load", "load_tokenizer"]
