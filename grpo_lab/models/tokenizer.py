"""A character-level tokenizer that is a real `PreTrainedTokenizerFast`.

One token per character of the task's alphabet, plus `<pad>` (id 0), `<eos>` (id 1) and `<unk>`
(id 2). It is a BPE model with no merges, so every character is its own token and decoding
concatenates characters back without spaces. It saves and loads with `save_pretrained` /
`AutoTokenizer.from_pretrained` like any Hugging Face tokenizer.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<pad>", "<eos>", "<unk>")


def char_tokenizer(alphabet: str) -> PreTrainedTokenizerFast:
    chars = sorted(set(alphabet))
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in chars:
        vocab.setdefault(ch, len(vocab))
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>",
        padding_side="left", clean_up_tokenization_spaces=False,
    )
    return tokenizer
