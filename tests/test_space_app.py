"""The Space (space/app.py) as users reach it: a real local server, called through ``gradio_client`` and driven in
headless Chromium (Debian's ``chromium`` package, which .ci/run installs, through Playwright)."""

import io
import os
import re
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from playwright.sync_api import expect, sync_playwright

from space import app as space_app

from .conftest import make_generator

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app on 127.0.0.1 with the shipped default generator and a tiny one, as ``--model tiny=...`` adds it."""
    tiny = tmp_path_factory.mktemp("tiny")
    make_generator().save_pretrained(tiny)
    with pytest.MonkeyPatch.context() as patch:
        # Uploads and results go to a temporary cache, not the machine's /tmp/gradio.
        patch.setenv("GRADIO_TEMP_DIR", str(tmp_path_factory.mktemp("gradio-cache")))
        generators = space_app.handler.generator_sources([f"tiny={tiny}"], environment="")
        demo = space_app.build_demo(generators)
        port = free_port()
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                    **space_app.LAUNCH_OPTIONS)
        try:
            yield f"http://127.0.0.1:{port}/"
        finally:
            demo.close()


@pytest.fixture
def client(server, tmp_path) -> Client:
    return Client(server, verbose=False, download_files=tmp_path, analytics_enabled=False)


def pixels(image_file: str | Path) -> np.ndarray:
    with Image.open(image_file) as image:
        return np.asarray(image, dtype=np.int16)


def check_protected(outputs: list[str], inputs: list[Path], epsilon: int) -> None:
    """Each output is a PNG of its input's size whose pixels differ from it by at most ε, and somewhere by some."""
    assert len(outputs) == len(inputs)
    for output, source in zip(outputs, inputs, strict=True):
        with Image.open(output) as image:
            assert image.format == "PNG"
        change = pixels(output) - pixels(source)
        assert change.shape == pixels(source).shape
        assert 0 < np.abs(change).max() <= epsilon


def test_api_protects_photos_with_one_owner_code(client, tmp_path, rng):
    gray = tmp_path / "gray.png"
    Image.fromarray(rng.integers(0, 256, (20, 30), dtype=np.uint8)).save(gray)
    photos = [ROOT / "examples" / "cifar-size" / "chelsea.png", gray]
    gallery, files, archive, report, code = client.predict(
        [handle_file(photo) for photo in photos], 4, "tiny", None, "one owner", 7, api_name="/protect")

    check_protected(files, photos, epsilon=4)
    assert [Path(file).name for file in files] == ["chelsea-protected.png", "gray-protected.png"]
    assert [item["caption"] for item in gallery][::3] == ["chelsea.png", "gray.png"]
    assert all(Path(item["image"]).suffix == ".png" for item in gallery)
    assert len(gallery) == 6
    with zipfile.ZipFile(archive) as contents:
        assert contents.namelist() == ["chelsea-protected.png", "gray-protected.png"]
        assert contents.read("gray-protected.png") == Path(files[1]).read_bytes()
    assert code == "7" and "owner code 7" in report and "tiny" in report

    # The same owner code next time protects the same photo the same way.
    again = client.predict([handle_file(photos[1])], 4, "tiny", "", "one owner", 7, api_name="/protect")[1]
    assert Path(again[0]).read_bytes() == Path(files[1]).read_bytes()


def test_api_picks_and_returns_a_new_owner_code_and_runs_label_free(client):
    photo = ROOT / "examples" / "cifar-size" / "rocket.png"
    *_, report, code = client.predict([handle_file(photo)], 8, "tiny", None, "one owner", None,
                                      api_name="/protect")
    assert int(code) in range(10) and f"owner code {code}" in report
    *_, report, typed = client.predict([handle_file(photo)], 8, "tiny", "a key", "one owner", " 4 ",
                                       api_name="/protect")  # a label generator ignores the key field
    assert typed == "4" and "owner code 4" in report
    _, files, _, report, code = client.predict([handle_file(photo)], 8, "tiny", None, "label-free", 3,
                                               api_name="/protect")
    check_protected(files, [photo], epsilon=8)
    assert code == "3" and "label-free" in report  # the code typed is kept for next time


def test_api_default_generator_protects_an_example_photo_as_the_readme_shows(client):
    photo = ROOT / "examples" / "cifar-size" / "astronaut.png"
    key = space_app.new_key()
    gallery, files, archive, report, _ = client.predict(
        photos=[handle_file(photo)], strength=8, generator="default", key=key, api_name="/protect")
    check_protected(files, [photo], epsilon=8)
    assert "*default* generator, ε = 8/255, **your key**: use the same key for all your photos" in report

    # The same key protects the same way next time; another key differently; no key is refused.
    again = client.predict(photos=[handle_file(photo)], strength=8, generator="default", key=key,
                           api_name="/protect")[1]
    assert Path(again[0]).read_bytes() == Path(files[0]).read_bytes()
    other = client.predict(photos=[handle_file(photo)], strength=8, generator="default", key=key[::-1],
                           api_name="/protect")[1]
    assert not np.array_equal(pixels(other[0]), pixels(files[0]))
    with pytest.raises(AppError, match="Enter your key, or press New key"):
        client.predict(photos=[handle_file(photo)], strength=8, generator="default", key="", api_name="/protect")

    # The key is in nothing the app returned, nor in any file the server wrote.
    assert key not in repr(gallery) + report + " ".join(files) + archive
    written = [path for path in Path(os.environ["GRADIO_TEMP_DIR"]).rglob("*") if path.is_file()]
    assert archive and written
    assert all(key.encode() not in path.read_bytes() for path in written)


