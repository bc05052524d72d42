"""What every `cmr-clip` command shares: running it, its exit codes, printing typed errors, the flags that
name the same thing in every command, flags derived from a config dataclass, and `--json` output.

A command module holds `add_arguments(parser)` and `run(args) -> int` and, where it calls a library that
raises its own typed errors, `ERRORS` (a tuple of exception types). `execute` parses, runs, and turns a
typed error into one line on stderr (the error's type and message; no traceback) and an exit code:

    0  done
    1  some inputs failed (the others were done; each failure was printed)
    2  usage error, or nothing done
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import logging
import os
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any, get_args, get_origin, get_type_hints

from .. import privacy
from ..precision import DTYPE_CHOICES, QUANTIZE_CHOICES, Precision, PrecisionError
from ..privacy import PHIError, safe_study_name
from ..processing.dicomweb import DICOMwebServer
from ..processing.errors import CMRStudyError
from ..processing.feature_extraction_cmr_study import check_field_of_view
from ..processing.identity import read_identity

DONE, SOME_FAILED, NOTHING_DONE = 0, 1, 2

# Spellings of one idea that earlier releases accepted; they keep working, with a notice, for one release.
DEPRECATED_SPELLINGS = {"--output-dir": ("--out", "--output"), "--data-dir": ("--data",)}

# Errors every command may meet: a study that cannot be read, a path that is not there, a precision that cannot run.
COMMON_ERRORS = (CMRStudyError, PHIError, FileNotFoundError, NotADirectoryError, PrecisionError)


class UsageError(ValueError):
    """Flags that cannot go together, or a value no flag type can check; exit code 2."""


# Secrets come from the environment, so that they stay out of shell histories and process listings.
TOKEN_ENV, PASSWORD_ENV = "CMR_CLIP_DICOMWEB_TOKEN", "CMR_CLIP_DICOMWEB_PASSWORD"


def add_dicomweb_arguments(parser: argparse.ArgumentParser, group=None) -> None:
    """`--dicomweb URL` (in `group` when given, e.g. a mutually exclusive one) and how to authenticate."""
    (group or parser).add_argument("--dicomweb", metavar="URL",
                                   help="read the studies from this DICOMweb server (its root, e.g. https://pacs/dicom-web)")
    parser.add_argument("--dicomweb-token", help=f"bearer token for --dicomweb (better: the {TOKEN_ENV} variable)")
    parser.add_argument("--dicomweb-user", help=f"basic-auth user for --dicomweb; its password from {PASSWORD_ENV}")
    parser.add_argument("--dicomweb-cert", help="client certificate (PEM with its key) for --dicomweb")
    parser.add_argument("--dicomweb-timeout", type=float, default=30.0, help="seconds per request to --dicomweb")


def dicomweb_server(args: argparse.Namespace) -> DICOMwebServer | None:
    """The server `--dicomweb` names, with the credentials the flags and the environment give; None without it."""
    if not args.dicomweb:
        return None
    token = args.dicomweb_token or os.environ.get(TOKEN_ENV)
    return DICOMwebServer.connect(args.dicomweb, token=token, user=args.dicomweb_user,
                                  password=os.environ.get(PASSWORD_ENV), cert=args.dicomweb_cert,
                                  timeout=args.dicomweb_timeout)


def outcome(done: int, failed: int) -> int:
    """The exit code of a command that handled `done` inputs and could not handle `failed` ones."""
    if not done:
        return NOTHING_DONE
    return SOME_FAILED if failed else DONE


def print_error(command: str, error: BaseException) -> None:
    """One line on stderr: the command, the error's type and its message (library messages name no patient;
    the operating system's name the path, which may, so theirs is left out)."""
    if isinstance(error, OSError) and error.filename:
        message = f"{error.strerror}: a path given (not shown: it may name a patient) does not exist or cannot be read."
    else:
        message = " ".join(str(error).split())
    print(f"cmr-clip {command}: {type(error).__name__}: {message}", file=sys.stderr)


