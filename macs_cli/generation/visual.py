"""Pictures made from generated images: interpolation contact sheets and attention-map grids."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..formats import PICTURE, PNG_MARK
from ..fsutil import atomic_path


def write_png(image, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write a PIL image as PNG at ``path`` (no placement logic), with our text chunk
    (``macs``: what recognises it as ours) and any others given."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for k, v in {PNG_MARK: "1", **(metadata or {})}.items():
        info.add_text(k, v)
    image.save(path, format="PNG", pnginfo=info)


def save_png(image, path: Path, metadata: dict[str, str] | None = None, force: bool = False,
             overwrite: bool = False) -> None:
    """Write a PIL image as PNG atomically: never over anything but a picture macs wrote, and
    over that only with ``force`` (``overwrite``: a file of the caller's own, such as a
    training run's samples)."""
    with atomic_path(Path(path), PICTURE, force=force, overwrite=overwrite) as tmp:
        write_png(image, tmp, metadata)


def contact_sheet(images: Sequence, captions: Sequence[str], columns: int | None = None, pad: int = 4):
    """Images in a grid, each with a caption strip below it (PIL in, PIL out)."""
    from PIL import Image, ImageDraw, ImageFont

    if not images:
        raise ValueError("no images for a contact sheet")
    n = len(images)
    cols = columns or min(n, 8)
    rows = -(-n // cols)
    w, h = images[0].size
    font = ImageFont.load_default()
    strip = 14
    sheet = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + strip + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (im, cap) in enumerate(zip(images, captions)):
        r, c = divmod(i, cols)
        x, y = pad + c * (w + pad), pad + r * (h + strip + pad)
        sheet.paste(im.convert("RGB").resize((w, h)), (x, y))
        draw.text((x + 2, y + h + 1), cap, fill="black", font=font)
    return sheet


def attention_grid(image, maps: np.ndarray, titles: Sequence[str], path: Path, alpha: float = 0.55) -> None:
    """The image and one heat-map overlay per stem (maps: (K, h, w), any positive scale) as a PNG
    at ``path`` (written there directly: the caller places it).

    Each map is shown min-max normalised over the whole set, so stems compare by colour.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    k = maps.shape[0]
    w, h = image.size
    lo, hi = float(maps.min()), float(maps.max())
    norm = (maps - lo) / (hi - lo) if hi > lo else np.zeros_like(maps)
    fig, axes = plt.subplots(1, k + 1, figsize=(2.4 * (k + 1), 2.6), squeeze=False)
    axes = axes[0]
    axes[0].imshow(image)
    axes[0].set_title("image", fontsize=8)
    for i in range(k):
        up = np.asarray(Image.fromarray((norm[i] * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)) / 255.0
        axes[i + 1].imshow(image)
        axes[i + 1].imshow(up, cmap="jet", alpha=alpha, vmin=0, vmax=1)
        axes[i + 1].set_title(titles[i] if i < len(titles) else f"stem {i}", fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100, format="png", metadata={PNG_MARK: "1"})
    finally:
        plt.close(fig)
