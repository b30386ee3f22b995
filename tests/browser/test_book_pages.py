"""A reader's test of the built book: every chapter, opened in headless Chromium.

`make browser` builds the book when it is out of date and runs this file; `make unit` does not
collect it (tests/browser is ignored there). For each page named in _toc.yml it loads the built
HTML from a loopback HTTP server, waits for the page's load event and for MathJax's initial
typesetting (`MathJax.startup.promise`), and then fails on

* a broken image: an <img> that is not `complete && naturalWidth > 0`, or any file the page asks
  the server for that the server does not have (a missing MathJax font, stylesheet, script);
* math left unrendered: a text node outside <script>/<code>/<pre> and outside MathJax's own
  <mjx-container> that still holds `$$`, `\\(`, `\\[` or `\\frac`; a Sphinx math element
  (`.math`) with no <mjx-container> in it; TeX that MathJax rendered as an error box or as an
  undefined macro; a page whose source has math but whose DOM has no <mjx-container> at all;
* an error in an output cell: a traceback output (`div.output.traceback`, what MyST-NB renders an
  `error` output as), an output that shows `Traceback (most recent call last)`, or a stderr
  output with an `...Error:`/`...Exception:`/`ERROR` line. Cells tagged `raises-exception` are
  the one exception: their author asked for the error to be shown.

Then, at 1280 CSS pixels with every fold opened (hidden cells, solutions), on every page: a display
equation whose typeset box is wider than the box MathJax puts it in (an equation number takes its
share), and a line of a code cell's input that runs past the right edge of its <pre>; each named,
with the page, the equation's label or TeX, the cell and the line.

Chromium is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: JSON
messages ending in NUL on file descriptors 3 and 4), so nothing beyond the standard library and
Debian's `chromium` package is needed.

Environment: RESMOOTH_BOOK_HTML, the built HTML to test (default: _build/html beside _toc.yml);
RESMOOTH_CHROMIUM, the browser (default: `chromium` on PATH).
"""

from __future__ import annotations

import fcntl
import functools
import http.server
import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
HTML_DIR = Path(os.environ.get("RESMOOTH_BOOK_HTML", REPO / "_build" / "html")).resolve()
SOURCE_SUFFIXES = (".md", ".ipynb", ".myst", ".rst")

# Seconds: one DevTools command, one page load, MathJax's typesetting, an image still loading.
COMMAND_TIMEOUT = 60
LOAD_TIMEOUT = 60
MATHJAX_TIMEOUT_MS = 30_000
IMAGE_TIMEOUT_MS = 10_000


# --------------------------------------------------------------------------------------------
# The pages: every file in _toc.yml (root, chapters, parts, sections; globs expanded).


def _toc_files(toc_path: Path = REPO / "_toc.yml") -> list[str]:
    toc = yaml.safe_load(toc_path.read_text(encoding="utf-8"))
    files: list[str] = []

    def add(name: str) -> None:
        name = re.sub(r"\.(md|ipynb|myst|rst)$", "", str(name))
        if name not in files:
            files.append(name)

    def walk(node) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            if "file" in node:
                add(node["file"])
            if "glob" in node:
                for path in sorted(REPO.glob(node["glob"])):
                    if path.suffix in SOURCE_SUFFIXES:
                        add(path.relative_to(REPO).with_suffix("").as_posix())
            for key in ("parts", "chapters", "sections"):
                walk(node.get(key))

    add(toc["root"])
    walk(toc)
    return files


PAGES = _toc_files()


def _source(page: str) -> Path | None:
    for suffix in SOURCE_SUFFIXES:
        path = REPO / f"{page}{suffix}"
        if path.exists():
            return path
    return None


_FENCE = re.compile(r"^(```+|~~~+)(.*?)$.*?^\1\s*$", re.M | re.S)
# Math in MyST source: $$...$$, $...$ (dollarmath), \begin{...} (amsmath), {math} roles and
# directives, :math: roles.
_MATH_IN_SOURCE = re.compile(
    r"\$\$|\\begin\{|\{math\}|:math:|(?<![\\$])\$(?=\S)[^$\n]+?(?<=\S)(?<!\\)\$(?!\d)"
)


def _source_has_math(page: str) -> bool:
    path = _source(page)
    if path is None:
        return False
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
        text = "\n".join(
            "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            for c in cells
            if c.get("cell_type") == "markdown"
        )
    else:
        text = path.read_text(encoding="utf-8")
    # Code is not math: drop fenced blocks (but keep ```{math} ones) and inline code spans.
    text = _FENCE.sub(lambda m: m.group(0) if "{math}" in m.group(2) else "", text)
    text = re.sub(r"`[^`\n]*`", "", text)
    return bool(_MATH_IN_SOURCE.search(text))


# --------------------------------------------------------------------------------------------
# A loopback HTTP server for the built HTML.


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def server():
    if not (HTML_DIR / "index.html").is_file():
        pytest.fail(f"no built book at {HTML_DIR} (run `make book`, or set RESMOOTH_BOOK_HTML)")
    handler = functools.partial(_Quiet, directory=str(HTML_DIR))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


# --------------------------------------------------------------------------------------------
# Headless Chromium over the DevTools protocol on a pipe.


def _high_fd(fd: int) -> int:
    """The same pipe end on a descriptor >= 10, so that moving it onto 3 or 4 clobbers nothing."""
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return new


class Chromium:
    def __init__(self, executable: str):
        self.profile = tempfile.mkdtemp(prefix="resmooth-chromium-")
        to_chrome_r, self._to_chrome = map(_high_fd, os.pipe())
        self._from_chrome, from_chrome_w = map(_high_fd, os.pipe())

        def child_fds() -> None:  # in the child, before exec: Chromium reads 3, writes 4
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        args = [
            executable,
            "--headless",
            "--no-sandbox",  # CI runs as root
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-default-apps",
            "--disable-extensions",
            "--disable-sync",
            "--no-first-run",
            "--no-default-browser-check",
            "--mute-audio",
            "--remote-debugging-pipe",
            f"--user-data-dir={self.profile}",
            "about:blank",
        ]
        self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            preexec_fn=child_fds,
            close_fds=False,  # keep 3 and 4; every other descriptor here is close-on-exec
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def _stderr(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-3000:]

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self._from_chrome], [], [], left)
            if ready:
                chunk = os.read(self._from_chrome, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"Chromium exited (status {self.proc.poll()}):\n{self._stderr()}")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = COMMAND_TIMEOUT) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            if "method" in reply:
                self.events.append(reply)

    def wait_for(self, method: str, session: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if event["method"] == method and event.get("sessionId") == session:
                    return self.events.pop(i)
            self.events.append(self._read_message(deadline))

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)
        self._log.close()
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def tab():
    executable = os.environ.get("RESMOOTH_CHROMIUM") or shutil.which("chromium") or shutil.which(
        "chromium-browser"
    )
    if not executable:
        pytest.fail("no Chromium: `make browser` installs Debian's chromium (or set RESMOOTH_CHROMIUM)")
    browser = Chromium(executable)
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Network"):
            browser.send(f"{domain}.enable", session=session)
        yield browser, session
    finally:
        browser.close()


# --------------------------------------------------------------------------------------------
# What the reader would see: run in the page after its load event.

