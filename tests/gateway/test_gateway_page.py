"""The live view in a real browser (Debian's chromium, headless, driven by playwright): ask a
question in the page, see the task tree grow and the answer arrive, with no reload."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from playwright.async_api import async_playwright
from team_support import answers, asks, config, model, team

from argentic.gateway import Gateway
from argentic.testing.messagers import MakeMessager
from argentic.testing.waiting import wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "gateway.png"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 30_000

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (scripts/test.sh installs it)")


async def test_the_page_asks_a_role_and_shows_the_tree_and_the_answer(
    mqtt: MakeMessager, namespace: str, tmp_path: Path
) -> None:
    cfg = config(
        namespace,
        {
            "architect": {"description": "designs systems", "delegates": ["developer"]},
            "developer": {"description": "writes the code", "delegates": ["tester"]},
            "tester": {"description": "tests the code"},
        },
    )
    models = {
        "architect": model(asks("ask_developer", "write add()", then="plan")),
        "developer": model(asks("ask_tester", "test add()", then="code")),
        "tester": model(answers("tests pass")),
    }
    assert CHROMIUM is not None
    async with team(cfg, await mqtt(), models), Gateway(await mqtt()) as gateway, async_playwright() as pw:
        await wait_until(lambda: gateway.roster.online("tester") is not None, what="the team online")
        context = await pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=ARGS, headless=True
        )
        try:
            page = context.pages[0] if context.pages else await context.new_page()
            await page.set_viewport_size({"width": 1280, "height": 640})
            await page.goto(gateway.url + "/")
            await page.wait_for_selector("#roles [data-role=tester]", timeout=WAIT_MS)
            await page.select_option("#ask-role", "architect")
            await page.fill("#ask-text", "build a calculator")
            await page.click("#ask button[type=submit]")
            # The tree grows: the architect's task, the developer's under it, the tester's under that.
            nested = "li.task[data-role=architect] li.task[data-role=developer] li.task[data-role=tester]"
            await page.wait_for_selector(nested, state="attached", timeout=WAIT_MS)
            await page.wait_for_selector(
                "#tree > li.task[data-role=architect][data-state=completed]", timeout=WAIT_MS
            )
            answer = await page.text_content("#answer")
            states = await page.eval_on_selector_all("li.task", "nodes => nodes.map(n => n.dataset.state)")
            await page.screenshot(path=str(tmp_path / "gateway.png"))
            if os.environ.get("ARGENTIC_UPDATE_SCREENSHOTS") == "1":
                await page.screenshot(path=str(DOCS_SCREENSHOT))
        finally:
            await context.close()
    assert answer == 'plan: "code: \\"tests pass: test add()\\""'
    assert states == ["completed", "completed", "completed"]
    assert (tmp_path / "gateway.png").stat().st_size > 0
