"""`stateline ui` in a real headless browser (Debian's chromium, driven by Playwright),
on a thread made by a real LangGraph graph: forked, interrupted, with a subgraph.

Each page is screenshotted into $STATELINE_SCREENSHOTS (default build/screenshots);
`STATELINE_SCREENSHOTS=docs/screenshots` refreshes the README's picture.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from stateline.langgraph import RedisSaver

from .ui_graph import THREAD, forked_interrupted_thread
from .waiting import until

uvicorn = pytest.importorskip("uvicorn", reason="the inspector needs the ui extra (starlette, uvicorn)")
from stateline.cli.ui.app import create_app  # noqa: E402 - after the extra is known to be there

ROOT = Path(__file__).resolve().parents[1]
SHOTS = Path(os.environ.get("STATELINE_SCREENSHOTS", ROOT / "build" / "screenshots"))
# Playwright adds --headless and --no-sandbox (needed as root); the rest keeps the browser
# quiet and from reaching for the network.
FLAGS = ["--disable-gpu", "--disable-background-networking", "--disable-extensions", "--no-first-run",
         "--disable-sync", "--disable-default-apps", "--mute-audio"]  # fmt: skip


def chromium() -> str | None:
    """Debian's chromium-headless-shell (or chromium): the real binary, not its wrapper."""
    for path in ("/usr/lib/chromium/chromium-headless-shell", "/usr/lib/chromium/chromium"):
        if os.access(path, os.X_OK):
            return path
    return shutil.which("chromium-headless-shell") or shutil.which("chromium")


def missing(reason: str) -> None:
    """Outside CI a missing browser skips the browser tests; in CI it fails them."""
    if os.environ.get("CI"):
        pytest.fail(f"CI needs {reason} (.ci/run installs it)")
    pytest.skip(f"needs {reason}: apt-get install chromium-headless-shell; pip install playwright")


@pytest.fixture(scope="module")  # (sync_playwright runs an event loop: closed with the module)
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("Playwright for Python")
    exe = chromium()
    if exe is None:
        missing("Debian's chromium-headless-shell")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True, args=FLAGS)
        yield b
        b.close()


class Inspector:
    """`stateline ui`'s app served by uvicorn in a thread, on a free port."""

    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the inspector did not start"
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def made(valkey: str) -> Iterator[tuple[RedisSaver, dict[str, Any]]]:
    saver = RedisSaver(valkey, prefix=f"ui{uuid.uuid4().hex[:6]}:")
    tips = forked_interrupted_thread(saver)
    forked_interrupted_thread(saver, "another-trip")
    yield saver, tips
    saver.close()


@pytest.fixture(scope="module")
def writable(made: tuple[RedisSaver, dict[str, Any]]) -> Iterator[str]:
    saver, _ = made
    inspector = Inspector(create_app(saver, allow_writes=True, about={"prefix": "test", "server": "test"}))
    yield inspector.url
    inspector.stop()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    p = context.new_page()
    p.set_default_timeout(15_000)
    errors: list[str] = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    yield p
    context.close()
    assert errors == [], "the page raised JavaScript errors"


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def cid(config: dict[str, Any]) -> str:
    return config["configurable"]["checkpoint_id"]


# -- reading ----------------------------------------------------------------------------------------


def test_threads_page_lists_searches_and_shows_sizes(page: Any, writable: str) -> None:
    page.goto(writable + "/")
    page.wait_for_selector("#threads")
    rows = page.locator("tr.thread")
    assert sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.thread)")) == ["another-trip", THREAD]
    size = page.locator(f'tr.thread[data-thread="{THREAD}"] td.size').inner_text()
    assert re.fullmatch(r"\d+(\.\d)? (B|KB|MB)", size)
    assert page.locator("#mode").inner_text() == "writes allowed"
    shot(page, "threads")
    page.fill("#search", "trip-pl")
    page.click("#search-go")
    page.wait_for_function("document.querySelectorAll('tr.thread').length === 1")
    assert page.locator("tr.thread").get_attribute("data-thread") == THREAD
    page.fill("#search", "nothing-like-it")
    page.press("#search", "Enter")
    page.wait_for_selector("#no-threads")


def test_threads_come_a_page_at_a_time(page: Any, writable: str) -> None:
    page.goto(writable + "/#/?limit=1")
    page.wait_for_selector("tr.thread")
    seen = [page.locator("tr.thread").get_attribute("data-thread")]
    assert page.locator("tr.thread").count() == 1 and page.locator("#first").count() == 0
    page.click("#next")
    page.wait_for_function(f"document.querySelector('tr.thread')?.dataset.thread !== {seen[0]!r}")
    seen.append(page.locator("tr.thread").get_attribute("data-thread"))
    assert sorted(seen) == ["another-trip", THREAD]
    page.click("#first")
    page.wait_for_function(f"document.querySelector('tr.thread')?.dataset.thread === {seen[0]!r}")


