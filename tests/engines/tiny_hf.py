"""A tiny Qwen2-architecture model built from nothing: random weights, a byte-level BPE tokenizer
trained here with `tokenizers`, and Qwen2.5's chat template (which renders tools). Saved with
`save_pretrained`, it is loaded by the real transformers code path, with no download."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

TEMPLATE = Path(__file__).resolve().parents[1] / "chat" / "golden" / "qwen2_5.jinja"
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>"]
CORPUS = [
    "What's the weather in Paris? It is sunny and 18 degrees in Paris today.",
    'system user assistant tool {"name": "get_weather", "arguments": {"city": "Paris"}}',
    "You are a helpful assistant. Answer the question. Tokyo Lima Oslo Berlin Rome",
    "The quick brown fox jumps over the lazy dog. 0123456789 [] {} : , \" ' # Tools",
    "function description parameters properties required type object string number",
] * 20


def build_tiny_model(folder: Path) -> Path:
    """Write the model and tokenizer to `folder`; returns it."""
    torch.manual_seed(0)
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    fast.chat_template = TEMPLATE.read_text()
    config = Qwen2Config(
        vocab_size=len(fast),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        eos_token_id=fast.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=fast.pad_token_id,
    )
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder
