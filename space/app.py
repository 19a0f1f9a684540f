"""ConfounderGAN Space: protect your photos in the browser before you publish them.

ConfounderGAN (Tian et al., "ConfounderGAN: Protecting Image Data Privacy with Causal Confounder", NeurIPS 2022)
adds small, per-image noise to photos so that classifiers trained on them fail. This file is the page layout and
the Gradio glue; the image processing lives in ``protect_handler.py``.

    python space/app.py                                  # the generator shipped with the package
    python space/app.py --model path/to/generator         # replace "default" (a folder or a Hub id)
    python space/app.py --model robust=org/robust-generator   # offer one more generator
    CONFOUNDER_MODEL=robust=org/robust-generator python space/app.py

``python -m space.app`` runs the same from the repository root. The page is served at http://127.0.0.1:7860;
``/protect`` is the API endpoint for ``gradio_client``.
"""

from __future__ import annotations

import argparse
import html
import math
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

# Set before Gradio is imported: no usage analytics or version checks leave the machine.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr

from modeling_confounder import ConfounderGenerator, is_keyed, new_key

if __package__:  # imported as space.app (python -m space.app, the tests)
    from . import protect_handler as handler
else:  # run as a script (python space/app.py, and on a Space): its folder is on sys.path
    import protect_handler as handler

HERE = Path(__file__).resolve().parent

# The Hub Space holds its own copy of examples/; a checkout of the repository has it next to space/.
EXAMPLES_DIR = next((folder for folder in (HERE / "examples", HERE.parent / "examples") if folder.is_dir()), None)
EXAMPLE_PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "camera.png", "logo.png"]
CONCURRENCY_LIMIT = 1
"""Requests protected at once: protecting takes ~70 bytes per pixel (~3.5 GB for 50 megapixels), so a burst waits
its turn instead of exhausting memory."""
QUEUE_SIZE = 20
"""Requests allowed to wait; more get a "queue is full" message instead of piling up uploads."""
CACHE_LIFETIME_S = 3600
"""Uploads and results are deleted from the server about this long after they were written."""
MODE_CHOICES = [("One owner: every photo gets my owner code", handler.ONE_OWNER),
                ("Label-free", handler.LABEL_FREE)]

LAUNCH_OPTIONS = {
    "max_file_size": handler.MAX_FILE_BYTES,
    "allowed_paths": [str(EXAMPLES_DIR)] if EXAMPLES_DIR else [],
    # Server-side rendering would start a Node process; the page needs none of it.
    "ssr_mode": False,
    # System fonts: the default theme loads Google Fonts, which fails offline and leaks visits to a third party.
    "theme": gr.themes.Soft(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]),
}
"""Keyword arguments for ``launch()``, shared by ``main`` and the tests."""

INTRO = f"""
# ConfounderGAN: protect your photos from being used to train image classifiers

Upload photos you are about to publish. Each gets a small noise of its own, at most ε levels out of 255 per pixel
(ε = {handler.EPSILON_DEFAULT} is hard to see). A classifier trained from scratch on protected photos learns the
noise instead of what they show, and does badly on real photos.
Method: [ConfounderGAN](https://arxiv.org/abs/2212.01767) (Tian et al., NeurIPS 2022).
"""

EXPLANATION = f"""
**What it does.** Makes the photos you publish poor training data for an image classifier trained on them, with
their labels or identities, from scratch. The noise is made from **your key**, a secret text: the same key gives
all your photos the same hidden shortcut, which a classifier learns instead of your face or your work. Press *New
key* once, store the key somewhere safe (a password manager), and enter the same key every time. Keep it secret:
someone who learns it can remove most of the noise from the photos you published with it. The key is used for
your request only: it is not logged, stored or written into any file. (Label generators, if the app offers any,
take an owner code 0–9 instead of a key.)

**What it does not do.** It does not hide anything from people who look at the photos, does not stop a model that
was already trained, and does not help if enough *unprotected* photos of the same subject are available. Lossy
re-encoding (JPEG, resizing by a platform) weakens it: publish the PNG files. The protection is only as good as the
generator: see its model card for how it was trained and measured.

**Your files.** Outputs are lossless PNG with the photo's orientation applied and no EXIF, GPS or camera metadata.
Up to {handler.MAX_IMAGES} photos per request, {handler.MAX_FILE_BYTES // 2**20} MB and
{handler.MAX_PIXELS // 1_000_000} megapixels each. Uploads and results are deleted from the server after about
{CACHE_LIFETIME_S // 3600} hour.
"""


