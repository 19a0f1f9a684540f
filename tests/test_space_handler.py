"""The Space's image processing (space/protect_handler.py), called directly: no server, a tiny generator."""

import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

from modeling_confounder import DEFAULT_MODEL, protect
from space import protect_handler as handler

from .conftest import make_generator

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.fixture
def uploads(tmp_path, rng) -> dict[str, Path]:
    """A camera JPEG (EXIF rotation, GPS, camera model, ICC profile), grayscale, RGBA and 5x5 PNGs, and a
    non-image; two uploads share a name, as files from two folders can."""
    folder, other = tmp_path / "uploads", tmp_path / "uploads" / "other"
    other.mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait: rotate 90° clockwise
    exif[0x010F], exif[0x0110] = "ACME", "Model X"
    exif.get_ifd(0x8825).update({1: "N", 2: (52.0, 22.0, 0.0)})
    files = {"camera": folder / "IMG 0001.jpg", "gray": folder / "scan.png", "rgba": other / "scan.png",
             "tiny": folder / "tiny.png", "text": folder / "notes.png"}
    Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)).save(
        files["camera"], exif=exif.tobytes(), icc_profile=SRGB, quality=95)
    Image.fromarray(rng.integers(0, 256, (30, 20), dtype=np.uint8)).save(files["gray"])
    Image.fromarray(rng.integers(0, 256, (17, 33, 4), dtype=np.uint8)).save(files["rgba"])
    Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)).save(files["tiny"])
    files["text"].write_text("not an image, whatever the name says")
    return files


