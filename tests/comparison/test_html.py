"""report.html: self-contained, the report's content, and an answer explorer that works in a real browser (headless
Chromium from the system packages, driven by Playwright)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from spanqa import compare
from spanqa.comparison import runs as comparison
from spanqa.comparison.explorer import explorer_data
from spanqa.comparison.html import markdown_to_html
from tests.comparison.fake_runs import N_QUESTIONS, context_of, write_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# As root Chromium needs --no-sandbox; the network flags keep it from calling out from a closed machine.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]  # fmt: skip


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """make compare over three heads x two seeds: report.html and the runs it was made from."""
    root = tmp_path_factory.mktemp("html")
    for model, skill in (("spanbert", 0.5), ("spanbert_crf", 0.6), ("spanbert_bio", 0.55)):
        for seed in (1, 2):
            write_run(root / "runs" / f"{model}-{seed}", model, seed, skill)
    try:
        assert compare.main([str(root / "runs"), "--out", str(root / "r"), "--resamples", "200"]) == 0
    except SystemExit as stop:
        raise AssertionError(f"compare exited {stop.code}") from None
    return root


def expected(root: Path) -> dict:
    runs, _ = comparison.collect_local([root / "runs"])
    return explorer_data(comparison.group_runs(runs))


def test_the_page_is_one_self_contained_file_with_the_reports_content(report: Path) -> None:
    page = (report / "r" / "report.html").read_text()
    markdown = (report / "r" / "report.md").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing fetched from anywhere
    assert page.count('src="data:image/png;base64,') == markdown.count("![")
    for section in ("Summary", "Does the candidate help?", "Error analysis", "Answer explorer"):
        assert f">{section}</h" in page
    assert page.count("Paired bootstrap over") == markdown.count("Paired bootstrap over") == 3
    data = json.loads(re.search(r'<script type="application/json" id="explorer-data">(.*?)</script>', page,
                                re.S).group(1))  # fmt: skip
    assert data == expected(report)
    assert data["heads"] == ["spanbert", "spanbert_bio", "spanbert_crf"] and len(data["questions"]) == N_QUESTIONS
    first = data["questions"][0]
    assert data["contexts"][first[2]] == context_of(0) and first[3] == ["Paris"]


def test_markdown_subset() -> None:
    out = markdown_to_html("## A *b*\n\n| x | y |\n|---|---|\n| **1** | `2` |\n\n- one\n- two\n\n![f](f.png)\n",
                           {"f.png": "data:x"})  # fmt: skip
    assert out == (
        "<h2>A *b*</h2>\n<table><tr><th>x</th><th>y</th></tr>\n<tr><td><b>1</b></td><td><code>2</code></td></tr>\n"
        '</table>\n<ul><li>one</li><li>two</li></ul>\n<p><img alt="f" src="data:x"></p>'
    )


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (.ci/run installs Debian's chromium)")
def test_the_explorer_filters_and_highlights_in_a_real_browser(report: Path) -> None:
    from playwright.sync_api import sync_playwright

    data = expected(report)
    questions = data["questions"]
    disagree = [q for q in questions if len({a[0] for a in q[5]}) > 1]
    one_right = [q for q in questions if any(a[4] == 1 for a in q[5]) and any(a[4] == 0 for a in q[5])]
    unanswerable = [q for q in questions if not q[3]]
    who = [q for q in questions if q[4] == "who"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto((report / "r" / "report.html").as_uri())
        assert page.text_content("#count") == f"{N_QUESTIONS} of {N_QUESTIONS} questions"
        assert page.locator("#answers tbody tr").count() == min(50, N_QUESTIONS)
        for value, rows in (("disagree", disagree), ("one_right", one_right), ("unanswerable", unanswerable)):
            page.select_option("#filter", value)
            assert page.text_content("#count") == f"{len(rows)} of {N_QUESTIONS} questions", value
            shown = page.locator("#answers tbody tr").evaluate_all("rows => rows.map(r => r.dataset.id)")
            assert shown == [q[0] for q in rows][:50], value
        page.select_option("#filter", "all")
        page.select_option("#word", "who")
        assert page.locator("#answers tbody tr").count() == len(who)
        page.select_option("#word", "all")
        page.fill("#search", "town 7?")
        assert page.locator("#answers tbody tr").evaluate_all("rows => rows.map(r => r.dataset.id)") == ["q7"]
        # A click opens the question's context, each group's answer marked in it.
        page.fill("#search", "")
        answered = next(q for q in questions if sum(bool(a[0]) for a in q[5]) >= 2)
        row = page.locator(f'#answers tr[data-id="{answered[0]}"]')
        row.click()
        assert row.locator(".ctx").is_visible()
        marks = row.locator(".ctx mark").evaluate_all("ms => ms.map(m => [m.title, m.textContent])")
        by_head = {h: a[0] for h, a in zip(data["heads"], answered[5], strict=True) if a[0]}
        assert marks and all(by_head[title] == text for title, text in marks)
        browser.close()