def escape_markdown(text: str) -> str:
    """``text`` shown literally in Markdown (file names may contain ``*``, ``_``, ``|``...)."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~])", r"\\\1", text)


def format_psnr(psnr: float) -> str:
    return "∞ dB (unchanged)" if math.isinf(psnr) else f"{psnr:.1f} dB"


def format_ssim(ssim: float | None) -> str:
    return "n/a (under 7×7 px)" if ssim is None else f"{ssim:.3f}"


def gallery_items(result: handler.ProtectionResult) -> list[tuple[str, str]]:
    """Original, protected and amplified noise of each photo, in that order: one gallery row per photo."""
    gain = 127.5 / round(result.epsilon)
    items = []
    for photo in result.photos:
        # Short captions: the gallery cuts them to the tile width (the report below has the full table).
        shrunk = " · preview" if photo.downscaled else ""
        items += [
            (str(photo.original_preview), photo.source_name),
            (str(photo.protected_preview),
             f"PSNR {format_psnr(photo.psnr)} · SSIM {format_ssim(photo.ssim)}{shrunk}"),
            (str(photo.noise_preview), f"noise ×{gain:.0f}, gray = 0"),
        ]
    return items


def report(result: handler.ProtectionResult) -> str:
    """The Markdown summary under the gallery: settings, the owner code to keep, a quality table, skipped files."""
    count = len(result.photos)
    mode = ("**your key**: use the same key for all your photos" if result.keyed else
            "label-free" if result.owner_code is None else
            f"one owner, **owner code {result.owner_code}**: keep it and enter it next time, so that all your "
            "photos carry the same code")
    lines = [(f"Protected **{count} photo{'s' * (count != 1)}** with the *{escape_markdown(result.generator)}* "
              f"generator, ε = {result.epsilon:g}/255, {mode}."), "",
             "| photo | size | PSNR | SSIM | max abs change |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {escape_markdown(photo.source_name)} | {photo.width}×{photo.height} | {format_psnr(photo.psnr)} "
              f"| {format_ssim(photo.ssim)} | {photo.max_change}/255 |" for photo in result.photos]
    if any(photo.downscaled for photo in result.photos):
        lines += ["", (f"Photos larger than {handler.PREVIEW_SIDE} px are shown downscaled; the downloads are "
                       "full size.")]
    if result.skipped:
        lines += ["", f"**Skipped {len(result.skipped)}:**"] + [f"- {escape_markdown(message)}"
                                                                  for message in result.skipped]
    return "\n".join(lines)


def generator_for(generators: dict[str, str], name: str) -> ConfounderGenerator:
    """The generator offered as ``name``; a ``gr.Error`` for the page when it cannot be loaded."""
    # The dropdown only lets through names of `generators`; loading can still fail (a Hub id while offline).
    try:
        return handler.load_generator(generators[name])
    except OSError as error:
        raise gr.Error(f"The generator {name!r} could not be loaded: {error}") from None


def request_handlers(generators: dict[str, str]) -> tuple[Callable, Callable, Callable]:
    """The functions behind the Protect, New code and generator choice; Protect's signature and docstring are the
    API's."""

    def protect(
        photos: list[str] | None,
        strength: float,
        generator: str,
        key: str | None,
        mode: str,
        owner_code: str | None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - Gradio detects progress tracking by this default
    ) -> tuple[list[tuple[str, str]], list[str], str, str, str | None]:
        """Protects photos with ConfounderGAN noise; returns lossless PNGs.

        Args:
            photos: image files (PNG, JPEG, WebP, TIFF, BMP or GIF; up to 32, 20 MB and 50 megapixels each).
            strength: ε, the largest change of any pixel, in levels out of 255 (2 to 16).
            generator: the generator to use ("default" unless the app offers others).
            key: your secret key, the same for all your photos (required by keyed generators such as "default";
                ignored by label generators). Used for this request only: never stored or returned.
            mode: label generators only: "one owner" (every photo gets the same owner code) or "label-free".
            owner_code: label generators in "one owner" mode: your code (0 to 9); empty or None picks a new one.

        Returns:
            The gallery (original, protected, amplified noise of each photo, with captions), the protected PNG
            files, a zip of them, a Markdown report, and the owner code used (label generators, "one owner" mode).
        """
        model = generator_for(generators, generator)
        try:
            code, key = handler.resolve_request(mode, owner_code, key, model)
            # One folder per request inside Gradio's cache: served without a copy and removed by delete_cache.
            cache = Path(gr.utils.get_upload_folder())
            cache.mkdir(parents=True, exist_ok=True)
            output_dir = Path(tempfile.mkdtemp(prefix="confounder-", dir=cache))
            result = handler.protect_photos(
                photos or [], model, output_dir, epsilon=strength, owner_code=code, generator_name=generator,
                progress=lambda done, total, name: progress((done, total), desc=f"Protecting {name}"), key=key)
        except handler.InputError as error:
            # Gradio shows messages as HTML: escape file names, keep one line per problem.
            message = html.escape(str(error), quote=False).replace("\n", "<br>")
            raise gr.Error(message, title="Cannot protect") from None
        if result.skipped:
            gr.Warning("<br>".join(html.escape(message, quote=False) for message in result.skipped),
                       title="Skipped")
        return (gallery_items(result), [str(photo.protected) for photo in result.photos], str(result.archive),
                report(result), owner_code if code is None else str(code))

    def new_code(generator: str) -> str:
        return str(handler.new_owner_code(generator_for(generators, generator)))

    def show_inputs(generator: str, mode: str) -> tuple[dict, dict, dict]:
        """The key for a keyed generator, the mode and owner code for a label generator."""
        keyed = is_keyed(generator_for(generators, generator))
        return (gr.update(visible=keyed), gr.update(visible=not keyed),
                gr.update(visible=not keyed and mode == handler.ONE_OWNER))

    return protect, new_code, show_inputs


