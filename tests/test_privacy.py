"""The privacy layer: a PHI sweep over every route with identities in formats our generator never writes,
report de-identification (the study's own identity in any format, the labelled benchmark's thresholds),
tokenizers, and the push routes at the huggingface_hub API boundary.

The sweep plants identities (`Wojciechowski^Anna`, `O'NEIL^MARY-KATE`, `山田^太郎`, `Müller-Lüdenscheidt^Jürgen`,
`DOE^JANE^^^`, `RAD-2021-000123`, `A1B2C3D4`, a study folder `MRN 00123456`, 12/03/1958, (216) 555-0142, ...) in
DICOM headers, in folder and file names and in report texts, runs read_study, the processor, prepare --train-tokenizer, training, index build, evaluate,
zero-shot, report, push --dry-run and inspect --montage, and looks for every planted value, in its usual
case and format variants, in every file written (binary ones as bytes), every log record (DEBUG), every
printed line, every repr/str/_repr_html_ and every error text.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from huggingface_hub import HfApi

from cmr_clip import cli
from cmr_clip.data.prepare import train_wordpiece_tokenizer
from cmr_clip.privacy import (
    PHIError,
    StudyIdentity,
    check_vocabulary,
    deidentify,
    identity_hashes,
    load_identity_hashes,
    check_json,
    new_salt,
    safe_study_name,
    save_dataset,
    scan_folder,
    study_key,
    write_json,
    write_jsonl,
    write_text,
)
from cmr_clip.processing import CMRStudyError, CMRStudyProcessor, read_study
from cmr_clip.processing.display import study_summary
from cmr_clip.synthetic import make_cohort

ROOT = Path(__file__).resolve().parents[1]

# Identities in formats the synthetic generator never writes (it writes FAMILY^GIVEN from its own name lists,
# "MRN" + 8 digits, "ACC" + 9 digits): hyphens, apostrophes, non-Latin scripts, letter-digit codes.
PLANTED = [
    {"name": "Wojciechowski^Anna", "id": "RAD-2021-000123", "accession": "A1B2C3D4", "birth": "19580312",
     "phone": "(216) 555-0142", "referring": "O'NEIL^MARY-KATE", "institution": "Cuyahoga Lakeside Heart Institute",
     "folder": "Wojciechowski^Anna_19580312", "file": "WOJCIECHOWSKI^ANNA.MR.CARDIAC.0005.0001.IMA",
     "impression": "Anna Wojciechowski (DOB 12/03/1958, MRN RAD-2021-000123, acc A1B2C3D4) was referred by "
                   "Dr O'Neil of Cuyahoga Lakeside Heart Institute; call (216) 555-0142. Mrs WOJCIECHOWSKI has "
                   "LVEF 35% and 17 mm septum; T1 1050 ms at 3 T, unchanged from 2 years ago."},
    {"name": "山田^太郎", "id": "JP-0048-7731", "accession": "X9Y8Z7W6", "birth": "19451130",
     "phone": "+81 3-1234-5678", "referring": "Nakamura^Keiko", "institution": "Tokyo Seiwa Hospital",
     "folder": "山田^太郎 19451130", "file": "山田^太郎_IM0001.dcm",
     "impression": "山田 太郎, born Nov 30, 1945, accession X9Y8Z7W6, 93-year-old man. Reported by Dr. Keiko "
                   "Nakamura. No LGE. NYHA II, T2* 28 ms, ECV 28%."},
    {"name": "Müller-Lüdenscheidt^Jürgen", "id": "MLJ77342209", "accession": "2019-CMR-0441", "birth": "19700101",
     "phone": "030 1234 5678", "referring": "Fitzgerald^Siobhan", "institution": "Klinikum Lüdenscheid",
     "folder": "MÜLLER-LÜDENSCHEIDT_JÜRGEN_1970-01-01", "file": "Jürgen Müller-Lüdenscheidt 1.dcm",
     "impression": "MÜLLER-LÜDENSCHEIDT, JÜRGEN (01/01/1970; 1970-01-01) study 2019-CMR-0441: Jürgen has "
                   "subendocardial LGE in the LAD territory, Mobitz II. Referring: Siobhan Fitzgerald. "
                   "Lives at 12 Elm Street, Springfield, OH 44101."},
    # A DICOM person name with its empty trailing components, and a study folder named by the record number.
    {"name": "DOE^JANE^^^", "id": "00123456", "accession": "Q7R8S9T0", "birth": "19620704",
     "phone": "(415) 555-0199", "referring": "ROE^RICHARD^^^", "institution": "Bayside Cardiac Imaging Centre",
     "folder": "MRN 00123456", "file": "DOE^JANE^^^.dcm",
     "impression": "Patient: DOE^JANE^^^ (MRN 00123456), referred by ROE^RICHARD^^^. Normal LV size and function, "
                   "LVEF 61%. No LGE."},
]
N_STUDIES = 12


def name_parts(dicom_name: str) -> list[str]:
    parts = [p for p in re.split(r"[\^]", dicom_name) if p]
    return parts + [piece for p in parts for piece in re.split(r"[-\s']", p) if len(piece) >= 3]


def date_forms(yyyymmdd: str) -> list[str]:
    """A date as people write it: formats taken from how reports and exports write dates, not from our code."""
    y, m, d = yyyymmdd[:4], yyyymmdd[4:6], yyyymmdd[6:]
    month = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
             "November", "December"][int(m) - 1]
    return [yyyymmdd, f"{y}-{m}-{d}", f"{d}/{m}/{y}", f"{m}/{d}/{y}", f"{d}.{m}.{y}", f"{month} {int(d)}, {y}",
            f"{int(d)} {month} {y}", f"{month[:3]} {int(d)}, {y}"]


def planted_values() -> list[str]:
    """Every planted value and its variants: upper/lower case, name parts one by one, dates in common formats,
    ids and phones with and without separators."""
    values = set()
    for person in PLANTED:
        for key in ("name", "referring"):
            values |= set(name_parts(person[key])) | {person[key]}
        values |= {person["id"], person["accession"], re.sub(r"\W", "", person["id"]), person["phone"],
                   re.sub(r"\D", "", person["phone"]), person["institution"], person["folder"], person["file"]}
        values |= set(date_forms(person["birth"]))
    values.discard("")
    return sorted(values | {v.upper() for v in values} | {v.lower() for v in values}, key=len, reverse=True)


def occurrences(text: str, values: list[str]) -> list[str]:
    """Planted values found in `text` (case-insensitive; short name parts as whole words)."""
    found = []
    for value in values:
        pattern = re.escape(value) if len(value) >= 6 else rf"(?<![^\W_]){re.escape(value)}(?![^\W_])"
        if re.search(pattern, text, re.IGNORECASE):
            found.append(value)
    return found


def binary_occurrences(data: bytes, values: list[str]) -> list[str]:
    """Planted values in a binary file: UTF-8 bytes of values long enough not to occur by chance in pixels."""
    return [v for v in values if len(v.encode()) >= 7 and v.encode() in data]


def plant(cohort: Path) -> list[Path]:
    """Give the first studies the planted identities: headers, folder and file names, reports; one broken file."""
    reports = [json.loads(line) for line in (cohort / "reports.jsonl").read_text().splitlines()]
    folders = []
    for person, report in zip(PLANTED, reports):
        old = cohort / "studies" / report["study_id"]
        for index, path in enumerate(sorted(p for p in old.rglob("*") if p.is_file())):
            ds = pydicom.dcmread(path)
            ds.SpecificCharacterSet = "ISO_IR 192"
            ds.PatientName, ds.PatientID, ds.AccessionNumber = person["name"], person["id"], person["accession"]
            ds.PatientBirthDate, ds.PatientTelephoneNumbers = person["birth"], person["phone"]
            ds.ReferringPhysicianName, ds.InstitutionName = person["referring"], person["institution"]
            ds.StudyDescription = f"CMR {person['name']}"
            target = path.parent / person["file"] if index == 0 else path
            ds.save_as(target, enforce_file_format=True)
            if target != path:
                path.unlink()
        sub = next(p for p in old.rglob("*") if p.is_dir()) if any(p.is_dir() for p in old.iterdir()) else old
        broken = sub / f"{person['name'].split('^')[0]} broken.dcm"
        broken.write_bytes(next(p for p in old.rglob("*") if p.is_file()).read_bytes()[:300])
        new = cohort / "studies" / person["folder"]
        old.rename(new)
        report["study_id"], report["impression"] = person["folder"], person["impression"]
        report["patient_id"] = person["id"]
        folders.append(new)
    lonely = cohort / "studies" / "O'NEIL^MARY-KATE_only_broken"
    lonely.mkdir()
    (lonely / "O'NEIL^MARY-KATE.dcm").write_bytes(b"DICM" + b"\0" * 100)
    reports.append({"study_id": lonely.name, "patient_id": "A1B2C3D4-2", "impression": "Normal study."})
    (cohort / "reports.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in reports))
    return folders + [lonely]


class Records(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(f"{record.name}: {record.getMessage()}")


TINY = ["--vision", json.dumps(dict(patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=64)),
        "--text", json.dumps(dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64))]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Run every route once on the planted cohort; keep what they wrote, logged, printed and raised."""
    root = tmp_path_factory.mktemp("sweep")
    cohort, out = root / "cohort", root / "out"
    make_cohort(cohort, N_STUDIES, seed=11, progress=False, num_workers=1)
    studies = plant(cohort)
    records, printed, texts, errors = Records(), io.StringIO(), [], []
    # the root logger, and the libraries' own loggers that do not propagate to it (transformers has its handler)
    loggers = [logging.getLogger(name) for name in ("", "transformers", "datasets", "accelerate", "huggingface_hub", "pydicom")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(records)
        logger.setLevel(logging.DEBUG)
    try:
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            study = read_study(studies[0])
            texts += [repr(study), str(study), study._repr_html_(), study_summary(study)]
            for series in study.series:
                texts += [repr(series), str(series), series._repr_html_()]
                texts += [repr(frame) + frame.label for frame in series.frames[:3]]
            texts += [repr(item) + item.name + item.reason for item in study.skipped]
            try:
                read_study(studies[-1])
            except CMRStudyError as error:
                errors.append(error)
            batch = CMRStudyProcessor(num_frames=8, image_size=32)([str(s) for s in studies], skip_errors=True)
            texts += [json.dumps(batch["study_metadata"], ensure_ascii=False), json.dumps(batch["errors"], ensure_ascii=False)]
            corpus = out / "corpus"
            codes = {"prepare": cli.main(["prepare", "--studies", str(cohort / "studies"), "--reports",
                                          str(cohort / "reports.jsonl"), "--out", str(corpus), "--num-frames", "8",
                                          "--image-size", "16", "--val-fraction", "0.25", "--test-fraction", "0.25",
                                          "--train-tokenizer", "300"])}
            codes["train"] = cli.main(["train", "--data-dir", str(corpus), "--output-dir", str(out / "model"),
                                       "--max-steps", "1", "--epochs", "1", "--batch-size", "2", "--projection-dim", "16",
                                       "--no-progress", *TINY])
            codes["index"] = cli.main(["index", "build", "--model", str(out / "model"), "--data", str(corpus),
                                       "--out", str(out / "index")])
            codes["index studies"] = cli.main(["index", "build", "--model", str(out / "model"), "--studies",
                                               *map(str, studies), "--out", str(out / "index2")])
            codes["evaluate"] = cli.main(["evaluate", "--model", str(out / "model"), "--data", str(corpus),
                                          "--out", str(out / "evaluation"), "--reports", str(cohort / "reports.jsonl"),
                                          "--episodes", "2", "--shots", "1", "--bootstrap", "20"])
            codes["zero-shot"] = cli.main(["zero-shot", *map(str, studies), "--model", str(out / "model"),
                                           "--json", str(out / "zero_shot.json")])
            codes["train report"] = cli.main([
                "train", "--task", "report", "--data-dir", str(corpus), "--output-dir", str(out / "report_model"),
                "--cmr-clip-model", str(out / "model"), "--max-steps", "1", "--epochs", "1", "--batch-size", "2",
                "--report-vocab-size", "300", "--num-frame-tokens", "2", "--no-progress",
                "--decoder-config", json.dumps({"n_embd": 32, "n_layer": 1, "n_head": 2})])
            codes["report"] = cli.main(["report", *map(str, studies), "--model", str(out / "report_model"),
                                        "--max-new-tokens", "8", "--json", str(out / "drafts.json")])
            codes["push model"] = cli.main(["push", str(out / "model"), "--repo-id", "org/m", "--data", str(corpus),
                                            "--dry-run", str(out / "staged_model")])
            codes["push corpus"] = cli.main(["push", str(corpus), "--repo-id", "org/c", "--dry-run",
                                             str(out / "staged_corpus")])
            codes["inspect"] = cli.main(["inspect", str(studies[0]), "--montage", str(out / "montage.png")])
    finally:
        for logger, level in zip(loggers, levels):
            logger.removeHandler(records)
            logger.setLevel(level)
    shell = subprocess.run([sys.executable, "-m", "cmr_clip", "inspect", str(studies[0])], capture_output=True,
                           text=True, cwd=root)
    return {"root": root, "out": out, "studies": studies, "codes": codes, "logs": records.lines,
            "printed": printed.getvalue() + shell.stdout + shell.stderr, "texts": texts, "errors": errors,
            "batch_errors": batch["errors"]}


def test_every_route_ran(sweep):
    codes = sweep["codes"]
    # the lonely broken study is skipped where several studies are read: exit 1 (some inputs failed)
    assert codes == {**codes, "prepare": 1, "train": 0, "index": 0, "evaluate": 0, "train report": 0,
                     "push model": 0, "push corpus": 0, "inspect": 0}, codes
    assert codes["zero-shot"] == 1 and codes["report"] == 1 and codes["index studies"] == 1
    assert sweep["errors"] and sweep["batch_errors"]  # the broken study raised and was reported
    assert (sweep["out"] / "montage.png").is_file() and (sweep["out"] / "corpus" / "tokenizer").is_dir()


def test_no_planted_identity_in_any_file_written(sweep):
    values = planted_values()
    files = [p for p in sweep["out"].rglob("*") if p.is_file() and ".prepare-cache" not in p.parts]
    assert len(files) > 40
    leaks = {}
    for path in files:
        data = path.read_bytes()
        try:
            found = occurrences(data.decode("utf-8"), values)
        except UnicodeDecodeError:
            found = binary_occurrences(data, values)
        if found:
            leaks[path.relative_to(sweep["out"]).as_posix()] = found
    assert not leaks, leaks


def test_no_planted_identity_in_logs_prints_reprs_or_errors(sweep):
    values = planted_values()
    assert len(sweep["logs"]) > 10 and "Skipped files" in sweep["printed"]
    for name, text in [("logs", "\n".join(sweep["logs"])), ("printed", sweep["printed"]),
                       ("reprs", "\n".join(sweep["texts"])),
                       ("errors", "\n".join(f"{e!r} {e}" for e in sweep["errors"]) + json.dumps(sweep["batch_errors"]))]:
        assert not occurrences(text, values), (name, occurrences(text, values))
    reprs = "\n".join(sweep["texts"])
    assert str(sweep["root"]) not in reprs and not re.search(r"\.(?:dcm|IMA)\b", reprs)  # no path, no file name


def test_corpus_impressions_keep_their_clinical_content(sweep):
    from datasets import load_from_disk

    corpus = load_from_disk(str(sweep["out"] / "corpus"))
    impressions = [text for split in corpus.values() for text in split["impression"]]
    planted = [text for text in impressions if "[NAME]" in text]
    assert len(planted) == len(PLANTED), impressions
    joined = " ".join(planted)
    for clinical in ("LVEF 35%", "17 mm", "T1 1050 ms", "3 T", "2 years ago", "NYHA II", "T2* 28 ms", "ECV 28%",
                     "No LGE", "LAD", "Mobitz II"):
        assert clinical in joined, clinical
    metadata = [json.loads(m) for split in corpus.values() for m in split["metadata"]]
    assert all("description" not in series for meta in metadata for series in meta["series"])
    skipped = [json.loads(line) for line in (sweep["out"] / "corpus" / "skipped.jsonl").read_text().splitlines()]
    assert [item["error"] for item in skipped] == ["NotAStudyError"] and skipped[0]["row"] == N_STUDIES + 1
    assert skipped[0]["study_id"] == f"study {N_STUDIES + 1}"


def test_own_identity_scrubbed_in_any_case_and_format():
    identity = StudyIdentity()
    identity.add_header({"PatientName": "Doe^Jane", "PatientID": "A1B2C3D4", "PatientBirthDate": "19700101",
                         "InstitutionName": "Lakeside General", "ReferringPhysicianName": "Okafor^Chidi"})
    text = ("Jane Doe; DOE, JANE; Doe; doe jane; 01/01/1970; Jan 1, 1970; 1970-01-01; 19700101; 1 January 1970; "
            "a1b2-c3d4; LAKESIDE GENERAL; chidi. LVEF 35%.")
    scrubbed = deidentify(text, identity)
    assert not re.search(r"jane|doe|1970|a1b2|c3d4|lakeside|chidi", scrubbed, re.IGNORECASE), scrubbed
    assert scrubbed.endswith("LVEF 35%.") and "[NAME]" in scrubbed and "[DATE]" in scrubbed and "[ID]" in scrubbed
    assert "Jane" not in repr(identity) and "not shown" in repr(identity)


def test_deidentification_benchmark_meets_its_thresholds():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import deidentification
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    result = deidentification.evaluate(deidentify)
    assert result["sentences"] >= 300 and result["clean"] >= 300
    assert result["recall"] >= 0.99, result["misses"][:10]
    assert result["clean_changed"] < 0.01, result["changed"][:10]
    printed = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "deidentification.py")], capture_output=True,
                             text=True, check=True).stdout
    assert re.search(r"recall \d+\.\d+% on \d+ planted identifiers", printed)


