"""The rendered book as a reader meets it: every page of `_build/html` in headless Chromium.

Serves the site on 127.0.0.1 and loads each page at 1280 and 390 px. Fails on a broken internal
link or anchor, an image that does not decode, raw `$`/`\\(` outside math or a MathJax error, a
page wider than the viewport, display math or a table that overflows its column at 1280 px, and a
sidebar toggle that does not open the sidebar at 390 px. Screenshots go to build/site/.

MathJax comes from a CDN in the published site; here the same pinned version is taken from the
npm registry (`npm pack`) and served locally, so the check runs offline.

    python tests/site_check.py [--site _build/html] [--out build/site]
"""

from __future__ import annotations

import argparse
import functools
import http.server
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

import yaml

REPO = Path(__file__).resolve().parents[1]
WIDTHS = {1280: 800, 390: 844}
# jupyter-book 1.0 emits sphinx-thebe's config script twice; the second copy's redeclaration is
# harmless (the first defined the same constants) and not ours to fix.
KNOWN_JS_ERRORS = ("Identifier 'THEBE_JS_URL' has already been declared",)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]

# Visible text outside math and code that still contains TeX delimiters.
RAW_MATH_JS = """() => {
  const skip = 'script, style, pre, code, textarea, mjx-container, .math, .tex2jax_ignore';
  const walker = document.createTreeWalker(document.querySelector('main') || document.body,
                                           NodeFilter.SHOW_TEXT);
  const bad = [];
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement;
    if (!el || el.closest(skip) || !el.offsetParent) continue;
    const t = n.textContent;
    if (/\\$|\\\\\\(|\\\\\\[/.test(t)) bad.push(t.trim().slice(0, 80));
  }
  return bad;
}"""

PAGE_JS = """() => {
  const vw = document.documentElement.clientWidth;
  const wide = (el) => el.scrollWidth > el.clientWidth + 1;
  return {
    pageWidth: document.documentElement.scrollWidth, viewport: vw,
    brokenImages: [...document.images].filter(i => !i.complete || i.naturalWidth === 0)
                                      .map(i => i.getAttribute('src')),
    altless: [...document.querySelectorAll('main img')]
      .filter(i => !i.alt || /\\.(png|jpe?g|svg)$/i.test(i.alt)).map(i => i.getAttribute('src')),
    uncaptioned: [...document.querySelectorAll('main img')]
      .filter(i => !i.closest('figure') || !/Fig\\. ?\\d/.test(
        (i.closest('figure').querySelector('figcaption') || {}).textContent || ''))
      .map(i => i.getAttribute('src')),
    mathErrors: [...document.querySelectorAll('mjx-merror')].map(e => e.textContent.slice(0, 80)),
    wideMath: [...document.querySelectorAll('main mjx-container[display="true"]')]
      .filter(e => wide(e) || e.getBoundingClientRect().right > vw)
      .map(e => (e.getAttribute('aria-label') || e.textContent).slice(0, 60)),
    wideTables: [...document.querySelectorAll('main table')]
      .filter(t => wide(t.parentElement) || t.getBoundingClientRect().right > vw + 1)
      .map(t => t.rows[0] ? t.rows[0].textContent.trim().slice(0, 60) : 'table'),
    ids: [...document.querySelectorAll('[id], a[name]')].map(e => e.id || e.name),
    links: [...document.querySelectorAll('a[href]')].map(a => a.href),
  };
}"""

VISIBLE_JS = """(sel) => {
  const el = document.querySelector(sel);
  if (!el) return false;
  const r = el.getBoundingClientRect(), s = getComputedStyle(el);
  return s.visibility !== 'hidden' && s.display !== 'none' && r.width > 100 &&
         r.right > 100 && r.left < window.innerWidth - 100;
}"""


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # the browser drops connections it no longer needs (aborted loads)


def serve(site: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(QuietHandler, directory=str(site))
    server = QuietServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}"


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    sys.exit("site check: no chromium found; install it with `apt-get install -y chromium`")


