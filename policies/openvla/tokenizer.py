"""A small byte-level BPE tokenizer for tiny VLAs, trained on the dataset's instructions.

Real checkpoints use the tokenizer files shipped in their directory (Llama-2); a tiny model trained from scratch
gets this one instead, saved with the checkpoint. Layout of the vocabulary:

    0 <pad>, 1 <s> (BOS, added to every prompt), 2 </s> (EOS / OFT STOP), byte-level BPE tokens...,
    then ``n_action_bins`` reserved tokens <act_0> ... <act_{n-1}> as the LAST ids.

So ``action_token_end_id = len(tokenizer)`` and the tokens head maps bin d (1-based) to id ``end - d`` exactly as
OpenVLA does with Llama-2's last 256 ids (:func:`config_for_tokenizer` writes these ids into a VLAConfig).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from policies.openvla.config import VLAConfig, pad_vocab
from policies.openvla.processor import PROMPT_TEMPLATE

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>")


def train_instruction_tokenizer(
    instructions: Iterable[str], vocab_size: int = 1024, n_action_bins: int = 256, min_frequency: int = 1
) -> Any:
    """Train a deterministic byte-level BPE on the prompts built from ``instructions``.

    Args:
        instructions: task instructions (duplicates and order do not matter: the corpus is the sorted set of
            lower-cased prompts, as the processor builds them).
        vocab_size: maximum size of the BPE part including the 256 byte symbols and the special tokens; the
            action tokens come on top. BPE stops early when the corpus has no more pairs to merge.
        n_action_bins: reserved action tokens appended as the last ids.
        min_frequency: minimum pair count for a merge.

    Returns:
        ``transformers.PreTrainedTokenizerFast`` with bos ``<s>``, eos ``</s>``, pad ``<pad>``, right padding,
        BOS added to every encoded text.

    Raises:
        ValueError: no instructions, or vocab_size too small for the byte alphabet.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = sorted({PROMPT_TEMPLATE.format(instruction=s.lower()) for s in instructions})
    if not corpus:
        raise ValueError("train_instruction_tokenizer: no instructions given")
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size {vocab_size} < byte alphabet {len(alphabet)} + {len(SPECIAL_TOKENS)} specials")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        show_progress=False,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=sorted(alphabet),
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.add_special_tokens([f"<act_{i}>" for i in range(n_action_bins)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", padding_side="right"
    )


def action_token_range(tokenizer: Any, n_action_bins: int) -> tuple[int, int]:
    """[first, end) ids of the reserved ``<act_i>`` tokens; raises ValueError when they are absent or not contiguous."""
    ids = tokenizer.convert_tokens_to_ids([f"<act_{i}>" for i in range(n_action_bins)])
    if None in ids or ids != list(range(ids[0], ids[0] + n_action_bins)):
        raise ValueError(f"tokenizer lacks {n_action_bins} contiguous <act_i> tokens")
    return ids[0], ids[0] + n_action_bins


def config_for_tokenizer(config: VLAConfig, tokenizer: Any) -> VLAConfig:
    """Copy of ``config`` whose vocabulary and token ids match a tokenizer from :func:`train_instruction_tokenizer`.

    Sets llm.vocab_size = len(tokenizer) padded to a multiple of 64, the pad/bos/eos ids,
    ``action_token_end_id`` = end of the ``<act_i>`` range, and ``empty_token_id`` = None.
    """
    _, end = action_token_range(tokenizer, config.n_action_bins)
    llm = {
        "vocab_size": pad_vocab(len(tokenizer)),
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    return config.replace(llm=llm, action_token_end_id=end, empty_token_id=None)
