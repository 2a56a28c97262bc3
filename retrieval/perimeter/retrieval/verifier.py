"""Claim-level answer verification: is each sentence of an answer backed by its sources?

Two layers, both per sentence:

1. **Checks** (fail closed; they decide): every number (and count word from "three" up),
   identifier / code / path / URL, quoted value and proper name in the sentence must occur in
   the sources (a value the user supplied is not evidence; only an identifier or name that a
   question which does not ask for confirmation names as its subject may be restated); a
   sentence must not negate the source sentence it restates; a passage it names ("as passage 2
   states") must back it; and at most 70% of its content words may be absent from every source
   (more is new content, not a paraphrase). "The default is `x.dg-data`" against a passage saying
   ``/usr/local/share/:/usr/share/`` fails the first check however many words it shares.
   Values are compared in one typography (``claims.normalize_text``: curly quotes, dashes,
   "4 x 4"), with the usual alternative spellings of a source ("Nov." for "November", "°F"
   for "Fahrenheit", an acronym's expansion, a demonym's place, a URL's scheme). Framing
   sentences ("Here's my answer based on the passages:") and attributions ("based on the given
   passages") assert nothing and are not counted.
2. **A calibrated score**: logistic regression over interpretable features (content-word recall
   in the best source and in all sources together, words found nowhere, names, negation and
   comparative mismatches against the best-aligned source sentence, embedding similarity to
   the closest source sentence), fitted on the RAGTruth QA dev split on the sentences the
   checks pass (``bench/fit_verifier.py`` reproduces it; BENCHMARKS.md has the figures). It is
   reported per sentence; it rejects a sentence only where a deployment sets ``threshold``
   (PERIMETER_ANSWERS__VERIFIER_THRESHOLD), because question-grouped cross-validation found no
   threshold that improved clearly on the checks alone.

Markers the model wrote (``[2]``) are checked too: a marker to a source that does not support
the sentence is reported in ``SentenceVerdict.wrong_markers``.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from perimeter.retrieval.claims import (
    NUMBER_WORDS,
    Claims,
    SourceIndex,
    acronym_found,
    conversion_backed,
    extract_claims,
    identifier_found,
    index_source,
    name_in,
    normalize_text,
    numbers_in,
    source_references,
    split_negated_clauses,
    strip_source_references,
)
from perimeter.textproc import analyze, split_sentences

EmbedFn = Callable[[Sequence[str]], list[list[float]]]


class CachedEmbed:
    """An embed function with a bounded LRU cache by text. The same chunks come back for
    related questions, and their sentences dominate the verifier's embedding work."""

    def __init__(self, embed: EmbedFn, max_items: int = 8192) -> None:
        self._embed = embed
        self._max = max_items
        self._cache: OrderedDict[str, list[float]] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, texts: Sequence[str]) -> list[list[float]]:
        with self._lock:
            known = {t: self._cache[t] for t in texts if t in self._cache}
            for t in known:
                self._cache.move_to_end(t)
        todo = [t for t in dict.fromkeys(texts) if t not in known]
        if todo:  # embedded outside the lock: other requests may use the cache meanwhile
            known.update(zip(todo, self._embed(todo), strict=True))
            with self._lock:
                for t in todo:
                    self._cache[t] = known[t]
                while len(self._cache) > self._max:
                    self._cache.popitem(last=False)
        return [known[t] for t in texts]


FEATURES: tuple[str, ...] = (
    "recall_best",  # content-term recall in the best single source
    "recall_union",  # ... in all sources together (a sentence may combine two)
    "novel_frac",  # share of content terms in no source and not in the question
    "novel_log",  # log(1 + count) of those terms
    "missing_names",  # proper nouns found in no source and not in the question
    "negation_mismatch",  # "not" on one side only, against the best-aligned source sentence
    "comparatives_missing",  # "more"/"higher"/"only"... absent from every source
    "aligned_recall",  # recall in the best-aligned single source sentence
    "cosine",  # embedding similarity to the closest source sentence (0 without embedder)
    "length_log",  # log(1 + content terms): long sentences carry more claims
    "missing_soft_values",  # numbers/identifiers missing from sources but given in the question
    "novel_bigram_frac",  # share of adjacent content-term pairs that occur in no source
    "position",  # relative position in the answer (0 first .. 1 last)
    "advice",  # generic advice / caveat phrasing ("it is important to", "consult a ...")
    "answer_sentences_log",  # log(1 + sentences in the answer)
)

