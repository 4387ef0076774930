"""A real browser runs the course in JupyterLab, as a learner would (GitHub issue 11, item 6).

nbval runs every notebook, but it cannot see a widget: it never renders the
temperature explorer of notebook 02, and it does not know whether moving the
slider redraws the figure. This test starts JupyterLab on a free localhost
port (its kernel is this interpreter, ``sys.executable``), opens the notebooks
in headless Chromium driven by Playwright, clicks Run > Run All Cells, and
checks what a learner would see:

* every widget notebook (any course notebook that imports ``kd_tutorial.widgets``
  or ``ipywidgets``) runs to the end without an error output, its slider
  renders, and pressing ArrowRight on the slider's handle redraws the figure;
* in exercise notebook 02, after the learner types a correct answer to q1
  and leaves q2 untouched, ``q1.check`` shows its pass line and ``q2.check``
  its short "not attempted" feedback, with no traceback.

Screenshots (widget before and after, the check feedback) are saved under the
test's ``tmp_path`` and their paths printed (``pytest -s`` shows them).

Browser: Playwright's own browser download cannot work on these machines, so
the test drives an installed Chromium (``$KD_TUTORIAL_CHROMIUM``, else
``/usr/bin/chromium`` from Debian's ``chromium`` package, which ``.ci/run``
installs). It skips, saying why, only when no Chromium or no Playwright is
installed. Every wait has a timeout, a watchdog stops JupyterLab if the module
runs too long, and the fixture's teardown always kills it.
"""
from __future__ import annotations

import contextlib
import json
import importlib.util
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXERCISE = "exercises/02_soft_targets_temperature.ipynb"

LAB_START_S = 120        # JupyterLab answers /api/status within this
NOTEBOOK_RUN_S = 240     # Run All Cells finishes within this (notebook 02 takes about 20 s on 2 cores)
UI_S = 60                # any other wait in the page
WATCHDOG_S = 900         # past this, the module's JupyterLab is killed, so that no wait can hang CI

WIDGET_IMPORT = re.compile(r"^\s*(from\s+kd_tutorial\s+import\s+[^\n#]*\bwidgets\b|import\s+kd_tutorial\.widgets"
                           r"|from\s+kd_tutorial\.widgets\s+import|import\s+ipywidgets|from\s+ipywidgets\s+import)",
                           re.MULTILINE)


def _widget_notebooks() -> list[str]:
    """The course notebooks whose code imports kd_tutorial.widgets or ipywidgets."""
    found = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        sources = ("".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                   for c in cells if c["cell_type"] == "code")
        if any(WIDGET_IMPORT.search(src) for src in sources):
            found.append(f"notebooks/{path.name}")
    return found


WIDGET_NOTEBOOKS = _widget_notebooks()


