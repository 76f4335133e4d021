"""Text tokenizers: a local HF tokenizer directory, or a tiny byte-level tokenizer built here (tests and the
simulated lab; no download). Both get <PAD> (if missing), <BOD> and <EOD> as special tokens."""
from __future__ import annotations

from hybridvla_core.model.action_tokenizer import NUM_BINS

BOD, EOD, PAD = "<BOD>", "<EOD>", "<PAD>"
PROMPT_TEMPLATE = "In: What action should the robot take to {instruction}?\nOut:"


BYTE_VOCAB = 3 + 256 + NUM_BINS


def build_byte_tokenizer(base_vocab_size: int = BYTE_VOCAB):
    """<unk> <s> </s>, the 256 byte symbols, unused filler ids up to base_vocab_size (to mimic a large vocabulary's
    shape, e.g. Llama's 32000), then 256 reserved ids at the top that the action bins overwrite."""
    if base_vocab_size < BYTE_VOCAB:
        raise ValueError(f"the byte tokenizer needs a base vocabulary of at least {BYTE_VOCAB}")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    for index in range(base_vocab_size - BYTE_VOCAB):
        vocab[f"<unused_{index}>"] = len(vocab)
    for index in range(NUM_BINS):
        vocab[f"<action_bin_{index:03d}>"] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def load_tokenizer(path: str | None):
    if path is None:
        return build_byte_tokenizer()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def add_hybrid_tokens(tokenizer) -> dict:
    """Add <PAD>/<BOD>/<EOD> (idempotent) and return the ids the model needs."""
    base_vocab_size = tokenizer.vocab_size  # before added tokens: the action bins sit at its top
    special = {"additional_special_tokens": [BOD, EOD]}
    if tokenizer.pad_token is None:
        special["pad_token"] = PAD
    tokenizer.add_special_tokens(special)
    ids = {
        "bos_id": tokenizer.bos_token_id, "eos_id": tokenizer.eos_token_id, "pad_id": tokenizer.pad_token_id,
        "bod_id": tokenizer.convert_tokens_to_ids(BOD), "eod_id": tokenizer.convert_tokens_to_ids(EOD),
        "base_vocab_size": base_vocab_size, "num_tokens": len(tokenizer),
    }
    missing = [name for name, value in ids.items() if value is None]
    if missing:
        raise ValueError(f"tokenizer lacks {missing} (a BOS and an EOS token are required)")
    return ids


def prompt_text(instruction: str) -> str:
    return PROMPT_TEMPLATE.format(instruction=instruction.lower())
