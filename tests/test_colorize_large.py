"""Large drawings within bounded memory: early shrinking, a capped output, and a pixel limit that refuses
decompression bombs with a message (colorize and the demo), never a traceback."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, JpegImagePlugin

from linebridge.cli import main as cli_main
from linebridge.colorize import MAX_OUTPUT_SIDE, MAX_PIXELS, read_image
from linebridge.core.config import UserError

# The child colours a small drawing first (so every lazy import is done), then the large one, and prints its peak
# resident memory (KiB) before and after: a fresh process, so the peak is this call's and no earlier test's.
MEASURE = """
import resource, sys
from linebridge.cli import main
warm, big = sys.argv[1:3], sys.argv[3:5]
common = sys.argv[5:]
assert main(["colorize", warm[0], *common, "-o", warm[1]]) == 0
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rc = main(["colorize", big[0], *common, "-o", big[1]])
print("PEAK_KIB", before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(rc)
"""
# What the call may add to the process's peak. The decoded 8000² PNG alone is 61 MiB ('L'); the code before the
# limits added 2.5 GiB here (float tensors of the full-size padded square).
MAX_EXTRA_MIB = 512


def sparse_line_art(path: Path, size: tuple[int, int], mode: str = "L", width: int = 6) -> Path:
    """Mostly white with a few dark strokes: small on disk, large decoded."""
    w, h = size
    image = Image.new(mode, size, 255 if mode == "L" else 1)
    draw = ImageDraw.Draw(image)
    for k in range(12):
        draw.line([(k * w // 12, 0), (w - k * w // 16, h - 1)], fill=0, width=width)
    image.save(path)
    return path


def header_bomb(path: Path, w: int, h: int) -> Path:
    """A valid 1-bit all-white PNG of w × h: tens of KB on disk, w·h bytes once PIL decodes it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, row = zlib.compressobj(9), b"\x00" + b"\xff" * ((w + 7) // 8)  # filter byte 0, then the row's bits
    data = b"".join(packer.compress(row) for _ in range(h)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)  # 1 bit, greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint) -> Path:
    """The session's tiny A3 checkpoint (read only)."""
    return tiny_checkpoint.best


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("large")
    Image.new("RGB", (64, 48), (200, 60, 40)).save(folder / "ref.png")
    return {
        "ref": folder / "ref.png",
        "small": sparse_line_art(folder / "small.png", (40, 28), width=2),
        "big": sparse_line_art(folder / "big.png", (8000, 8000)),
        "bomb": header_bomb(folder / "bomb.png", 15000, 15000),  # past twice PIL's limit: DecompressionBombError
        "over": header_bomb(folder / "over.png", 12000, 12000),  # past the limit only: PIL would just warn
        "demo_over": header_bomb(folder / "demo_over.png", 6000, 6000),  # 36 MP: over the demo's limit only
    }


def test_large_png_colours_in_bounded_memory_at_capped_size(files, checkpoint, tmp_path):
    assert files["big"].stat().st_size < 2_000_000, "the test image is small on disk"
    out = tmp_path / "big_out.png"
    args = [str(files["small"]), str(tmp_path / "warm.png"), str(files["big"]), str(out)]
    args += ["--ref", str(files["ref"]), "--checkpoint", str(checkpoint)]
    proc = subprocess.run([sys.executable, "-c", MEASURE, *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    before, after = (int(v) for v in proc.stdout.split("PEAK_KIB")[1].split())
    assert (after - before) / 1024 < MAX_EXTRA_MIB, f"colouring 8000² raised the peak by {(after - before) >> 10} MiB"
    assert Image.open(out).size == (MAX_OUTPUT_SIDE, MAX_OUTPUT_SIDE)


@pytest.mark.parametrize("side, size", [(["--max-output-side", "full"], (3000, 1000)), ([], (1024, 341))])
def test_output_side_option(files, checkpoint, tmp_path, side, size):
    line = sparse_line_art(tmp_path / "wide.png", (3000, 1000))
    args = ["colorize", str(line), "--ref", str(files["ref"]), "--checkpoint", str(checkpoint)]
    assert cli_main([*args, "-o", str(tmp_path / "o.png"), *side]) == 0
    assert Image.open(tmp_path / "o.png").size == size


@pytest.mark.parametrize("which, megapixels", [("bomb", "225.0"), ("over", "144.0")])
@pytest.mark.parametrize("role", ["line", "ref"])
def test_bomb_is_refused_with_a_message(files, checkpoint, tmp_path, capsys, recwarn, which, megapixels, role):
    line, ref = (files[which], files["ref"]) if role == "line" else (files["small"], files[which])
    out = tmp_path / "o.png"
    assert cli_main(["colorize", str(line), "--ref", str(ref), "--checkpoint", str(checkpoint), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(files[which]) in err and f"{megapixels} megapixels" in err, err
    assert f"limit of {MAX_PIXELS / 1e6:g} megapixels" in err and "--max-megapixels" in err and "downscale" in err
    assert "Traceback" not in err and not out.exists()
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_limit_option_lowers_and_raises_the_limit(files, checkpoint, tmp_path, capsys):
    args = ["colorize", str(files["big"]), "--ref", str(files["ref"]), "--checkpoint", str(checkpoint)]
    assert cli_main([*args, "-o", str(tmp_path / "o.png"), "--max-megapixels", "50"]) == 2
    assert "64.0 megapixels, past the limit of 50 megapixels" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse refuses it
        cli_main([*args, "-o", str(tmp_path / "o.png"), "--max-megapixels", "0"])
    assert "positive number of megapixels" in capsys.readouterr().err
    over = ["colorize", str(files["over"]), "--ref", str(files["ref"]), "--checkpoint", str(checkpoint)]
    assert cli_main([*over, "-o", str(tmp_path / "o.png"), "--max-megapixels", "150"]) == 0  # 144 MP, decoded
    assert Image.open(tmp_path / "o.png").size == (MAX_OUTPUT_SIDE, MAX_OUTPUT_SIDE)


def test_jpeg_decodes_reduced_and_thin_strokes_survive_shrinking(tmp_path, monkeypatch):
    loaded = []
    real = JpegImagePlugin.JpegImageFile.load
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", lambda self: loaded.append(self.size) or real(self))
    sparse_line_art(tmp_path / "big.png", (6000, 4000)).rename(tmp_path / "x")
    Image.open(tmp_path / "x").save(tmp_path / "big.jpg", quality=90)
    got = read_image(tmp_path / "big.jpg", "L", 64)
    assert got.size == (6000, 4000) and got.image.size == (64, 43) and got.image.mode == "L"
    assert set(loaded) == {(750, 500)}, "decoded at 1/8 scale, still at least the working size"
    one_bit = read_image(sparse_line_art(tmp_path / "bits.png", (4000, 4000), mode="1", width=1), "L", 64).image
    assert one_bit.getextrema()[0] < 250, "1-px strokes of a 1-bit image stay visible (not nearest-neighbour)"


def test_demo_refuses_large_uploads_with_a_message(files, checkpoint):
    from linebridge.demo import MAX_UPLOAD_PIXELS, colorize_once, load_inputs

    for name in ("bomb", "demo_over"):
        with pytest.raises(UserError) as err:
            load_inputs(files[name], files["ref"])
        text = str(err.value)
        assert f"{name}.png" in text and str(files[name].parent) not in text, "the name, not Gradio's temp folder"
        assert f"limit of {MAX_UPLOAD_PIXELS / 1e6:g} megapixels" in text and "this page takes" in text
    with pytest.raises(UserError, match="bomb.png: 225.0 megapixels"):
        colorize_once(checkpoint, files["small"], files["bomb"])  # the page's handler shows this as its error
    wide = sparse_line_art(files["ref"].parent / "wide.png", (3000, 1000))
    assert colorize_once(checkpoint, wide, files["ref"], steps=2).image.size == (MAX_OUTPUT_SIDE, 341)
