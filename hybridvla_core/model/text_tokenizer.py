"""Text tokenizers and the token layout around the prompt.

Tokenizers: a local HF tokenizer directory, or byte-level tokenizers built here (no download): a tiny one (tests
and the simulated lab) and stand-ins shaped like Llama-2's and Phi-2's vocabularies (full-size models on the
meta device, layout tests). All get <PAD> (if missing), <BOD> and <EOD> as special tokens.

Token layouts (config.token_layout), the ids put around <BOD>/<EOD>, in training and inference alike:
  "reference": as the reference code (models/vlas/hybridvla.py, its training collator) per LLM family:
      llama: "In: ...?\\nOut:" then ["▁" 29871, <BOD>, ...state, t, x..., <EOD>, "▁" 29871], a1..aD, EOS:
             the first action token is read from the logits at the trailing "▁";
      phi:   "<|endoftext|>Input: ...?\\nOutput:" then [" " 220, <BOD>, ..., <EOD>], a1..aD, EOS: read at <EOD>;
      qwen2: (no reference path) Phi's byte-level pattern with the llama prompt.
  "compact": this project's first layout, no separator tokens (read at <EOD>); checkpoints trained with it
      (the committed demo policy) keep it in their config.json.
"""
from __future__ import annotations

from dataclasses import dataclass

from hybridvla_core.errors import UserError
from hybridvla_core.model.action_tokenizer import NUM_BINS

BOD, EOD, PAD = "<BOD>", "<EOD>", "<PAD>"
LLAMA_PROMPT = "In: What action should the robot take to {instruction}?\nOut:"
PHI_PROMPT = "Input: What action should the robot take to {instruction}?\nOutput:"
SENTENCEPIECE_SPACE = "▁"  # Llama's word-boundary piece, id 29871 in Llama-2
BYTE_LEVEL_SPACE = "Ġ"  # GPT-2 byte-level " ", id 220 in Phi-2 (and Qwen2)
TOKEN_LAYOUTS = ("reference", "compact")


@dataclass(frozen=True)
class TokenLayout:
    prompt: str  # format string with {instruction} (lowercased)
    before_bod: tuple[str, ...]  # vocabulary symbols between the prompt and <BOD>
    after_eod: tuple[str, ...]  # vocabulary symbols between <EOD> and the first action token
    pad_token: str  # added when the tokenizer has none (the reference's name per family)


_LAYOUTS = {
    ("reference", "llama"): TokenLayout(LLAMA_PROMPT, (SENTENCEPIECE_SPACE,), (SENTENCEPIECE_SPACE,), PAD),
    ("reference", "phi"): TokenLayout(PHI_PROMPT, (BYTE_LEVEL_SPACE,), (), "<|pad|>"),
    ("reference", "qwen2"): TokenLayout(LLAMA_PROMPT, (BYTE_LEVEL_SPACE,), (), PAD),
}


def token_layout(name: str, family: str) -> TokenLayout:
    if name not in TOKEN_LAYOUTS:
        raise ValueError(f"token_layout must be one of {TOKEN_LAYOUTS}, got {name!r}")
    return _LAYOUTS.get((name, family), TokenLayout(LLAMA_PROMPT, (), (), PAD))


# ------------------------------------------------------------------------------------------------ tokenizers
def _byte_level_tokenizer(vocab: dict[str, int], bos: str, eos: str, unk: str, added: list[str] = ()):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=unk))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=bos, eos_token=eos, unk_token=unk)
    if added:
        fast.add_tokens(list(added))
    return fast


def _fill(vocab: dict[str, int], size: int, placed: dict[int, str]) -> dict[str, int]:
    """vocab extended to ids 0..size-1: `placed` symbols at their ids, unused fillers elsewhere, then the
    action-bin symbols at the top NUM_BINS ids that are still free."""
    top = set(range(size - NUM_BINS, size))
    for index in range(len(vocab), size):
        if index in placed:
            vocab[placed[index]] = index
        elif index in top:
            vocab[f"<action_bin_{index - (size - NUM_BINS):03d}>"] = index
        else:
            vocab[f"<unused_{index}>"] = index
    return vocab


BYTE_VOCAB = 3 + 256 + 1 + NUM_BINS


def _llama_like_vocab(base_vocab_size: int, space_id: int) -> dict[str, int]:
    """<unk> <s> </s>, the 256 byte symbols (ids 3..258, where Llama keeps <0x00>..<0xFF>), "▁" at space_id."""
    from tokenizers import pre_tokenizers

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    return _fill(vocab, base_vocab_size, {space_id: SENTENCEPIECE_SPACE})