# Fitted by bench/fit_verifier.py on ragtruth-qa-dev (logistic regression on standardised
# features, folded back into raw-feature weights; git 15e238d + working tree, 2026-12-02, with
# the packaged MiniLM for "cosine"), on the whole dev split, on the sentences the checks pass
# (``--fit-on passing``): the score only decides where the checks do not, so it is fitted to
# what they miss; features a passing sentence cannot have (missing names, values) get weight 0.
# Index-aligned with FEATURES. The weights are a calibrated score, not a causal story:
# correlated features (the recalls, novelty, cosine) share the evidence and can take either sign.
WEIGHTS: tuple[float, ...] = (
    -0.9526,
    5.5305,
    3.9912,
    1.1178,
    0.0,
    -0.2949,
    0.3009,
    -1.9865,
    1.4212,
    -1.2618,
    0.0,
    1.0462,
    0.2425,
    0.0935,
    0.7436,
)
BIAS: float = -4.9662
# Share of a sentence's content terms found in no source above which it is unsupported
# outright (a check). Chosen by question-grouped 5-fold CV on the RAGTruth QA dev split over
# 0.3..0.8 (bench/verifier_cv.py): the folds chose 0.7 (three) or 0.6 (two); on the whole split
# 0.6 and 0.7 are within 0.005 F1 of each other, 0.7 with the higher precision.
NOVEL_LIMIT: float = 0.7
# Probability of "unsupported" at/above which the score alone also rejects a sentence. None:
# the score is reported, the checks decide. With these weights and the embedder, the threshold
# chosen on the whole dev split is 0.82 (response F1 0.671 in-sample); question-grouped 5-fold
# CV (weights, threshold and NOVEL_LIMIT per fold) gave 0.642 against 0.636 for the checks
# alone on bench/verifier_cv.py's folds, but less than the checks on 13 of 20 other random
# question partitions (mean -0.017 F1): no clear gain, and the embedder costs seconds per
# answer. So the default stays the checks alone; a deployment may set one to be stricter.
DEFAULT_THRESHOLD: float | None = None
# Share of a sentence's content words a source must hold to count as backing it (as a citation).
BACKING_RECALL: float = 0.3

# Phrasings of generic advice and caveats: the commonest way a model adds content no source
# states (RAGTruth's "baseless info" is dominated by such closing sentences).
_ADVICE = re.compile(
    r"\b(?:it is (?:important|essential|recommended|advisable|best|always)|"
    r"(?:consult|contact|check with|speak (?:to|with)) (?:a|an|your|the)|"
    r"(?:may|might|can|could) (?:vary|differ|depend)|keep in mind|note that|"
    r"it(?:'s| is) (?:worth|also)|in (?:summary|conclusion|general)|overall,|"
    r"additionally,|furthermore,|however, it|recommended|professional|"
    r"depending on|(?:is|are) (?:generally|typically|usually|often) )",
    re.IGNORECASE,
)