def make_key() -> tuple[str, dict]:
    """A new key, into the (masked) key field and, once, into a visible field to copy and store."""
    key = new_key()
    return key, gr.update(value=key, visible=True)


def hide_new_key() -> dict:
    """Clears the visible copy of a new key: from then on it is only in the masked field."""
    return gr.update(value="", visible=False)


def input_column(generators: dict[str, str], keyed: bool) -> dict:
    """The left column: photos, examples, strength, generator, its key or owner code, and the buttons.

    ``keyed``: whether the generator shown first takes a key (then the mode and owner code are hidden) or labels.
    """
    ui = {"photos": gr.File(label=f"Photos (drag and drop, up to {handler.MAX_IMAGES})",
                            file_count="multiple", file_types=["image"], elem_id="photos")}
    if EXAMPLES_DIR:
        files = [str(EXAMPLES_DIR / name) for name in EXAMPLE_PHOTOS]
        gr.Examples([[[file]] for file in files] + [[files]], inputs=[ui["photos"]],
                    example_labels=[Path(name).stem for name in EXAMPLE_PHOTOS] + ["all five"],
                    label="Example photos (click to load)")
    ui["strength"] = gr.Slider(handler.EPSILON_MIN, handler.EPSILON_MAX, value=handler.EPSILON_DEFAULT,
                               step=1, label="Strength ε (levels out of 255)",
                               info="Larger is stronger and more visible; 8 is the paper's setting.")
    ui["generator"] = gr.Dropdown(list(generators), value="default", label="Generator")
    with gr.Column(visible=keyed) as ui["key_inputs"]:
        with gr.Row():
            ui["key"] = gr.Textbox(type="password", label="Your key", max_lines=1, scale=3, elem_id="key",
                                   placeholder="paste your key, or press New key",
                                   info="A secret: use the same key for all your photos. It is used for this "
                                        "request only, never stored.")
            ui["key_button"] = gr.Button("New key", scale=1, size="md", elem_id="new-key")
        ui["shown_key"] = gr.Textbox(label="Your new key: store it now (a password manager), shown only this once",
                                     info="Enter it every time you protect photos; from now on it stays hidden "
                                          "in the key field.", visible=False, interactive=False, max_lines=1,
                                     buttons=["copy"], elem_id="new-key-shown")
    ui["mode"] = gr.Radio(MODE_CHOICES, value=handler.ONE_OWNER, label="Mode", visible=not keyed)
    with gr.Row(visible=not keyed) as ui["owner_row"]:
        # A text field, not gr.Number: a browser sends an empty number as 0, and filling the field
        # on page load would race with (and overwrite) a code the user is already typing.
        ui["owner_code"] = gr.Textbox(label="Owner code", value="", max_lines=1, scale=3, elem_id="owner-code",
                                      placeholder="empty: a new code is picked when you protect",
                                      info="Use the same code for all your photos, now and next time. "
                                           "Leave it empty the first time and keep the code shown here.")
        ui["dice"] = gr.Button("New code", scale=1, size="md", elem_id="new-code")
    ui["button"] = gr.Button("Protect", variant="primary", elem_id="protect-button")
    return ui