def vocabulary_of(folder: Path) -> list[str]:
    """The tokens of a saved WordPiece tokenizer, from tokenizer.json as the tokenizers library writes it."""
    return list(json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"])


def test_a_name_in_one_report_is_not_a_token_and_the_guard_refuses_a_vocabulary_with_one(tmp_path):
    texts = ["Severe LV systolic dysfunction, LVEF 25%.", "No late gadolinium enhancement."] * 30
    texts.append("Discussed the LGE with Zbigniewska at the MDT.")  # once: below min_frequency
    train_wordpiece_tokenizer(texts, tmp_path / "tok", vocab_size=400)
    vocabulary = vocabulary_of(tmp_path / "tok")
    assert "zbigniewska" not in vocabulary and "gadolinium" in vocabulary
    identity = StudyIdentity()
    identity.add_header({"PatientName": "Gadolinium^Zbigniewska"})  # a patient whose name is in the vocabulary
    salt = new_salt()
    with pytest.raises(PHIError, match=r"tokenizer: vocabulary entry \d+: is part of a patient's identity") as error:
        check_vocabulary(tmp_path / "tok", salt, identity_hashes(identity, salt))
    assert "gadolinium" not in str(error.value).lower()
    check_vocabulary(tmp_path / "tok", salt, identity_hashes(StudyIdentity(names={"Okafor^Chidi"}), salt))


def test_prepared_tokenizer_holds_no_planted_name_and_the_hashes_hold_no_value(sweep):
    corpus = sweep["out"] / "corpus"
    salt, hashes = load_identity_hashes(corpus)
    assert hashes and not occurrences((corpus / "identity_hashes.json").read_text(), planted_values())
    scan_folder(corpus / "tokenizer", identities=(salt, hashes))  # passes: no identity became a token
    vocabulary = {t.lstrip("#") for t in vocabulary_of(corpus / "tokenizer")}
    assert not vocabulary & {"wojciechowski", "anna", "jürgen", "müller", "太郎"}


@pytest.fixture
def captured(monkeypatch):
    """HfApi's upload calls replaced by recorders: every file of every commit, read at commit time."""
    calls = {"repo": [], "files": {}}

    def create_repo(self, repo_id, **kwargs):
        calls["repo"].append({"repo_id": repo_id, **kwargs})
        return f"https://hub.invalid/{repo_id}"

    def create_commit(self, repo_id, operations, **kwargs):
        for op in operations:
            content = op.path_or_fileobj
            calls["files"][op.path_in_repo] = (Path(content).read_bytes() if isinstance(content, (str, Path))
                                               else content if isinstance(content, bytes) else content.read())
        return type("Commit", (), {"commit_url": f"https://hub.invalid/{repo_id}/commit/0", "oid": "0" * 40,
                                   "pr_url": None})()

    def preupload_lfs_files(self, repo_id, additions, **kwargs):
        for op in additions:
            content = op.path_or_fileobj
            calls["files"][op.path_in_repo] = content if isinstance(content, bytes) else Path(content).read_bytes()

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    monkeypatch.setattr(HfApi, "preupload_lfs_files", preupload_lfs_files)
    monkeypatch.setattr(HfApi, "upload_file", lambda self, **kw: pytest.fail("upload outside the staged commit"))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: pytest.fail("upload outside the staged commit"))
    return calls


