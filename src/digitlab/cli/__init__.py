"""The `digitlab` command line: one module per command group, a thin layer over the tasks.

`main(argv)` is callable from tests. Our own errors become one line on stderr and exit code 1;
usage errors exit 2 (argparse's convention). Nothing imports this package but `__main__` and
the console script.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Sequence

from digitlab import __version__
from digitlab.cli.commands import COMMANDS, command_word
from digitlab.cli.common import interrupted_code, last_signal
from digitlab.errors import DigitlabError
from digitlab.files import describe_os_error, one_line


class _Parser(argparse.ArgumentParser):
    """argparse's parser whose usage errors are one line (argparse prints its whole usage
    block first: the error itself was the last of many lines). Subcommands' parsers are made
    of the same class."""

    #: On the top-level parser: makes the parser of every command in full (`_unknown_option`
    #: looks for an option's owner among commands the line did not name).
    _complete: Callable[[], argparse.ArgumentParser] | None = None

    def parse_known_args(self, args=None, namespace=None):
        # Kept for `error`: argparse hands it only the message, not the words it was parsing.
        self._words = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str):
        message = self._unknown_option(message) or message
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see `{self.prog} --help`)\n")

    def _unknown_option(self, message: str) -> str | None:
        """For an "invalid choice" of this parser's action: the unknown option before it, if
        any, as the error. `digitlab knn --test-size 200` once said "invalid choice: '200'
        (choose from 'sweep')": an option no parser knows is set aside, so its value was taken
        for the action's name. None when the choice is wrong on its own."""
        actions = [a for a in self._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions or "invalid choice" not in message:
            return None
        if self._complete is not None:
            actions = [a for a in self._complete()._actions if a.dest == actions[0].dest]
        words = getattr(self, "_words", [])
        wrong = next((i for i, w in enumerate(words) if f"invalid choice: {w!r}" in message), None)
        for word in words[:wrong]:
            name = word.split("=", 1)[0]
            if word == "--" or not name.startswith("-") or self._knows(self, name):
                continue
            if self._negative_number_matcher.match(word):
                continue  # a value such as -5, not an option
            owners = [
                f"`{parser.prog}`"
                for action in actions
                for parser in dict.fromkeys(action.choices.values())
                if self._knows(parser, name)
            ]
            takes = "takes" if len(owners) == 1 else "take"
            where = f"; it goes after the action: {', '.join(owners)} {takes} it"
            return f"unknown option {name}" + (where if owners else "")
        return None

    @staticmethod
    def _knows(parser: argparse.ArgumentParser, name: str) -> bool:
        """Whether `parser` takes option `name`, as given or abbreviated (as argparse does)."""
        options = parser._option_string_actions
        return name in options or (
            parser.allow_abbrev
            and name.startswith("--")
            and any(o.startswith(name) for o in options)
        )


def build_parser(argv: Sequence[str] | None = None, every: bool = False) -> argparse.ArgumentParser:
    """The parser of the command line `argv` (default: sys.argv[1:]): every command of
    `commands.COMMANDS` by its name and help, and in full only the one `argv` names (or all
    of them, with `every`). A command's module imports what its work needs; `digitlab --help`
    and `digitlab data info` need not wait for PyTorch and scikit-learn to load."""
    named = command_word(list(sys.argv[1:] if argv is None else argv))
    parser = _Parser(
        prog="digitlab",
        description="The MNIST machine-learning course as software: data, kNN, CNN, "
        "clustering, GAN.",
    )
    parser.add_argument("--version", action="version", version=f"digitlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        if every or name == named:
            importlib.import_module(f"digitlab.cli.{command.module}").register(sub)
        else:
            sub.add_parser(name, help=command.help)
    if not every:
        parser._complete = functools.partial(build_parser, every=True)
    return parser


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse `argv`; `run` takes its key=value overrides anywhere on the line."""
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "command", None) == "run":
        overrides = [a for a in extra if "=" in a and not a.startswith("-")]
        extra = [a for a in extra if a not in overrides]
        args.overrides = [*args.overrides, *overrides]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _interrupted(signum, frame):
    """Ctrl-C, and SIGTERM (`kill`, a scheduler or a container stop): KeyboardInterrupt, so
    both stop through the same clean-up (checkpoints are written atomically, so the last one
    stays valid).

    Raised inside a weakref callback or a `__del__` (garbage collection runs them at any
    moment) the exception is only printed ("Exception ignored in ...") and the run went on to
    finish; raised inside an import (a command loads matplotlib or PyTorch when it needs
    them) it can break a C extension's initialisation (matplotlib's ft2font: a fatal error
    and SIGABRT at exit). There the signal is sent again a moment later instead (found by
    the frame, or by `_interrupt_lost` when Python reports the exception it could not raise)."""
    last_signal[:] = [signum]
    if _in_finalizer(frame) or _in_import(frame):
        _send_again(signum)
        return
    raise KeyboardInterrupt


# Whether main's handlers are in place: a signal sent again after the command ended would
# reach whatever handler came back (in a test, pytest's own).
_handling: list[bool] = []


def _send_again(signum: int) -> None:
    def again() -> None:
        if _handling:
            os.kill(os.getpid(), signum)

    threading.Timer(0.02, again).start()


def _interrupt_lost(previous_hook, unraisable) -> None:
    """`sys.unraisablehook` while a command runs: a KeyboardInterrupt our handler raised where
    Python can only print it (a finalizer `_in_finalizer` does not recognise: a weakref
    callback of any module, a C-level clean-up) is sent again, not printed and lost."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and last_signal:
        _send_again(last_signal[0])
        return
    previous_hook(unraisable)


def _callers(frame):
    """The code of `frame` and of every frame that called it, innermost first."""
    while frame is not None:
        yield frame.f_code
        frame = frame.f_back


def _in_finalizer(frame) -> bool:
    """Whether `frame` runs inside a `__del__` or a weakref callback (or below one)."""
    return any(
        code.co_name == "__del__" or code.co_filename.endswith(("weakref.py", "_weakrefset.py"))
        for code in _callers(frame)
    )


def as_typed(message: str, parser: argparse.ArgumentParser, argv: Sequence[str]) -> str:
    """`message` with the setting it starts with named as the flag the user typed:
    "--train-size must be in 1..60000 (or all), got 70000", not "train_size must ...". The
    library's checks name the setting (a `key=value` override or a TOML file names it so);
    a user who typed `--train-size` looked for that."""
    name, _, rest = message.partition(" ")
    if not rest.startswith("must "):  # a check's own form; "port 80 ... is in use" is not
        return message
    typed = {arg.partition("=")[0] for arg in argv if arg.startswith("--")}
    for action in _actions(parser):
        if action.dest == name:
            flag = next((o for o in action.option_strings if o in typed), None)
            if flag:
                return f"{flag} {rest}"
    return message


def _actions(parser: argparse.ArgumentParser):
    """Every action of `parser` and of the sub-commands built in full below it."""
    for action in parser._actions:
        yield action
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _actions(sub)


def _in_import(frame) -> bool:
    """Whether `frame` runs inside an import (importlib's own frames are below it)."""
    return any(
        code.co_filename.startswith("<frozen importlib._bootstrap") for code in _callers(frame)
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (0 ok, 1 our error, 2 usage, 128 + the signal
    when one stopped it: 130 Ctrl-C, 143 SIGTERM)."""
    for stream in (sys.stdout, sys.stderr):
        # A file name in another script on a console that cannot show it (PYTHONIOENCODING=
        # ascii, a C locale) printed a UnicodeEncodeError traceback: escape it instead.
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser(argv)
    args = parse(parser, argv)
    last_signal.clear()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(sig) is not signal.SIG_IGN:  # a background job's stays ignored
                previous[sig] = signal.signal(sig, _interrupted)
    if previous:
        _handling.append(True)
    shown, unraisable = warnings.showwarning, sys.unraisablehook
    warnings.showwarning = _one_line
    if previous:
        sys.unraisablehook = functools.partial(_interrupt_lost, unraisable)
    try:
        code = int(args.func(args) or 0)
        if last_signal and code == 0:
            # Stopped by the signal, though a library caught its KeyboardInterrupt and
            # returned (Gradio's server loop does): `digitlab app` stopped with Ctrl-C exited
            # 0 or 130 by where in Gradio the signal landed. (A command that says how it
            # stopped returns its own code: `sweep` says which trials finished.)
            raise KeyboardInterrupt
        return code
    except DigitlabError as exc:
        # one_line: a message naming a file whose name holds a newline is still one line.
        message = as_typed(str(exc), parser, sys.argv[1:] if argv is None else argv)
        print(f"digitlab: error: {one_line(message)}", file=sys.stderr)
        return 1
    except OSError as exc:
        # A file that cannot be read or written (a read-only folder, a full disk, /proc...):
        # one line naming the path, no traceback. Outputs are checked before the work too.
        print(f"digitlab: error: {one_line(describe_os_error(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("digitlab: interrupted", file=sys.stderr)
        return interrupted_code()
    finally:
        if previous:
            _handling.pop()
        warnings.showwarning, sys.unraisablehook = shown, unraisable
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _one_line(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one line (Python's own format adds the file, line and source line of the
    code that warned: noise to someone at a command line)."""
    text = " ".join(str(message).split())
    print(f"digitlab: warning: {text}", file=sys.stderr if file is None else file)
