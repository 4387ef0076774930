"""What learners on Windows and macOS meet that Linux alone would not show, simulated here: a console that encodes
in a Windows code page, platforms without a safe ``fork``."""
import io
import sys

from kd_tutorial import cli


def _cp1252_stdout(monkeypatch) -> io.BytesIO:
    """sys.stdout as Windows sets it up when the output is redirected (``> log.txt``) or piped (Git Bash): the ANSI
    code page, strict; the bytes written come back in the BytesIO returned."""
    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, encoding="cp1252", write_through=True))
    return raw


def test_a_path_the_windows_code_page_cannot_encode_is_printed_escaped_not_a_traceback(tmp_path, monkeypatch):
    """`kd-tutorial env > env.txt` on Windows with a cache under a Chinese folder name ended in UnicodeEncodeError."""
    raw = _cp1252_stdout(monkeypatch)
    home = str(tmp_path / "实验")
    monkeypatch.setenv("KD_TUTORIAL_HOME", home)
    assert cli.main(["env", "--profile", "tiny"]) == 0
    assert home.replace("实验", "\\u5b9e\\u9a8c") in raw.getvalue().decode("cp1252")
