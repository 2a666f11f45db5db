"""The ``droppos`` command: one entry point, one subcommand per part of the suite.

Each subcommand lives in its own module that exposes ``add_arguments(parser)`` and
``run(args) -> int``. Modules are imported only when their subcommand is chosen, so
``droppos pretrain`` never imports detectron2 or mmsegmentation.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "pretrain": ("droppos.pretrain.main", "DropPos or MAE pretraining of a ViT"),
    "data": ("droppos.tools.data.main", "build the embedded default datasets from Fashion-MNIST"),
    "convert": ("droppos.tools.convert.main", "convert a ViT checkpoint to timm / detectron2 / mmseg"),
    "classify": ("droppos.transfer.classification.main", "fine-tune, linear-probe or k-NN a backbone"),
    "detect": ("droppos.transfer.detection.main", "ViTDet Mask R-CNN in detectron2"),
    "segment": ("droppos.transfer.segmentation.main", "UperNet in mmsegmentation"),
    "probe": ("droppos.transfer.probes.main", "location-awareness probes of a frozen backbone"),
    "results": ("droppos.results.main", "aggregate run folders into tables and plots"),
    "bench": ("droppos.bench.main", "plan and run a backbone x task benchmark from a spec"),
}


def _load(name: str):
    module_name = COMMANDS[name][0]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            from droppos.errors import UserError

            raise UserError(f"not available in this install ({module_name} missing); "
                            "install the extras: pip install -e '.[all]' (or ./setup.sh)") from None
        raise


class _StoreOnce(argparse._StoreAction):
    """argparse's ``store``, except that an option given twice with different values is an error naming both
    (argparse would keep the last silently: ``--lr 1e-3 ... --lr 1e-4`` in a long command line)."""

    def __call__(self, parser, namespace, values, option_string=None):
        from droppos.utils.config import given_once

        given_once(parser, self.dest, option_string, values)
        super().__call__(parser, namespace, values, option_string)


class Parser(argparse.ArgumentParser):
    """The parser of every subcommand (sub-subcommands inherit it): ``store`` options are :class:`_StoreOnce`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register("action", None, _StoreOnce)
        self.register("action", "store", _StoreOnce)


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = Parser(prog="droppos", description=__doc__.splitlines()[0])
    from droppos import __version__

    parser.add_argument("--version", action="version", version=f"droppos-bench {__version__}")
    parser.add_argument("-v", "--verbose", dest="show_warnings", action="store_true",
                        help="also show the known warnings of third-party packages (hidden by default)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (_, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if name == chosen:  # only the chosen subcommand's module is imported
            _load(name).add_arguments(p)
    return parser


#: third-party warnings that say nothing about the user's run, hidden unless ``droppos -v`` (or
#: ``DROPPOS_WARNINGS=all``, which ``-v`` sets for the processes a command starts): (category, message regex)
KNOWN_WARNINGS = (
    (FutureWarning, r"`torch\.jit\.script` is deprecated"),  # torch, through a dependency's scripted module
    (UserWarning, r"This DataLoader will create \d+ worker processes"),  # torch's advice on a small machine
    (FutureWarning, r"Importing from timm\.models\.layers is deprecated"),  # mmseg / detectron2 importing old timm
    (UserWarning, r"Fail to import ``MultiScaleDeformableAttention``"),  # mmcv-lite: an op mmseg's UperNet never uses
    (UserWarning, r"torch\.meshgrid: in an upcoming release"),  # detectron2 / mmseg internals
)


def quiet_known_warnings(verbose: bool = False) -> None:
    """Hide :data:`KNOWN_WARNINGS` (every other warning is shown); ``verbose`` shows them all, here and in the
    processes this one starts."""
    import os
    import warnings

    if verbose:
        os.environ["DROPPOS_WARNINGS"] = "all"
    if os.environ.get("DROPPOS_WARNINGS") == "all":
        return
    for category, message in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


#: errors of the filesystem rather than of the program: reported in one line naming the path
_FILESYSTEM_ERRORS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT}


def main(argv: list[str] | None = None) -> int:
    from droppos.errors import UserError, print_user_error

    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), "")
    try:
        before_command = argv[:argv.index(command)] if command else argv  # -v of a subcommand is its own
        quiet_known_warnings(verbose=bool({"-v", "--verbose"} & set(before_command)))
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        return int(_load(args.command).run(args) or 0)
    except UserError as e:  # the one place where user errors are printed: one line, no traceback
        if not getattr(e, "quiet", False):  # a process that joined a failed claim: its machine's first one says it
            print_user_error(command, e)
        return e.exit_code
    except OSError as e:
        if e.errno not in _FILESYSTEM_ERRORS:
            raise
        print(f"droppos {command}: error: {e.filename or 'a file'}: {e.strerror}; free some space or choose a "
              "writable --output", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