def oriented_array(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(ImageOps.exif_transpose(image))


def test_protects_every_readable_upload_losslessly_without_metadata(uploads, tmp_path):
    generator = make_generator()
    seen = []
    result = handler.protect_photos(list(uploads.values()), generator, tmp_path / "out", epsilon=6, owner_code=3,
                                    generator_name="tiny", progress=lambda done, total, name: seen.append(name))
    assert seen == [path.name for path in uploads.values()]
    assert [photo.source_name for photo in result.photos] == ["IMG 0001.jpg", "scan.png", "scan.png", "tiny.png"]
    assert [photo.protected.name for photo in result.photos] == [
        "IMG_0001-protected.png", "scan-protected.png", "scan-2-protected.png", "tiny-protected.png"]
    assert result.skipped == ["notes.png: not an image this app can read; upload PNG, JPEG, WebP, TIFF, BMP or GIF."]
    assert (result.owner_code, result.epsilon, result.generator) == (3, 6.0, "tiny")

    sources = [uploads["camera"], uploads["gray"], uploads["rgba"], uploads["tiny"]]
    for photo, source in zip(result.photos, sources, strict=True):
        original = oriented_array(source)
        with Image.open(photo.protected) as output:
            assert output.format == "PNG"
            assert not output.getexif() and "exif" not in output.info
            assert output.info.get("icc_profile") == (SRGB if source == uploads["camera"] else None)
            protected = np.asarray(output)
        assert protected.shape == original.shape  # same size, after the EXIF rotation; same mode
        change = protected.astype(int) - original
        assert np.abs(change).max() == photo.max_change <= 6 and change.any()
        assert (photo.width, photo.height) == (original.shape[1], original.shape[0])
        if original.ndim == 3 and original.shape[-1] == 4:
            assert (change[..., 3] == 0).all()
        assert not photo.downscaled and photo.protected_preview == photo.protected
        with Image.open(photo.original_preview) as shown:
            assert np.array_equal(np.asarray(shown), original)
        with Image.open(photo.noise_preview) as noise:
            color = change[..., :3] if original.ndim == 3 else change
            assert np.array_equal(np.asarray(noise), np.clip(np.rint((color / 6 + 1) * 127.5), 0, 255))
    assert result.photos[0].width == 24 and result.photos[0].height == 40  # stored 40x24, rotated
    assert result.photos[3].ssim is None  # 5x5 is smaller than SSIM's 7x7 window

    with zipfile.ZipFile(result.archive) as archive:
        assert archive.namelist() == [photo.protected.name for photo in result.photos]
        assert all(archive.read(photo.protected.name) == photo.protected.read_bytes() for photo in result.photos)


@pytest.mark.parametrize("owner_code", [None, 4])
def test_uses_the_generator_the_code_and_epsilon_it_is_given(uploads, tmp_path, owner_code):
    generator = make_generator()
    result = handler.protect_photos([uploads["gray"]], generator, tmp_path, epsilon=3, owner_code=owner_code)
    original = oriented_array(uploads["gray"])[None, ..., None]
    expected = protect(generator, original, labels=owner_code, epsilon=3 / 255)[0, ..., 0]
    with Image.open(result.photos[0].protected) as output:
        assert np.array_equal(np.asarray(output), expected)


def test_previews_of_large_photos_are_downscaled_and_downloads_are_not(tmp_path, rng, monkeypatch):
    monkeypatch.setattr(handler, "PREVIEW_SIDE", 16)
    photo_file = tmp_path / "wide.png"
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(photo_file)
    photo = handler.protect_photos([photo_file], make_generator(), tmp_path / "out").photos[0]
    assert photo.downscaled and photo.protected_preview != photo.protected
    for preview in (photo.original_preview, photo.protected_preview, photo.noise_preview):
        assert Image.open(preview).size == (16, 12)
    assert Image.open(photo.protected).size == (40, 30)


def test_amplified_noise_maps_minus_epsilon_zero_and_epsilon_to_black_gray_and_white():
    original = np.full((1, 3, 1), 100, np.uint8)
    protected = np.array([92, 100, 108], np.uint8).reshape(1, 3, 1)
    assert handler.amplified_noise(original, protected, 8).ravel().tolist() == [0, 128, 255]


def test_request_errors_are_messages_for_the_user(uploads, tmp_path):
    generator = make_generator()
    with pytest.raises(handler.InputError, match="Upload at least one photo"):
        handler.protect_photos([], generator, tmp_path)
    with pytest.raises(handler.InputError, match=f"33 photos were uploaded; at most {handler.MAX_IMAGES}"):
        handler.protect_photos([uploads["gray"]] * 33, generator, tmp_path)
    for epsilon in (1, 17, None):
        with pytest.raises(handler.InputError, match="strength ε must be between 2 and 16"):
            handler.protect_photos([uploads["gray"]], generator, tmp_path, epsilon=epsilon)
    with pytest.raises(handler.InputError, match="None of the uploaded files could be protected:\nnotes.png: "):
        handler.protect_photos([uploads["text"]], generator, tmp_path)


def test_unsupported_and_oversized_files_are_skipped_with_a_reason(uploads, tmp_path, monkeypatch):
    heic = tmp_path / "IMG_0002.HEIC"
    heic.write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(64))
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(uploads["gray"].read_bytes()[:100])
    result = handler.protect_photos([uploads["gray"], heic, truncated], make_generator(), tmp_path / "out")
    assert len(result.photos) == 1
    assert result.skipped[0].startswith("IMG_0002.HEIC: HEIC/HEIF photos cannot be read here; export it as JPEG")
    assert result.skipped[1].startswith("cut.png: the file looks damaged or truncated")

    monkeypatch.setattr(handler, "MAX_PIXELS", 24 * 40 - 1)
    with pytest.raises(handler.InputError, match="IMG 0001.jpg: 40×24 is 0 megapixels, over the limit"):
        handler.read_photo(uploads["camera"])
    monkeypatch.setattr(handler, "MAX_FILE_BYTES", 2 * 2**20)
    big = tmp_path / "big.png"
    big.write_bytes(bytes(3 * 2**20))
    with pytest.raises(handler.InputError, match="big.png: 3.0 MB is over the limit of 2 MB per photo"):
        handler.read_photo(big)


