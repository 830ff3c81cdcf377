"""A tiny random-weight Qwen2 chat model built locally (no hub): a BPE tokenizer trained on a few
sentences, Qwen's ChatML template and special tokens, and a 2-layer Qwen2 with head size 64
(the smallest vLLM accepts)."""

from __future__ import annotations

from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TRAINING_TEXT = [
    "Instructions: Identify the essential problem. Think step by step to reason and describe what "
    "information could be relevant and helpful to address the questions in detail. Draft an answer.",
    "Why do insects fly towards light at night? Moths, lamps, the moon and navigation.",
    "How do I sort a list of dictionaries in Python by a key? Use sorted with a lambda.",
    "<think> reasoning </think> <answer> answer </answer> system user assistant query",
]


def build_tiny_qwen2(directory: Path, max_position_embeddings: int = 1024, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(TRAINING_TEXT * 20, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHATML_TEMPLATE
    )
    fast.save_pretrained(directory)
    config = Qwen2Config(
        vocab_size=len(fast),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=1,
        num_key_value_heads=1,
        max_position_embeddings=max_position_embeddings,
        eos_token_id=fast.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=fast.convert_tokens_to_ids("<|endoftext|>"),
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        # Zero the (tied) embeddings of special, whitespace-only and partial-UTF-8 tokens so that the
        # random model does not answer with a stop token, blanks, or bytes a streaming detokenizer
        # (vLLM's) holds back: tests then see non-empty completions.
        for token_id in range(len(fast)):
            text = fast.decode([token_id], skip_special_tokens=True)
            if not text.strip() or "\ufffd" in text:
                model.get_input_embeddings().weight[token_id] = 0
    model.save_pretrained(directory)
    return directory


if __name__ == "__main__":
    import sys

    print(build_tiny_qwen2(Path(sys.argv[1])))
