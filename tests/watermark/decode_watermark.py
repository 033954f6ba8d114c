"""Run with: .venv/bin/python tests/watermark/decode_watermark.py IMAGE BITS [--reencode-jpeg QUALITY]

Reads an invisible watermark with invisible-watermark 0.2.0's own `dwtDctSvd` decoder and prints
the payload as hex, exactly as `WatermarkDecoder('bytes', BITS).decode(bgr, 'dwtDctSvd')` would
return it. With --reencode-jpeg, the image is first saved as JPEG at QUALITY with Pillow (its
default 4:2:0 chroma subsampling, as most re-uploads do) and decoded from those bytes.

The decoder module is loaded from its file: the package's `__init__` imports the RivaGAN code and so
torch, which the DWT-DCT-SVD path does not need (deploy/setup.sh installs the package --no-deps).
The class lives in `imwatermark/dwtDctSvd.py`; `maxDct.py` holds the `dwtDct` variant.
"""

import argparse
import importlib.util
import io
import pathlib
import sys

import cv2
import numpy as np
from PIL import Image


def load_decoder_class():
    # find_spec locates the package without running its __init__.
    package = importlib.util.find_spec("imwatermark")
    if package is None or not package.submodule_search_locations:
        sys.exit("invisible-watermark is not installed: run `bash deploy/setup.sh`")
    path = pathlib.Path(package.submodule_search_locations[0]) / "dwtDctSvd.py"
    spec = importlib.util.spec_from_file_location("imwatermark_dwtDctSvd", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EmbedDwtDctSvd


def read_bgr(path, reencode_quality):
    if reencode_quality is None:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            sys.exit(f"cannot read image {path}")
        return bgr
    buffer = io.BytesIO()
    Image.open(path).convert("RGB").save(buffer, "JPEG", quality=reencode_quality)
    return cv2.imdecode(np.frombuffer(buffer.getvalue(), np.uint8), cv2.IMREAD_COLOR)


def decode(bgr, bits):
    # WatermarkDecoder.decode: the size check, then the method, then reconstruct_bytes.
    rows, cols, _ = bgr.shape
    if rows * cols < 256 * 256:
        sys.exit("image too small, should be larger than 256x256")
    votes = load_decoder_class()(watermarks=[], wmLen=bits).decode(bgr)
    return bytes(np.packbits(votes)[: bits // 8])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", type=pathlib.Path)
    parser.add_argument("bits", type=int)
    parser.add_argument("--reencode-jpeg", type=int, metavar="QUALITY")
    args = parser.parse_args()
    print(decode(read_bgr(args.image, args.reencode_jpeg), args.bits).hex())


if __name__ == "__main__":
    main()