def test_owner_codes_are_checked_or_generated_for_the_generator():
    generator = make_generator(num_classes=5)
    assert handler.resolve_owner_code(handler.LABEL_FREE, 3, generator) is None
    assert handler.resolve_owner_code(handler.ONE_OWNER, 4.0, generator) == 4
    assert handler.resolve_owner_code(handler.ONE_OWNER, " 3 ", generator) == 3  # as the page's text field sends it
    assert {handler.resolve_owner_code(handler.ONE_OWNER, "", generator) for _ in range(200)} == set(range(5))
    assert {handler.resolve_owner_code(handler.ONE_OWNER, None, generator) for _ in range(200)} == set(range(5))
    for code in (5, -1, 2.5, "2.5", "three", "nan", "inf"):
        with pytest.raises(handler.InputError, match="whole number from 0 to 4 for this generator"):
            handler.resolve_owner_code(handler.ONE_OWNER, code, generator)
    with pytest.raises(handler.InputError, match="Choose the mode 'one owner' or 'label-free'"):
        handler.resolve_owner_code("owner", 1, generator)


KEY = "kXq3-owner-key-9Zr7wPvN2"


def protected_bytes(result: handler.ProtectionResult) -> list[bytes]:
    return [photo.protected.read_bytes() for photo in result.photos]


def test_a_keyed_generator_protects_with_the_owners_key_and_keeps_no_copy(uploads, tmp_path):
    generator = make_generator(key_dim=256)
    photos = [uploads["camera"], uploads["rgba"]]
    result = handler.protect_photos(photos, generator, tmp_path / "a", epsilon=6, key=KEY)
    again = handler.protect_photos(photos, generator, tmp_path / "b", epsilon=6, key=f"  {KEY}\n")
    other = handler.protect_photos(photos, generator, tmp_path / "c", epsilon=6, key=KEY + "!")
    assert result.keyed and result.owner_code is None
    assert protected_bytes(result) == protected_bytes(again)  # the same key: the same pixels
    expected = protect(generator, oriented_array(uploads["rgba"])[None], key=KEY, epsilon=6 / 255)[0]
    with Image.open(result.photos[1].protected) as output:
        assert np.array_equal(np.asarray(output), expected)
    for mine, theirs in zip(result.photos, other.photos, strict=True):
        with Image.open(mine.protected) as a, Image.open(theirs.protected) as b:
            assert not np.array_equal(np.asarray(a), np.asarray(b))  # another key: other noise
    # The key is in no field of the result and no byte of any file written: PNGs, previews, the zip.
    assert KEY not in repr(result)
    written = [path for path in (tmp_path / "a").rglob("*") if path.is_file()]
    assert result.archive in written and len(written) == 7
    assert all(KEY.encode() not in path.read_bytes() and KEY not in str(path) for path in written)


def test_the_key_is_required_by_keyed_generators_only(uploads, tmp_path):
    keyed, labelled = make_generator(key_dim=256), make_generator()
    for key in (None, "", "  \n"):
        with pytest.raises(handler.InputError, match="Enter your key, or press New key"):
            handler.protect_photos([uploads["gray"]], keyed, tmp_path, key=key)
    with pytest.raises(handler.InputError, match="takes an owner code, not a key"):
        handler.protect_photos([uploads["gray"]], labelled, tmp_path, key=KEY)
    # A request from the page: the field that is hidden for the generator is ignored.
    assert handler.resolve_request(handler.ONE_OWNER, "3", f" {KEY} ", keyed) == (None, KEY)
    assert handler.resolve_request(handler.ONE_OWNER, "3", KEY, labelled) == (3, None)
    assert handler.resolve_request(handler.LABEL_FREE, "", None, labelled) == (None, None)


def test_generator_sources_from_the_environment_and_the_command_line():
    assert handler.generator_sources([], environment="") == {"default": DEFAULT_MODEL}
    assert handler.generator_sources(["org/generator"], environment="") == {"default": "org/generator"}
    assert handler.generator_sources(["robust=org/robust", "/data/run=3/generator"],
                                     environment=" fast=/models/fast , ") == {
        "default": "/data/run=3/generator", "fast": "/models/fast", "robust": "org/robust"}


def test_loads_generators_once(tmp_path):
    make_generator().save_pretrained(tmp_path / "model")
    assert handler.load_generator(str(tmp_path / "model")) is handler.load_generator(str(tmp_path / "model"))
    with pytest.raises(OSError, match="could not load a ConfounderGenerator"):
        handler.load_generator(str(tmp_path / "missing"))