def test_new_key_and_the_inputs_each_generator_takes(tmp_path):
    key, shown = space_app.make_key()
    assert len(key) >= 43 and shown == {"__type__": "update", "value": key, "visible": True}
    assert space_app.make_key()[0] != key
    assert space_app.hide_new_key() == {"__type__": "update", "value": "", "visible": False}
    make_generator().save_pretrained(tmp_path / "tiny")
    _, _, show_inputs = space_app.request_handlers({"default": space_app.handler.DEFAULT_MODEL,
                                                    "tiny": str(tmp_path / "tiny")})
    visible = lambda updates: [update["visible"] for update in updates]  # key, mode, owner code
    assert visible(show_inputs("default", "one owner")) == [True, False, False]
    assert visible(show_inputs("tiny", "one owner")) == [False, True, True]
    assert visible(show_inputs("tiny", "label-free")) == [False, True, False]


def test_api_explains_what_it_cannot_protect(client, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    with pytest.raises(AppError, match="Invalid file type"):
        client.predict([handle_file(notes)], 8, "tiny", None, "label-free", None, api_name="/protect")
    broken = tmp_path / "broken.png"
    broken.write_text("not a photo either")
    with pytest.raises(AppError, match="None of the uploaded files could be protected:<br>broken.png: not an image"):
        client.predict([handle_file(broken)], 8, "tiny", None, "label-free", None, api_name="/protect")
    with pytest.raises(AppError, match="owner code must be a whole number from 0 to 9"):
        client.predict([handle_file(ROOT / "examples" / "coffee.png")], 8, "tiny", None, "one owner", 10,
                       api_name="/protect")
    huge = tmp_path / "huge.png"
    huge.write_bytes(os.urandom(space_app.handler.MAX_FILE_BYTES + 1))
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        client.predict([handle_file(huge)], 8, "tiny", None, "label-free", None, api_name="/protect")


def test_api_is_documented(client):
    endpoint = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/protect"]
    assert [parameter["parameter_name"] for parameter in endpoint["parameters"]] == [
        "photos", "strength", "generator", "key", "mode", "owner_code"]


def test_app_refuses_to_start_with_a_generator_it_cannot_load(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        space_app.main(["--model", f"robust={tmp_path / 'missing'}"])
    assert stopped.value.code == 2
    assert "generator 'robust': could not load a ConfounderGenerator" in capsys.readouterr().err


@pytest.mark.skipif(not CHROMIUM.exists(),
                    reason=f"{CHROMIUM} (Debian's chromium package) is missing; .ci/run installs it with apt-get")
def test_browser_uploads_a_photo_and_gets_it_protected(server):
    photo = ROOT / "examples" / "cifar-size" / "chelsea.png"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"])
        try:
            page = browser.new_page()
            # Nothing but the app itself: the test must not depend on (or wait for) the internet.
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(server)
                       else route.abort())
            page.goto(server, wait_until="domcontentloaded")
            # The default generator is keyed: a masked key field, a New key button, no owner code.
            key = page.locator("#key input")
            expect(key).to_have_attribute("type", "password", timeout=30_000)
            expect(page.locator("#owner-code")).to_be_hidden()
            page.locator("#new-key").click()
            shown = page.locator("#new-key-shown textarea, #new-key-shown input")
            expect(shown).to_have_value(re.compile(r"^[\w-]{43}$"), timeout=30_000)  # shown once, to keep
            expect(key).to_have_value(shown.input_value())

            page.locator("#photos input[type=file]").set_input_files(photo)
            expect(page.locator("#photos")).to_contain_text("chelsea", timeout=30_000)  # uploaded
            page.locator("#protect-button").click()

            expect(page.locator("#results img")).to_have_count(3, timeout=60_000)
            expect(page.locator("#new-key-shown")).to_be_hidden()  # from now on only in the masked field
            expect(page.locator("#report")).to_contain_text("your key")
            href = page.locator("#downloads a").first.get_attribute("href")
            assert href.endswith("-protected.png")
            response = page.request.get(href)
            assert response.ok
            protected = Image.open(io.BytesIO(response.body()))
            assert protected.format == "PNG"
            change = np.asarray(protected, dtype=np.int16) - pixels(photo)
            assert 0 < np.abs(change).max() <= 8
        finally:
            browser.close()
