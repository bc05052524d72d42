"""The `cmr-clip` commands as a user meets them: every command has `--help`; the commands that write or read a
corpus spell it `--output-dir`/`--data-dir` (the old `--out`, `--output`, `--data` still work, with a notice);
config dataclasses are flags; a bad input gives the exit code of the table (0 done, 1 some inputs failed,
2 usage error or nothing done) and one line naming the error's type, no traceback. The real CLI runs; no mocks."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys

import pytest
from pydicom.data import get_testdata_file

from cmr_clip.cli import COMMANDS, main
from cmr_clip.commands import train
from cmr_clip.commands.base import build_parser
from cmr_clip.demo import DemoSettings
from cmr_clip.pipelines.batch import PredictSettings
from cmr_clip.training import FinetuneConfig, TrainConfig
from processing_factory import write_study
from target_support import save_tiny_target
from test_zero_shot_support import save_random_model

# `cmr-clip COMMAND: [STUDY: ]ErrorType: message`, the study named as the user gave it
PRECISION_LINE = re.compile(r"^cmr-clip [\w-]+: precision \w+(\+int8)? \(")
ERROR_LINE = re.compile(r"^cmr-clip [\w-]+: ([\w.-]+: )?[A-Z]\w*(Error|Exception): \S.*$")

# The commands that write a folder, and those that read a prepared corpus (or, for push, summarise one).
WRITES = ["demo", "synth", "prepare", "prepare-merge", "train", "finetune", "evaluate", "index build",
          "convert-original"]
READS_CORPUS = ["train", "finetune", "evaluate", "index build", "push"]


def help_text(command: str, capsys) -> str:
    assert main([*command.split(), "--help"]) == 0
    return capsys.readouterr().out


def error_lines(stderr: str) -> list[str]:
    """The lines a command printed about a failure (deprecation notices, the precision notice and progress bars
    aside)."""
    return [line for line in stderr.splitlines() if line.startswith("cmr-clip ") and "deprecated" not in line
            and not PRECISION_LINE.match(line)]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A good MR study, a folder whose one file is a corrupt DICOM, a text file, a source holding an MR study
    next to a CT one, a random CMR-CLIP and a random CMR-TARGET."""
    root = tmp_path_factory.mktemp("commands")
    good = root / "studies" / "good"
    write_study(good, style="ge", n_slices=3, n_phases=5, lax=("4ch",), seed=1)
    corrupt = root / "studies" / "corrupt"
    corrupt.mkdir()
    (corrupt / "image.dcm").write_bytes(b"DICM" + b"\0" * 100)
    text = root / "notes.txt"
    text.write_text("not an image")
    (root / "unknown.json").write_text('{"learning_rat": 0.1}')
    mixed = root / "mixed"
    shutil.copytree(good, mixed / "mr")
    shutil.copy(get_testdata_file("CT_small.dcm"), mixed / "ct.dcm")
    return {"root": root, "good": str(good), "corrupt": str(corrupt), "text": str(text), "mixed": str(mixed),
            "missing": str(root / "missing"), "model": str(save_random_model(root / "model")),
            "target": str(save_tiny_target(root / "target"))}


@pytest.mark.parametrize("command", [*COMMANDS, "index build"])
def test_every_command_accepts_help(command, capsys):
    assert f"usage: cmr-clip {command}" in help_text(command, capsys)


def test_the_top_level_lists_every_command_and_refuses_an_unknown_one(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)
    assert main(["predikt"]) == 2
    assert "invalid choice: 'predikt'" in capsys.readouterr().err