_HEDGE = re.compile(
    r"^(?:based on|according to|from) the (?:given |provided )?(?:passages?|sources?|context|"
    r"information|documents?)[^,]*,?\s*$",
    re.IGNORECASE,
)
# The answer saying where it read something ("Based on the given passages,", "according to the
# provided context"): attribution, not content. Removed before the words are counted, so a
# faithful sentence is not "mostly new words" for naming its sources.
_ATTRIBUTION = re.compile(
    r"\b(?:(?:based|relying)\s+(?:solely\s+|only\s+|entirely\s+)?on|according\s+to|"
    r"(?:as\s+)?(?:stated|mentioned|described|given|provided)\s+in|from|in)\s+"
    r"(?:the|these|this|those)?\s*(?:given\s+|provided\s+|above\s+|available\s+|retrieved\s+)?"
    r"(?:passages?|sources?|context|documents?|texts?|information\s+(?:given|provided))\b",
    re.IGNORECASE,
)
# Words that talk about the exchange itself (the passages, the question, this answer), and
# discourse connectives the stop list lacks ("therefore", "however"): neither is what an
# answer claims about the world, so they are not counted as its content.
_SOURCE_TALK_WORDS = (
    "passage passages source sources context document documents answer answers question questions "
    "therefore thus hence however additionally furthermore moreover overall also alternatively "
    "consequently finally firstly secondly thirdly lastly meanwhile nevertheless nonetheless"
)
# Words of sentences that only frame an answer: greetings, offers of help, lead-ins to a list
# ("Here are the steps:"), notes about the reply. A sentence made of these alone (and of the
# exchange words above) asserts nothing a source could back or contradict.
_FRAMING_WORDS = (
    "base based given provided provide provides following follows below above here sure "
    "certainly happy glad hope help helps assist let know brief briefly summary summarize "
    "attempt try correct original infer inferred clarification clarify further anything else "
    "additional note reply respond response need needed therefore thus hence overall "
    "conclusion hi hello okay ok best information details detail specific step steps way ways "
    "option options method methods alternatively also various several things thing including "
    "include includes list listed key main points point mentioned mention mentions stated "
    "says say can could please feel free sufficient enough ref see ll s ve re d m t"
)
# A question asking to confirm what it states ("Is the launch code 7492?"): its values are the
# user's premise. Any other question ("where does 1099-PATR go on 1040") names its subject.
_CONFIRMATION_QUESTION = re.compile(
    r"^\W*(?:is|are|was|were|am|do|does|did|can|could|will|would|should|shall|has|have|had|"
    r"may|might|must|isn't|aren't|doesn't|don't|didn't)\b",
    re.IGNORECASE,
)
_QUOTED = re.compile(r'"([^"]{3,})"')
# A sentence that says its own content is not in the sources ("Some women may also feel
# nauseous, although this is not mentioned in the passages."): unsupported by its own account.
# Not an abstention: it asserts something, then disowns the backing.
SELF_UNSUPPORTED = re.compile(
    r"\b(?:this|it|that|which|these|they)\s+(?:is|was|are|were)\s+not\s+(?:explicitly\s+)?"
    r"(?:mentioned|stated|covered|included|discussed|found|given|provided)\s+in\s+(?:the\s+|these\s+)?"
    r"(?:given\s+|provided\s+)?(?:passages?|sources?|context|documents?)",
    re.IGNORECASE,
)


@dataclass(slots=True)
class SentenceVerdict:
    sentence: str
    supported: bool
    probability: float  # estimated probability that the sentence is NOT supported
    sources: list[int]  # 1-based sources that back it (best first)
    cited: list[int] = field(default_factory=list)  # valid markers the model wrote
    # Markers the model wrote to sources that do not back the sentence.
    wrong_markers: list[int] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)  # why it is unsupported, for people
    failed_checks: list[str] = field(default_factory=list)  # the hard checks that failed
    features: dict[str, float] = field(default_factory=dict)


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _cos(a: Sequence[float], b: Sequence[float]) -> float:
    return float(sum(x * y for x, y in zip(a, b, strict=False)))


@dataclass(slots=True)
class _Prepared:
    sources: list[SourceIndex]
    all_terms: set[str]
    all_bigrams: set[tuple[str, str]]
    question_terms: set[str]
    question_squashed: str
    sentence_vecs: list[list[list[float]]] | None  # per source, per source sentence
    confirmation_question: bool = False  # the question states values for the answer to confirm


def _terms(text: str) -> set[str]:
    return set(analyze(text))


