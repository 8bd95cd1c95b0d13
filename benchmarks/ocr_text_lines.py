"""Text-line images for PP-OCR recognition benchmarks: random characters rendered with Pillow.

Each sample is a 48 x 320 RGB line: light paper (random grey level and gradient), dark ink (random grey), one
line of 6-24 random characters (Latin letters, digits, punctuation) rendered with Pillow's built-in font at a
random size and offset, then normalised as rapidocr feeds its recogniser: (pixel / 255 - 0.5) / 0.5, NCHW float32.
Pillow comes with rapidocr-onnxruntime (the benchmark's model source); it is not an edgefit dependency.
"""

from __future__ import annotations

import string

import numpy as np

HEIGHT, WIDTH = 48, 320
ALPHABET = string.ascii_letters + string.digits + ".,:;-+/()%$#@!?"


def text_lines(count: int, seed: int) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    lines = np.empty((count, 3, HEIGHT, WIDTH), np.float32)
    for k in range(count):
        paper = int(rng.integers(170, 256))
        ink = int(rng.integers(0, 90))
        image = Image.new("RGB", (WIDTH, HEIGHT), (paper,) * 3)
        draw = ImageDraw.Draw(image)
        font = ImageFont.load_default(size=int(rng.integers(22, 34)))
        text = "".join(rng.choice(list(ALPHABET), size=int(rng.integers(6, 25))))
        draw.text((int(rng.integers(0, 24)), int(rng.integers(2, 10))), text, fill=(ink,) * 3, font=font)
        pixels = np.asarray(image, np.float32)
        pixels *= np.linspace(1.0, rng.uniform(0.85, 1.0), WIDTH, dtype=np.float32)[None, :, None]   # uneven light
        lines[k] = ((pixels / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)
    return lines