def log_to_console() -> None:
    """Show the library's progress messages (INFO) on the console, for commands that run long."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")


def description(module: ModuleType) -> str:
    return (module.__doc__ or "").split("\n\n")[0]


def build_parser(command: str, module: ModuleType) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"cmr-clip {command}", description=description(module))
    module.add_arguments(parser)
    return parser


def execute(command: str, module: ModuleType, argv: list[str]) -> int:
    """Parse `argv` with the command's flags, run it, and map typed errors to the exit-code table."""
    parser = build_parser(command, module)
    try:
        args = parser.parse_args(argv)
        missing = _missing_flags(args)
        if missing:
            parser.error(f"the following arguments are required: {', '.join(missing)}")
    except SystemExit as exit_:  # argparse: 0 after --help, 2 after a usage error it printed
        return int(exit_.code or 0)
    try:
        return int(module.run(args))
    except (UsageError, *COMMON_ERRORS, *getattr(module, "ERRORS", ())) as error:
        print_error(command, error)
        return NOTHING_DONE


class _DeprecatedSpelling(argparse.Action):
    """Stores like the current flag and says on stderr which spelling replaces it."""

    def __init__(self, option_strings, dest, replacement: str, **kwargs):
        self.replacement = replacement
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: {option_string} is deprecated and will be removed in the next release; use "
              f"{self.replacement}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_flag(parser, flag: str, **kwargs) -> None:
    """`parser.add_argument(flag, ...)`, and for `--output-dir` and `--data-dir` their deprecated spellings.

    The old spellings are separate, hidden options rather than aliases so that each can print its notice;
    `required` is checked by `execute` after parsing, as either spelling satisfies it."""
    old = DEPRECATED_SPELLINGS.get(flag, ())
    required = kwargs.pop("required", False) if old else False
    if required:
        kwargs["help"] = f"{kwargs.get('help', '')} (required)".strip()
    action = parser.add_argument(flag, **kwargs)
    for spelling in old:
        parser.add_argument(spelling, dest=action.dest, action=_DeprecatedSpelling, replacement=flag,
                            type=kwargs.get("type"), nargs=kwargs.get("nargs"), default=argparse.SUPPRESS,
                            help=argparse.SUPPRESS)
    if required:
        parser.set_defaults(**{f"_required_{action.dest}": flag})


def _missing_flags(args: argparse.Namespace) -> list[str]:
    """The required `--output-dir`/`--data-dir` flags (see `add_flag`) given in neither spelling."""
    return [flag for name, flag in vars(args).items()
            if name.startswith("_required_") and getattr(args, name[len("_required_"):], None) in (None, "")]


def add_precision_flags(parser: argparse.ArgumentParser) -> None:
    """`--dtype`, `--quantize` and `--compile`, the inference precision of the command's model (see
    `cmr_clip.precision`)."""
    group = parser.add_argument_group("inference precision")
    group.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto",
                       help="the dtype the model runs in (default: auto, bfloat16 where the CPU or GPU has native "
                            "bfloat16, else float32; float16: GPU only)")
    group.add_argument("--quantize", choices=("none", *QUANTIZE_CHOICES), default="none",
                       help='int8: dynamic int8 quantisation of the Linear layers (torchao: pip install "cmr-clip[int8]"; '
                            "fast where the CPU has AVX512-VNNI)")
    group.add_argument("--compile", action="store_true",
                       help="run the video tower through torch.compile: 15 to 60 s on the first batch, then faster "
                            "(most with --quantize int8); for many studies, not one. Needs a C++ compiler on a CPU")


def precision_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """`dtype`, `quantize` and `compile` from `add_precision_flags`' flags, as the pipelines take them."""
    return {"dtype": args.dtype, "quantize": None if args.quantize == "none" else args.quantize,
            "compile": args.compile}


def print_precision(command: str, precision: Precision) -> None:
    """One line on stderr: the precision the command's model runs in and why it was picked."""
    print(f"cmr-clip {command}: {precision}", file=sys.stderr)


def add_json_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--json", metavar="FILE", help=f"also write {what} to this JSON file")


def write_json(path: str | Path | None, data: Any, where: str = "the --json file") -> None:
    """A command's JSON output (the `--json` file, when one was asked for), through the privacy guard."""
    if path:
        privacy.write_json(path, data, where)


