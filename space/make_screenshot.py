"""Regenerates ``space/screenshot.png``, the picture of the running app shown in the README.

    python space/make_screenshot.py

Starts the app on the default generator, loads the astronaut example photo, types an example key into the (masked)
key field and protects the photo in headless Chromium
(Debian's ``chromium`` driven by Playwright, as in the tests), then saves the page reduced to 256 colours: the
noise tile does not compress, and a full-colour PNG of the page would weigh over a megabyte.
"""

from __future__ import annotations

import io
import socket
from pathlib import Path

from PIL import Image
from playwright.sync_api import expect, sync_playwright

if __package__:  # python -m space.make_screenshot
    from . import app
else:  # python space/make_screenshot.py: its folder is on sys.path
    import app

TARGET = Path(__file__).resolve().parent / "screenshot.png"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


def main() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    demo = app.build_demo(app.handler.generator_sources())
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                **app.LAUNCH_OPTIONS)
    url = f"http://127.0.0.1:{port}/"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(url)
                       else route.abort())
            page.goto(url, wait_until="domcontentloaded")
            page.get_by_text("astronaut", exact=True).click()
            expect(page.locator("#photos")).to_contain_text("astronaut", timeout=30_000)
            page.locator("#key input").fill("an example key, not anyone's")
            page.locator("#protect-button").click()
            expect(page.locator("#results img")).to_have_count(3, timeout=120_000)
            page.wait_for_load_state("networkidle")
            shot = page.screenshot(full_page=True)
            browser.close()
    finally:
        demo.close()
    Image.open(io.BytesIO(shot)).convert("RGB").quantize(256).save(TARGET, optimize=True)
    print(f"wrote {TARGET} ({TARGET.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
