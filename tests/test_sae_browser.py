"""The interactive cluster figure in a real browser: headless Chromium (the Debian package) driven by Playwright
opens the html written by mistral_interactive_figure.py from a file:// URL with every network request
refused, waits for the plot, checks the traces drawn, hovers a point and reads its context label, and saves a
screenshot. Skips (with the reason) where Chromium or Playwright is not installed."""

from __future__ import annotations

import html as html_lib
import re
import shutil
from pathlib import Path

import pytest

from tests import sae_calendar as cal_mod

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def chromium_path() -> str | None:
    for path in CHROMIUM_CANDIDATES:
        if Path(path).is_file():
            return path
    return shutil.which("chromium")


def strip_tags(text: str) -> str:
    return html_lib.unescape(re.sub(r"<[^>]+>", "", text))


@pytest.mark.acceptance
def test_interactive_html_in_headless_chromium(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    browser_path = chromium_path()
    if browser_path is None:
        pytest.skip("no Chromium here (Debian: apt-get install -y chromium)")
    from multid.sae.analysis.cluster_points import read_cluster_points
    from sae_multid_feature_discovery import mistral_interactive_figure as script

    cal = cal_mod.make_calendar_run(tmp_path / "run", n_ctx=12)
    html_path, pca_path = script.main(cal_mod.cli_args(cal, "--cluster", "0", "--save_dir", str(tmp_path / "figs")))

    remote: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": 1300, "height": 900})

            def guard(route):
                if route.request.url.startswith("file://"):
                    route.continue_()
                else:
                    remote.append(route.request.url)
                    route.abort()

            context.route("**/*", guard)
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.goto(html_path.resolve().as_uri())
            page.wait_for_selector(".js-plotly-plot .scatterlayer .trace", timeout=30_000)
            info = page.evaluate("""() => {
                const gd = document.querySelector('.js-plotly-plot');
                return {types: gd.data.map(t => t.type),
                        svgTraces: gd.querySelectorAll('.scatterlayer .trace').length,
                        heatImages: gd.querySelectorAll('.heatmaplayer image').length,
                        points: Array.from(gd.querySelectorAll('.scatterlayer .trace')).map(
                            t => t.querySelectorAll('path.point').length)};
            }""")
            assert info["types"] == ["heatmap", "scatter", "scatter"] + ["scatter"] * 4
            assert info["svgTraces"] == 6 and info["heatImages"] == 1
            n_points = len(read_cluster_points(pca_path).tokens)
            assert info["points"][2:] == [n_points] * 4 and info["points"][:2] == [7, 7]

            # hover the first point of the first PCA panel; plotly reports which point it chose
            page.evaluate("""() => {
                window.__hovered = null;
                document.querySelector('.js-plotly-plot').on('plotly_hover',
                    e => { window.__hovered = {curve: e.points[0].curveNumber, index: e.points[0].pointIndex}; });
            }""")
            box = page.locator(".scatterlayer .trace").nth(2).locator("path.point").first.bounding_box()
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.wait_for_selector(".hoverlayer .hovertext", timeout=10_000)
            hovered = page.evaluate("() => window.__hovered")
            assert hovered is not None and hovered["curve"] >= 3
            expected = page.evaluate(f"() => document.querySelector('.js-plotly-plot')"
                                     f".data[{hovered['curve']}].text[{hovered['index']}]")
            shown = page.locator(".hoverlayer .hovertext text").first.text_content()
            assert shown.replace("\u00a0", " ").strip() == strip_tags(expected).strip()
            bold = page.evaluate("""() => Array.from(document.querySelectorAll('.hoverlayer .hovertext tspan'))
                .filter(t => (t.getAttribute('style') || '').includes('bold')).map(t => t.textContent)""")
            firing = re.search(r"<b>(.*?)</b>", expected).group(1)
            assert bold == [html_lib.unescape(firing)] and firing.strip() in cal_mod.DAY_NAMES
            shot = tmp_path / "interactive.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 20_000
            assert errors == []
        finally:
            browser.close()
    assert remote == []  # everything came from the file itself
