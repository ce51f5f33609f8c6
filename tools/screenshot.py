"""Screenshot a local HTML page with Debian's chromium through playwright (no browser
download): `python tools/screenshot.py PAGE.html OUT.png [--width 1100] [--height 900]
[--hover-token N]`. Used for the README's screenshots."""

import argparse
from pathlib import Path

from playwright.sync_api import sync_playwright


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("page")
    p.add_argument("out")
    p.add_argument("--width", type=int, default=1100)
    p.add_argument("--height", type=int, default=900)
    p.add_argument("--hover-token", type=int, default=None, help="hover this token (trace pages)")
    a = p.parse_args()
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = b.new_page(viewport={"width": a.width, "height": a.height})
        page.goto(Path(a.page).resolve().as_uri())
        if a.hover_token is not None:
            page.locator("#text span").nth(a.hover_token).hover()
        page.screenshot(path=a.out)
        b.close()


if __name__ == "__main__":
    main()
