"""``genai`` command line: ``main(argv)`` assembles the command groups of ``genai.commands`` (and
those of installed packages, through the ``genai.commands`` entry point) and maps errors to exit
codes. Also here, once for every command: the option validators, the help formatter (help shows
defaults) and the batch loop of the commands that process many inputs.

Every command group is a module with ``register(subparsers)``, which sets ``handler`` on its
parsers: ``handler(args) -> exit code``.

Exit codes: 0 success; 1 some inputs failed (each reported on stderr, one line per file);
2 the command itself cannot run (bad arguments, unknown model, missing weights);
3 an internal error (a bug: one line, ``--debug`` shows the traceback);
130 interrupted (rerun the same command: finished outputs are skipped).
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from genai.errors import GenaiError
from genai.progress import Bar, ProgressFn

# the command groups of genai itself, in the order of `genai --help`
GROUPS = ("upscale", "remaster", "models", "design", "synth")

log = logging.getLogger("genai")


# --------------------------------------------------------------------------- validators


def _number(kind: type, text: str, ok: Callable[[Any], bool], what: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"{what}, got {text}")
    return value


def positive_int(text: str) -> int:
    return _number(int, text, lambda v: v > 0, "must be a positive integer")


def non_negative_int(text: str) -> int:
    return _number(int, text, lambda v: v >= 0, "must be 0 or a positive integer")


def positive_float(text: str) -> float:
    return _number(float, text, lambda v: math.isfinite(v) and v > 0, "must be a positive number")


def fraction(text: str) -> float:
    """A number in [0, 1)."""
    return _number(float, text, lambda v: 0 <= v < 1, "must be in [0, 1)")


def open_fraction(text: str) -> float:
    """A number in (0, 1)."""
    return _number(float, text, lambda v: 0 < v < 1, "must be in (0, 1)")


def widths(text: str) -> tuple[int, ...]:
    """Channel widths per U-Net level: two or more positive multiples of 8, e.g. ``16,32,64``."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected widths like 16,32,64, got {text!r}") from None
    if len(values) < 2 or any(v < 8 or v % 8 for v in values):
        raise argparse.ArgumentTypeError(f"expected two or more multiples of 8, got {text!r}")
    return values


def pair(kind: type, sep: str = ":") -> Callable[[str], tuple]:
    """An ``A:B`` argument as ``(kind(A), kind(B))``."""

    def parse(text: str) -> tuple:
        try:
            a, b = (kind(v) for v in text.lower().split(sep))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected A{sep}B ({kind.__name__}s), got {text!r}") from None
        return a, b

    return parse


# --------------------------------------------------------------------------- parsers


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows each option's default, unless it has none or its help already says it."""

    @staticmethod
    def default_text(action: argparse.Action) -> str | None:
        """``(default: X)`` for an option with a default its help does not mention, else None."""
        default = action.default
        if (not action.option_strings or any(default is v for v in (None, False, argparse.SUPPRESS))
                or "default" in (action.help or "") or isinstance(action, argparse._HelpAction)):
            return None
        shown = ",".join(map(str, default)) if isinstance(default, (tuple, list)) else str(default)
        return f"(default: {shown})"

    def _format_action(self, action: argparse.Action) -> str:
        text = self.default_text(action)
        if text is not None:
            action = copy.copy(action)
            action.help = f"{action.help or ''} {text.replace('%', '%%')}".strip()
        return super()._format_action(action)


class Parser(argparse.ArgumentParser):
    """The parser of every command (sub-parsers inherit it): help shows defaults."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="only errors")
    p.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    p = Parser(prog="genai", description="genai: generative AI suite (super-resolution, synthetic data, "
                                          "generative design)")
    add_common_arguments(p)
    sub = p.add_subparsers(dest="command", required=True)
    for name in GROUPS:
        importlib.import_module(f"genai.commands.{name}").register(sub)
    for ep in entry_points(group="genai.commands"):  # e.g. serve and keys, from the serving package
        ep.load()(sub)
    return p


# --------------------------------------------------------------------------- the batch loop


@dataclass
class Batch:
    """What ``run_batch`` did: results in order, the failed items, and where Ctrl-C stopped it."""
    results: list[tuple[Any, Any]] = field(default_factory=list)
    failed: list[Any] = field(default_factory=list)
    interrupted: Any = None


def run_batch(items: Iterable, work: Callable[[Any, ProgressFn], Any], *, quiet: bool = False,
              debug: bool = False, unit: str = "file", item_unit: str | None = None, desc: str | None = None,
              source: Callable[[Any], object] = str, target: Callable[[Any], object] = str) -> Batch:
    """``work(item, progress)`` for each item, with a bar over the items (and one per item when
    ``item_unit`` is given). A failing item is one line on stderr (``error: ...``: its GenaiError,
    ``target(item): cannot write`` on an OSError, an internal error naming ``source(item)``) and
    the batch goes on; Ctrl-C stops it (``Batch.interrupted``); ``--debug`` re-raises bugs."""
    items = list(items)
    batch = Batch()
    with Bar(unit, quiet=quiet, total=len(items), desc=desc) as bar:
        for item in items:
            with Bar(item_unit or unit, quiet=quiet or not item_unit, desc=str(source(item))[-24:]) as inner:
                try:
                    batch.results.append((item, work(item, inner)))
                except KeyboardInterrupt:
                    batch.interrupted = item
                    return batch
                except GenaiError as exc:
                    bar.write(f"error: {exc}")
                    batch.failed.append(item)
                except OSError as exc:
                    bar.write(f"error: {target(item)}: cannot write ({exc.strerror or exc})")
                    batch.failed.append(item)
                except Exception as exc:  # noqa: BLE001 - a bug on one item: report it, go on
                    if debug:
                        raise
                    bar.write(f"error: {source(item)}: internal error: {type(exc).__name__}: {exc} "
                              "(rerun with --debug for details)")
                    batch.failed.append(item)
            bar.step()
    return batch


# --------------------------------------------------------------------------- main


def setup_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="genai: %(message)s",
                        stream=sys.stderr)
    for noisy in ("torch", "onnxscript", "onnx_ir", "torch.onnx"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def run_handler(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """``handler(args)`` with errors mapped to exit codes: a GenaiError is one line and 2, Ctrl-C
    130, anything else (a bug) one line and 3 (``--debug``: the traceback)."""
    try:
        return handler(args)
    except GenaiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug: one line unless --debug
        if getattr(args, "debug", False):
            raise
        print(f"error: internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)",
              file=sys.stderr)
        return 3


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace | int:
    """The parsed arguments, or the exit code of ``--help`` (0) or of bad arguments (2)."""
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2


def main(argv: list[str] | None = None) -> int:
    args = parse(build_parser(), argv)
    if isinstance(args, int):
        return args
    setup_logging(args.quiet)
    return run_handler(args.handler, args)


if __name__ == "__main__":
    sys.exit(main())