CHECK_PAGE_JS = r"""
(async () => {
  const problems = [];
  const within = (promise, ms, what) => Promise.race([promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(what)), ms))]);
  const brief = (text, n = 120) => {
    text = text.replace(/\s+/g, " ").trim();
    return text.length > n ? text.slice(0, n) + "..." : text;
  };

  // MathJax 3: the config object becomes MathJax once tex-chtml.js (a deferred script) has run.
  if (window.MathJax) {
    if (!MathJax.startup || !MathJax.startup.promise) {
      problems.push("MathJax did not start (its script did not load or run)");
    } else {
      try {
        await within(MathJax.startup.promise, %(mathjax_ms)d, "timed out");
      } catch (e) {
        problems.push("MathJax did not finish typesetting: " + e.message);
      }
    }
  }

  // Images: wait for any still loading, then each must have decoded to a non-empty picture.
  const images = [...document.images];
  await Promise.all(images.filter(img => !img.complete).map(img => within(new Promise(done => {
    img.addEventListener("load", done); img.addEventListener("error", done);
  }), %(image_ms)d, "image timed out").catch(() => null)));
  for (const img of images) {
    if (!(img.complete && img.naturalWidth > 0)) {
      problems.push(`broken image: <img src="${img.getAttribute("src")}"> ` +
        (img.complete ? "(naturalWidth 0: missing or not a picture)" : "(did not finish loading)"));
    }
  }

  // Unrendered math in the text the reader sees.
  const skip = new Set(["SCRIPT", "STYLE", "CODE", "PRE", "TEXTAREA", "NOSCRIPT", "TEMPLATE",
                        "MJX-CONTAINER"]);
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {
    acceptNode(node) {
      for (let e = node.parentElement; e; e = e.parentElement) {
        if (skip.has(e.tagName)) return NodeFilter.FILTER_REJECT;
      }
      return NodeFilter.FILTER_ACCEPT;
    }});
  const raw = /\$\$|\\\(|\\\[|\\frac/;
  for (let node; (node = walker.nextNode());) {
    if (raw.test(node.data)) {
      problems.push(`unrendered math: "${brief(node.data)}" (in <${node.parentElement.tagName.toLowerCase()}>)`);
    }
  }
  for (const el of document.querySelectorAll(".math")) {
    if (!el.querySelector("mjx-container")) {
      problems.push(`math element not typeset by MathJax: "${brief(el.textContent)}"`);
    }
  }
  // TeX that MathJax could not make sense of: an error box (merror) or, from its noundefined
  // extension, an undefined macro shown as red text. Named by the TeX it came from.
  const texErrors = [];
  try {
    for (const item of MathJax.startup.document.math) {
      item.root.walkTree(node => {
        if (node.isKind("merror")) {
          texErrors.push(`MathJax error "${node.attributes.get("data-mjx-error")}" in ${brief(item.math)}`);
        } else if (node.isKind("mtext") && node.attributes.get("mathcolor") === "red" &&
                   /^\\[A-Za-z]+$/.test(node.childNodes.map(c => c.getText ? c.getText() : "").join(""))) {
          texErrors.push(`undefined TeX macro in ${brief(item.math)}`);
        }
      });
    }
  } catch (e) {  // no MathJax here, or its internals changed: fall back to the rendered error boxes
    for (const err of document.querySelectorAll("mjx-merror")) {
      texErrors.push(`MathJax error "${err.getAttribute("data-mjx-error") || "?"}"`);
    }
  }
  problems.push(...texErrors);

  // Errors in output cells (MyST-NB: div.cell_output > div.output.{traceback,stderr,stream,...}).
  const errorLine = /^\s*(?:[\w.]+(?:Error|Exception)\b.*|ERROR\b.*)$/m;
  const lastLine = text => brief(text.trim().split("\n").filter(l => l.trim()).pop() || "");
  for (const out of document.querySelectorAll(".cell_output .output, div.output.traceback")) {
    if (out.closest(".tag_raises-exception")) continue;
    const text = (out.querySelector("pre") || out).textContent;  // not the copy button's label
    if (out.classList.contains("traceback")) {
      problems.push(`error output in a cell: ${lastLine(text)}`);
    } else if (text.includes("Traceback (most recent call last)")) {
      problems.push(`traceback in a cell's output: ${lastLine(text)}`);
    } else if (out.classList.contains("stderr") && errorLine.test(text)) {
      problems.push(`error on stderr in a cell's output: ${brief(text.match(errorLine)[0])}`);
    }
  }

  return {problems, mathjax: document.querySelectorAll("mjx-container").length,
          images: images.length, title: document.title};
})()
""" % {"mathjax_ms": MATHJAX_TIMEOUT_MS, "image_ms": IMAGE_TIMEOUT_MS}