def test_model_dry_run_and_push_upload_the_same_files(sweep, captured, tmp_path):
    model, corpus = sweep["out"] / "model", sweep["out"] / "corpus"
    assert cli.main(["push", str(model), "--repo-id", "org/m", "--data", str(corpus), "--dry-run", str(tmp_path / "dry")]) == 0
    assert captured["repo"] == [] and captured["files"] == {}
    assert cli.main(["push", str(model), "--repo-id", "org/m", "--data", str(corpus), "--private"]) == 0
    dry = {p.relative_to(tmp_path / "dry").as_posix(): p.read_bytes() for p in (tmp_path / "dry").rglob("*") if p.is_file()}
    assert set(dry) == set(captured["files"]) and all(dry[name] == captured["files"][name] for name in dry)


def test_dataset_dry_run_and_push_check_and_upload_the_same_rows(sweep, monkeypatch, tmp_path):
    """A dataset goes up through `datasets`' own push_to_hub (parquet shards, its card): the boundary we record is
    that call, with the dataset it was given."""
    from datasets import load_from_disk

    pushed = []
    monkeypatch.setattr("datasets.DatasetDict.push_to_hub", lambda self, repo_id, **kw: pushed.append((self, repo_id, kw)))
    corpus = sweep["out"] / "corpus"
    assert cli.main(["push", str(corpus), "--repo-id", "org/c", "--dry-run", str(tmp_path / "dry")]) == 0
    assert pushed == []
    assert cli.main(["push", str(corpus), "--repo-id", "org/c", "--private"]) == 0
    [(uploaded, repo_id, options)] = pushed
    assert repo_id == "org/c" and options["private"] is True
    staged = load_from_disk(str(tmp_path / "dry"))
    assert list(staged) == list(uploaded) and "study_id" not in staged["train"].column_names
    for split in staged:
        assert staged[split].column_names == uploaded[split].column_names
        for column in ("impression", "labels", "vendor", "metadata"):
            assert staged[split][column] == uploaded[split][column]