def test_the_top_level_help_imports_no_command_module():
    code = ("import sys\nfrom cmr_clip.cli import main\nmain(['--help'])\n"
            "print(sorted(m for m in sys.modules if m.startswith('cmr_clip.commands.')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines()[-1] == "['cmr_clip.commands.base']"


@pytest.mark.parametrize("command", WRITES)
def test_commands_that_write_a_folder_spell_it_output_dir(command, capsys):
    text = help_text(command, capsys)
    assert "--output-dir" in text
    assert not re.search(r"--out\b|--output\b(?!-)", text)  # the old spellings work but are not advertised


@pytest.mark.parametrize("command", READS_CORPUS)
def test_commands_that_read_a_corpus_spell_it_data_dir(command, capsys):
    text = help_text(command, capsys)
    assert "--data-dir" in text and not re.search(r"--data\b(?!-)", text)


@pytest.mark.parametrize("command, config, renamed", [
    ("train", TrainConfig, {}),
    ("finetune", FinetuneConfig, {"model_dir": "--model"}),
    ("demo", DemoSettings, {"out": "--output-dir", "field_of_view_mm": "--field-of-view"}),
    ("predict", PredictSettings, {"estimates": "--estimate", "prompt_set": "--prompts"}),
])
def test_every_config_field_is_a_flag_with_its_docstring_as_help(command, config, renamed, capsys):
    text = " ".join(help_text(command, capsys).split())
    for item in dataclasses.fields(config):
        assert renamed.get(item.name, "--" + item.name.replace("_", "-")) in text, item.name
    # (phrases without hyphens: argparse may wrap a line after one)
    documented = {"train": "Where checkpoints (`checkpoints/`), the final model, processor and `metrics.json` go.",
                  "finetune": "0: a linear head on the study embedding; > 0: an MLP with this hidden width.",
                  "demo": "Processes for writing and reading DICOM.",
                  "predict": "DataLoader worker processes reading DICOM while the model runs"}
    assert documented[command] in text


def test_train_flags_override_a_config_file(tmp_path):
    config_file = tmp_path / "run.json"
    config_file.write_text('{"epochs": 3, "learning_rate": 0.5, "data_dir": "from-file"}')
    args = build_parser("train", train).parse_args(
        ["--config", str(config_file), "--learning-rate", "3e-4", "--crop-scale", "0.6", "1.0", "--no-augment",
         "--vision", '{"hidden_size": 32}', "--data", "from-flag"])
    config = train.config_from_args(args)
    assert (config.epochs, config.learning_rate, config.crop_scale) == (3, 3e-4, [0.6, 1.0])
    assert (config.augment, config.vision, config.data_dir) == (False, {"hidden_size": 32}, "from-flag")
    assert config.output_dir == TrainConfig().output_dir


def test_old_spellings_still_work_with_a_notice(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "cohort"), "--n", "1", "--workers", "1", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert (tmp_path / "cohort" / "reports.jsonl").is_file()
    assert ("cmr-clip synth: --out is deprecated and will be removed in the next release; use --output-dir"
            in captured.err)
    assert main(["synth", "--output-dir", str(tmp_path / "again"), "--n", "1", "--workers", "1", "--quiet"]) == 0
    assert "deprecated" not in capsys.readouterr().err


def test_a_required_folder_is_required_in_either_spelling(capsys):
    assert main(["synth", "--n", "1"]) == 2
    assert "the following arguments are required: --output-dir" in capsys.readouterr().err


BAD_INPUTS = {
    # command line (placeholders from the `inputs` fixture) -> exit code
    "missing study": (["inspect", "{missing}"], 2),
    "a text file": (["inspect", "{text}"], 2),
    "a CT study next to an MR one": (["inspect", "{mixed}"], 1),
    "zero-shot: a missing study": (["zero-shot", "{missing}", "--model", "{model}"], 2),
    "zero-shot: a corrupt study next to a good one": (["zero-shot", "{good}", "{corrupt}", "--model", "{model}"], 1),
    "report: a corrupt study next to a good one": (["report", "{good}", "{corrupt}", "--model", "{target}",
                                                   "--max-new-tokens", "4"], 1),
    "report: only a corrupt study": (["report", "{corrupt}", "--model", "{target}"], 2),
    "index: a corrupt study next to a good one": (["index", "build", "--model", "{model}", "--studies", "{good}",
                                                  "{corrupt}", "--output-dir", "{root}/index"], 1),
    "search: a missing index": (["search", "lv dilation", "--index", "{missing}"], 2),
    "prepare: a missing studies folder": (["prepare", "--studies", "{missing}", "--reports", "{text}",
                                           "--output-dir", "{root}/corpus"], 2),
    "prepare: a zoom below 1": (["prepare", "--studies", "{root}", "--reports", "{text}", "--zoom", "0.5",
                                 "--output-dir", "{root}/corpus"], 2),
    "prepare: a field of view by an unknown view": (["prepare", "--studies", "{root}", "--reports", "{text}",
                                                     "--field-of-view", "axial=150", "--output-dir", "{root}/corpus"], 2),
    "prepare: a field of view that is no size": (["prepare", "--studies", "{root}", "--reports", "{text}",
                                                  "--field-of-view", "sax=wide", "--output-dir", "{root}/corpus"], 2),
    "prepare: cycle phases with a layout of its own": (["prepare", "--studies", "{root}", "--reports", "{text}",
                                                        "--layout", "reference", "--cine-phases", "cycle",
                                                        "--output-dir", "{root}/corpus"], 2),
    "prepare-merge: no shards": (["prepare-merge", "--shards", "{missing}", "--output-dir", "{root}/merged"], 2),
    "train: no corpus given": (["train"], 2),
    "train: a missing corpus": (["train", "--data-dir", "{missing}"], 2),
    "train: a config file with an unknown option": (["train", "--config", "{root}/unknown.json"], 2),
    "finetune: a missing corpus": (["finetune", "--model", "{model}", "--data-dir", "{missing}", "--labels", "lge"], 2),
    "evaluate: a missing corpus": (["evaluate", "--model", "{model}", "--data-dir", "{missing}"], 2),
    "push: a folder that is no model": (["push", "{mixed}", "--repo-id", "org/x", "--dry-run", "{root}/staged"], 2),
    "convert-original: --checkpoint without --config": (["convert-original", "--checkpoint", "{text}",
                                                         "--output-dir", "{root}/converted"], 2),
    "synth: no studies": (["synth", "--output-dir", "{root}/cohort", "--n", "0"], 2),
    "demo: a count that is no number": (["demo", "--studies", "many"], 2),
    "demo: a field of view that is no size": (["demo", "--field-of-view", "sax=wide"], 2),
    "demo: a field of view by an unknown view, refused before any study is written": (
        ["demo", "--output-dir", "{root}/demo", "--field-of-view", "axial=110"], 2),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_a_bad_input_gives_the_exit_code_of_the_table_and_one_typed_line(case, inputs, capsys):
    argv, expected = BAD_INPUTS[case]
    assert main([part.format(**inputs) for part in argv]) == expected
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    if argv[:2] == ["demo", "--studies"]:  # argparse's own usage error
        assert stderr.rstrip().splitlines()[-1].startswith("cmr-clip demo: error: argument --studies")
        return
    lines = error_lines(stderr)
    if expected == 2:  # the command stopped: exactly one line says why
        assert len(lines) == 1 and ERROR_LINE.match(lines[0]), stderr
    else:  # one line for the input that failed, the others done
        assert len(lines) == 1 and ERROR_LINE.match(lines[0]) and "Error: " in lines[0], stderr


def test_a_missing_file_is_reported_without_its_path(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "MRN48213377_run.yaml")]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and ERROR_LINE.match(lines[0]) and "MRN48213377" not in lines[0], lines