def _chromium() -> str | None:
    for candidate in (os.environ.get("KD_TUTORIAL_CHROMIUM"), "/usr/bin/chromium",
                      shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A running JupyterLab: its URL, token, root folder and log."""

    def __init__(self, url: str, token: str, root: Path, log: Path):
        self.url, self.token, self.root, self.log = url, token, root, log

    def api(self, path: str, method: str = "GET"):
        req = urllib.request.Request(f"{self.url}/api/{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
        return json.loads(body) if body else None

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return "(no log)"

    def shutdown_kernels(self) -> None:
        """Close every session, so that the next notebook has both cores."""
        with contextlib.suppress(OSError):  # a teardown step: the server may already be gone
            for s in self.api("sessions"):
                self.api(f"sessions/{s['id']}", method="DELETE")


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)  # the server and its kernels (start_new_session=True)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def chromium_path() -> str:
    path = _chromium()
    if path is None:
        pytest.skip("no Chromium to drive: install Debian's chromium package (`apt-get install chromium`, as "
                    ".ci/run does when it can) or set KD_TUTORIAL_CHROMIUM to a Chromium binary; Playwright's own "
                    "browser download cannot work on these machines")
    if importlib.util.find_spec("playwright") is None:
        pytest.skip('Playwright is not installed: pip install -e ".[dev]"')
    return path


@pytest.fixture(scope="module")
def lab(chromium_path, tmp_path_factory):
    """JupyterLab on a free localhost port, with copies of the notebooks, this interpreter as its kernel,
    the tiny profile, offline flags and a private KD_TUTORIAL_HOME; killed at teardown."""
    base = tmp_path_factory.mktemp("lab")
    root = base / "root"
    for rel in [*WIDGET_NOTEBOOKS, EXERCISE]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, root / rel)
    # the "python3" kernel the notebooks ask for is this interpreter (as nbval's --nbval-current-env):
    # JUPYTER_PATH comes first in the kernel spec search
    spec_dir = base / "jupyter_path" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)", "language": "python", "metadata": {"debugger": True}}))
    # fresh user settings: no workspace to restore, no news or update toasts, every cell in the DOM
    settings = base / "lab_settings"
    for rel, value in {"@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
                       "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
                           {"fetchNews": "false", "checkForUpdates": False}}.items():
        (settings / rel).parent.mkdir(parents=True, exist_ok=True)
        (settings / rel).write_text(json.dumps(value))
    env = dict(os.environ)
    env.update({
        "JUPYTER_PATH": os.pathsep.join(filter(None, [str(base / "jupyter_path"), os.environ.get("JUPYTER_PATH")])),
        "JUPYTER_CONFIG_DIR": str(base / "jupyter_config"),
        "JUPYTER_DATA_DIR": str(base / "jupyter_data"),
        "JUPYTER_RUNTIME_DIR": str(base / "jupyter_runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(base / "lab_workspaces"),
        "IPYTHONDIR": str(base / "ipython"),
        # tests/conftest.py set these already; repeated so the kernels surely get them
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "KD_TUTORIAL_PROFILE": "tiny",
        "KD_TUTORIAL_HOME": str(base / "kd_tutorial_home"),
    })
    for name in ("KD_TUTORIAL_DATA_DIR", "MPLBACKEND"):  # a learner's kernel: the inline backend, the built-in corpus
        env.pop(name, None)
    token, log = secrets.token_hex(16), base / "jupyterlab.log"
    proc = watchdog = None
    try:
        for attempt in range(3):  # another process may take the free port before JupyterLab binds it
            port = _free_port()
            cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
                   f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
                   f"--ServerApp.root_dir={root}", "--ServerApp.allow_root=True", "--LabApp.news_url=None",
                   "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
            with open(log, "wb") as log_file:
                proc = subprocess.Popen(cmd, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            watchdog = threading.Timer(WATCHDOG_S, _kill_group, args=(proc,))
            watchdog.daemon = True
            watchdog.start()
            server = Lab(f"http://127.0.0.1:{port}", token, root, log)
            deadline = time.monotonic() + LAB_START_S
            while proc.poll() is None:
                try:
                    server.api("status")
                    break
                except (urllib.error.URLError, ConnectionError, OSError):
                    if time.monotonic() > deadline:
                        pytest.fail(f"JupyterLab did not answer within {LAB_START_S} s:\n{server.log_tail()}")
                    time.sleep(0.25)
            if proc.poll() is None:
                break
            watchdog.cancel()
            if "already in use" not in server.log_tail() or attempt == 2:
                pytest.fail(f"JupyterLab exited with {proc.returncode}:\n{server.log_tail()}")
        argv = server.api("kernelspecs")["kernelspecs"]["python3"]["spec"]["argv"]
        assert argv[0] == sys.executable, f"the python3 kernel is {argv[0]}, not this interpreter"
        yield server
    finally:
        if watchdog is not None:
            watchdog.cancel()
        if proc is not None:
            _kill_group(proc)


@pytest.fixture(scope="module")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, headless=True, timeout=UI_S * 1000,
                              args=["--disable-dev-shm-usage", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, lab):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(UI_S * 1000)
    console: list[str] = []
    pg.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type == "error" else None)
    pg.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    pg.console_errors = console
    try:
        yield pg
    finally:
        context.close()
        lab.shutdown_kernels()


# -- what a learner does ------------------------------------------------------------------------------

CELLS_JS = """() => {
  const panel = [...document.querySelectorAll('.jp-NotebookPanel')].find(p => !p.classList.contains('lm-mod-hidden'));
  if (!panel) return null;
  return [...panel.querySelectorAll('.jp-Notebook .jp-Cell.jp-CodeCell')].map(c => ({
    prompt: ((c.querySelector('.jp-InputArea-prompt') || {}).textContent || '').trim(),
    source: [...c.querySelectorAll('.cm-content .cm-line')].map(l => l.textContent).join('\\n'),
    // the cell's own outputs (not those of an Output widget inside a widget view)
    outputs: [...c.querySelectorAll('.jp-OutputArea-output')].filter(o => !o.parentElement.closest('.jupyter-widgets'))
      .map(o => ({mime: o.getAttribute('data-mime-type') || '', text: (o.textContent || '').slice(0, 3000),
                  widget: !!(o.matches('.jupyter-widgets') || o.querySelector('.jupyter-widgets'))})),
  }));
}"""

# Run All is finished when the kernel is idle, no cell waits ([*]), and every cell ran, or one raised
# (JupyterLab stops a Run All at the first error, like the kernel's stop_on_error).
RUN_DONE_JS = """() => {
  const panel = [...document.querySelectorAll('.jp-NotebookPanel')].find(p => !p.classList.contains('lm-mod-hidden'));
  if (!panel) return false;
  const indicator = panel.querySelector('.jp-Notebook-ExecutionIndicator');
  if (!indicator || indicator.getAttribute('data-status') !== 'idle') return false;
  const cells = [...panel.querySelectorAll('.jp-Notebook .jp-Cell.jp-CodeCell')];
  const prompts = cells.map(c => ((c.querySelector('.jp-InputArea-prompt') || {}).textContent || '').trim());
  if (prompts.some(p => p.includes('*'))) return false;
  const failed = cells.some(c => c.querySelector('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'));
  return failed || prompts.every(p => /^\\[\\d+\\]:?$/.test(p));
}"""


# True once the kernel is idle and the widget's figure has stayed the same for a second
SETTLED_JS = """(view) => {
  const img = view.querySelector('.widget-output img'), now = performance.now();
  const seen = window.__kdFigure || (window.__kdFigure = {src: null, since: now});
  if (!img || img.src !== seen.src) { seen.src = img && img.src; seen.since = now; return false; }
  const idle = document.querySelector(
    '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator[data-status="idle"]');
  return !!idle && now - seen.since > 1000;
}"""


def _wait(condition, timeout_s: float, describe) -> None:
    """Poll ``condition`` until it holds; fail with ``describe()`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(describe())
        time.sleep(0.2)


def _kernels(lab: Lab) -> list[tuple[str, str]] | None:
    """(spec name, execution state) of each running kernel; None while the server cannot say (jupyter_server
    answers GET /api/kernels with a 500 while a kernel is still starting)."""
    try:
        return [(k["name"], k["execution_state"]) for k in lab.api("kernels")]
    except urllib.error.HTTPError:
        return None


def _open(page, lab: Lab, rel: str) -> None:
    page.goto(f"{lab.url}/lab/tree/{rel}?token={lab.token}&reset", wait_until="domcontentloaded")
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-CodeCell")
    # the kernel has started, from the python3 spec (this interpreter), and is idle before anything runs
    _wait(lambda: _kernels(lab) == [("python3", "idle")],
          UI_S, lambda: f"the notebook's kernel did not start: {_kernels(lab)}\n{lab.log_tail()}")
    page.wait_for_selector('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status="idle"]')


def _run_all(page) -> list[dict]:
    cells = page.evaluate(CELLS_JS)
    assert cells and all(c["prompt"] in ("[ ]:", "[ ]") for c in cells), "the notebook should open unrun"
    page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-item:not(.lm-mod-disabled) .lm-Menu-itemLabel",
                 has_text=re.compile(r"^Run All Cells$")).click()
    # the first cell is queued at once; then wait for the end
    page.wait_for_function("""() => [...document.querySelectorAll(
        '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputArea-prompt')]
        .some(p => /\\[(\\*|\\d+)\\]/.test(p.textContent))""")
    page.wait_for_function(RUN_DONE_JS, timeout=NOTEBOOK_RUN_S * 1000, polling=250)
    return page.evaluate(CELLS_JS)


def _describe(cells: list[dict]) -> str:
    lines = []
    for i, c in enumerate(cells):
        lines.append(f"cell {i} {c['prompt']} {c['source'][:70]!r}")
        lines += [f"    {'widget' if o['widget'] else o['mime']}: {o['text'][:300]!r}" for o in c["outputs"]]
    return "\n".join(lines)


def _cell(page, needle: str):
    """The code cell whose source contains ``needle``."""
    return page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-CodeCell",
                        has=page.locator(".cm-content", has_text=needle))


@contextlib.contextmanager
def _evidence(page, tmp_path: Path):
    """On a failure, save a screenshot of the whole page next to the others, and say where."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            shot = tmp_path / "failure_page.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"\nfailure screenshot: {shot}\nbrowser console errors: {page.console_errors}")
        raise


# -- the tests ------------------------------------------------------------------------------------------

def test_the_course_has_a_widget_notebook():
    assert "notebooks/02_soft_targets_temperature.ipynb" in WIDGET_NOTEBOOKS, WIDGET_NOTEBOOKS


@pytest.mark.parametrize("rel", WIDGET_NOTEBOOKS)
def test_widget_notebook_runs_and_its_slider_redraws_the_figure(page, lab, rel, tmp_path):
    with _evidence(page, tmp_path):
        _widget_notebook(page, lab, rel, tmp_path)


def test_exercise_check_shows_pass_and_not_attempted_feedback(page, lab, tmp_path):
    with _evidence(page, tmp_path):
        _exercise_feedback(page, lab, tmp_path)


def _widget_notebook(page, lab: Lab, rel: str, tmp_path: Path) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    start = time.monotonic()
    _open(page, lab, rel)
    cells = _run_all(page)
    report = _describe(cells)
    assert all(re.fullmatch(r"\[\d+\]:?", c["prompt"]) for c in cells), f"not every cell ran:\n{report}"
    errors = [o for c in cells for o in c["outputs"]
              if o["mime"] == "application/vnd.jupyter.stderr"
              and re.search(r"Traceback|Error\b|Exception\b", o["text"])]
    assert not errors, f"error outputs:\n{report}"
    text = "\n".join(o["text"] for c in cells for o in c["outputs"])
    assert "Error displaying widget" not in text and "Error rendering" not in text, report
    widget_outputs = [c for c in cells if any(o["widget"] for o in c["outputs"])]
    assert widget_outputs, f"no widget view among the outputs:\n{report}"

    notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook")
    interactives = notebook.locator(".jupyter-widgets.widget-interact")
    interactives.first.wait_for()
    assert interactives.count() >= 1
    for k in range(interactives.count()):
        view = interactives.nth(k)
        slider = view.locator(".widget-slider").first
        slider.wait_for()
        handle = slider.locator(".noUi-handle").first
        readout = slider.locator(".widget-readout").first
        image = view.locator(".widget-output img").first
        image.wait_for()
        view.scroll_into_view_if_needed()
        before_value, before_src = readout.text_content(), image.get_attribute("src")
        assert before_src and before_src.startswith("data:image/png"), before_src
        shot_before = tmp_path / f"{Path(rel).stem}_widget{k}_before.png"
        view.screenshot(path=str(shot_before))

        handle.focus()
        for _ in range(10):  # 10 steps of 0.02 in log10(T): T from 1.00 to 1.58
            handle.press("ArrowRight")
        page.wait_for_function("([r, v]) => r.textContent !== v", arg=[readout.element_handle(), before_value])
        # the figure is redrawn: a new PNG, different from the first
        try:
            page.wait_for_function(
                """([view, src]) => { const img = view.querySelector('.widget-output img');
                   return img && img.complete && img.src.startsWith('data:image/png') && img.src !== src; }""",
                arg=[view.element_handle(), before_src], timeout=UI_S * 1000)
        except PlaywrightTimeout:
            pytest.fail(f"{rel}: the figure did not change within {UI_S} s of moving the slider "
                        f"(T {before_value} -> {readout.text_content()})")
        # settled: the kernel is idle and the figure has not changed for a second (the last key's redraw)
        page.wait_for_function(SETTLED_JS, arg=view.element_handle(), timeout=NOTEBOOK_RUN_S * 1000, polling=200)
        assert view.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]').count() == 0, \
            view.inner_text()
        after_value, after_src = readout.text_content(), image.get_attribute("src")
        shot_after = tmp_path / f"{Path(rel).stem}_widget{k}_after.png"
        view.screenshot(path=str(shot_after))
        print(f"\n{rel}: slider T {before_value} -> {after_value}; screenshots:\n  {shot_before}\n  {shot_after}")
        assert float(after_value) > float(before_value), (before_value, after_value)
        assert after_src != before_src, "the figure did not change when the slider moved"
        assert shot_before.read_bytes() != shot_after.read_bytes()
    errors = [o for o in page.evaluate(CELLS_JS) for o in o["outputs"]
              if o["mime"] == "application/vnd.jupyter.stderr"]
    assert not errors, errors
    assert not [e for e in page.console_errors if "widget" in e.lower()], page.console_errors
    print(f"{rel}: {time.monotonic() - start:.1f} s in the browser")


def _exercise_feedback(page, lab: Lab, tmp_path: Path) -> None:
    start = time.monotonic()
    _open(page, lab, EXERCISE)
    # the learner answers q1 (in the cell's editor) and leaves q2's stub as it is
    stub = _cell(page, "def softmax_with_temperature").locator(".cm-content")
    stub.click()
    page.keyboard.press("Control+a")
    page.keyboard.insert_text('def softmax_with_temperature(logits, temperature=1.0):\n'
                              '    return torch.softmax(logits / temperature, dim=-1)\n')
    assert "torch.softmax(logits / temperature" in stub.text_content()
    cells = _run_all(page)
    report = _describe(cells)

    q1 = next(c for c in cells if "q1.check(" in c["source"])
    q2 = next(c for c in cells if "q2.check(" in c["source"])
    # pass: one short confirmation (today a printed line)
    assert len(q1["outputs"]) == 1, report
    assert "\N{WHITE HEAVY CHECK MARK}" in q1["outputs"][0]["text"] and "Correct" in q1["outputs"][0]["text"], report
    # not attempted: one short feedback (today the cell's error, shown without a traceback wall)
    assert len(q2["outputs"]) == 1, report
    feedback = q2["outputs"][0]["text"]
    assert "not attempted" in feedback and "Traceback" not in feedback, report
    assert len(feedback.strip().splitlines()) <= 2, feedback
    # nothing else failed: every cell before q2's check ran, and only that one has an error
    upto = cells.index(q2)
    assert all(re.fullmatch(r"\[\d+\]:?", c["prompt"]) for c in cells[:upto + 1]), report
    others = [o for c in cells if c is not q2 for o in c["outputs"] if o["mime"].endswith("stderr")]
    assert not others, report

    shots = []
    for name, needle in (("q1_pass", "q1.check("), ("q2_not_attempted", "q2.check(")):
        path = tmp_path / f"exercise02_{name}.png"
        cell = _cell(page, needle)
        cell.scroll_into_view_if_needed()
        cell.screenshot(path=str(path))
        shots.append(path)
    page_shot = tmp_path / "exercise02_page.png"
    _cell(page, "q1.check(").scroll_into_view_if_needed()
    page.screenshot(path=str(page_shot))
    print("\nexercise 02 feedback screenshots:\n  " + "\n  ".join(map(str, [*shots, page_shot])))
    print(f"{EXERCISE}: {time.monotonic() - start:.1f} s in the browser")