def test_the_tree_shows_both_branches_and_the_subgraph_namespaces(
    page: Any, writable: str, made: tuple[RedisSaver, dict[str, Any]]
) -> None:
    _saver, tips = made
    page.goto(writable + "/")
    page.click(f'tr.thread[data-thread="{THREAD}"] a')
    page.wait_for_selector("#checkpoint")
    root = page.locator('section.ns[data-ns=""]')
    assert root.locator("li.branch").count() == 1  # one fork
    tip_ids = root.locator("li.node.tip").evaluate_all("ns => ns.map(n => n.dataset.id)")
    assert sorted(tip_ids) == sorted([cid(tips["lisbon"]), cid(tips["porto"])])  # both branches end in a tip
    forked = root.locator("li.branch li.node").evaluate_all("ns => ns.map(n => n.dataset.id)")
    assert cid(tips["porto"]) in forked and cid(tips["lisbon"]) not in forked
    assert "fork from step 0" in root.locator("li.branch .fork-label").inner_text()
    subgraphs = page.locator("section.ns").evaluate_all("ss => ss.map(s => s.dataset.ns)")
    assert len([ns for ns in subgraphs if ns.startswith("research:")]) == 2  # the subgraph ran once per branch
    shot(page, "thread")


def test_a_checkpoint_shows_its_conversation_tool_call_and_interrupt(
    page: Any, writable: str, made: tuple[RedisSaver, dict[str, Any]]
) -> None:
    _saver, tips = made
    page.goto(f"{writable}/#/thread/{THREAD}")
    page.wait_for_selector("#tree")
    page.click(f'li.node[data-id="{cid(tips["lisbon"])}"] > .cp')
    page.wait_for_function(f"document.querySelector('#checkpoint-id')?.textContent === '{cid(tips['lisbon'])}'")
    interrupt = page.locator("#interrupt")
    assert "Interrupted" in interrupt.inner_text() and "Book 2 nights in Lisbon?" in interrupt.inner_text()
    messages = page.locator("#conversation .msg")
    assert messages.evaluate_all("ms => ms.map(m => m.dataset.type)") == ["human", "ai"]
    call = page.locator("#conversation .tool-call").inner_text()
    assert 'book_hotel({"city":"Lisbon","nights":2})' in call and "call-lisbon" in call
    assert "Lisbon" in page.locator('#state tr[data-channel="city"]').inner_text()
    assert "__interrupt__" in page.locator("#writes").inner_text()
    shot(page, "checkpoint")


def test_the_diff_of_the_two_branch_tips_shows_the_changed_value(
    page: Any, writable: str, made: tuple[RedisSaver, dict[str, Any]]
) -> None:
    _saver, tips = made
    page.goto(f"{writable}/#/thread/{THREAD}")
    page.wait_for_selector("#tree")
    page.click(f'li.node[data-id="{cid(tips["lisbon"])}"] .diff-a')
    page.click(f'li.node[data-id="{cid(tips["porto"])}"] .diff-b')
    page.wait_for_selector("#changes")
    city = page.locator('#changes tr[data-path="city"]')
    assert city.get_attribute("class") == "op-change"
    assert '"Lisbon"' in city.locator("td.old").inner_text() and '"Porto"' in city.locator("td.new").inner_text()
    assert page.locator("li.node.selected, .diff-a.on, .diff-b.on").count() >= 2
    shot(page, "diff")
    page.click(f'li.node[data-id="{cid(tips["porto"])}"] > .cp')  # and a checkpoint's diff with its parent
    page.click("#diff-parent")
    page.wait_for_selector("#changes, #no-changes")


# -- writing: only with --allow-writes, always confirmed ------------------------------------------------


def test_delete_prune_and_copy_ask_first(page: Any, writable: str, made: tuple[RedisSaver, dict[str, Any]]) -> None:
    saver, _ = made
    page.goto(f"{writable}/#/thread/another-trip")
    page.wait_for_selector("#tree")
    page.click("#tree button:has-text('Copy…')")
    page.fill("#copy-target", "copied-trip")
    shot(page, "confirm")
    page.click("#confirm-ok")
    page.wait_for_function("!document.querySelector('#confirm').open")
    until(lambda: saver.get_tuple({"configurable": {"thread_id": "copied-trip"}}) is not None, what="no copy")

    page.goto(f"{writable}/#/thread/copied-trip")
    page.wait_for_selector("#tree")
    page.click("#tree button:has-text('Prune…')")
    page.wait_for_selector("#prune-preview:has-text('would go')")
    before = len(list(saver.list({"configurable": {"thread_id": "copied-trip", "checkpoint_ns": ""}})))
    page.click("#confirm-cancel")  # cancelled: nothing changes
    assert len(list(saver.list({"configurable": {"thread_id": "copied-trip", "checkpoint_ns": ""}}))) == before
    page.click("#tree button:has-text('Prune…')")
    page.wait_for_selector("#prune-preview:has-text('would go')")
    page.click("#confirm-ok")
    page.wait_for_function("!document.querySelector('#confirm').open")  # (the click was taken)
    until(
        lambda: len(list(saver.list({"configurable": {"thread_id": "copied-trip", "checkpoint_ns": ""}}))) == 1,
        what="the prune did not happen",
    )

    page.click("#tree button:has-text('Delete…')")
    page.click("#confirm-cancel")
    assert saver.get_tuple({"configurable": {"thread_id": "copied-trip"}}) is not None
    page.click("#tree button:has-text('Delete…')")
    page.click("#confirm-ok")
    page.wait_for_selector("#threads")
    assert saver.get_tuple({"configurable": {"thread_id": "copied-trip"}}) is None
    assert page.locator('tr.thread[data-thread="copied-trip"]').count() == 0


