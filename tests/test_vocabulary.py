"""The clinical vocabulary: terms serialise as the strings already saved on disk, named groups replace
positional slices, and the shipped prompt set names exactly the vocabulary's findings."""

import json

import pytest

from cmr_clip.pipelines.prompts import PromptSet
from cmr_clip.processing import LayoutEntry, LayoutError, StudyLayout
from cmr_clip.vocabulary import (
    CARDIAC_VIEWS,
    DIAGNOSES,
    FINDINGS,
    MODEL_SEQUENCES,
    SEQUENCES,
    VIEWS,
    Diagnosis,
    Finding,
    Sequence,
    View,
)


def test_terms_are_the_strings_saved_layouts_and_labels_use():
    # The strings existing layouts, metadata and labels hold; changing one would orphan saved files.
    assert VIEWS == ("sax", "2ch", "3ch", "4ch", "lvot", "other")
    assert SEQUENCES == ("cine", "lge", "other")
    assert DIAGNOSES == ("normal", "icm", "nicm", "hcm", "amyloidosis")
    assert FINDINGS == ("lv_dysfunction", "rv_dysfunction", "lv_dilation", "rv_dilation", "lv_hypertrophy", "lge",
                        "aortic_dilation", "pericardial_effusion")


def test_enum_members_compare_hash_print_and_serialise_as_plain_strings():
    assert View.FOUR_CHAMBER == "4ch" and {"4ch": 1}[View.FOUR_CHAMBER] == 1
    assert f"{Sequence.LGE}/{View.SAX}" == "lge/sax" and str(Diagnosis.HCM) == "hcm"
    assert json.loads(json.dumps({"view": View.TWO_CHAMBER, "finding": Finding.LGE})) == {"view": "2ch", "finding": "lge"}
    assert View("3ch") is View.THREE_CHAMBER


def test_layout_built_from_members_saves_the_same_json_as_one_built_from_strings():
    members = StudyLayout("x", [LayoutEntry(Sequence.CINE, View.SAX, frames=2)], num_frames=2)
    strings = StudyLayout("x", [LayoutEntry("cine", "sax", frames=2)], num_frames=2)
    assert members.to_json() == strings.to_json()
    assert StudyLayout.from_dict(json.loads(members.to_json())).entries[0].key == "cine/sax"


def test_named_groups_leave_out_other():
    assert MODEL_SEQUENCES == ("cine", "lge")
    assert set(CARDIAC_VIEWS) == {"sax", "2ch", "3ch", "4ch", "lvot"}


@pytest.mark.parametrize("sequence, view", [("other", "sax"), ("cine", "other")])
def test_layout_refuses_pairings_outside_the_named_groups(sequence, view):
    with pytest.raises(LayoutError, match=rf"unknown pairing {sequence}/{view}; sequences \('cine', 'lge'\)"):
        StudyLayout("bad", [LayoutEntry(sequence, view, frames=1)], num_frames=1)


def test_shipped_prompt_set_covers_exactly_the_vocabulary_findings():
    shipped = set(PromptSet.load().findings)
    missing = sorted(set(FINDINGS) - shipped)
    extra = sorted(shipped - set(FINDINGS))
    assert not missing, f"prompts/default.json has no ensemble for finding(s) {missing}: add them"
    assert not extra, f"prompts/default.json names finding(s) {extra} outside cmr_clip.vocabulary: add or remove them"


def test_shipped_prompt_set_diseases_are_vocabulary_diagnoses():
    shipped = set(PromptSet.load().diseases)
    assert shipped == set(DIAGNOSES), f"missing {sorted(set(DIAGNOSES) - shipped)}, extra {sorted(shipped - set(DIAGNOSES))}"
