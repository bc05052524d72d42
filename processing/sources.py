"""Where a study's files come from: a directory (recursive, DICOMDIRs honoured, nested ones too), a list of
files, or a zip. A source may hold several studies; they are told apart after the header pass.

A `FileRef` knows how to hand one file's bytes to pydicom, so zip members are read without extracting the
archive. Messages name a file by its place in the study (`label`: its index in the sorted listing; frames
add series and instance numbers), never by a path component: PACS exports name folders and files after
the patient. `name` (relative to the study's folder or archive) is kept for matching only and not printed.
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO, Iterable

import pydicom

from ..privacy import file_label
from .errors import NotAStudyError

# Files that are never images, whatever their content.
_IGNORED_NAMES = {"dicomdir", "lockfile", "version", ".ds_store", "thumbs.db"}


@dataclass(frozen=True)
class FileRef:
    """One file of a study: `index` in the listing (what messages show, as `label`), `name` relative to the study
    (for matching, never printed), `path` on disk, `member` inside the zip at `path` if any."""

    name: str = field(repr=False)
    path: str = field(repr=False)
    member: str | None = field(default=None, repr=False)
    index: int = 0

    @property
    def label(self) -> str:
        return file_label(self.index)

    def open(self) -> BinaryIO:
        if self.member is None:
            return open(self.path, "rb")
        with zipfile.ZipFile(self.path) as archive:
            return io.BytesIO(archive.read(self.member))


@dataclass(frozen=True)
class MissingFile:
    """A file a DICOMDIR or a file list references but that is not there; `name` is its place, never its path."""

    name: str
    reason: str


def list_files(source) -> tuple[list[FileRef], list[MissingFile]]:
    """Every candidate file of `source` (a directory, a zip archive, a file, or an iterable of files), numbered
    in listing order."""
    refs, missing = _list_source(source)
    return [replace(ref, index=index) for index, ref in enumerate(refs)], missing


def _list_source(source) -> tuple[list[FileRef], list[MissingFile]]:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            return _list_directory(path)
        if path.is_file() and zipfile.is_zipfile(path):
            return _list_zip(path), []
        if path.is_file():
            return [FileRef(name=path.name, path=str(path))], []
        raise NotAStudyError("the study path does not exist (not shown: it may name the patient). Pass a study folder, a zip archive or a list of files.")
    if isinstance(source, Iterable):
        paths = [Path(p) for p in source]
        missing = [MissingFile(f"list entry {i + 1}", "file does not exist") for i, p in enumerate(paths) if not p.is_file()]
        root = _common_root([p for p in paths if p.is_file()])
        refs = [FileRef(name=_relative_name(p, root), path=str(p)) for p in paths if p.is_file()]
        return refs, missing
    raise NotAStudyError(f"cannot read a study from a {type(source).__name__}; pass a folder, a zip archive or a list of files.")


def _list_directory(root: Path) -> tuple[list[FileRef], list[MissingFile]]:
    """Files under `root`. A readable DICOMDIR stands for its folder and everything below it: there, only the
    files it (or a DICOMDIR nested below it) references are read. Folders no DICOMDIR covers are walked, so a
    medium with several DICOMDIRs, or one in a subfolder, gives all of their files."""
    refs, missing, seen, indexed = [], [], set(), []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        folder = Path(dirpath)
        dicomdir = next((folder / name for name in sorted(filenames) if name.lower() == "dicomdir"), None)
        listed = _files_from_dicomdir(dicomdir, root) if dicomdir is not None else None
        if listed is not None:
            indexed.append(folder)
            for ref in listed[0]:
                if ref.path not in seen:
                    seen.add(ref.path)
                    refs.append(ref)
            missing.extend(listed[1])
        if any(folder == top or top in folder.parents for top in indexed):
            continue
        for filename in sorted(filenames):
            path = folder / filename
            if filename.lower() in _IGNORED_NAMES or filename.startswith(".") or str(path) in seen:
                continue
            seen.add(str(path))
            refs.append(FileRef(name=_relative_name(path, root), path=str(path)))
    return refs, missing


def _files_from_dicomdir(dicomdir: Path, root: Path) -> tuple[list[FileRef], list[MissingFile]] | None:
    """Files referenced by a DICOMDIR (named relative to `root`); None when the DICOMDIR is unreadable (then its
    folder is walked)."""
    try:
        index = pydicom.dcmread(dicomdir)
        records = list(index.DirectoryRecordSequence)
    except Exception:  # a broken index must not hide the files next to it
        return None
    folder = dicomdir.parent
    refs, missing, seen = [], [], set()
    for number, record in enumerate(records, start=1):
        file_id = record.get("ReferencedFileID")
        if not file_id:
            continue
        parts = [file_id] if isinstance(file_id, str) else list(file_id)
        path = _resolve_case_insensitive(folder, parts)
        if path is None:
            missing.append(MissingFile(f"DICOMDIR record {number}", "referenced by DICOMDIR but missing on disk"))
        elif path not in seen:
            seen.add(path)
            refs.append(FileRef(name=_relative_name(path, root), path=str(path)))
    return refs, missing


def _resolve_case_insensitive(root: Path, parts: list[str]) -> Path | None:
    """DICOMDIR file IDs are upper case; media copied to Linux often are not."""
    current = root
    for part in parts:
        exact = current / part
        if exact.exists():
            current = exact
            continue
        if not current.is_dir():
            return None
        matches = [child for child in current.iterdir() if child.name.lower() == part.lower()]
        if not matches:
            return None
        current = matches[0]
    return current if current.is_file() else None


def _list_zip(path: Path) -> list[FileRef]:
    with zipfile.ZipFile(path) as archive:
        members = sorted(info.filename for info in archive.infolist() if not info.is_dir())
    return [
        FileRef(name=member, path=str(path), member=member)
        for member in members
        if Path(member).name.lower() not in _IGNORED_NAMES and not Path(member).name.startswith(".")
    ]


def _common_root(paths: list[Path]) -> Path | None:
    if not paths:
        return None
    return Path(os.path.commonpath([str(p.resolve().parent) for p in paths]))


def _relative_name(path: Path, root: Path | None) -> str:
    if root is None:
        return path.name
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.name
