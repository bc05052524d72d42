"""A real Orthanc PACS with its DICOMweb plugin, for the tests that read studies over DICOMweb.

`OrthancServer` starts the Debian packages' `Orthanc` binary on a free localhost port with temporary storage
and HTTP basic authentication on (`RegisteredUsers`), waits until it answers, and stops it on `stop()`.
`orthanc_or_skip()` says why a test cannot run: without the binary or the plugin it skips, except under CI
(the `CI` environment variable set), where `.ci/run` installs both and their absence is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pydicom
import pytest
import requests
from dicomweb_client import DICOMwebClient

BINARY = "Orthanc"
DEBIAN_BINARY = "/usr/sbin/Orthanc"  # not on a normal user's PATH
# Where the Debian package `orthanc-dicomweb` puts the plugin (`dpkg -L orthanc-dicomweb`).
PLUGIN_CANDIDATES = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so", "/usr/lib/orthanc/libOrthancDicomWeb.so")
USER, PASSWORD = "cmrclip", "test-password"
START_TIMEOUT_S = 30


def find_plugin() -> str | None:
    found = [path for path in PLUGIN_CANDIDATES if Path(path).is_file()]
    found += sorted(str(path) for path in Path("/usr/lib/orthanc").glob("libOrthancDicomWeb.so*"))
    return found[0] if found else None


def orthanc_or_skip() -> tuple[str, str]:
    """(binary, plugin) or skip (fail under CI) naming what is missing and how to install it."""
    binary = shutil.which(BINARY) or (DEBIAN_BINARY if Path(DEBIAN_BINARY).is_file() else None)
    plugin = find_plugin()
    if binary and plugin:
        return binary, plugin
    reason = ("Orthanc with its DICOMweb plugin is not installed (apt-get install orthanc orthanc-dicomweb); "
              f"missing: {'the Orthanc binary' if not binary else 'the DICOMweb plugin'}")
    if os.environ.get("CI"):
        pytest.fail(reason + " - CI must install them (.ci/run)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class OrthancServer:
    """One Orthanc process: `url` is its DICOMweb root, `auth` the registered user's (name, password)."""

    def __init__(self, workdir: Path):
        self.binary, self.plugin = orthanc_or_skip()
        self.workdir = Path(workdir)
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.root}/dicom-web"

    @property
    def auth(self) -> tuple[str, str]:
        return USER, PASSWORD

    def start(self) -> OrthancServer:
        storage = self.workdir / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "cmr-clip-tests", "StorageDirectory": str(storage), "IndexDirectory": str(storage),
            "HttpPort": self.port, "DicomServerEnabled": False, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD},
            "Plugins": [self.plugin], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        config_file = self.workdir / "orthanc.json"
        config_file.write_text(json.dumps(config))
        log = open(self.workdir / "orthanc.log", "wb")
        self.process = subprocess.Popen([self.binary, str(config_file)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self._wait_until_up()
        return self

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited at start: {(self.workdir / 'orthanc.log').read_text()[-2000:]}")
            try:
                if requests.get(f"{self.root}/system", auth=self.auth, timeout=1).ok:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer within {START_TIMEOUT_S} s")

    def statistics(self) -> dict:
        return requests.get(f"{self.root}/statistics", auth=self.auth, timeout=5).json()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def store_folder(server: OrthancServer, folder: Path) -> int:
    """Store every DICOM file under `folder` in the server through STOW-RS; the number stored."""
    session = requests.Session()
    session.auth = server.auth
    client = DICOMwebClient(server.url, session=session)
    datasets = [pydicom.dcmread(path) for path in sorted(Path(folder).rglob("*")) if path.is_file() and _is_dicom(path)]
    client.store_instances(datasets)
    return len(datasets)


def _is_dicom(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(132)[128:] == b"DICM"
