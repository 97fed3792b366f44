"""The command line builds only the command it runs: `digitlab --help` took 5-11 s on a
2-vCPU machine while every command's module loaded PyTorch, scikit-learn and matplotlib."""

from __future__ import annotations

import subprocess
import sys

from digitlab.cli import build_parser
from digitlab.cli.commands import COMMANDS, command_word

HEAVY = ("torch", "sklearn", "matplotlib", "scipy", "pandas")


def _loaded_after(argv: list[str]) -> tuple[int, str, list[str]]:
    code = (
        "import sys, contextlib, io\n"
        "from digitlab.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    try:\n"
        f"        code = main({argv!r})\n"
        "    except SystemExit as exc:\n"
        "        code = exc.code\n"
        f"print(code, [m for m in {HEAVY!r} if m in sys.modules])\n"
        "print(out.getvalue())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    first, _, rest = done.stdout.partition("\n")
    status, _, loaded = first.partition(" ")
    return int(status), rest, eval(loaded)


def test_help_lists_every_command_without_loading_the_models():
    code, text, loaded = _loaded_after(["--help"])
    assert code == 0 and loaded == []
    for name, command in COMMANDS.items():
        assert name in text and command.help in " ".join(text.split())


def test_one_command_loads_no_other_commands_libraries():
    code, text, loaded = _loaded_after(["data", "--help"])
    assert code == 0 and "info" in text
    assert "torch" not in loaded and "sklearn" not in loaded


def test_named_command_is_built_in_full_and_the_others_by_name():
    parser = build_parser(["knn", "--k", "5"])
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert set(commands) == set(COMMANDS)
    assert "--k" in commands["knn"]._option_string_actions
    assert "--epochs" not in commands["cnn"]._option_string_actions  # a stub
    full = build_parser(every=True)
    full_commands = next(a for a in full._actions if a.dest == "command").choices
    assert (
        "--epochs"
        in full_commands["cnn"]
        ._subparsers._group_actions[0]
        .choices["train"]
        ._option_string_actions
    )


def test_command_word():
    assert command_word(["--help"]) is None
    assert command_word(["knn", "sweep"]) == "knn"
    assert command_word(["--version", "cnn"]) == "cnn"
    assert command_word(["--", "knn"]) is None


def test_option_before_the_command_still_names_its_owner(capsys):
    from digitlab.cli import main

    try:
        code = main(["--seed", "3", "knn"])
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown option --seed; it goes after the action" in err and "`digitlab knn`" in err


def test_report_rebuilds_without_loading_the_models(tmp_path):
    """`digitlab report RUN_DIR` took 6.6 s (AVX2, 2 vCPU) while it loaded PyTorch,
    scikit-learn and matplotlib only to name where a run's settings came from."""
    from conftest import write_fake_idx
    from digitlab.cli import main

    data = write_fake_idx(tmp_path / "d", n_train=300, n_test=60)
    out = tmp_path / "run"
    argv = ["run", "--preset", "quick", "knn.train_size=200", "--stages", "data,knn"]
    assert main([*argv, "--data-dir", str(data), "--out", str(out), "--quiet"]) == 0
    (out / "report.html").unlink()
    code, _, loaded = _loaded_after(["report", str(out), "--quiet"])
    assert code == 0 and loaded == []
    page = (out / "report.html").read_text()
    assert "preset <b>quick</b>" in page or "preset <strong>quick</strong>" in page