def test_push_refuses_a_corpus_with_a_planted_identifier(sweep, captured, tmp_path, capsys):
    from datasets import load_from_disk

    corpus = tmp_path / "corpus"
    shutil.copytree(sweep["out"] / "corpus", corpus)
    dataset = load_from_disk(str(corpus))
    dataset["train"] = dataset["train"].map(
        lambda row, i: {"impression": row["impression"] + (" Seen by Dr. Anna Kowalska." if i == 0 else "")},
        with_indices=True)
    dataset.save_to_disk(str(tmp_path / "planted"))
    assert cli.main(["push", str(tmp_path / "planted"), "--repo-id", "org/bad", "--dry-run", str(tmp_path / "dry")]) == 2
    assert cli.main(["push", str(tmp_path / "planted"), "--repo-id", "org/bad"]) == 2
    printed = capsys.readouterr().err
    assert printed.count("column 'impression' row 0: looks like a person's name") == 2 and "Kowalska" not in printed
    assert captured["files"] == {} and captured["repo"] == []


def test_prepare_cli_pushes_through_the_guard(monkeypatch, tmp_path, capsys):
    """`prepare --push-to-hub` takes the guarded route: a planted identifier in a report that the de-identifier
    keeps (here: we stub it out to prove the guard, not the scrubber, stops it) is refused by the corpus's writer,
    so the corpus is neither written nor pushed."""
    import cmr_clip.data.prepare as prepare_module

    pushed = []
    monkeypatch.setattr("datasets.DatasetDict.push_to_hub", lambda self, repo_id, **kw: pushed.append(repo_id))
    cohort = tmp_path / "cohort"
    make_cohort(cohort, 2, seed=4, progress=False, num_workers=1)
    args = ["prepare", "--studies", str(cohort / "studies"), "--reports", str(cohort / "reports.jsonl"),
            "--num-frames", "8", "--image-size", "16", "--val-fraction", "0", "--test-fraction", "0"]
    assert cli.main([*args, "--output-dir", str(tmp_path / "ok"), "--push-to-hub", "org/ok"]) == 0
    assert pushed == ["org/ok"]
    monkeypatch.setattr(prepare_module, "deidentify", lambda text, identity=None: text + " Call (216) 555-0142.")
    assert cli.main([*args, "--output-dir", str(tmp_path / "bad"), "--push-to-hub", "org/bad"]) == 2
    err = capsys.readouterr().err
    assert re.search(r"prepared corpus\[train\]: column 'impression' row \d+: looks like a phone or fax number", err)
    # the planted number itself, not "555" alone: a progress bar may print a rate such as "555.68 examples/s"
    assert "555-0142" not in err and pushed == ["org/ok"]
    assert not (tmp_path / "bad" / "dataset_dict.json").exists()