def mathjax() -> tuple[str, Path]:
    """The pinned MathJax URL prefix of _config.yml and a local copy of that version."""
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    url = config["sphinx"]["config"]["mathjax_path"]
    m = re.search(r"^(.*/mathjax@(\d+\.\d+\.\d+))/(.*)$", url)
    if not m:
        sys.exit(f"site check: mathjax_path must pin an exact version (mathjax@X.Y.Z): {url}")
    prefix, version = m.group(1), m.group(2)
    local = REPO / ".cache" / "site" / f"mathjax-{version}"
    if not (local / "package" / m.group(3)).is_file():
        local.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "pack", f"mathjax@{version}", "--pack-destination", str(local),
                        "--silent"], check=True, stdout=subprocess.DEVNULL)
        with tarfile.open(local / f"mathjax-{version}.tgz") as tar:
            tar.extractall(local, filter="data")
    return prefix, local / "package"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--site", type=Path, default=REPO / "_build" / "html")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "site")
    args = parser.parse_args()
    if not (args.site / "index.html").is_file():
        sys.exit(f"site check: {args.site}/index.html missing; build the book first")
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*.png"):
        old.unlink()
    mj_prefix, mj_local = mathjax()
    server, base = serve(args.site)
    pages, redirects = [], {}
    for path in sorted(args.site.rglob("*.html")):
        name = path.relative_to(args.site).as_posix()
        if name.startswith("_"):
            continue
        refresh = re.search(r'http-equiv="refresh"[^>]*url=([^"]+)"', path.read_text(), re.I)
        if refresh:  # the root index only redirects to the intro
            redirects[name] = {f"{base}/{Path(name).parent.as_posix()}/{refresh.group(1)}"
                               .replace("/./", "/")}
        else:
            pages.append(name)
    problems: list[str] = []
    ids: dict[str, set[str]] = {}
    links: dict[str, set[str]] = {}
    external: set[str] = set()
    errors: list[str] = []

    def route(r):
        url = r.request.url
        if url.startswith(base):
            return r.continue_()
        if url.startswith(mj_prefix + "/"):
            path = mj_local / urlparse(url).path.split("mathjax@", 1)[1].split("/", 1)[1]
            return r.fulfill(path=str(path)) if path.is_file() else r.abort()
        if not url.startswith("data:"):
            external.add(url)
        return r.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        for width, height in WIDTHS.items():
            context = browser.new_context(viewport={"width": width, "height": height})
            context.route("**/*", route)
            page = context.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            for name in pages:
                errors.clear()
                response = page.goto(f"{base}/{name}", wait_until="load")
                if response is None or not response.ok:
                    problems.append(f"{name}: HTTP {response and response.status}")
                    continue
                page.evaluate("() => window.MathJax && MathJax.startup && "
                              "MathJax.startup.promise.then(() => true)")
                page.wait_for_timeout(100)
                info = page.evaluate(PAGE_JS)
                where = f"{name} @{width}px"
                if info["pageWidth"] > info["viewport"] + 1:
                    problems.append(f"{where}: page is {info['pageWidth']} px wide")
                for key, what in (("brokenImages", "image does not decode"),
                                  ("altless", "image without real alt text"),
                                  ("uncaptioned", "image without a numbered caption"),
                                  ("mathErrors", "MathJax error")):
                    problems += [f"{where}: {what}: {x}" for x in info[key]]
                problems += [f"{where}: raw TeX outside math: {t!r}"
                             for t in page.evaluate(RAW_MATH_JS)]
                problems += [f"{where}: JavaScript error: {e}" for e in errors
                             if not any(k in e for k in KNOWN_JS_ERRORS)]
                if width >= 1280:
                    problems += [f"{where}: display math overflows: {t!r}"
                                 for t in info["wideMath"]]
                    problems += [f"{where}: table overflows its column: {t!r}"
                                 for t in info["wideTables"]]
                    if not page.evaluate(VISIBLE_JS, ".bd-sidebar-primary"):
                        problems.append(f"{where}: the chapter list is not visible")
                    elif name == pages[0]:
                        problems += check_desktop_toggle(page, where)
                ids[name], links[name] = set(info["ids"]), set(info["links"])
                stem = name.removesuffix(".html").replace("/", "-")
                page.screenshot(path=args.out / f"{stem}-{width}.png")
                if width < 1280:
                    problems += check_toggles(page, name, args.out / stem)
            context.close()
        browser.close()
    problems += check_links({**links, **redirects}, ids, base)
    problems += [f"external request (the site must load offline, MathJax aside): {u}"
                 for u in sorted(external)]
    server.shutdown()
    for p in problems:
        print(f"FAIL {p}")
    print(f"site check: {len(pages)} pages at {', '.join(f'{w} px' for w in WIDTHS)}; "
          f"{len(problems)} problems; screenshots in {args.out}")
    return 1 if problems else 0


def check_desktop_toggle(page, where: str) -> list[str]:
    """On a wide screen the sidebar button hides the chapter list, and brings it back."""
    button = page.locator(".primary-toggle").filter(visible=True).first
    try:
        for visible in (False, True):
            button.click()
            page.wait_for_function(f"(sel) => ({VISIBLE_JS})(sel) === {str(visible).lower()}",
                                   arg=".bd-sidebar-primary", timeout=3000)
    except Exception:
        return [f"{where}: the sidebar button does not hide and show the chapter list"]
    return []


def check_toggles(page, name: str, stem: Path) -> list[str]:
    """At phone width, the chapter list (and a chapter's contents) open from their buttons."""
    problems = []
    toggles = [(".primary-toggle", ".bd-sidebar-primary", "sidebar")]
    if page.evaluate("() => !!document.querySelector('.secondary-toggle') && "
                     "!!document.querySelector('.bd-sidebar-secondary nav')"):
        toggles.append((".secondary-toggle", ".bd-sidebar-secondary", "contents"))
    for button, panel, label in toggles:
        if page.evaluate(VISIBLE_JS, panel):
            problems.append(f"{name} @390px: the {label} is open before its button is pressed")
            continue
        page.locator(button).filter(visible=True).first.click()
        try:
            page.wait_for_function(VISIBLE_JS, arg=panel, timeout=3000)
        except Exception:
            problems.append(f"{name} @390px: the {label} button does not open the {label}")
        page.wait_for_timeout(400)  # the slide-in transition
        page.screenshot(path=f"{stem}-390-{label}.png")
        page.keyboard.press("Escape")
        page.reload(wait_until="load")
    return problems


def check_links(links: dict[str, set[str]], ids: dict[str, set[str]], base: str) -> list[str]:
    problems, checked = [], {}
    for name, hrefs in sorted(links.items()):
        for href in sorted(hrefs):
            if not href.startswith(base + "/"):
                continue
            target, fragment = urldefrag(href)
            path = unquote(urlparse(target).path).lstrip("/") or "index.html"
            if path.endswith("/"):
                path += "index.html"
            if path in ids:
                if fragment and unquote(fragment) not in ids[path]:
                    problems.append(f"{name}: broken anchor {href[len(base) + 1:]}")
                continue
            if target not in checked:
                try:
                    with urllib.request.urlopen(target) as r:
                        checked[target] = r.status == 200
                except urllib.error.URLError:
                    checked[target] = False
            if not checked[target]:
                problems.append(f"{name}: broken link {href[len(base) + 1:]}")
    return problems


if __name__ == "__main__":
    sys.exit(main())