def build_byte_tokenizer(base_vocab_size: int = BYTE_VOCAB):
    """The tiny tokenizer: <unk> <s> </s>, the 256 byte symbols, "▁" (the llama layout's separator), unused filler
    ids up to base_vocab_size, then 256 reserved ids at the top that the action bins overwrite."""
    if base_vocab_size < BYTE_VOCAB:
        raise ValueError(f"the byte tokenizer needs a base vocabulary of at least {BYTE_VOCAB}")
    return _byte_level_tokenizer(_llama_like_vocab(base_vocab_size, 3 + 256), "<s>", "</s>", "<unk>")


PHI2_ADDED_TOKENS = 38  # Phi-2's tokenizer: vocab_size 50257, len 50295 (runs of spaces/tabs added by Microsoft)


def reference_shaped_tokenizer(name: str):
    """A byte-level stand-in with the real vocabulary's size and the real ids where the reference uses them, for
    building full-size models without a download and for layout tests:
      "llama-2": vocab 32000, <unk> 0, <s> 1, </s> 2, "▁" 29871, action bins 31744..31999;
      "phi-2":   vocab_size 50257 (GPT-2's byte order, so " " = "Ġ" = 220), <|endoftext|> 50256 as BOS and EOS,
                 38 added tokens (len 50295), action bins on the top 256 base ids as the reference puts them."""
    if name == "llama-2":
        return _byte_level_tokenizer(_llama_like_vocab(32000, 29871), "<s>", "</s>", "<unk>")
    if name == "phi-2":
        from transformers.convert_slow_tokenizer import bytes_to_unicode

        vocab = {symbol: index for index, symbol in enumerate(bytes_to_unicode().values())}
        vocab = _fill(vocab, 50257, {50256: "<|endoftext|>"})
        added = [f"<|phi2_added_{i}|>" for i in range(PHI2_ADDED_TOKENS)]
        return _byte_level_tokenizer(vocab, "<|endoftext|>", "<|endoftext|>", "<|endoftext|>", added)
    raise ValueError(f"no reference-shaped tokenizer {name!r}: 'llama-2' or 'phi-2'")


def load_tokenizer(path: str | None):
    if path is None:
        return build_byte_tokenizer()
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:  # missing or partial files: transformers explains over several lines
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise UserError(f"tokenizer {path}: does not load ({first}): it needs tokenizer.json (or the model's "
                        f"tokenizer files) beside tokenizer_config.json in a local directory; copy them from where "
                        f"the checkpoint was trained") from None


def add_hybrid_tokens(tokenizer, layout: TokenLayout) -> dict:
    """Add the pad token (if missing), <BOD> and <EOD> (idempotent) and return the ids the model needs."""
    base_vocab_size = tokenizer.vocab_size  # before added tokens: the action bins sit at its top
    if tokenizer.pad_token is None:  # the reference adds PAD first, then <BOD>, <EOD>
        tokenizer.add_special_tokens({"pad_token": layout.pad_token})
    tokenizer.add_special_tokens({"additional_special_tokens": [BOD, EOD]})
    ids = {
        "bos_id": tokenizer.bos_token_id, "eos_id": tokenizer.eos_token_id, "pad_id": tokenizer.pad_token_id,
        "bod_id": tokenizer.convert_tokens_to_ids(BOD), "eod_id": tokenizer.convert_tokens_to_ids(EOD),
        "base_vocab_size": base_vocab_size, "num_tokens": len(tokenizer),
    }
    missing = [name for name, value in ids.items() if value is None]
    if missing:
        raise ValueError(f"tokenizer lacks {missing} (a BOS and an EOS token are required)")
    for field_name, symbols in (("before_bod_ids", layout.before_bod), ("after_eod_ids", layout.after_eod)):
        found = [tokenizer.convert_tokens_to_ids(symbol) for symbol in symbols]
        if any(i is None or i == tokenizer.unk_token_id for i in found):
            raise ValueError(f"the tokenizer has no {symbols!r} token, which this token layout puts around <BOD>/"
                             f"<EOD>: use the LLM family's own tokenizer (llm.tokenizer_path)")
        ids[field_name] = found
    return ids


def prompt_text(instruction: str, layout: TokenLayout) -> str:
    return layout.prompt.format(instruction=instruction.lower())


def encode_prompt(tokenizer, instruction: str, layout: TokenLayout, tokens: dict) -> list[int]:
    """The prompt's ids between BOS and <BOD> (the layout's separator included): the same in training and
    inference. `tokens` is what add_hybrid_tokens returned."""
    ids = tokenizer(prompt_text(instruction, layout), add_special_tokens=False)["input_ids"]
    return ids + list(tokens["before_bod_ids"])