def test_training_push_to_hub_refuses_a_vocabulary_holding_a_corpus_identity(captured, tmp_path):
    from test_zero_shot_support import tiny_config
    from transformers import BertTokenizer

    from cmr_clip import CMRCLIPModel
    from cmr_clip.privacy import save_identity_hashes
    from cmr_clip.training import TrainConfig
    from cmr_clip.training.tasks.contrastive import save_final

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    salt = new_salt()
    save_identity_hashes(corpus, salt, identity_hashes(StudyIdentity(names={"Wojciechowski^Anna"}), salt))
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "normal", "lv", "wojciechowski", "dilated"]
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(words)}, do_lower_case=True)
    config = TrainConfig(data_dir=str(corpus), output_dir=str(tmp_path / "out"), push_to_hub="org/trained")
    model = CMRCLIPModel(tiny_config())
    with pytest.raises(PHIError, match=r"vocabulary entry \d+: is part of a patient's identity") as error:
        save_final(model, tokenizer, CMRStudyProcessor(num_frames=8, image_size=16), config, {"history": []})
    assert "wojciechowski" not in str(error.value).lower()
    assert captured["repo"] == [] and captured["files"] == {}


@pytest.mark.parametrize("uid", ["1.2.826.0.1.3680043.8.498.1", "2.25.329800735698586629295641978511506172918", "1.3.6.1.4.1.9590.100.1.2.1"])
def test_the_guard_passes_our_study_key_but_not_a_bare_record_number_in_its_place(uid):
    """A study's key (what outputs name a study by) passes the guard in any field; a hospital-style code in the same
    field, or the UID the key hides, does not."""
    key = study_key(uid)
    assert uid not in key and re.fullmatch(r"study-[0-9a-f]{10}", key)
    check_json({"metadata": {"study": key}}, "corpus")
    for planted in ("RAD-2021-000123", "A1B2C3D4", "4417730921", uid):
        with pytest.raises(PHIError):
            check_json({"metadata": {"study": planted}}, "corpus")


