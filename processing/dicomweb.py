"""Studies straight from a PACS over DICOMweb (QIDO-RS to search, WADO-RS to retrieve), on `dicomweb-client`.

A `DICOMwebSource` stands where a study folder stands (`read_study`, `read_studies`, `list_studies`, the
processor, the pipelines, `inspect`, `prepare`) and goes through the same two passes as files:

- the header pass fetches the study's metadata (WADO-RS, DICOM JSON) and turns every instance into pydicom
  headers, then into `Frame`s with the very code that reads files' headers (`headers.frames_of_header`), so
  grouping, classification and layout run exactly as for files;
- the decode pass (`processing/decoding.py`) asks each selected frame's `DICOMwebInstance` for its pixels:
  one WADO-RS frame request each (uncompressed), or the whole instance, once, where the server has no frame
  retrieval.

Connection: a `requests.Session` the user configures (bearer token in its headers, basic auth, client
certificates, proxies), a timeout per request and bounded retries (connection failures, and HTTP 408, 429,
503, 504). Failures raise typed errors naming the fix (`PACSUnreachableError`, `PACSAuthenticationError`,
`StudyNotOnServerError`); messages name the server by host and port, a study by its key, never by UID.
Needs the `cmr-clip[dicomweb]` extra.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np
import pydicom
import pydicom.config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from ..privacy import study_key
from .errors import DICOMwebError, PACSAuthenticationError, PACSUnreachableError, StudyNotOnServerError
from .headers import Frame, SkippedFile, frames_of_header, new_salt, scan_each
from .sources import FileRef

DICOMWEB_EXTRA = "cmr-clip[dicomweb]"
# Frames are asked for uncompressed: the server transcodes, and pydicom needs no codec for them.
FRAME_MEDIA_TYPES = (("application/octet-stream", ExplicitVRLittleEndian),)
# What a frame's pixel bytes need to become an array.
PIXEL_KEYWORDS = ("Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
                  "SamplesPerPixel", "PhotometricInterpretation", "PlanarConfiguration")
RETRIABLE_STATUS = (408, 429, 503, 504)
# Statuses with which a server says it cannot serve single frames (then the whole instance is fetched).
NO_FRAME_RETRIEVAL = (400, 404, 406, 415, 501)
CREDENTIALS_FIX = ("give a requests.Session with valid credentials (session.headers['Authorization'] = 'Bearer "
                   "TOKEN', session.auth = (user, password) or session.cert = (cert, key)); on the command line "
                   "--dicomweb-token or --dicomweb-user (passwords and tokens also from CMR_CLIP_DICOMWEB_TOKEN / "
                   "CMR_CLIP_DICOMWEB_PASSWORD)")


@dataclass
class DICOMwebServer:
    """Where and how to reach a DICOMweb server: its base URL (the root of QIDO, WADO and STOW, e.g.
    `https://pacs.example.org/dicom-web`), a `requests.Session` carrying the credentials (None: a plain one),
    the timeout of one request in seconds and how many times a failed request is retried."""

    url: str
    session: object = field(default=None, repr=False)
    timeout: float = 30.0
    retries: int = 2
    _client: object = field(default=None, init=False, repr=False, compare=False)

    def __repr__(self) -> str:
        return f"DICOMwebServer({self.host})"

    @classmethod
    def connect(cls, url: str, token: str | None = None, user: str | None = None, password: str | None = None,
                cert: str | None = None, timeout: float = 30.0, retries: int = 2) -> DICOMwebServer:
        """A server reached with a bearer `token`, or basic auth (`user`, `password`), and/or a client
        certificate (`cert`: a PEM file holding the certificate and its key)."""
        import requests

        session = requests.Session()
        if token:
            session.headers["Authorization"] = f"Bearer {token}"
        if user:
            session.auth = (user, password or "")
        if cert:
            session.cert = cert
        return cls(url, session=session, timeout=timeout, retries=retries)

    @property
    def host(self) -> str:
        """Host and port only: a URL may carry credentials or a tenant path."""
        parts = urlsplit(self.url)
        return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)

    def study(self, study_instance_uid: str) -> DICOMwebSource:
        """The study with this StudyInstanceUID, as a source for `read_study`."""
        return DICOMwebSource(self, study_instance_uid=str(study_instance_uid))

    def query(self, **filters) -> DICOMwebSource:
        """The MR studies a QIDO-RS search finds: filters by attribute keyword, as QIDO-RS takes them, e.g.
        `PatientID="X"`, `StudyDate="20240101-20240331"` (a range), `AccessionNumber="A1"`."""
        return DICOMwebSource(self, filters=filters)

    @property
    def client(self):
        if self._client is None:
            self._client = _make_client(self)
        return self._client

    def call(self, action: str, method: str, *args, **kwargs):
        """`client.<method>(*args)`, retried on connection failures, with HTTP failures as typed errors."""
        import requests

        for attempt in range(self.retries + 1):
            try:
                return getattr(self.client, method)(*args, **kwargs)
            except requests.HTTPError as error:
                raise http_error(error.response, action, self.host) from None
            except (requests.ConnectionError, requests.Timeout) as error:
                failure = type(error).__name__
                if attempt < self.retries:
                    time.sleep(min(0.5 * 2**attempt, 4.0))
        raise PACSUnreachableError(
            f"the DICOMweb server at {self.host} did not answer while {action} ({failure}, {self.retries + 1} tries, "
            f"{self.timeout:g} s timeout each): check the URL, that the server is running and that the network or "
            "proxy lets you through; raise the timeout for a slow server")

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_client": None}  # a client holds a live connection pool: rebuilt where unpickled


def _make_client(server: DICOMwebServer):
    try:
        import requests
        from dicomweb_client import DICOMwebClient
    except ImportError as error:
        raise ImportError(f"reading studies from a PACS needs dicomweb-client: pip install '{DICOMWEB_EXTRA}'") from error
    client = DICOMwebClient(server.url, session=server.session or requests.Session(), timeout=server.timeout)
    client.set_http_retry_params(retry=True, max_attempts=server.retries + 1, wait_exponential_multiplier=500,
                                 retriable_error_codes=RETRIABLE_STATUS)
    return client


def http_error(response, action: str, host: str) -> DICOMwebError:
    """The typed error for a refused request (the response's URL is not shown: it holds the study's UIDs)."""
    status = getattr(response, "status_code", None)
    if status in (401, 403):
        return PACSAuthenticationError(f"the DICOMweb server at {host} refused the credentials (HTTP {status}) while "
                                       f"{action}: {CREDENTIALS_FIX}", status=status)
    if status == 404:
        return StudyNotOnServerError(f"the DICOMweb server at {host} has no such resource (HTTP 404) while {action}: "
                                     "check the StudyInstanceUID (or the query) and the base URL (it ends at the "
                                     "DICOMweb root, e.g. .../dicom-web)", status=status)
    return DICOMwebError(f"the DICOMweb server at {host} answered HTTP {status} while {action}; its logs say why", status=status)


@dataclass(frozen=True)
class DICOMwebInstance(FileRef):
    """One instance on the server, standing where a file stands: `open()` fetches the whole instance,
    `read_frame(i)` one frame's pixels. Its UIDs are for requests only, never printed."""

    uids: tuple[str, str, str] = field(default=("", "", ""), repr=False)
    source: DICOMwebSource | None = field(default=None, repr=False, compare=False)

    def open(self):
        return io.BytesIO(self.source.instance_bytes(self))

    def read_frame(self, frame_index: int | None) -> np.ndarray:
        return self.source.frame_pixels(self, frame_index)


