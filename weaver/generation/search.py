"""Batched decoding for encoder-decoder models: greedy search, beam search and sampling.

The code only relies on the small `Seq2SeqModel` protocol below (``encode`` once per source,
``decode`` one step at a time with an incremental cache, ``cache.reorder`` to follow the beams and to drop the
sources that are done), so it works for any model that exposes it, not just `WeaverModel`. A source leaves the
batch as soon as its search is done: a batch's later steps decode only the sources still going.

All functions return a LongTensor ``(batch, length)`` with the tokens generated after the decoder
start token: EOS is included where produced and finished sequences are padded with ``pad_token_id``. Sampling for
minimum Bayes risk decoding returns ``config.outputs_per_source`` consecutive rows per source, drawn from one
encoding of it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from weaver.generation.config import GenerationConfig
from weaver.generation.sampling import NEG_INF, RowStreams
from weaver.utils.lockstep import all_done, in_lockstep


class SpecialTokens(Protocol):
    pad_token_id: int
    bos_token_id: int  # the decoder start token
    eos_token_id: int


class DecodingCache(Protocol):
    def reorder(self, rows: Tensor, sources: Tensor | None = None) -> None:
        """Decoder row i becomes old row ``rows[i]``; with ``sources``, state kept once per source (computed from
        the encoder states alone) follows them: source j's becomes old source ``sources[j]``'s."""


class Seq2SeqModel(Protocol):
    @property
    def config(self) -> SpecialTokens: ...

    def encode(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor: ...

    def decode(
        self,
        decoder_input_ids: Tensor,
        encoder_states: Tensor,
        encoder_attention_mask: Tensor,
        cache: Any = None,
        source_ids: Tensor | None = None,
    ) -> Tensor:
        """Logits (or log-probabilities) ``(rows, new_tokens, vocab)``; with a cache, only the new tokens are
        passed. There may be several consecutive decoder rows per source (``rows = sources * beams``): the encoder
        states, mask and ``source_ids`` (for models that copy from the source) stay one row per source.

        A model whose ``decode`` returns float32 log-probabilities may say so with a true ``decodes_log_probs``
        attribute: beam search then skips its log-softmax, a pass over (rows, vocab) that would change nothing."""

    def new_cache(self) -> DecodingCache: ...


def _inference(search: Callable[..., Any]) -> Callable[..., Any]:
    """Run a search without autograd. `torch.no_grad` rather than `torch.inference_mode`: under autocast only the
    former keeps each weight's low-precision copy across steps (inference mode casts every weight at every step)."""

    @functools.wraps(search)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with torch.no_grad():
            return search(*args, **kwargs)

    return wrapper


@_inference
def generate(
    model: Seq2SeqModel,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    config: GenerationConfig | None = None,
) -> Tensor:
    """Decode a batch of sources with the strategy that ``config`` selects."""
    config = config or GenerationConfig()
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if config.num_beams > 1:
        return beam_search(model, input_ids, attention_mask, config)
    if config.do_sample:
        return sample(model, input_ids, attention_mask, config)
    return greedy_search(model, input_ids, attention_mask, config)


@_inference
def greedy_search(model: Seq2SeqModel, input_ids: Tensor, attention_mask: Tensor, config: GenerationConfig) -> Tensor:
    return _decode_loop(model, input_ids, attention_mask, config, lambda logits, rows, step: logits.argmax(-1))


@_inference
def sample(model: Seq2SeqModel, input_ids: Tensor, attention_mask: Tensor, config: GenerationConfig) -> Tensor:
    """`config.outputs_per_source` samples of each source, each row drawing from a random stream of its own (see
    `weaver.generation.sampling`): a seeded source's samples do not depend on the rest of its batch."""
    streams = RowStreams(config, input_ids, attention_mask, config.outputs_per_source)
    return _decode_loop(model, input_ids, attention_mask, config, streams.choose, config.outputs_per_source)


@dataclass
class _Sources:
    """The sources still being decoded: their encoder states, mask and token ids, and their rows in the batch."""

    states: Tensor
    mask: Tensor
    ids: Tensor
    position: Tensor

    def select(self, index: Tensor) -> _Sources:
        return _Sources(self.states[index], self.mask[index], self.ids[index], self.position[index])


def _rows(sources: Tensor, per_source: int) -> Tensor:
    """The decoder rows of ``sources`` where each source has ``per_source`` consecutive rows (beams, samples)."""
    return (sources[:, None] * per_source + torch.arange(per_source, device=sources.device)).view(-1)


def _still_decoding(done: Tensor, lockstep: bool) -> Tensor | None:
    """The sources to decode on, or None to keep them all. A finished source leaves the batch: each further step would
    spend on it the compute of a live one (most of a batch's steps, when one long output keeps it going). A sharded
    rank whose sources are all done keeps one while it steps on with the others."""
    keep = (~done).nonzero().squeeze(1)
    if keep.numel() == 0 and lockstep:
        keep = keep.new_zeros(1)
    return None if keep.numel() == done.numel() else keep