def print_failures(command: str, failures: list[tuple[str, str]]) -> None:
    """One line on stderr per input that failed: `(name as the user gave it, "ErrorType: message")`."""
    for name, error in failures:
        print(f"cmr-clip {command}: {name}: {error}", file=sys.stderr)


def answers_outcome(command: str, names: list[str], answers: list[dict]) -> int:
    """The exit code of a pipeline's answers (a failed study carries `error`), each failure also on stderr."""
    failed = [(name, answer["error"]) for name, answer in zip(names, answers) if "error" in answer]
    print_failures(command, failed)
    return outcome(len(answers) - len(failed), len(failed))


def study_names(paths: list[str]) -> list[str]:
    """How studies are shown: by position and folder name (the user's own input), never by what the files say."""
    return [safe_study_name(Path(p).name, i, read_identity(p)) for i, p in enumerate(paths)]


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (and of its dataclass bases), as one line each."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for statement, following in zip(body, body[1:]):
            if (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)
                    and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)):
                docs[statement.target.id] = " ".join(following.value.value.split())
    return docs


def _value_type(hint, default) -> tuple[type, bool]:
    """(the type argparse converts each value to, whether the field takes a list)."""
    options = [a for a in get_args(hint) if a is not type(None)]
    if get_origin(hint) is not None and len(options) == 1:
        hint = options[0]
    if hint is list or get_origin(hint) is list:
        items = get_args(hint) or ([type(default[0])] if default else [str])
        return items[0], True
    return hint, False


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type, *, flags: dict[str, str] | None = None,
                            required: tuple[str, ...] = (), choices: dict[str, tuple] | None = None,
                            skip: tuple[str, ...] = ()) -> None:
    """One flag per field of the dataclass `cls` (but the `skip`ped ones, whose flags the command adds itself),
    its help the field's docstring and its default.

    A field `a_b` becomes `--a-b` unless `flags` names another spelling; booleans take `--x/--no-x`, lists
    one or more values, dicts a JSON object. Flags not given stay unset (see `given_fields`), so that a
    config file's values are overridden only by flags actually given."""
    hints, docs = get_type_hints(cls), field_docs(cls)
    for item in (f for f in dataclasses.fields(cls) if f.name not in skip):
        default = item.default_factory() if item.default_factory is not dataclasses.MISSING else item.default
        kind, many = _value_type(hints[item.name], default)
        help_text = docs.get(item.name, "").replace("%", "%%")
        if default not in (None, "", [], {}) and item.name not in required:
            help_text = f"{help_text} (default: {default})".strip()
        options = dict(dest=item.name, default=None, help=help_text, required=item.name in required)
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif kind is dict:
            options.update(type=json.loads, metavar="JSON")
        else:
            options.update(type=kind, choices=(choices or {}).get(item.name), nargs="+" if many else None)
        add_flag(parser, (flags or {}).get(item.name, "--" + item.name.replace("_", "-")), **options)


FIELD_OF_VIEW_METAVAR = "MM | VIEW=MM,... | none"


def parse_field_of_view(text: str | None) -> float | dict[str, float] | None:
    """`--field-of-view` (`prepare`, `demo`): "160" -> 160.0; "sax=150,4ch=220" -> {"sax": 150.0, "4ch": 220.0};
    "none" -> None (the pixel crop alone), checked as `CMRStudyProcessor` checks it (positive, known views), so
    that a bad value stops the command before any work; `UsageError` says why."""
    if text is None or text.strip().lower() == "none":
        return None
    try:
        if "=" not in text:
            value = float(text)
        else:
            pairs = [item.split("=") for item in text.split(",") if item.strip()]
            if any(len(pair) != 2 for pair in pairs):
                raise ValueError
            value = {view.strip(): float(mm) for view, mm in pairs}
    except ValueError:
        raise UsageError("--field-of-view: expected millimetres (160) or VIEW=MM pairs (sax=150,4ch=220), "
                         f"got {text!r}") from None
    try:
        return check_field_of_view(value)
    except ValueError as error:
        raise UsageError(f"--field-of-view: {error}") from None


def given_fields(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The fields of `cls` whose flags were given (see `add_dataclass_arguments`)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}