@functools.cache
def _source_talk() -> frozenset[str]:
    return frozenset(analyze(_SOURCE_TALK_WORDS))


@functools.cache
def _framing() -> frozenset[str]:
    return frozenset(analyze(_FRAMING_WORDS)) | _source_talk()


@functools.cache
def _number_words() -> frozenset[str]:
    return frozenset(analyze(" ".join(NUMBER_WORDS)))


def restated_question_removed(sentence: str, question_terms: set[str]) -> str:
    """``sentence`` less the quotations of the question ('the answer to the question "Where
    does 1099-PATR go on 1040?"'): repeating what was asked is not a claim."""
    if not question_terms:
        return sentence

    def drop(m: re.Match[str]) -> str:
        quoted = _terms(m.group(1))
        return " " if quoted and quoted <= question_terms else m.group()

    return _QUOTED.sub(drop, sentence)


def _content_text(sentence: str) -> str:
    """The sentence as its content words are counted: references to sources ("passage 2") and
    attributions ("based on the given passages") removed."""
    return _ATTRIBUTION.sub(" ", strip_source_references(sentence))


def _token_in(value: str, squashed: str) -> bool:
    return re.search(r"(?<![\w\-])" + re.escape(value) + r"(?![\w\-])", squashed) is not None


class ClaimVerifier:
    """Stateless apart from its weights; ``embed`` is optional (the score then runs without
    the cosine feature, which is weaker but still fails closed on values)."""

    def __init__(
        self,
        embed: EmbedFn | None = None,
        threshold: float | None = DEFAULT_THRESHOLD,
        weights: Sequence[float] = WEIGHTS,
        bias: float = BIAS,
    ) -> None:
        if len(weights) != len(FEATURES):
            raise ValueError(f"expected {len(FEATURES)} weights, got {len(weights)}")
        self._embed = embed
        self.threshold = threshold
        self._weights = tuple(weights)
        self._bias = bias

    # -- preparation ------------------------------------------------------------------------
    def _prepare(self, sources: Sequence[str], question: str) -> _Prepared:
        # One typography for sources, question and sentences: curly apostrophes, dashes and
        # the like do not make a different value.
        question = normalize_text(question)
        normalized = [normalize_text(text) for text in sources]
        indexed = [index_source(text, split_sentences(text)) for text in normalized]
        vecs: list[list[list[float]]] | None = None
        if self._embed is not None:
            flat = [s for src in indexed for s in src.sentences]
            embedded = self._embed(flat) if flat else []
            vecs, k = [], 0
            for src in indexed:
                vecs.append(embedded[k : k + len(src.sentences)])
                k += len(src.sentences)
        all_terms: set[str] = set()
        all_bigrams: set[tuple[str, str]] = set()
        for src in indexed:
            all_terms |= src.terms
            for st in src.sentences:
                seq = analyze(st)
                # Pairs within a short window: a paraphrase may drop or insert a word.
                for k, a in enumerate(seq):
                    all_bigrams.update((a, b) for b in seq[k + 1 : k + 3])
        return _Prepared(
            sources=indexed,
            all_terms=all_terms,
            all_bigrams=all_bigrams,
            question_terms=set(analyze(question)),
            question_squashed=" ".join(question.lower().split()),
            sentence_vecs=vecs,
            confirmation_question=bool(_CONFIRMATION_QUESTION.match(question)),
        )

    # -- features ---------------------------------------------------------------------------
    def features(
        self,
        sentence: str,
        prep: _Prepared,
        vec: Sequence[float] | None,
        position: float = 0.0,
        answer_sentences: int = 1,
    ) -> tuple[dict[str, float], list[str], list[float]]:
        """Feature values, hard-check failures (reasons), and per-source support scores."""
        sentence = restated_question_removed(normalize_text(sentence), prep.question_terms)
        talk = _source_talk()
        seq = [t for t in analyze(_content_text(sentence)) if t not in talk]
        terms = set(seq)
        bigrams = {(a, b) for a, b in itertools.pairwise(seq) if a != b}
        novel_bigrams = bigrams - prep.all_bigrams
        claims: Claims = extract_claims(sentence)
        n = max(len(terms), 1)
        per_source = [len(terms & s.terms) / n for s in prep.sources] if terms else []
        recall_best = max(per_source, default=0.0)
        recall_union = len(terms & prep.all_terms) / n if terms else 0.0
        novel = terms - prep.all_terms - prep.question_terms
        hard: list[str] = []
        soft_missing = 0
        all_numbers: set[str] = set()
        for s in prep.sources:
            all_numbers |= s.numbers
        for num in sorted(claims.numbers - all_numbers):
            if num in claims.identifiers or any(num in i for i in claims.identifiers):
                continue  # part of an identifier: checked as one
            if conversion_backed(num, sentence, all_numbers):
                continue  # a backed measure in other units ("79 °F (26 °C)")
            # A value the user supplied is not evidence: it fails either way (counted apart,
            # as a score feature, because it is the less suspicious of the two).
            if re.search(rf"(?<![\d.]){re.escape(num)}(?![\d])", prep.question_squashed):
                soft_missing += 1
            hard.append(f"the value {num} is not in the sources")
        for ident in sorted(claims.identifiers):
            if identifier_found(ident, prep.sources):
                continue
            if ident in claims.acronyms and acronym_found(ident, prep.sources):
                continue  # the source spells it out
            if _token_in(ident, prep.question_squashed):
                # The question's subject restated ("how to grill pork chops, allrecipes.com");
                # a question that asks to confirm a value does not make it evidence.
                if not prep.confirmation_question:
                    continue
                soft_missing += 1
            hard.append(f"'{ident}' is not in the sources")
        missing_names = {
            n
            for n in claims.names
            if not name_in(n, prep.all_terms) and not name_in(n, prep.question_terms)
        }
        # A run of capitalized words a source writes as one token ("Pages Jaunes":
        # "pagesjaunes.fr").
        for run in claims.name_runs:
            joined = "".join(run).lower()
            if len(joined) >= 6 and any(joined in s.squashed for s in prep.sources):
                for word in run:
                    missing_names -= set(analyze(word))
        # The best-aligned source sentence: most shared content terms (ties: the shorter one).
        aligned_recall, aligned_negated, cos_best = 0.0, claims.negated, 0.0
        aligned_cover = 0.0  # share of the aligned source sentence's terms in the sentence
        aligned_text = ""
        best_key = (-1.0, 0)
        # The same alignment by meaning: the source sentence closest in embedding, and the
        # share of the sentence's content words that this one sentence holds. Reported, not in
        # FEATURES: adding it lowered grouped-CV F1 in every configuration (BENCHMARKS.md).
        cos_aligned_recall = 0.0
        for j, src in enumerate(prep.sources):
            for k, st in enumerate(src.sentence_terms):
                r = len(terms & st) / n if terms else 0.0
                key = (r, -len(st))
                if key > best_key:
                    best_key = key
                    aligned_recall, aligned_negated = r, src.sentence_negated[k]
                    aligned_cover = len(terms & st) / len(st) if st else 0.0
                    aligned_text = src.sentences[k]
                if vec is not None and prep.sentence_vecs is not None:
                    c = _cos(vec, prep.sentence_vecs[j][k])
                    if c > cos_best:
                        cos_best, cos_aligned_recall = c, r
        negation_mismatch = float(claims.negated != aligned_negated and aligned_recall >= 0.3)
        # The same statement with "not" on one side only: near-duplicate sentences (most terms
        # shared both ways), so a "not" elsewhere in a long source sentence does not count.
        if (
            claims.negated != aligned_negated
            and len(terms) >= 3
            and aligned_recall >= 0.8
            and aligned_cover >= 0.6
            and not _negation_is_extra(terms, sentence, aligned_text, claims.negated)
        ):
            hard.append(
                "the closest source sentence says the opposite (negation differs)"
                if aligned_negated
                else "the sentence negates what the closest source sentence states"
            )
        # Mostly new content: more than NOVEL_LIMIT (70 %) of its content words, and at least
        # three, occur in no source (nor the question). Such a sentence adds information; a
        # paraphrase keeps the content words.
        if len(novel) >= 3 and len(novel) / n > NOVEL_LIMIT:
            hard.append(
                f"most of it is in no source ({', '.join(sorted(novel)[:5])}"
                f"{', ...' if len(novel) > 5 else ''})"
            )
        for name in sorted(missing_names):
            hard.append(f"the name '{claims.name_words.get(name, name)}' is not in the sources")
        if SELF_UNSUPPORTED.search(sentence):
            hard.append("the sentence itself says the sources do not state it")
        # A source the sentence names in its words ("as passage 2 states") is part of what it
        # asserts: that source must back it (as a marker [n] backs a sentence: 0.3 of its
        # content words) and must exist. A lead-in ("... is described in passage 3:") names
        # where the next sentences come from; they are checked themselves.
        if terms and not sentence.rstrip().endswith(":"):
            for ref in source_references(sentence):
                if not 1 <= ref <= len(per_source):
                    hard.append(f"it names passage {ref}, and there is no such source")
                elif per_source[ref - 1] < BACKING_RECALL:
                    hard.append(f"it names passage {ref}, which does not state it")
        source_words: set[str] = set()
        for s in prep.sources:
            source_words |= s.words
        comparatives_missing = len(claims.comparatives - source_words)
        feats = {
            "recall_best": recall_best,
            "recall_union": recall_union,
            "novel_frac": len(novel) / n if terms else 0.0,
            "novel_log": math.log1p(len(novel)),
            "missing_names": float(len(missing_names)),
            "negation_mismatch": negation_mismatch,
            "comparatives_missing": float(comparatives_missing),
            "aligned_recall": aligned_recall,
            "cosine": cos_best,
            "length_log": math.log1p(len(terms)),
            "missing_soft_values": float(soft_missing),
            "novel_bigram_frac": len(novel_bigrams) / len(bigrams) if bigrams else 0.0,
            "position": position,
            "advice": float(bool(_ADVICE.search(sentence))),
            "answer_sentences_log": math.log1p(answer_sentences),
            "cos_aligned_recall": cos_aligned_recall,
        }
        return feats, hard, per_source

    def probability(self, feats: dict[str, float]) -> float:
        z = self._bias + sum(w * feats[f] for w, f in zip(self._weights, FEATURES, strict=True))
        return sigmoid(z)

    # -- verification -----------------------------------------------------------------------
    def verify(
        self,
        sentences: Sequence[str],
        sources: Sequence[str],
        question: str = "",
        cited: Sequence[Sequence[int]] | None = None,
    ) -> list[SentenceVerdict]:
        """One verdict per sentence (markers already stripped; ``cited`` are the valid
        1-based markers the model wrote for each)."""
        if not sentences:
            return []
        prep = self._prepare(sources, question)
        vecs: list[list[float]] | None = None
        if self._embed is not None and prep.sentence_vecs is not None:
            vecs = self._embed(list(sentences))
        verdicts: list[SentenceVerdict] = []
        for i, sentence in enumerate(sentences):
            feats, hard, per_source = self.features(
                sentence,
                prep,
                vecs[i] if vecs is not None else None,
                position=i / (len(sentences) - 1) if len(sentences) > 1 else 0.0,
                answer_sentences=len(sentences),
            )
            p = self.probability(feats)
            reasons = list(hard)
            if not sources:
                reasons.append("no sources were given")
            by_score = self.threshold is not None and p >= self.threshold
            supported = not hard and bool(sources) and not by_score
            if not supported and not reasons:
                reasons.append("the sources do not state this")
            backing = sorted(
                (j + 1 for j, r in enumerate(per_source) if r >= BACKING_RECALL),
                key=lambda n: -per_source[n - 1],
            )
            if supported and not backing and per_source:
                backing = [max(range(len(per_source)), key=per_source.__getitem__) + 1]
            written = list(cited[i]) if cited is not None else []
            wrong = [n for n in written if n not in backing]
            verdicts.append(
                SentenceVerdict(
                    sentence=sentence,
                    supported=supported,
                    probability=round(p, 4),
                    sources=backing[:3] if supported else [],
                    cited=written,
                    wrong_markers=wrong if supported else written,
                    reasons=[] if supported else reasons,
                    failed_checks=hard,
                    features=feats,
                )
            )
        return verdicts


