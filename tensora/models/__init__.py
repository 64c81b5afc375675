"""Real models: architectures (Llama family, GPT-2, BERT), loading from Hugging Face
directories and GGUF files, tokenizers and KV-cache generation.

    >>> import tensora, tensora.models
    >>> model = tensora.models.load(tensora.models.default_model_path())  # SmolLM2-135M-Instruct, Q4_1
    >>> type(model).__name__, model.config.num_hidden_layers
    ('LlamaForCausalLM', 30)
    >>> msgs = [{"role": "user", "content": "What is the capital of France?"}]
    >>> model.chat(msgs, max_new_tokens=12, temperature=0).text   # doctest: +SKIP
    'The capital of France is Paris.'
"""

from . import bert, gpt2, llama  # noqa: F401  (register the architectures)
from .default import DefaultModelMissing, default_model_path
from .generation import Completion, TextStream
from .loading import load
from .registry import ARCHITECTURES, UnsupportedModelError
from .tokenizer import Tokenizer, load_tokenizer

__all__ = ["ARCHITECTURES", "Completion", "DefaultModelMissing", "TextStream", "Tokenizer", "UnsupportedModelError",
           "default_model_path", "load", "load_tokenizer"]