def _decode_loop(
    model: Seq2SeqModel,
    input_ids: Tensor,
    attention_mask: Tensor,
    config: GenerationConfig,
    choose: Callable[[Tensor, list[int], int], Tensor],
    per_source: int = 1,
) -> Tensor:
    """``per_source`` hypotheses per source, reading one encoding of it; ``choose`` maps next-token logits (N, V),
    the rows' places in the whole batch (source * per_source + hypothesis) and the step to tokens (N,)."""
    special, lockstep = model.config, sharded(model)
    batch = input_ids.size(0)
    positions = torch.arange(batch, device=input_ids.device)
    sources = _Sources(model.encode(input_ids, attention_mask), attention_mask, input_ids, positions)
    cache = model.new_cache()
    output = input_ids.new_full((batch * per_source, config.max_new_tokens), special.pad_token_id)
    tokens = input_ids.new_full((batch * per_source, 1), special.bos_token_id)
    finished = torch.zeros(batch * per_source, dtype=torch.bool, device=input_ids.device)
    for step in range(config.max_new_tokens):
        logits = model.decode(tokens[:, -1:], sources.states, sources.mask, cache, sources.ids)[:, -1].float()
        _ban_tokens_(logits, tokens, step, config, special.eos_token_id)
        places = _rows(sources.position, per_source).tolist()
        next_tokens = choose(logits, places, step).masked_fill(finished, special.pad_token_id)
        tokens = torch.cat([tokens, next_tokens[:, None]], dim=1)
        finished |= next_tokens == special.eos_token_id
        if all_done(bool(finished.all()), lockstep, input_ids.device):
            break
        keep = _still_decoding(finished.view(-1, per_source).all(1), lockstep)
        if keep is not None:
            output[_rows(sources.position, per_source), : step + 1] = tokens[:, 1:]
            rows = _rows(keep, per_source)
            tokens, finished, sources = tokens[rows], finished[rows], sources.select(keep)
            cache.reorder(rows, sources=keep)
    output[_rows(sources.position, per_source), : tokens.size(1) - 1] = tokens[:, 1:]
    return output[:, : tokens.size(1) - 1]