def _near_duplicate(a: set[str], b: set[str]) -> bool:
    """As the negation check reads it: most of ``a`` in ``b`` and much of ``b`` in ``a``."""
    shared = len(a & b)
    return bool(a) and bool(b) and shared / len(a) >= 0.8 and shared / len(b) >= 0.6


def _negation_is_extra(
    terms: set[str], sentence: str, source_sentence: str, sentence_negated: bool
) -> bool:
    """The "not" is in a clause the other side does not have: with the negated clauses taken
    out of the negated side, the two still say the same thing, and the other side does not
    assert what was denied. "Cut the potatoes into chunks" does not contradict "Cut the
    potatoes into chunks, being careful not to break the sprouts": it leaves the warning out.
    "Season with salt, pepper and paprika" does contradict "Season with salt and pepper, but
    not paprika": it asserts the one thing denied."""
    if sentence_negated:
        negated_text, other = _content_text(sentence), _terms(source_sentence)
    else:
        negated_text, other = source_sentence, terms
    kept_text, denied_text = split_negated_clauses(negated_text)
    kept = _terms(kept_text)
    # What the negation is about, beyond the topic the rest of the sentence already names.
    denied = _terms(denied_text) - kept
    if denied and len(denied & other) * 2 >= len(denied):
        return False
    return _near_duplicate(kept, other) if sentence_negated else _near_duplicate(other, kept)


