"""KV-off greedy decoding of contract answers: a reference decoder and three fast ones.

One concept per module:

* `prompts`   - prompts (encoded by `models.encode_prompt`, as training does) left-truncated to the model window
* `tokens`    - token texts per tokenizer, generated ids -> raw output
* `stop`      - the stop rule's transformers StoppingCriteria (the close rule: `contract.JsonCloseScanner`)
* `greedy`    - pure greedy by construction (the checkpoint's generation settings ignored and
                listed) and the near-tie measure
* `drafting`  - skeleton drafts and side branches for draft-and-verify
* `packing`   - rows sharing a prompt start in one sequence (in blocks of like length), and its attention
* `forward`   - one KV-off forward over many rows, padded or packed (packed: the last layer only where logits are read)
* `decoders`  - `Decoder` with the reference, fast, constrained and score decoders
* `baseline`  - transformers' KV-cached batched generate, for the speed bench
"""
from .baseline import hf_generate_cached
from .decoders import (DECODERS, DEFAULT_BATCH_SIZE, DEFAULT_MAX_NEW_TOKENS, MAX_DRAFT, Decoder, DecoderName,
                       Generation, check_budget, check_decoder)
from .drafting import DraftSession, SkeletonDrafter, prompt_index
from .forward import Forward
from .greedy import ignored_settings, pure_greedy
from .packing import MIN_SHARED, PackPlan, packed_attention, shared_prefix_groups, slot_blocks
from .prompts import PreparedPrompt, model_window, prepare_prompt
from .stop import JsonStoppingCriteria
from .tokens import decode_text, per_tokenizer, token_texts

__all__ = [
    "DECODERS", "DEFAULT_BATCH_SIZE", "DEFAULT_MAX_NEW_TOKENS", "MAX_DRAFT", "MIN_SHARED", "Decoder", "DecoderName",
    "DraftSession", "check_decoder",
    "Forward", "Generation", "JsonStoppingCriteria", "PackPlan", "PreparedPrompt",
    "SkeletonDrafter", "check_budget", "decode_text", "hf_generate_cached", "ignored_settings",
    "model_window", "packed_attention", "per_tokenizer", "prepare_prompt", "prompt_index", "pure_greedy",
    "shared_prefix_groups", "slot_blocks", "token_texts",
]