def visit(tab, server: str, page: str) -> list[str]:
    """Load one page and return the reader-visible problems on it, each naming the page."""
    browser, session = tab
    url = f"{server}/{page}.html"
    browser.events.clear()
    navigation = browser.send("Page.navigate", {"url": url}, session=session)
    if navigation.get("errorText"):
        return [f"{page}.html: could not load {url}: {navigation['errorText']}"]
    browser.wait_for("Page.loadEventFired", session, LOAD_TIMEOUT)
    result = browser.send(
        "Runtime.evaluate",
        {"expression": CHECK_PAGE_JS, "awaitPromise": True, "returnByValue": True},
        session=session,
        timeout=COMMAND_TIMEOUT + MATHJAX_TIMEOUT_MS / 1000,
    )
    if "exceptionDetails" in result:
        raise RuntimeError(f"{page}.html: the check itself failed: {result['exceptionDetails']}")
    report = result["result"]["value"]
    problems = list(report["problems"])

    # Files this page asked our server for and did not get (a missing image, font, script).
    # Chromium's own /favicon.ico request is not the book's; Sphinx pages name no favicon.
    requests = {}
    for event in browser.events:
        params = event.get("params", {})
        if event["method"] == "Network.requestWillBeSent":
            if params.get("documentURL") == url and params["request"]["url"].startswith(server):
                path = params["request"]["url"][len(server):]
                if path != "/favicon.ico":
                    requests[params["requestId"]] = path
        elif params.get("requestId") not in requests:
            continue
        elif event["method"] == "Network.responseReceived" and params["response"]["status"] >= 400:
            problems.append(f"HTTP {params['response']['status']} for {requests[params['requestId']]}")
        elif event["method"] == "Network.loadingFailed" and not params.get("canceled"):
            problems.append(f"failed to load {requests[params['requestId']]}: {params.get('errorText')}")

    if report["mathjax"] == 0 and _source_has_math(page):
        problems.append(f"the source ({_source(page).relative_to(REPO)}) has math, "
                        "but no MathJax output (mjx-container) is on the page")
    return [f"{page}.html: {problem}" for problem in dict.fromkeys(problems)]


def test_toc_pages_are_built():
    """Every page in _toc.yml has its HTML: a chapter missing from the build is not tested."""
    missing = [f"{page}.html" for page in PAGES if not (HTML_DIR / f"{page}.html").is_file()]
    if missing:
        pytest.fail(f"not in the built book at {HTML_DIR} (run `make book`): {missing}", pytrace=False)


@pytest.mark.parametrize("page", PAGES)
def test_page_reads_cleanly(tab, server, page):
    if not (HTML_DIR / f"{page}.html").is_file():
        pytest.fail(f"{page}.html is not in the built book at {HTML_DIR} (run `make book`)")
    problems = visit(tab, server, page)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


# --------------------------------------------------------------------------------------------
# The book's own pictures: each is where its chapter puts it, and loads as a picture.

# page -> what to find, one spec or a list of them: a CSS selector, or the heading (h1-h4, with its
# level) of the section that holds the figure; `src`: a part of the image's file name; `least`: how
# many images at least.
FIGURES = {
    "book/01_introduction": dict(selector="#fig-method img", src="method_diagram.svg", least=1),
    # Chapter 3 keeps the heat equation a classifier reader needs: the kernel, the stable step, edges.
    "book/03_heat_equation": [
        dict(heading="Constant diffusivity is a Gaussian blur", level="H2", least=1),
        dict(heading="Explicit Euler, and the step that blows up", level="H2", least=3),
        dict(heading="A diffusivity map: smoothing that keeps edges", level="H2", least=3),
    ],
    "book/04_graph_operator": dict(heading="for a real sample", level="H3", least=1),
    # Chapter 7 in three: the paper's regime (the paired differences, Figure 4(c), the learning
    # curves), what the loss does in training (the ratio on raw outputs and over a run), and the
    # small model (its paired differences and its Figure 4); the statistics appendix's simulation.
    "book/07_paper_regime": [
        dict(heading="Table 2 at 1/8, measured", level="H2", least=1),
        dict(heading="Figure 4(c), redrawn", level="H2", least=1),
        dict(heading="Learning curves", level="H2", least=1),
    ],
    "book/07_ablations": [
        dict(heading="The softmax, or the raw outputs", level="H2", least=1),
        dict(heading="The ratio over a run", level="H3", least=1),
    ],
    # The label-noise study's curves and reliability diagram, drawn from the runs in.
    "book/07_label_noise": dict(heading="Results at noise 0.4", level="H2", least=2),
    "book/07_small_model": [
        dict(heading="Paired comparisons, two protocols", level="H2", least=1),
        dict(heading="Figure 4, redrawn", level="H2", least=1),
    ],
    "book/reading_seeds": dict(heading="Try it yourself", level="H3", least=1),
    # One chapter for Table 3: the paper's margins (Section 3); the cost and the commands have no figure.
    "book/08_benchmark_reproduction": dict(heading="Table 3", level="H2", least=1),
    # The grid code's checks, moved here from chapter 3: the test image and the convergence plot, and
    # the two error maps of the boundary modes.
    "book/09_grid_operator": [
        dict(heading="How close to a Gaussian blur?", level="H2", least=2),
        dict(heading="Which Gaussian? The boundary decides", level="H2", least=1),
        dict(heading="The global operator has no neighbours", level="H2", least=1),
    ],
    "book/10_dense_study": dict(heading="The study", level="H2", least=1),
}
FIGURE_CHECKS = [
    (page, spec)
    for page, specs in sorted(FIGURES.items())
    for spec in (specs if isinstance(specs, list) else [specs])
]

