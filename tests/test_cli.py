import hashlib
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modeling_confounder import ConfounderGenerator, protect
from modeling_confounder.cli import main

from .conftest import make_generator


def digest(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.fixture
def photos(tmp_path, rng) -> Path:
    """A folder of mixed images: sizes from 32x32 to 2000x1500, RGB, L and RGBA, in nested folders."""
    root = tmp_path / "photos"
    (root / "holiday beach").mkdir(parents=True)
    specs = {"tiny.png": (32, 32, 3), "gray.png": (28, 28), "holiday beach/large.png": (1500, 2000, 3),
             "holiday beach/odd.png": (33, 65, 4), "scan.jpg": (100, 80, 3)}
    for name, shape in specs.items():
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / name)
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(autouse=True)
def config_home(tmp_path, monkeypatch) -> Path:
    """The user's config folder, where the command keeps their key: a temporary one, never the real one."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config"


@pytest.fixture
def model(tmp_path) -> str:
    make_generator().save_pretrained(tmp_path / "model")
    return str(tmp_path / "model")


@pytest.fixture
def keyed(tmp_path) -> str:
    make_generator(key_dim=256).save_pretrained(tmp_path / "keyed")
    return str(tmp_path / "keyed")


def test_protects_a_folder_and_mirrors_it(photos, model, tmp_path, capsys):
    before = digest(photos)
    assert main(["protect", str(photos), "--output", str(tmp_path / "out"), "--model", model]) == 0
    assert digest(photos) == before
    out = tmp_path / "out"
    outputs = sorted(str(path.relative_to(out)) for path in out.rglob("*.png"))
    assert outputs == ["gray.png", "holiday beach/large.png", "holiday beach/odd.png", "scan.png", "tiny.png"]
    for output in outputs:
        source = next(photos.glob(str(Path(output).with_suffix(".*"))))
        with Image.open(source) as original, Image.open(out / output) as protected:
            assert (protected.size, protected.mode) == (original.size, original.mode)
            difference = np.asarray(protected, dtype=int) - np.asarray(original, dtype=int)
        assert np.abs(difference).max() <= 8 and np.any(difference != 0)
    assert "protected 5, skipped 0 (finished earlier), failed 0" in capsys.readouterr().out


def test_resumed_runs_skip_existing_outputs_and_are_byte_identical(photos, model, tmp_path, capsys):
    assert main(["protect", str(photos), "-o", str(tmp_path / "a"), "--model", model]) == 0
    assert main(["protect", str(photos), "-o", str(tmp_path / "a"), "--model", model, "--resume"]) == 0
    assert "protected 0, skipped 5" in capsys.readouterr().out
    assert main(["protect", str(photos), "-o", str(tmp_path / "b"), "--model", model, "--batch-size", "2"]) == 0
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert main(["protect", str(photos), "-o", str(tmp_path / "a"), "--model", model, "--overwrite"]) == 0
    assert "protected 5, skipped 0" in capsys.readouterr().out


def test_files_and_formats(photos, model, tmp_path):
    out = tmp_path / "out"
    assert main(["protect", str(photos / "tiny.png"), "--output", str(out), "--model", model,
                 "--format", "tiff"]) == 0
    assert main(["protect", str(photos / "tiny.png"), "--output", str(out), "--model", model,
                 "--format", "webp-lossless", "--epsilon", "4", "--label", "1"]) == 0
    original = np.asarray(Image.open(photos / "tiny.png"), dtype=int)
    for name, bound in [("tiny.tiff", 8), ("tiny.webp", 4)]:
        assert np.abs(np.asarray(Image.open(out / name), dtype=int) - original).max() <= bound
    with pytest.warns(UserWarning, match="lossy"):
        assert main(["protect", str(photos / "tiny.png"), "-o", str(out), "--model", model, "--format", "jpeg"]) == 0
    assert (out / "tiny.jpg").exists()


def test_bad_inputs_fail_without_stopping_the_batch(photos, model, tmp_path, capsys):
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    code = main(["protect", str(photos), str(tmp_path / "missing.png"), "-o", str(tmp_path / "out"),
                 "--model", model])
    captured = capsys.readouterr()
    assert code == 1
    assert "broken.png: not an image" in captured.err and "missing.png: no such file" in captured.err
    assert "protected 5, skipped 0 (finished earlier), failed 2" in captured.out


def test_never_writes_into_its_inputs(photos, model, capsys):
    before = digest(photos)
    assert main(["protect", str(photos), "-o", str(photos), "--model", model]) == 1
    assert "cannot be an input folder" in capsys.readouterr().err
    assert main(["protect", str(photos / "tiny.png"), "-o", str(photos), "--model", model]) == 1
    assert "would overwrite an input" in capsys.readouterr().err
    assert digest(photos) == before


def test_output_inside_the_input_folder_is_not_protected_again(photos, model, capsys):
    assert main(["protect", str(photos), "-o", str(photos / "protected"), "--model", model]) == 0
    assert main(["protect", str(photos), "-o", str(photos / "protected"), "--model", model, "--resume"]) == 0
    assert "protected 0, skipped 5" in capsys.readouterr().out


@pytest.mark.parametrize("arguments, message", [
    (["--epsilon", "0"], "--epsilon is in pixel levels"), (["--label", "99"], "labels must be in"),
    (["--model", "/no/such/model"], "could not load .*'/no/such/model': no such folder")])
def test_usage_errors_are_explained(photos, model, tmp_path, arguments, message):
    arguments = ["--model", model, *arguments] if "--model" not in arguments else arguments
    with pytest.raises(SystemExit, match=message):
        main(["protect", str(photos / "tiny.png"), "-o", str(tmp_path / "out"), *arguments])


def test_console_script_with_the_default_model(photos, tmp_path, config_home):
    result = subprocess.run([sys.executable, "-m", "modeling_confounder.cli", "protect", str(photos / "tiny.png"),
                             "--output", str(tmp_path / "out")], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "tiny.png").exists()
    assert f"created your protection key in {config_home / 'confounder' / 'key'}" in result.stderr


def protected_pixels(model: str, source: Path, **options) -> np.ndarray:
    """What ``protect`` makes of ``source`` with the generator in ``model``."""
    with Image.open(source) as image:
        return np.asarray(protect(ConfounderGenerator.from_pretrained(model), image.convert("RGB"), **options))


def assert_secret_nowhere(key: str, captured, *folders: Path) -> None:
    """The key is in no captured output and no byte of any file under ``folders``."""
    secret = key.encode()
    assert key not in captured.out and key not in captured.err
    for folder in folders:
        for path in folder.rglob("*"):
            assert not path.is_file() or secret not in path.read_bytes(), path


def test_first_run_makes_a_private_key_and_later_runs_reuse_it(photos, keyed, tmp_path, config_home, capsys):
    key_file = config_home / "confounder" / "key"
    assert main(["protect", str(photos), "-o", str(tmp_path / "a"), "--model", keyed, "--keep-metadata"]) == 0
    first = capsys.readouterr()
    assert f"note: created your protection key in {key_file}; keep it" in first.err
    assert "use the same key for all your photos" in first.err
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    key = key_file.read_text().strip()
    assert len(key) >= 40

    assert main(["protect", str(photos), "-o", str(tmp_path / "b"), "--model", keyed, "--format", "tiff"]) == 0
    second = capsys.readouterr()
    assert "key" not in second.err and key_file.read_text().strip() == key
    expected = protected_pixels(keyed, photos / "tiny.png", key=key)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a" / "tiny.png")), expected)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b" / "tiny.tiff")), expected)
    for captured in (first, second):
        assert_secret_nowhere(key, captured, tmp_path / "a", tmp_path / "b")


def test_key_file_option_and_class_keys(photos, keyed, tmp_path, config_home, capsys):
    made = tmp_path / "keys" / "portfolio"
    assert main(["protect", str(photos / "tiny.png"), "-o", str(tmp_path / "a"), "--model", keyed,
                 "--key-file", str(made)]) == 0
    assert f"created your protection key in {made}" in capsys.readouterr().err
    assert stat.S_IMODE(made.stat().st_mode) == 0o600 and not (config_home / "confounder").exists()

    mine = tmp_path / "mine"
    mine.write_text("correct horse battery staple\n")
    mine.chmod(0o600)
    assert main(["protect", str(photos / "tiny.png"), "-o", str(tmp_path / "b"), "--model", keyed,
                 "--key-file", str(mine), "--label", "3"]) == 0
    captured = capsys.readouterr()
    expected = protected_pixels(keyed, photos / "tiny.png", labels=3, key="correct horse battery staple")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b" / "tiny.png")), expected)
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "a" / "tiny.png")), expected)
    assert_secret_nowhere("correct horse battery staple", captured, tmp_path / "b")

    mine.chmod(0o644)
    assert main(["protect", str(photos / "tiny.png"), "-o", str(tmp_path / "b"), "--model", keyed,
                 "--key-file", str(mine), "--overwrite"]) == 0
    assert f"can be read by other users; make it private with chmod 600 {mine}" in capsys.readouterr().err


@pytest.mark.parametrize("content, reason", [(b"", "it is empty"), (b"\xffsecret\xfe\n", "not a text file"),
                                             (None, "Is a directory")])
def test_a_bad_key_file_is_explained_without_its_content(photos, keyed, tmp_path, content, reason):
    key_file = tmp_path / "key"
    key_file.mkdir() if content is None else key_file.write_bytes(content)
    with pytest.raises(SystemExit, match=rf"cannot use the key file {key_file} \({reason}\): delete it to make a "
                                         "new key, or restore your key") as stopped:
        main(["protect", str(photos / "tiny.png"), "-o", str(tmp_path / "out"), "--model", keyed,
              "--key-file", str(key_file)])
    assert "secret" not in str(stopped.value) and not (tmp_path / "out").exists()


def test_a_label_generator_takes_no_key(photos, model, keyed, tmp_path):
    with pytest.raises(SystemExit, match="takes labels .* not keys: drop --key-file"):
        main(["protect", str(photos / "tiny.png"), "-o", str(tmp_path / "out"), "--model", model,
              "--key-file", str(tmp_path / "key")])
    assert not (tmp_path / "key").exists()
    with pytest.raises(SystemExit, match="--label is a class index >= 0"):
        main(["protect", str(photos / "tiny.png"), "-o", str(tmp_path / "out"), "--model", keyed, "--label", "-1"])


OPTIONAL_PACKAGES = ("timm", "datasets", "accelerate", "kornia", "torchvision", "skimage", "gradio")
IMPORT_CHECK = """
import sys
if sys.argv[1] == "missing":
    # As if only the core dependencies were installed: importing these fails.
    sys.modules.update(dict.fromkeys({optional}))
import modeling_confounder
from modeling_confounder import ConfounderGenerator, protect
from modeling_confounder.cli import main
code = main(["protect", sys.argv[2], "-o", sys.argv[3], "--model", sys.argv[4]])
print(sorted(name for name in {optional} if sys.modules.get(name) is not None))
sys.exit(code)
"""


@pytest.mark.parametrize("optional", ["installed", "missing"])
def test_the_library_and_the_command_for_files_need_only_the_core_dependencies(photos, model, tmp_path, optional):
    """Neither ``import modeling_confounder`` nor ``confounder protect FILES`` imports an extra's package.

    diffusers itself imports accelerate when it is installed; with it missing, everything still works.
    """
    script = IMPORT_CHECK.format(optional=OPTIONAL_PACKAGES)
    result = subprocess.run([sys.executable, "-c", script, optional, str(photos / "tiny.png"), str(tmp_path / "out"),
                             model], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] in ("[]", "['accelerate']")
    assert (tmp_path / "out" / "tiny.png").exists()