# Identifiers in forms our code never writes: a DICOM person name with its empty trailing components, and a
# medical record number written as a label and digits (in a report, a folder name, a value handed to a writer).
DOE = "DOE^JANE^^^"
MRN = "MRN 00123456"


def assert_refusal_hides_the_value(error: pytest.ExceptionInfo) -> None:
    message = str(error.value)
    for shown in ("DOE", "JANE", "00123456"):
        assert shown not in message, message
    assert "remove or de-identify it" in message and "then run again" in message  # the fix


@pytest.mark.parametrize("write, name, field", [
    (lambda path: write_json(path, {"runs": [{"note": f"reviewed with {DOE}"}]}), "metrics.json",
     r"runs\[0\]\.note: looks like a DICOM person name"),
    (lambda path: write_json(path, {DOE: 0.93}), "scores.json", r"top level, key 1: looks like a DICOM person name"),
    (lambda path: write_jsonl(path, [{"row": 1}, {"row": 2, "message": f"no pixels for {MRN}"}]), "skipped.jsonl",
     r"line 2\.message: looks like a medical record number"),
    (lambda path: write_text(path, f"# Summary\n\nStudies of {MRN}\n"), "summary.md",
     r"line 3: looks like a medical record number"),
])
def test_a_guarded_writer_refuses_writes_nothing_and_names_the_field_not_the_value(tmp_path, write, name, field):
    with pytest.raises(PHIError, match=rf"{re.escape(name)}: {field}") as error:
        write(tmp_path / name)
    assert not (tmp_path / name).exists()
    assert_refusal_hides_the_value(error)


