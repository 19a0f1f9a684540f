"""Hostile and unusual inputs: a generated corpus of every case the CLI must survive, data-safety checks
(resume after SIGKILL, no writes outside the output folder, no metadata leaks), property-based tests of the image
conversions and a short fuzz run over the decoder path."""

import io
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import ExifTags, Image, ImageCms

from modeling_confounder import UnreadableImage, array_to_pil, pil_to_array, protect, read_image, save_image
from modeling_confounder.cli import main

from .conftest import make_generator
from .test_cli import digest

GPS = ExifTags.IFD.GPSInfo


def png_declaring(width: int, height: int) -> bytes:
    """A tiny, valid-looking PNG whose header declares width × height pixels: a decompression bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 4096))
            + chunk(b"IEND", b""))


def camera_exif(orientation: int = 1) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "PhoneCam"
    exif[ExifTags.Base.Artist] = "Ada"
    exif[ExifTags.Base.Orientation] = orientation
    exif.get_ifd(GPS).update({ExifTags.GPS.GPSLatitudeRef: "N", ExifTags.GPS.GPSLatitude: (52.0, 31.0, 12.0)})
    return exif


def encoded(image: Image.Image, image_format: str, **options) -> bytes:
    stream = io.BytesIO()
    image.save(stream, format=image_format, **options)
    return stream.getvalue()


@pytest.fixture
def corpus(tmp_path, rng) -> tuple[Path, dict[str, tuple[str, tuple[int, int]]], dict[str, str]]:
    """A folder with every kind of input: ``good`` maps file -> (output mode, output size), ``bad`` file -> reason."""
    root = tmp_path / "library"
    (root / "nested folder").mkdir(parents=True)
    rgb = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    photo = Image.fromarray(rgb)
    files: dict[str, bytes] = {
        "gray.png": encoded(photo.convert("L"), "PNG"),
        "rgba.png": encoded(Image.fromarray(rng.integers(0, 256, (24, 40, 4), dtype=np.uint8)), "PNG"),
        "la.png": encoded(photo.convert("LA"), "PNG"),
        "one-bit.png": encoded(photo.convert("1"), "PNG"),
        "sixteen-bit.png": encoded(Image.fromarray(rng.integers(0, 65536, (24, 40), dtype=np.uint16)), "PNG"),
        "cmyk.jpg": encoded(Image.new("CMYK", (40, 24), (0, 255, 255, 0)), "JPEG", quality=95),
        "rotated.jpg": encoded(photo, "JPEG", exif=camera_exif(orientation=6).tobytes()),
        "scan.tiff": encoded(photo, "TIFF"),
        "nested folder/holiday photo 1.png": encoded(photo, "PNG"),
        "nested folder/café 写真.png": encoded(photo, "PNG"),
        "empty.png": b"",
        "truncated.png": encoded(photo, "PNG")[:200],
        "cut-short.jpg": encoded(photo, "JPEG")[:300],
        "letter.jpg": b"Dear friend, this is not a picture.",
        "bomb.png": png_declaring(30_000, 30_000),
        "huge.png": png_declaring(12_000, 12_000),
    }
    palette = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    files["palette.png"] = encoded(palette, "PNG", transparency=0)
    frames = [Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)) for _ in range(3)]
    files["animated.gif"] = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])
    files["animated-webp.webp"] = encoded(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    for name, data in files.items():
        (root / name).write_bytes(data)
    (tmp_path / "secret.png").write_bytes(encoded(photo, "PNG"))
    (root / "escape.png").symlink_to(tmp_path / "secret.png")
    (root / "inside-link.png").symlink_to(root / "gray.png")
    (root / "dangling.png").symlink_to(root / "gone.png")
    (root / "linked folder").symlink_to(tmp_path, target_is_directory=True)
    os.mkfifo(root / "pipe.png")
    (root / "notes.txt").write_text("not an image, and not named like one: ignored")

    good = {"gray.png": ("L", (40, 24)), "rgba.png": ("RGBA", (40, 24)), "la.png": ("LA", (40, 24)),
            "one-bit.png": ("L", (40, 24)), "sixteen-bit.png": ("L", (40, 24)), "cmyk.png": ("RGB", (40, 24)),
            "rotated.png": ("RGB", (24, 40)), "scan.png": ("RGB", (40, 24)), "palette.png": ("RGBA", (40, 24)),
            "animated.png": ("RGB", (40, 24)), "animated-webp.png": ("RGB", (40, 24)),
            "nested folder/holiday photo 1.png": ("RGB", (40, 24)), "nested folder/café 写真.png": ("RGB", (40, 24)),
            "inside-link.png": ("L", (40, 24))}
    bad = {"empty.png": "empty file (0 bytes)", "truncated.png": "truncated image data",
           "cut-short.jpg": "truncated image data", "letter.jpg": "not an image",
           "bomb.png": "far more pixels than Pillow will decode", "huge.png": "144 megapixels, over the limit of 100",
           "escape.png": "outside the input folder; not followed", "dangling.png": "a broken symlink",
           "pipe.png": "not a regular file"}
    return root, good, bad


@pytest.fixture
def model(tmp_path) -> str:
    make_generator().save_pretrained(tmp_path / "model")
    return str(tmp_path / "model")


def test_every_bad_file_gets_one_line_and_the_batch_goes_on(corpus, model, tmp_path, capsys):
    root, good, bad = corpus
    before = digest(root)
    out = tmp_path / "out"
    assert main(["protect", str(root), "-o", str(out), "--model", model]) == 1
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(bad)
    for name, reason in bad.items():
        assert any(str(root / name) in line and reason in line for line in errors), (name, errors)
    assert f"protected {len(good)}, skipped 0 (finished earlier), failed {len(bad)}" in captured.out
    assert f"note: {root / 'linked folder'}: symlinked folder not followed" in captured.err
    assert "animated.gif: 3 frames; the output is the first frame, protected" in captured.err
    assert digest(root) == before  # inputs untouched
    written = sorted(str(path.relative_to(out)) for path in out.rglob("*") if path.is_file())
    assert written == sorted(good)
    for name, (mode, size) in good.items():
        with Image.open(out / name) as image:
            assert (image.mode, image.size) == (mode, size), name
            assert getattr(image, "n_frames", 1) == 1 and not image.getexif()


def test_conversions_keep_what_the_user_sees(corpus, model, tmp_path):
    root, _, _ = corpus
    out = tmp_path / "out"
    main(["protect", str(root), "-o", str(out), "--model", model])
    with Image.open(root / "animated.gif") as animation:
        first_frame = np.asarray(animation.convert("RGB"), dtype=int)
    assert np.abs(np.asarray(Image.open(out / "animated.png"), dtype=int) - first_frame).max() <= 8
    # CMYK (0, 255, 255, 0) is red; 16-bit values are scaled to 8 bits, not clipped to white.
    assert np.abs(np.asarray(Image.open(out / "cmyk.png"), dtype=int) - [255, 0, 0]).max() <= 8 + 2
    with Image.open(root / "sixteen-bit.png") as wide:
        scaled = np.asarray(wide, dtype=float) / 65535 * 255
    assert np.abs(np.asarray(Image.open(out / "sixteen-bit.png"), dtype=float) - scaled).max() <= 8.5
    # EXIF orientation 6 (rotate 90° clockwise) is applied to the pixels.
    with Image.open(root / "rotated.jpg") as rotated:
        upright = np.asarray(rotated.transpose(Image.Transpose.ROTATE_270), dtype=int)
    assert np.abs(np.asarray(Image.open(out / "rotated.png"), dtype=int) - upright).max() <= 8
    palette = np.asarray(Image.open(out / "palette.png"))
    with Image.open(root / "palette.png") as original:
        assert np.array_equal(palette[..., 3], np.asarray(original.convert("RGBA"))[..., 3])  # alpha untouched


@pytest.mark.parametrize("output_format", ["png", "tiff", "webp-lossless", "jpeg"])
def test_metadata_is_dropped_unless_asked_and_gps_never_kept(tmp_path, model, output_format):
    photo = Image.fromarray(np.full((16, 16, 3), 120, np.uint8))
    source = tmp_path / "in" / "gps.jpg"
    source.parent.mkdir()
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><exif:GPSLatitude>52,31N</exif:GPSLatitude></x:xmpmeta>'
    photo.save(source, exif=camera_exif().tobytes(), xmp=xmp)
    with Image.open(source) as original:
        assert original.getexif().get_ifd(GPS) and "xmp" in original.info  # the input really has them
    suffix = {"tiff": "tiff", "webp-lossless": "webp", "jpeg": "jpg"}.get(output_format, output_format)
    for keep, folder in [([], "plain"), (["--keep-metadata"], "kept")]:
        with pytest.warns(UserWarning, match="lossy") if output_format == "jpeg" else nullcontext():
            main(["protect", str(source), "-o", str(tmp_path / folder), "--model", model,
                  "--format", output_format, *keep])
        written = tmp_path / folder / f"gps.{suffix}"
        data = written.read_bytes()
        assert b"GPSLatitude" not in data and b"xmpmeta" not in data
        with Image.open(written) as image:
            exif = image.getexif()
            assert not exif.get_ifd(GPS) and ExifTags.Base.Orientation not in exif
            assert exif.get(ExifTags.Base.Artist) == ("Ada" if keep else None)


def test_colour_profiles_are_kept_when_they_describe_the_image(tmp_path, model):
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    (tmp_path / "in").mkdir()
    Image.new("RGB", (16, 16), (10, 200, 30)).save(tmp_path / "in" / "tagged.png", icc_profile=srgb)
    Image.new("L", (16, 16), 90).save(tmp_path / "in" / "mismatch.png", icc_profile=srgb)
    main(["protect", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", model])
    with Image.open(tmp_path / "out" / "tagged.png") as tagged, Image.open(tmp_path / "out" / "mismatch.png") as gray:
        assert tagged.info.get("icc_profile") == srgb
        assert "icc_profile" not in gray.info  # an RGB profile cannot describe a gray image


def test_existing_outputs_need_resume_or_overwrite(tmp_path, model, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for index in range(3):
        Image.new("RGB", (16, 16), (index * 80, 0, 0)).save(photos / f"{index}.png")
    out = tmp_path / "out"
    assert main(["protect", str(photos), "-o", str(out), "--model", model]) == 0
    before = digest(out)
    (out / "0.png").unlink()
    stale = out / ".1.png.x1y2z3.confounder-part"
    stale.write_bytes(b"half an image")
    with pytest.raises(SystemExit, match="2 of the 3 outputs already exist .* --resume .* --overwrite"):
        main(["protect", str(photos), "-o", str(out), "--model", model])
    assert main(["protect", str(photos), "-o", str(out), "--model", model, "--resume"]) == 0
    assert "protected 1, skipped 2 (finished earlier), failed 0" in capsys.readouterr().out
    assert digest(out) == before and not stale.exists()
    assert main(["protect", str(photos), "-o", str(out), "--model", model, "--overwrite"]) == 0
    assert "protected 3, skipped 0" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["protect", str(photos), "-o", str(out), "--model", model, "--resume", "--overwrite"])


def test_a_run_killed_midway_finishes_on_resume_and_loses_nothing(tmp_path, model, rng):
    photos = tmp_path / "photos"
    photos.mkdir()
    for index in range(300):
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(photos / f"{index:03d}.png")
    command = [sys.executable, "-m", "modeling_confounder.cli", "protect", str(photos), "--model", model,
               "--batch-size", "1"]
    subprocess.run([*command, "-o", str(tmp_path / "reference")], check=True, capture_output=True)
    out = tmp_path / "out"
    process = subprocess.Popen([*command, "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list(out.glob("*.png"))) < 20 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = len(list(out.glob("*.png")))
    assert 0 < done < 300, "the run must be killed midway for this test to mean anything"
    for output in out.glob("*.png"):  # what exists is whole: atomic writes
        Image.open(output).load()
    finished = subprocess.run([*command, "-o", str(out), "--resume"], check=False, capture_output=True,
                              text=True)
    assert finished.returncode == 0, finished.stderr
    assert f"skipped {done} (finished earlier), failed 0" in finished.stdout
    assert digest(out) == digest(tmp_path / "reference")


def test_outputs_cannot_leave_the_output_folder(tmp_path, model, capsys):
    photos = tmp_path / "photos"
    (photos / "album").mkdir(parents=True)
    Image.new("RGB", (16, 16)).save(photos / "album" / "a.png")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "album").symlink_to(elsewhere, target_is_directory=True)
    assert main(["protect", str(photos), "-o", str(out), "--model", model]) == 1
    assert "is a symlink that leaves" in capsys.readouterr().err
    assert not any(elsewhere.iterdir())


def test_a_folder_of_ten_thousand_images(tmp_path, model, capsys):
    photos = tmp_path / "photos"
    tile = encoded(Image.new("RGB", (8, 8), (200, 100, 50)), "PNG")
    for folder in range(10):
        (photos / f"{folder}").mkdir(parents=True)
        for index in range(1_000):
            (photos / f"{folder}" / f"{index}.png").write_bytes(tile)
    assert main(["protect", str(photos), "-o", str(tmp_path / "out"), "--model", model, "--batch-size", "256"]) == 0
    assert "protected 10000, skipped 0 (finished earlier), failed 0" in capsys.readouterr().out
    assert len(list((tmp_path / "out").rglob("*.png"))) == 10_000


MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr", "I;16", "I", "F", "La", "RGBa", "RGBX", "HSV", "PA"]


@st.composite
def pil_images(draw) -> Image.Image:
    mode = draw(st.sampled_from(MODES))
    height, width = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    seed = draw(st.integers(0, 2**32 - 1))
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 4), dtype=np.uint8)
    if mode == "I;16":
        return Image.fromarray(pixels[..., 0].astype(np.uint16) * 257)
    if mode in ("P", "PA"):
        return Image.fromarray(pixels[..., :3]).convert("P", palette=Image.Palette.ADAPTIVE).convert(mode)
    return Image.fromarray(pixels, "RGBA").convert(mode)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(image=pil_images(), label=st.one_of(st.none(), st.integers(0, 9)), bound=st.integers(1, 16))
def test_protect_any_pil_image_stays_within_bound(generator, image, label, bound):
    array = pil_to_array(image)
    assert array.dtype == np.uint8 and array.shape[:2] == (image.height, image.width)
    assert array.shape[2] in (1, 2, 3, 4)
    protected = protect(generator, image, labels=label, epsilon=bound / 255)
    assert protected.size == image.size and protected.mode == array_to_pil(array).mode
    after = pil_to_array(protected).astype(int)
    assert np.abs(after - array).max() <= bound
    if array.shape[2] in (2, 4):
        assert np.array_equal(after[..., -1], array[..., -1])  # alpha untouched


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(image=pil_images(), output_format=st.sampled_from(["png", "tiff", "webp-lossless"]))
def test_lossless_formats_round_trip_exactly(tmp_path, image, output_format):
    array = pil_to_array(image)
    written = array_to_pil(array)
    target = tmp_path / f"round-trip.{output_format}"
    save_image(written, target, output_format)
    back = read_image(target).image
    # WebP stores every image as RGB(A): compare in the written mode.
    assert np.array_equal(np.asarray(back.convert(written.mode)), np.asarray(written))


def seeds() -> dict[str, bytes]:
    rng = np.random.default_rng(1)
    photo = Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
    return {"png": encoded(photo, "PNG"), "jpeg": encoded(photo, "JPEG"), "gif": encoded(photo, "GIF"),
            "webp": encoded(photo, "WEBP"), "tiff": encoded(photo, "TIFF"), "bmp": encoded(photo, "BMP")}


SEEDS = seeds()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(sorted(SEEDS)), flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                                                          max_size=8),
       cut=st.one_of(st.none(), st.integers(0, 10**6)))
def test_fuzzed_files_are_read_or_refused_cleanly(tmp_path, kind, flips, cut):
    """The decoder path never crashes, hangs or raises anything but UnreadableImage, whatever the bytes."""
    data = bytearray(SEEDS[kind])
    for position, value in flips:
        data[position % len(data)] = value
    if cut is not None:
        data = data[:cut % (len(data) + 1)]
    path = tmp_path / f"fuzzed.{kind}"
    path.write_bytes(bytes(data))
    try:
        source = read_image(path, max_pixels=4_000_000)
    except UnreadableImage as error:
        assert str(error) and error.kind in ("empty", "not an image", "too large", "damaged")
    else:
        assert source.image.width * source.image.height <= 4_000_000
        pil_to_array(source.image)


def test_unreadable_files_are_reported(tmp_path, model, monkeypatch, capsys):
    """Permission errors (simulated: tests may run as root, which reads everything)."""
    Image.new("RGB", (8, 8)).save(tmp_path / "locked.png")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("modeling_confounder.image_files.Image.open", refuse)
    assert main(["protect", str(tmp_path / "locked.png"), "-o", str(tmp_path / "out"), "--model", model]) == 1
    assert f"error: {tmp_path / 'locked.png'}: permission denied" in capsys.readouterr().err