def test_read_only_offers_no_writes_and_refuses_them(page: Any, made: tuple[RedisSaver, dict[str, Any]]) -> None:
    saver, _ = made
    inspector = Inspector(create_app(saver, about={"prefix": "test", "server": "test"}))
    try:
        page.goto(inspector.url + "/")
        page.wait_for_selector("#threads")
        assert page.locator("#mode").inner_text() == "read-only"
        assert page.locator("button:has-text('Delete…')").count() == 0
        csrf = httpx.get(inspector.url + "/api/info").json()["csrf"]
        refused = httpx.post(inspector.url + "/api/delete", json={"thread": THREAD}, headers={"x-stateline-csrf": csrf})
        assert refused.status_code == 403
        assert saver.get_tuple({"configurable": {"thread_id": THREAD}}) is not None
    finally:
        inspector.stop()


def test_writes_need_the_pages_csrf_header(writable: str, made: tuple[RedisSaver, dict[str, Any]]) -> None:
    saver, _ = made
    for headers in ({}, {"x-stateline-csrf": "guessed"}):
        refused = httpx.post(writable + "/api/delete", json={"thread": THREAD}, headers=headers)
        assert refused.status_code == 403
    assert saver.get_tuple({"configurable": {"thread_id": THREAD}}) is not None


# -- who may look ------------------------------------------------------------------------------------------


def test_on_loopback_other_host_names_are_refused(writable: str) -> None:
    assert httpx.get(writable + "/api/info").status_code == 200
    assert httpx.get(writable + "/api/info", headers={"host": "localhost:1234"}).status_code == 200
    assert httpx.get(writable + "/api/info", headers={"host": "evil.example:80"}).status_code == 421


def test_beyond_loopback_the_page_asks_for_the_token(page: Any, made: tuple[RedisSaver, dict[str, Any]]) -> None:
    saver, _ = made
    token = "correct-horse-battery-staple"
    inspector = Inspector(create_app(saver, token=token, loopback=False, about={"prefix": "t", "server": "t"}))
    try:
        assert httpx.get(inspector.url + "/api/threads").status_code == 401
        bearer = httpx.get(inspector.url + "/api/info", headers={"authorization": f"Bearer {token}"})
        assert bearer.status_code == 200 and token not in bearer.text
        page.goto(inspector.url + "/")
        page.wait_for_selector("#token")  # redirected to the page that asks
        shot(page, "token")
        page.fill("#token", "wrong")
        page.click("#login")
        page.wait_for_selector("#failed:has-text('not the right one')")
        page.fill("#token", token)
        page.click("#login")
        page.wait_for_selector("#threads")
        assert token not in page.content()
    finally:
        inspector.stop()
    with pytest.raises(Exception, match="needs a token"):
        create_app(saver, loopback=False)


# -- the command ---------------------------------------------------------------------------------------------


def test_stateline_ui_serves_on_localhost_and_never_shows_the_password(valkey: str, tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    user_url = valkey.replace("redis://", "redis://default:hunter2-secret@", 1)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("STATELINE_UI_TOKEN", None)
    args = [sys.executable, "-m", "stateline", "ui", "--port", str(port), "--url", user_url, "--prefix", "cmd:"]
    refused = subprocess.run([*args, "--host", "0.0.0.0"], capture_output=True, text=True, timeout=60, env=env)
    assert refused.returncode == 2 and "STATELINE_UI_TOKEN" in refused.stderr
    log = (tmp_path / "out").open("w+")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                info = httpx.get(f"http://127.0.0.1:{port}/api/info").json()
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "stateline ui did not start"
                time.sleep(0.05)
        assert info["allow_writes"] is False and info["prefix"] == "cmd:"
        assert "hunter2" not in info["server"] and "***" in info["server"]
        assert httpx.get(f"http://127.0.0.1:{port}/").text.startswith("<!doctype html>")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    log.seek(0)
    printed = log.read()
    assert f"http://127.0.0.1:{port}/" in printed and "hunter2" not in printed