def test_saving_a_corpus_refuses_an_identifier_in_a_value_or_a_column_name(tmp_path):
    from datasets import Dataset, DatasetDict

    rows = {"study_id": ["SYN00001", "SYN00002"], "impression": ["No LGE.", f"Reported by {DOE}."]}
    with pytest.raises(PHIError, match=r"prepared corpus\[train\]: column 'impression' row 1: looks like a DICOM "
                                       r"person name") as error:
        save_dataset(DatasetDict({"train": Dataset.from_dict(rows)}), tmp_path / "corpus", "prepared corpus")
    assert_refusal_hides_the_value(error)
    with pytest.raises(PHIError, match=r"corpus: column 2: its name looks like a medical record number") as error:
        save_dataset(Dataset.from_dict({"study_id": ["SYN00001"], MRN: ["x"]}), tmp_path / "corpus")
    assert_refusal_hides_the_value(error)
    assert not (tmp_path / "corpus").exists()
    save_dataset(Dataset.from_dict({"study_id": ["SYN00001"], "impression": ["No LGE."]}), tmp_path / "corpus")
    assert (tmp_path / "corpus" / "dataset_info.json").is_file()


def test_a_folder_scan_names_a_file_named_after_a_patient_by_its_place(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / f"{DOE}.json").write_text("{}")
    with pytest.raises(PHIError, match=r"the folder's file \d: its name: names someone") as error:
        scan_folder(tmp_path)
    assert_refusal_hides_the_value(error)


@pytest.mark.parametrize("name, renamed", [(MRN, True), (DOE, True), ("Doe_Jane_1962-07-04", True),
                                           ("SYN00042", False), ("40012345", False)])
def test_a_study_named_by_an_identifier_is_renamed_before_any_writer_sees_it(tmp_path, name, renamed):
    """What outputs name a study by: a folder named after a patient or a labelled record number becomes `study N`;
    the user's own bare codes stay, and a local writer passes them, while the upload guard refuses a bare
    hospital-style number in an id field (a pushed corpus drops its study ids)."""
    shown = safe_study_name(name, 3)
    assert shown == ("study 4" if renamed else name)
    write_json(tmp_path / "answers.json", [{"study": shown, "scores": {"lge": 0.5}}], "the --json file")
    check_json({"study_ids": [shown]}, "manifest.json", local=True)
    if name == "40012345":
        with pytest.raises(PHIError, match=r"manifest.json: study_ids\[0\]: is an identifier field"):
            check_json({"study_ids": [shown]}, "manifest.json")