@_inference
def beam_search(
    model: Seq2SeqModel,
    input_ids: Tensor,
    attention_mask: Tensor,
    config: GenerationConfig,
    return_scores: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """HuggingFace-style beam search, vectorised over batch * beams.

    Each source keeps ``num_beams`` live hypotheses. A hypothesis ending in EOS is scored
    ``sum_logprob / length ** length_penalty`` (length counts generated tokens, EOS included).
    A source is done once it has ``num_beams`` finished hypotheses and its best live beam, scored
    at the current length, cannot beat the worst of them (HF ``early_stopping=False``). Sources not
    done at ``max_new_tokens`` also consider their live beams. ``num_beams=1`` reproduces greedy search.
    With ``return_scores``, also returns each result's score (float, (B,)).
    """
    special, beams, penalty = model.config, config.num_beams, config.length_penalty
    normalised, lockstep = getattr(model, "decodes_log_probs", False), sharded(model)
    batch, device = input_ids.size(0), input_ids.device
    positions = torch.arange(batch, device=device)
    # One row per source, shared by its beams: the encoder runs once per source, not once per beam.
    sources = _Sources(model.encode(input_ids, attention_mask), attention_mask, input_ids, positions)
    cache = model.new_cache()
    best = input_ids.new_full((batch, config.max_new_tokens), special.pad_token_id)  # each source's result
    best_len = torch.zeros(batch, dtype=torch.long, device=device)
    best_score = torch.full((batch,), NEG_INF, device=device)
    # The sources still searching, a row each (their beams `beams` consecutive rows of `tokens`):
    tokens = input_ids.new_full((batch * beams, 1), special.bos_token_id)
    beam_scores = torch.full((batch, beams), NEG_INF, device=device)
    beam_scores[:, 0] = 0.0  # all beams start identical: expand only the first one at step 0
    finished_scores = torch.full((batch, beams), NEG_INF, device=device)  # best finished, descending
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    eos_column = input_ids.new_full((batch, 1), special.eos_token_id)

    for step in range(config.max_new_tokens):
        length, searching = step + 1, beam_scores.size(0)
        logprobs = model.decode(tokens[:, -1:], sources.states, sources.mask, cache, sources.ids)[:, -1]
        if not normalised:
            logprobs = logprobs.log_softmax(-1, dtype=torch.float32)  # upcast and normalise in one pass over (N, V)
        _ban_tokens_(logprobs, tokens, step, config, special.eos_token_id)
        vocab = logprobs.size(-1)
        flat_scores = logprobs.add_(beam_scores.view(-1, 1)).view(searching, beams * vocab)
        scores, flat = flat_scores.topk(2 * beams, dim=1)  # >= beams of them are not EOS
        rows = torch.arange(searching, device=device)[:, None] * beams + flat // vocab
        next_tokens = flat % vocab

        # EOS candidates ranked within the top `beams` become finished hypotheses.
        is_eos = next_tokens == special.eos_token_id
        eos_scores = (scores / length**penalty).masked_fill(~is_eos | done[:, None], NEG_INF)
        eos_scores[:, beams:] = NEG_INF
        candidate_score, candidate = eos_scores.max(dim=1)
        improved = candidate_score > finished_scores[:, 0]
        hypothesis = torch.cat([tokens[rows.gather(1, candidate[:, None]).squeeze(1), 1:], eos_column[:searching]], 1)
        at = sources.position
        best[at, :length] = torch.where(improved[:, None], hypothesis, best[at, :length])
        best_len[at] = torch.where(improved, length, best_len[at])
        finished_scores = torch.cat([finished_scores, eos_scores], 1).topk(beams, dim=1).values
        best_score[at] = finished_scores[:, 0]

        # The best `beams` non-EOS candidates stay live (stable sort keeps the score order).
        keep = torch.argsort(is_eos.to(torch.uint8), dim=1, stable=True)[:, :beams]
        beam_scores = scores.gather(1, keep)
        rows = rows.gather(1, keep).view(-1)
        tokens = torch.cat([tokens[rows], next_tokens.gather(1, keep).view(-1, 1)], dim=1)

        worst_finished = finished_scores[:, -1]
        done |= worst_finished.isfinite() & (worst_finished >= beam_scores.max(1).values / length**penalty)
        if all_done(bool(done.all()), lockstep, device):
            break
        still = _still_decoding(done, lockstep)
        if still is not None:  # the rows of the sources still searching, in order
            still_rows = _rows(still, beams)
            tokens, rows = tokens[still_rows], rows[still_rows]
            beam_scores, finished_scores, done = beam_scores[still], finished_scores[still], done[still]
            sources = sources.select(still)
        cache.reorder(rows, sources=still)  # the beams' moves stay within their source: its own state follows it

    # Sources still searching at max_new_tokens may prefer their best live (unfinished) beam.
    live_score, live = (beam_scores / length**penalty).max(dim=1)
    use_live = ~done & (live_score > finished_scores[:, 0])
    live_tokens = tokens.view(-1, beams, tokens.size(1))[torch.arange(live.size(0), device=device), live, 1:]
    at = sources.position
    best[at, :length] = torch.where(use_live[:, None], live_tokens, best[at, :length])
    best_len[at] = torch.where(use_live, length, best_len[at])
    best_score[at] = torch.where(use_live, live_score, finished_scores[:, 0])
    tokens = best[:, : int(best_len.max())]
    return (tokens, best_score) if return_scores else tokens


def sharded(model: Seq2SeqModel) -> bool:
    """Whether every rank must run this search's steps together: a model sharded by FSDP gathers each layer's
    weights from all ranks at every step, so a rank whose sources are done keeps stepping until all are."""
    return isinstance(model, nn.Module) and in_lockstep(model)


def _ban_tokens_(scores: Tensor, tokens: Tensor, step: int, config: GenerationConfig, eos: int) -> None:
    """Apply ``min_new_tokens`` and ``no_repeat_ngram_size`` to next-token scores (B, V), in place: a copy of the
    (B, V) matrix at every step costs as much as the softmax over it."""
    if step < config.min_new_tokens:
        scores[:, eos] = NEG_INF
    if config.no_repeat_ngram_size > 0:
        ban_repeated_ngrams_(scores, tokens, config.no_repeat_ngram_size)


def ban_repeated_ngrams_(scores: Tensor, tokens: Tensor, n: int) -> None:
    """Set to -inf, in place, the next-token scores (B, V) that would repeat an n-gram already in ``tokens`` (B, L).

    One write per earlier n-gram of each row (-inf where its first n - 1 tokens are the row's last n - 1, +inf,
    which ``amin`` ignores, elsewhere) rather than a (B, V) mask: at 16 beams over 8,000 tokens the mask's
    allocation alone took a tenth of beam search's time."""
    if tokens.size(1) < n:
        return
    ngrams = tokens.unfold(1, n, 1)  # (B, L - n + 1, n)
    prefix = tokens[:, tokens.size(1) - n + 1 :]  # the n - 1 tokens the next one would extend
    matches = (ngrams[:, :, :-1] == prefix[:, None]).all(-1)
    values = torch.full(matches.shape, float("inf"), dtype=scores.dtype, device=scores.device)
    scores.scatter_reduce_(1, ngrams[:, :, -1], values.masked_fill_(matches, NEG_INF), "amin")