FIND_FIGURES_JS = r"""
(async (spec) => {
  let scope = document;
  if (spec.heading) {
    const heading = [...document.querySelectorAll(spec.level || "h1, h2, h3, h4")]
      .find(h => h.textContent.includes(spec.heading));
    if (!heading) return {error: `no ${spec.level || "heading"} with "${spec.heading}"`};
    scope = heading.closest("section") || document;
  }
  let images = [...scope.querySelectorAll(spec.selector || "img")];
  if (spec.src) images = images.filter(img => (img.getAttribute("src") || "").includes(spec.src));
  await Promise.all(images.filter(img => !img.complete).map(img => new Promise(done => {
    img.addEventListener("load", done); img.addEventListener("error", done); setTimeout(done, %(image_ms)d);
  })));
  return {images: images.map(img => ({src: img.getAttribute("src"), width: img.naturalWidth,
                                       ok: img.complete && img.naturalWidth > 0}))};
})
""" % {"image_ms": IMAGE_TIMEOUT_MS}


@pytest.mark.parametrize(
    ("page", "spec"), FIGURE_CHECKS, ids=[f"{page}:{spec.get('heading') or spec.get('selector')}" for page, spec in FIGURE_CHECKS]
)
def test_the_books_figures_are_on_their_pages_and_load(tab, server, page, spec):
    assert page in PAGES, f"{page} is not in _toc.yml"
    browser, session = tab
    url = f"{server}/{page}.html"
    browser.events.clear()
    browser.send("Page.navigate", {"url": url}, session=session)
    browser.wait_for("Page.loadEventFired", session, LOAD_TIMEOUT)
    result = browser.send(
        "Runtime.evaluate",
        {"expression": f"({FIND_FIGURES_JS})({json.dumps(spec)})", "awaitPromise": True, "returnByValue": True},
        session=session,
        timeout=COMMAND_TIMEOUT + IMAGE_TIMEOUT_MS / 1000,
    )
    assert "exceptionDetails" not in result, result["exceptionDetails"]
    found = result["result"]["value"]
    assert "error" not in found, f"{page}.html: {found['error']}"
    images = found["images"]
    assert len(images) >= spec["least"], f"{page}.html: {len(images)} images where {spec} expects {spec['least']}"
    broken = [image["src"] for image in images if not image["ok"]]
    assert not broken, f"{page}.html: images that do not load (naturalWidth 0): {broken}"


# --------------------------------------------------------------------------------------------
# Nothing wider than its column: every display equation and every line of code, on every page,
# measured at the width a reader on a laptop sees (1280 CSS pixels), with every fold opened (the
# hidden code cells and the exercises' solutions): what a reader who unfolds them sees.

LAYOUT_WIDTH = 1280

