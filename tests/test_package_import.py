"""Importing the package prints nothing: transformers imports torchao on its way (when installed), and on a machine
without CUDA torchao logs a warning for each kernel library it cannot load and torch one for each Enum torchao
registers; `cmr_clip._quiet_imports` silences them (`precision.quiet_loggers`) for the import alone."""

import logging
import subprocess
import sys

import pytest


def test_importing_cmr_clip_writes_nothing_to_stderr():
    pytest.importorskip("torchao")  # the noise comes from torchao; without it there is nothing to silence
    result = subprocess.run([sys.executable, "-c", "import cmr_clip"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr


def test_quiet_loggers_lets_errors_through_and_restores_the_levels(caplog):
    from cmr_clip.precision import quiet_loggers

    logger = logging.getLogger("torchao")
    logger.setLevel(logging.INFO)
    with caplog.at_level(logging.DEBUG, logger="torchao"):
        logger.setLevel(logging.INFO)
        with quiet_loggers():
            logger.warning("a kernel library could not be loaded")
            logger.error("a real failure")
        logger.warning("after the import")
    messages = [record.getMessage() for record in caplog.records]
    assert messages == ["a real failure", "after the import"]
    assert logger.level == logging.INFO