class DICOMwebSource:
    """One study (by StudyInstanceUID) or the MR studies a QIDO-RS query finds, on a `DICOMwebServer`.

    Counts what it fetched: `frames_retrieved` (WADO-RS frame requests) and `instances_retrieved` (whole
    instances, where the server has no frame retrieval)."""

    def __init__(self, server: DICOMwebServer, study_instance_uid: str | None = None, filters: dict | None = None):
        if (study_instance_uid is None) == (filters is None):
            raise ValueError("a DICOMweb source is one study (study_instance_uid) or a query (filters), not both or neither")
        self.server = server
        self.study_instance_uid = study_instance_uid
        self.filters = filters
        self.frames_retrieved = 0
        self.instances_retrieved = 0
        self._refs: list[DICOMwebInstance] | None = None
        self._headers: dict[tuple[str, str, str], Dataset] = {}
        self._instances: dict[tuple[str, str, str], bytes] = {}
        self._frame_retrieval = True

    def __repr__(self) -> str:
        what = f"study {study_key(self.study_instance_uid)}" if self.study_instance_uid else \
            f"MR studies matching {', '.join(sorted(self.filters)) or 'any'}"
        return f"DICOMwebSource({self.server.host}, {what})"

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_refs": None, "_headers": {}, "_instances": {}}

    def study_uids(self) -> list[str]:
        """The StudyInstanceUIDs this source names (a QIDO-RS search for a query)."""
        if self.study_instance_uid is not None:
            return [self.study_instance_uid]
        found = self.server.call("searching for studies (QIDO-RS)", "search_for_studies",
                                 search_filters={**self.filters, "ModalitiesInStudy": "MR"})
        uids = [str(item["0020000D"]["Value"][0]) for item in found if item.get("0020000D", {}).get("Value")]
        if not uids:
            raise StudyNotOnServerError(
                f"no MR study on the DICOMweb server at {self.server.host} matches the query on "
                f"{', '.join(sorted(self.filters)) or 'no field'}: check the filters (dates as YYYYMMDD-YYYYMMDD)")
        return uids

    def instances(self) -> list[DICOMwebInstance]:
        """Every instance of the source's studies, numbered, with its header fetched (WADO-RS metadata), once."""
        if self._refs is not None:
            return self._refs
        refs = []
        for uid in self.study_uids():
            for ds in self._study_headers(uid):
                uids = (uid, str(ds.get("SeriesInstanceUID", "")), str(ds.get("SOPInstanceUID", "")))
                refs.append(DICOMwebInstance(name="/".join(uids[1:]), path="", index=len(refs), uids=uids, source=self))
                self._headers[uids] = ds
        self._refs = refs
        return refs

    def _study_headers(self, uid: str) -> list[Dataset]:
        action = f"fetching the headers of study {study_key(uid)} (WADO-RS metadata)"
        items = self.server.call(action, "retrieve_study_metadata", uid)
        if not items:
            raise StudyNotOnServerError(f"the DICOMweb server at {self.server.host} holds no study with key "
                                        f"{study_key(uid)}: check the StudyInstanceUID and that the study was sent there")
        with pydicom.config.disable_value_validation():  # as for files, values are checked where the header pass reads them
            headers = [Dataset.from_json(_without_bulk_data(item)) for item in items]
        # Files are read in path order; instances in series and instance order, the same for every server.
        return sorted(headers, key=lambda ds: (_number(ds, "SeriesNumber"), str(ds.get("SeriesInstanceUID", "")),
                                               _number(ds, "InstanceNumber"), str(ds.get("SOPInstanceUID", ""))))

    def scan(self) -> tuple[list[Frame], list[SkippedFile], int]:
        """The header pass: (frames, instances set aside, number of instances)."""
        refs, salt = self.instances(), new_salt()
        frames, skipped = scan_each(refs, lambda ref: frames_of_header(ref, self._headers[ref.uids], None, salt))
        return frames, skipped, len(refs)

    def header(self, ref: DICOMwebInstance) -> Dataset:
        return self._headers[ref.uids]

    def headers(self) -> list[Dataset]:
        """Every instance's header (for the identity pass, which reads names only to scrub reports)."""
        return [self._headers[ref.uids] for ref in self.instances()]

    def frame_pixels(self, ref: DICOMwebInstance, frame_index: int | None) -> np.ndarray:
        """One frame's stored values (as pydicom decodes them from a file), by WADO-RS frames when the server
        has them, else from the whole instance."""
        if self._frame_retrieval:
            try:
                data = self.server.call(f"fetching a frame of study {study_key(ref.uids[0])} (WADO-RS frames)",
                                        "retrieve_instance_frames", *ref.uids,
                                        frame_numbers=[1 if frame_index is None else frame_index + 1],
                                        media_types=FRAME_MEDIA_TYPES)
                self.frames_retrieved += 1
                return decode_frame_bytes(self.header(ref), bytes(data[0]))
            except DICOMwebError as error:
                if error.status not in NO_FRAME_RETRIEVAL:
                    raise
                self._frame_retrieval = False
        with self.open_instance(ref) as handle:
            return pydicom.pixels.pixel_array(handle, index=frame_index)

    def open_instance(self, ref: DICOMwebInstance) -> io.BytesIO:
        return io.BytesIO(self.instance_bytes(ref))

    def instance_bytes(self, ref: DICOMwebInstance) -> bytes:
        """The whole instance as a DICOM file, fetched once (WADO-RS instance)."""
        if ref.uids not in self._instances:
            ds = self.server.call(f"fetching an instance of study {study_key(ref.uids[0])} (WADO-RS)",
                                  "retrieve_instance", *ref.uids)
            self.instances_retrieved += 1
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            self._instances[ref.uids] = buffer.getvalue()
        return self._instances[ref.uids]


