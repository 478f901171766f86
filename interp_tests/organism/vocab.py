"""The organism's tokenizer: whole words as tokens, GPT-2 style.

A ByteLevel pre-tokenizer splits text like GPT-2 does (" Mary" keeps its space, "\\n" becomes "Ċ"), after
a Split that isolates two-digit groups so a year " 1745" becomes [" 17"]["45"]. Every pre-token seen in
the given texts becomes one token of a WordLevel vocabulary, so names, objects and numbers are single
tokens by construction; anything else maps to ``<|unk|>``.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

EOS = "<|endoftext|>"
PAD = "<|pad|>"
UNK = "<|unk|>"
SPECIAL_TOKENS = (EOS, PAD, UNK)  # ids 0, 1, 2


def pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r" ?\d\d"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )


def build_tokenizer(texts: Iterable[str], max_length: int) -> PreTrainedTokenizerFast:
    """A tokenizer whose vocabulary is the special tokens then every pre-token of ``texts``, sorted."""
    splitter = pre_tokenizer()
    words = {piece for text in texts for piece, _ in splitter.pre_tokenize_str(text)}
    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *sorted(words - set(SPECIAL_TOKENS))])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tokenizer.pre_tokenizer = splitter
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=EOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        model_max_length=max_length,
    )