def build_demo(generators: dict[str, str]) -> gr.Blocks:
    """The page, with its queue, for ``generators`` (display name -> folder or Hub id, see ``generator_sources``)."""
    protect, new_code, show_inputs = request_handlers(generators)
    keyed = is_keyed(generator_for(generators, "default"))
    with gr.Blocks(title="ConfounderGAN: protect your photos",
                   delete_cache=(CACHE_LIFETIME_S // 4, CACHE_LIFETIME_S)) as demo:
        gr.Markdown(INTRO)
        with gr.Accordion("What the protection does and does not do", open=False):
            gr.Markdown(EXPLANATION)
        with gr.Row():
            with gr.Column(scale=2, min_width=320):
                ui = input_column(generators, keyed)
            with gr.Column(scale=3, min_width=320):
                gallery = gr.Gallery(label="Original · protected · amplified noise", columns=3, format="png",
                                     object_fit="contain", height="auto", interactive=False,
                                     buttons=["fullscreen"], elem_id="results")
                summary = gr.Markdown(label="Report", elem_id="report")
                downloads = gr.File(label="Protected photos (PNG)", file_count="multiple", interactive=False,
                                    elem_id="downloads")
                archive = gr.File(label="All protected photos (zip)", interactive=False, elem_id="archive")

        ui["button"].click(protect, inputs=[ui[name] for name in ("photos", "strength", "generator", "key", "mode",
                                                                  "owner_code")],
                           outputs=[gallery, downloads, archive, summary, ui["owner_code"]], api_name="protect")
        # The new key is shown until the next Protect or edit of the key field; after that it is only in the
        # masked field (and with the user): the server keeps no copy.
        ui["key_button"].click(make_key, outputs=[ui["key"], ui["shown_key"]], api_visibility="private")
        for event in (ui["button"].click, ui["key"].input):
            event(hide_new_key, outputs=ui["shown_key"], api_visibility="private", queue=False)
        ui["dice"].click(new_code, inputs=ui["generator"], outputs=ui["owner_code"], api_visibility="private")
        for event in (ui["generator"].change, ui["mode"].change):
            event(show_inputs, inputs=[ui["generator"], ui["mode"]],
                  outputs=[ui["key_inputs"], ui["mode"], ui["owner_row"]], api_visibility="private")
    demo.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=QUEUE_SIZE)
    return demo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", default=[], metavar="[NAME=]PATH_OR_HUB_ID",
                        help="a generator folder or Hub id: a bare one replaces 'default', NAME=... adds one "
                             f"(repeatable; also ${handler.MODEL_ENVIRONMENT_VARIABLE}, comma separated)")
    parser.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default 7860, or the next free one)")
    args = parser.parse_args(argv)
    generators = handler.generator_sources(args.model)
    for name, source in generators.items():
        # Load every generator now: a wrong path should stop the app, not the first visitor's request.
        try:
            handler.load_generator(source)
        except OSError as error:
            parser.exit(2, f"app.py: generator {name!r}: {error}\n")
    build_demo(generators).launch(server_name=args.host, server_port=args.port, **LAUNCH_OPTIONS)


if __name__ == "__main__":
    main()
