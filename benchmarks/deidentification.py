"""Report de-identification on a labelled set (`deid_sentences.py`): recall on planted identifiers and the share
of clean clinical sentences that change.

    python benchmarks/deidentification.py [--show-misses]

An identifier counts as caught when, after `cmr_clip.privacy.deidentify`, neither it nor any of its pieces
(words of 2+ letters other than titles, street types and the like, runs of 2+ digits, compared case-insensitively as whole words) is left in the sentence
where the untouched sentence had it. A clean sentence counts as changed if one character differs. Where
scrubadub or presidio-analyzer are importable their figures are printed beside ours as the baseline.

Measured (2 CPU cores; baselines installed in a separate virtualenv, offline): cmr_clip recall 100.00% on
377 planted identifiers in 346 sentences, 0.00% of 320 clean sentences changed; scrubadub 2.0.1 15.65% /
7.19%; presidio-analyzer 2.2.366 pattern recognizers 36.07% / 21.25%.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from deid_sentences import clean_sentences, identifier_sentences  # noqa: E402

from cmr_clip.privacy import deidentify  # noqa: E402

# Words of a planted identifier that identify no one by themselves (titles, "year old", street types, labels).
GENERIC_WORDS = {"dr", "mr", "mrs", "ms", "prof", "doctor", "year", "old", "yo", "age", "aged", "ext", "nhs", "street",
                 "avenue", "boulevard", "road", "rue", "de", "der", "van", "po", "box", "suite", "jan", "mar", "sep",
                 "sept", "feb", "july", "june", "march", "january", "october", "st", "th", "nd", "rd", "of", "md"}


def pieces(identifier: str) -> list[str]:
    """The parts of an identifier that must not survive: the whole, its words (not the generic ones), digit runs of 2+."""
    words = [w for w in re.findall(r"[^\W\d_]{2,}", identifier) if w.lower() not in GENERIC_WORDS]
    return [identifier] + words + re.findall(r"\d{2,}", identifier)


def leaked(identifier: str, original: str, output: str) -> bool:
    for piece in pieces(identifier):
        pattern = re.compile(rf"(?<![^\W_]){re.escape(piece)}(?![^\W_])", re.IGNORECASE)
        if pattern.search(output) and len(pattern.findall(output)) >= len(pattern.findall(original.replace(identifier, ""))) + 1:
            return True
    return False


def evaluate(scrub) -> dict:
    """Recall per planted identifier and the clean-sentence change rate of `scrub(text) -> text`."""
    planted = caught = 0
    misses = []
    for text, identifiers in identifier_sentences():
        output = scrub(text)
        for identifier in identifiers:
            planted += 1
            if leaked(identifier, text, output):
                misses.append((identifier, output))
            else:
                caught += 1
    clean = clean_sentences()
    changed = [(text, out) for text in clean if (out := scrub(text)) != text]
    return {"planted": planted, "recall": caught / planted, "sentences": len(identifier_sentences()),
            "clean": len(clean), "clean_changed": len(changed) / len(clean), "misses": misses, "changed": changed}


def baselines() -> dict:
    """Other de-identifiers, where installed (not dependencies of cmr-clip): scrubadub with its default
    detectors, and presidio-analyzer's pattern recognizers (its default NLP engine needs a spaCy model, which
    cannot be downloaded here, so an engine without NLP stands in)."""
    found = {}
    try:
        import scrubadub

        found["scrubadub"] = scrubadub.Scrubber().clean
    except ImportError:
        pass
    try:
        found["presidio"] = presidio_patterns()
    except ImportError:
        pass
    return found


def presidio_patterns():
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NlpArtifacts, NlpEngine

    class WithoutNlp(NlpEngine):
        def load(self):
            pass

        def is_loaded(self):
            return True

        def process_text(self, text, language):
            return NlpArtifacts(entities=[], tokens=[], tokens_indices=[], lemmas=[], nlp_engine=self, language=language)

        def process_batch(self, texts, language, **kwargs):
            return ((text, self.process_text(text, language)) for text in texts)

        def is_stopword(self, word, language):
            return False

        def is_punct(self, word, language):
            return False

        def get_supported_entities(self):
            return []

        def get_supported_languages(self):
            return ["en"]

    registry = RecognizerRegistry()
    registry.load_predefined_recognizers()
    engine = AnalyzerEngine(nlp_engine=WithoutNlp(), registry=registry, supported_languages=["en"])

    def scrub(text: str) -> str:
        for hit in sorted(engine.analyze(text, language="en"), key=lambda hit: -hit.start):
            text = text[:hit.start] + f"[{hit.entity_type}]" + text[hit.end:]
        return text

    return scrub


def report(name: str, result: dict) -> None:
    print(f"{name:<12} recall {result['recall']:.2%} on {result['planted']} planted identifiers "
          f"({result['sentences']} sentences); clean sentences changed {result['clean_changed']:.2%} "
          f"of {result['clean']}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--show-misses", action="store_true")
    args = parser.parse_args(argv)
    ours = evaluate(deidentify)
    report("cmr_clip", ours)
    for name, scrub in baselines().items():
        report(name, evaluate(scrub))
    if args.show_misses:
        for identifier, output in ours["misses"]:
            print(f"missed {identifier!r}: {output}")
        for text, output in ours["changed"]:
            print(f"changed: {text}\n      -> {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
