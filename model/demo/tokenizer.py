"""The demo model's tokenizer: byte-level BPE trained locally on the synthetic corpus, ChatML template.

Stage: demo model build (``model.demo.build``). Input: synthetic corpus items. Output: a ``PreTrainedTokenizerFast``
(English + Chinese merges; ``<|endoftext|>`` ``<|im_start|>`` ``<|im_end|>`` = eos / end of turn), saved beside
the model so vLLM and transformers load it with ``AutoTokenizer``. Failure modes: ``OSError`` when saving.
Byte-level BPE can spell any text, so findings with words the corpus never had still tokenise.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import AutoTokenizer, GenerationConfig, PreTrainedTokenizerFast

from model.demo import synthetic
from model.inference.prompts import render_messages

ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END]
QWEN2_SPLIT_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
LIST_STYLES: tuple[synthetic.ListStyle, ...] = ("numbered", "dash", "plain")
# ChatML, as Qwen2 uses it: <|im_start|>role\ncontent<|im_end|>\n …, then the assistant header.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _texts(items: Sequence[synthetic.CorpusItem]) -> Iterator[str]:
    """Everything the model will read or write: rendered prompts and impressions in every list style."""
    for index, item in enumerate(items):
        messages, _ = render_messages(synthetic.as_request(item, index))
        yield "\n".join(f"{m['role']}\n{m['content']}" for m in messages) + "\nassistant\n"
        for style in LIST_STYLES:
            yield item.impression_as(style)


def train_tokenizer(items: Sequence[synthetic.CorpusItem], vocab_size: int, model_max_length: int) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    # Qwen2's own pipeline (NFC, its split regex, byte-level), so the files mean the same thing
    # whether a reader loads them as PreTrainedTokenizerFast or maps model_type qwen2 to Qwen2Tokenizer,
    # which rebuilds this pipeline around the saved vocab and merges. Digits split one by one.
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_texts(items), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        additional_special_tokens=[IM_START],
        chat_template=CHATML_TEMPLATE,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )


def generation_config(tokenizer: PreTrainedTokenizerFast) -> GenerationConfig:
    """Greedy by default, stopping at the end of turn (or end of text)."""
    eos = [tokenizer.convert_tokens_to_ids(IM_END), tokenizer.convert_tokens_to_ids(ENDOFTEXT)]
    return GenerationConfig(eos_token_id=eos, pad_token_id=tokenizer.pad_token_id, do_sample=False)


def save(tokenizer: PreTrainedTokenizerFast, directory: Path) -> None:
    tokenizer.save_pretrained(directory)
    # Keep the chat template inside tokenizer_config.json too (newer transformers write it to a
    # separate chat_template.jinja); older readers only look in the config.
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["chat_template"] = CHATML_TEMPLATE
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def check_reload(tokenizer: PreTrainedTokenizerFast, directory: Path, samples: Sequence[str]) -> None:
    """Fail the build if the saved tokenizer, as a server would load it, splits text differently."""
    reloaded = AutoTokenizer.from_pretrained(directory)
    for text in samples:
        if reloaded.encode(text, add_special_tokens=False) != tokenizer.encode(text, add_special_tokens=False):
            raise RuntimeError(f"tokenizer saved in {directory} does not reload identically")
