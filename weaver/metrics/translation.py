"""sacreBLEU and chrF, scored once over the whole corpus (never averaged over batches)."""

from __future__ import annotations

from sacrebleu.metrics import BLEU, CHRF


def translation_scores(hypotheses: list[str], references: list[str]) -> tuple[dict[str, float], dict[str, str]]:
    """Scores, and the sacreBLEU signatures that make them comparable across papers."""
    bleu, chrf = BLEU(), CHRF()
    bleu_score = bleu.corpus_score(hypotheses, [references])
    chrf_score = chrf.corpus_score(hypotheses, [references])
    scores = {"bleu": bleu_score.score, "chrf": chrf_score.score}
    signatures = {"bleu": str(bleu.get_signature()), "chrf": str(chrf.get_signature())}
    return scores, signatures


def sentence_bleu(hypothesis: str, reference: str) -> float:
    """BLEU of one sentence, with sacreBLEU's effective order: corpus BLEU of a single sentence is 0 whenever it is
    shorter than 4 tokens, however right."""
    return BLEU(effective_order=True).sentence_score(hypothesis, [reference]).score
