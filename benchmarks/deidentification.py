"""Report de-identification on a labelled set (`deid_sentences.py`): recall on planted identifiers and the share
of clean clinical sentences that change.

    python benchmarks/deidentification.py [--show-misses]

An identifier counts as caught when, after `cmr_clip.privacy.deidentify`, neither it nor any of its pieces
(words of 2+ letters other than titles, street types and the like, runs of 2+ digits, compared case-insensitively as whole words) is left in the sentence
where the untouched sentence had it. A clean sentence counts as changed if one character differs. Where
scrubadub or presidio-analyzer are importable their figures are printed beside ours as the baseline.
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
    """Other de-identifiers, where installed (not dependencies of cmr-clip)."""
    found = {}
    try:
        import scrubadub

        scrubber = scrubadub.Scrubber()
        found["scrubadub"] = scrubber.clean
    except ImportError:
        pass
    return found


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
