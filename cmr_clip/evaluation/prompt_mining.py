"""Zero-shot prompts in a corpus's own words: each finding's positive and negative ensembles taken from the
sentences of the training impressions that state the finding or rule it out, read by the rule-based reader
(`evaluation.findings`); no labels are used.

A model trained from scratch on one institution's reports knows only their wording. A built-in prompt
such as "Normal LV wall thickness." may share its words with the wrong reports (there, "wall thickness" is
said only of hypertrophied hearts) and score the finding backwards. Mined prompts are sentences the text
tower has read:

1. Each sentence of each impression loses its numbers: a parenthesis that holds a digit ("(LVEF 45%)") and
   a comma-separated part that holds one (", maximal wall thickness 18 mm") are removed. A sentence still
   holding a digit loses its measurements introduced by a word ("measuring 44 mm", "of 18 mm", "up to 4.5
   cm": "Dilated aortic root measuring 46 mm." says "Dilated aortic root."); one holding a digit after that
   ("ectasia - 44 mm at the sinuses") is not used. A text tower trained from scratch does not read numbers,
   and prompts that differ mostly in them do not separate anything.
2. The sentences are counted; those said at least `min_count` times whose only statement is one finding,
   present or ruled out, are candidates, the most frequent first.
3. Each finding's side takes its `per_side` most frequent candidates; a side the corpus never states keeps the
   base set's prompts. Everything else (diseases, estimates, required views) is the base set's.

The prompts are saved with the model and may be published with it. A prepared corpus's impressions are
de-identified already (`data.prepare`), a mined sentence is one that at least `min_count` reports say word
for word (a sentence about one patient is not), and the file goes through the privacy guard when written.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from ..pipelines.prompts import PromptSet
from ..processing.processing_cmr_target import split_sentences
from .findings import NUMERIC_PARENTHESIS, extract_findings  # the reader's own numeric-parenthesis rule

_DIGIT = re.compile(r"\d")
# A measurement and the word that introduces it: "measuring 44 mm", "of 18 mm", "up to 4.5 cm", "at 52 ml".
_INTRODUCED_MEASUREMENT = re.compile(
    r"\s+(?:measuring|measures|measured at|of|at|up to)(?:\s+up to)?\s+\d+(?:\.\d+)?\s*(?:mm|cm|ml|%)(?=[\s.,;:)]|$)",
    re.IGNORECASE)


def without_numbers(sentence: str) -> str | None:
    """`sentence` without its numeric parentheses and numeric comma-separated parts, ending in one full stop;
    where a number is left, without its measurements introduced by a word as well; None where a number is still
    left (or nothing is)."""
    return _without_numbers(sentence) or _without_numbers(_INTRODUCED_MEASUREMENT.sub("", sentence))


def _without_numbers(sentence: str) -> str | None:
    text = NUMERIC_PARENTHESIS.sub(" ", sentence)
    text = ",".join(part for part in text.split(",") if not _DIGIT.search(part))
    text = " ".join(text.split()).rstrip(" .,;:")
    if not text or _DIGIT.search(text):
        return None
    return text + "."


def mined_sentences(impressions: Iterable[str], min_count: int = 2) -> dict[str, dict[str, list[tuple[str, int]]]]:
    """finding -> {"positive"/"negative": [(sentence, count), ...] most frequent first} for the sentences
    (numbers removed) said at least `min_count` times whose only statement is that finding."""
    counts = Counter(cleaned for text in impressions for sentence in split_sentences(text)
                     if (cleaned := without_numbers(sentence)))
    mined: dict[str, dict[str, list[tuple[str, int]]]] = {}
    for sentence, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        if count < min_count:
            break
        mentions = extract_findings(sentence)
        if len(mentions) != 1:
            continue
        (finding, mention), = mentions.items()
        side = "positive" if mention.present else "negative"
        mined.setdefault(finding, {"positive": [], "negative": []})[side].append((sentence, count))
    return mined


def mine_prompt_set(impressions: Iterable[str], base: PromptSet, per_side: int = 5, min_count: int = 2) -> PromptSet:
    """`base` with each finding's ensembles replaced by the corpus's own sentences (see the module docstring);
    its description says how many impressions it was mined from and which sides kept `base`'s prompts."""
    if per_side < 1 or min_count < 1:
        raise ValueError(f"per_side and min_count must be at least 1, got {per_side} and {min_count}.")
    impressions = list(impressions)
    mined = mined_sentences(impressions, min_count)
    data = base.to_dict()
    data.pop("calibration", None)  # a calibration belongs to the prompts it was fitted on
    data["thresholds"] = {}
    kept = []
    for finding, ensembles in data["findings"].items():
        for side in ("positive", "negative"):
            found = [sentence for sentence, _ in mined.get(finding, {}).get(side, [])[:per_side]]
            if found:
                ensembles[side] = found
            else:
                kept.append(f"{finding} {side}")
    data["name"] = f"{base.name}, mined"
    data["description"] = (f"Finding prompts mined from {len(impressions)} training impressions (the most frequent "
                           f"sentences, numbers removed, that state one finding or rule it out; at most {per_side} "
                           f"a side, each said at least {min_count} times); sides the corpus never states keep "
                           f"{base.name}'s prompts: {', '.join(kept) or 'none'}. Diseases and estimates are "
                           f"{base.name}'s.")
    return PromptSet.from_dict(data, origin="mined prompt set")