def test_a_prompt_set_with_an_identifier_is_not_saved(tmp_path):
    from cmr_clip.pipelines.prompts import MODEL_PROMPTS_FILE, PromptSet

    prompts = PromptSet.load(None)
    prompts.description = f"thresholds tuned on {MRN}"
    with pytest.raises(PHIError, match=rf"{MODEL_PROMPTS_FILE}: description: looks like a medical record number") as error:
        prompts.save(tmp_path)
    assert_refusal_hides_the_value(error)
    assert list(tmp_path.iterdir()) == []


def test_a_saved_model_refuses_metrics_or_a_config_with_an_identifier(tmp_path):
    """The training and fine-tuning writers: metrics handed in, and a config whose corpus folder is named after a
    patient's record number, are refused before metrics.json / the fine-tune config are written."""
    from test_zero_shot_support import tiny_config
    from transformers import BertTokenizer

    from cmr_clip import CMRCLIPModel
    from cmr_clip.training import FinetuneConfig, TrainConfig
    from cmr_clip.training.tasks.classification import FINETUNE_CONFIG_FILE, save_finetuned
    from cmr_clip.training.tasks.contrastive import save_final

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "normal", "lv"]
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(words)}, do_lower_case=True)
    model = CMRCLIPModel(tiny_config())
    trained = tmp_path / "trained"
    with pytest.raises(PHIError, match=r"metrics.json: final.note: looks like a DICOM person name") as error:
        save_final(model, tokenizer, CMRStudyProcessor(num_frames=8, image_size=16),
                   TrainConfig(data_dir=str(tmp_path), output_dir=str(trained)), {"final": {"note": f"checked by {DOE}"}})
    assert_refusal_hides_the_value(error)
    assert not (trained / "metrics.json").exists()

    finetuned = tmp_path / "finetuned"
    config = FinetuneConfig(model_dir=str(trained), data_dir=f"/data/{MRN}/corpus", labels=["lge"],
                            output_dir=str(finetuned))
    with pytest.raises(PHIError, match=rf"{FINETUNE_CONFIG_FILE}: data_dir: is a path with a folder or file named "
                                       "after someone") as error:
        save_finetuned(model, config, {"labels": ["lge"]})
    assert_refusal_hides_the_value(error)
    assert not (finetuned / FINETUNE_CONFIG_FILE).exists() and not (finetuned / "metrics.json").exists()


def test_a_local_writer_passes_the_keys_and_paths_tools_write_but_not_a_folder_named_after_a_patient(tmp_path):
    ours = {"config": {"resume": "/runs/whole/checkpoints/step-00000004", "output_dir": "/runs/S000123"},
            "study_ids": ["S000001", "40012345"], "hits": [{"study": "SYN00042", "score": 0.7}]}
    write_json(tmp_path / "metrics.json", ours)
    assert json.loads((tmp_path / "metrics.json").read_text()) == ours
    for planted in (f"/data/{MRN}/corpus", f"/data/{DOE}/corpus"):
        with pytest.raises(PHIError, match=r"run.json: config.data_dir: is a path with a folder or file named after "
                                           r"someone") as error:
            write_json(tmp_path / "run.json", {"config": {"data_dir": planted}})
        assert_refusal_hides_the_value(error)
    assert not (tmp_path / "run.json").exists()


def test_a_training_run_whose_config_names_someone_stops_before_it_trains(tmp_path):
    """The run's configuration is written into metrics.json when training ends; the guard checks it when the run
    starts, so a folder named after a patient costs seconds, not a training run."""
    from cmr_clip.training import FinetuneConfig, TrainConfig, finetune, train

    out = tmp_path / DOE / "run"
    with pytest.raises(PHIError, match=r"metrics.json: config.output_dir: is a path with a folder or file named") as error:
        train(TrainConfig(data_dir=str(tmp_path / "no-corpus-here"), output_dir=str(out)))
    assert_refusal_hides_the_value(error)
    with pytest.raises(PHIError, match=r"metrics.json: config.data_dir: is a path"):
        finetune(FinetuneConfig(model_dir=str(tmp_path), data_dir=f"/data/{MRN}/corpus", labels=["lge"],
                                output_dir=str(tmp_path / "finetuned")))
    assert not (tmp_path / DOE).exists() and not (tmp_path / "finetuned").exists()