def decode_frame_bytes(header: Dataset, data: bytes) -> np.ndarray:
    """Uncompressed pixel bytes of one frame -> its array, decoded by pydicom as it decodes a file's frame."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for keyword in PIXEL_KEYWORDS:
        if keyword in header:
            setattr(ds, keyword, header[keyword].value)
    ds.NumberOfFrames = 1
    ds.add_new(0x7FE00010, "OW" if int(header.get("BitsAllocated", 8)) > 8 else "OB", data)
    return ds.pixel_array


def _without_bulk_data(item: dict) -> dict:
    """The DICOM JSON of an instance without its bulk data references (pixel data, large private blobs): they
    stay on the server, headers are all the first pass needs. Dropped rather than handled, as pydicom
    inspects a bulk data handler's signature once per element, which made up most of the header pass."""
    return {tag: value if "BulkDataURI" not in value else {"vr": value["vr"]} for tag, value in item.items()}


def _number(ds: Dataset, keyword: str) -> float:
    try:
        return float(ds.get(keyword))
    except (TypeError, ValueError):
        return float("inf")


def is_url(source) -> bool:
    return isinstance(source, str) and source.lower().startswith(("http://", "https://"))


def as_dicomweb_source(source, study: int | str | None = None) -> DICOMwebSource | None:
    """`source` as a DICOMweb source when it is one: a `DICOMwebSource`, a `DICOMwebServer` (every MR study,
    or the one `study` names by StudyInstanceUID) or a base URL string (the same); None for anything else."""
    if isinstance(source, DICOMwebSource):
        return source
    server = DICOMwebServer(source) if is_url(source) else source if isinstance(source, DICOMwebServer) else None
    if server is None:
        return None
    if isinstance(study, str) and not study.isdigit() and not study.startswith("study-"):
        return server.study(study)
    return server.query()