MEASURE_LAYOUT_JS = r"""
(async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  // Open every fold: <details> (hidden cells) and sphinx-togglebutton's dropdowns (solutions).
  for (const d of document.querySelectorAll("details")) d.open = true;
  for (const e of document.querySelectorAll(".toggle-hidden")) e.classList.remove("toggle-hidden");
  await new Promise(requestAnimationFrame);
  const brief = (text, n = 90) => {
    text = text.replace(/\s+/g, " ").trim();
    return text.length > n ? text.slice(0, n) + "..." : text;
  };
  const tex = new Map();  // MathJax's container -> the TeX it typeset
  try {
    for (const item of MathJax.startup.document.math) tex.set(item.typesetRoot, item.math);
  } catch (e) {}

  // A display equation is cut when its typeset box (mjx-math) is wider than the box MathJax puts
  // it in (mjx-container, which scrolls: overflow-x auto); an equation number takes its share.
  const equations = [];
  for (const box of document.querySelectorAll('mjx-container[display="true"]')) {
    const math = box.querySelector("mjx-math");
    if (!math || box.clientWidth === 0) continue;
    const width = math.getBoundingClientRect().width;
    if (width > box.clientWidth + 1 || box.scrollWidth > box.clientWidth + 1) {
      const label = box.closest("[id^=equation-]");
      equations.push({width: Math.round(width), column: box.clientWidth,
                      label: label ? label.id.replace(/^equation-/, "") : "",
                      tex: brief(tex.get(box) || box.textContent)});
    }
  }

  // A line of a code cell's input is cut when it runs past the right edge of its <pre>'s
  // visible box (the <pre> scrolls: scrollWidth > clientWidth). Each line is measured with a
  // Range over its text, so that the one that is cut can be named.
  const lines = [];
  const cells = [...document.querySelectorAll("div.cell div.cell_input pre")];
  cells.forEach((pre, cell) => {
    if (pre.clientWidth === 0 || pre.scrollWidth <= pre.clientWidth) return;
    const edge = pre.getBoundingClientRect().left + pre.clientLeft + pre.clientWidth;
    const found = [{text: "", right: -Infinity}];
    const walker = document.createTreeWalker(pre, NodeFilter.SHOW_TEXT);
    for (let node; (node = walker.nextNode());) {
      let offset = 0;
      node.data.split("\n").forEach((part, k) => {
        if (k > 0) found.push({text: "", right: -Infinity});
        if (part.length) {
          const range = document.createRange();
          range.setStart(node, offset);
          range.setEnd(node, offset + part.length);
          const line = found[found.length - 1];
          for (const rect of range.getClientRects()) line.right = Math.max(line.right, rect.right);
          line.text += part;
        }
        offset += part.length + 1;
      });
    }
    found.forEach((line, k) => {
      if (line.right > edge + 0.5) {
        lines.push({cell: cell + 1, line: k + 1, over: Math.round(line.right - edge),
                    chars: line.text.length, text: brief(line.text, 70)});
      }
    });
  });
  return {equations, lines, cells: cells.length};
})()
"""

_LAYOUT: dict[str, dict] = {}


def measure_layout(tab, server: str, page: str) -> dict:
    """The display equations and code lines of one page that are wider than their boxes, at
    LAYOUT_WIDTH with every fold open (measured once per page, for both tests below)."""
    if page not in _LAYOUT:
        browser, session = tab
        browser.send("Emulation.setDeviceMetricsOverride",
                     {"width": LAYOUT_WIDTH, "height": 900, "deviceScaleFactor": 1, "mobile": False},
                     session=session)
        try:
            browser.events.clear()
            browser.send("Page.navigate", {"url": f"{server}/{page}.html"}, session=session)
            browser.wait_for("Page.loadEventFired", session, LOAD_TIMEOUT)
            result = browser.send(
                "Runtime.evaluate",
                {"expression": MEASURE_LAYOUT_JS, "awaitPromise": True, "returnByValue": True},
                session=session,
                timeout=COMMAND_TIMEOUT + MATHJAX_TIMEOUT_MS / 1000,
            )
        finally:
            browser.send("Emulation.clearDeviceMetricsOverride", session=session)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{page}.html: the measurement failed: {result['exceptionDetails']}")
        _LAYOUT[page] = result["result"]["value"]
    return _LAYOUT[page]


@pytest.mark.parametrize("page", PAGES)
def test_display_equations_fit_their_column(tab, server, page):
    if not (HTML_DIR / f"{page}.html").is_file():
        pytest.fail(f"{page}.html is not in the built book at {HTML_DIR} (run `make book`)")
    wide = measure_layout(tab, server, page)["equations"]
    if wide:
        pytest.fail("\n".join(
            f"{page}.html: display equation {('(' + e['label'] + ') ') if e['label'] else ''}is {e['width']} px wide"
            f" in a column of {e['column']} px at {LAYOUT_WIDTH} px: {e['tex']}"
            for e in wide), pytrace=False)


@pytest.mark.parametrize("page", PAGES)
def test_code_lines_fit_their_block(tab, server, page):
    if not (HTML_DIR / f"{page}.html").is_file():
        pytest.fail(f"{page}.html is not in the built book at {HTML_DIR} (run `make book`)")
    cut = measure_layout(tab, server, page)["lines"]
    if cut:
        pytest.fail("\n".join(
            f"{page}.html: code cell {c['cell']}, line {c['line']} ({c['chars']} characters) runs {c['over']} px"
            f" past its block at {LAYOUT_WIDTH} px: {c['text']}"
            for c in cut), pytrace=False)