def _values(text: str) -> set[str]:
    """The numbers and identifiers ``text`` states, as the checks read them: digits only (count
    words are phrasing here), none from "passage 2", none inside an identifier ("1099-PATR")."""
    identifiers = extract_claims(text).identifiers
    numbers = numbers_in(strip_source_references(text), words=False)
    return identifiers | {n for n in numbers if not any(n in i for i in identifiers)}


def asserts_values(sentence: str, question: str = "") -> bool:
    """The sentence states a number or identifier that the question does not hold (a
    reference to a source, "passage 2", is not a value)."""
    text = normalize_text(sentence)
    question_squashed = " ".join(normalize_text(question).lower().split())
    return any(not _token_in(v, question_squashed) for v in _values(text))


def is_preamble(sentence: str, question: str = "") -> bool:
    """A sentence that only frames the answer asserts nothing: "Based on the given passages,"
    alone; "Here's my answer based on the given passages:"; "Let me know if you have further
    questions."; a lead-in to a list that restates the question ("Based on the passages, PSA
    levels can be summarized as follows:", for "what do PSA levels mean"). A negation is never
    framing, nor is a number or identifier the question does not hold."""
    text = normalize_text(sentence.strip())
    if _HEDGE.match(text):
        return True
    question = normalize_text(question)
    question_terms = _terms(question)
    content = restated_question_removed(text, question_terms)
    claims = extract_claims(content)
    if claims.negated:
        return False
    values = _values(content)
    terms = _terms(_content_text(content))
    framing = _framing()
    if terms <= framing:
        return not values
    # A lead-in (it ends in a colon and introduces what follows) may restate the question's
    # topic, its words and values, and say how many items follow ("... in five steps:").
    question_squashed = " ".join(question.lower().split())
    return (
        text.endswith(":")
        and terms - _number_words() <= framing | question_terms
        and all(_token_in(v, question_squashed) for v in values)
    )
