"""The package installs every subpackage, in editable and in regular installs."""

import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _declared_packages() -> set[str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return {line.strip() for line in cfg["options"]["packages"].splitlines() if line.strip()}


def _packages_on_disk() -> set[str]:
    found = set()
    for top, name in (("cmr_clip", "cmr_clip"), ("modeling", "cmr_clip.modeling"), ("processing", "cmr_clip.processing")):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top)
            found.add(".".join([name, *rel.parts]) if rel.parts else name)
    return found


def test_every_package_directory_is_declared_in_setup_cfg():
    missing = _packages_on_disk() - _declared_packages()
    assert not missing, f"add these to [options] packages in setup.cfg: {sorted(missing)}"


def test_declared_packages_exist():
    stale = _declared_packages() - _packages_on_disk()
    assert not stale, f"setup.cfg lists packages that do not exist: {sorted(stale)}"


def test_cli_help_lists_commands(capsys):
    from cmr_clip.cli import COMMANDS, main

    assert main([]) == 2
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out
