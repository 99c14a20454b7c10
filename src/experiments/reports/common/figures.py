"""Figures of a page, saved deterministically: the same source gives the same bytes.

A page's figures live in ``docs/results/<page>/``. :meth:`Figures.copy` stores a run's PNG there, shrunk to a width
and palette-quantised (a third of the size, nothing visible lost on line plots and image grids); :meth:`Figures.draw`
lets a drawing function write a PNG (with matplotlib's Agg backend, no date in the file) and stores it the same way.
Pillow writes no time stamp, so equal inputs give byte-identical files.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["Figures"]


class Figures:
    """The figure folder of one page; links are relative to the page's folder."""

    def __init__(self, folder: Path, page_dir: Path) -> None:
        self.folder, self.page_dir = Path(folder), Path(page_dir)
        self.written: set[Path] = set()

    def remove_stale(self) -> list[Path]:
        """Delete the PNG files of the folder this page no longer links (figures of runs or settings it dropped);
        returns them. Only ``*.png`` directly generated into this page's own folder are touched."""
        found = sorted(self.folder.rglob("*.png")) if self.folder.is_dir() else []
        stale = [p for p in found if p not in self.written]
        for path in stale:
            path.unlink()
        return stale

    def copy(self, source: Path, name: str, *, width: int = 1000, colors: int = 128) -> str:
        """Store the PNG ``source`` as ``name`` (at most ``width`` pixels wide, ``colors`` colours); return the
        link to it. ``FileNotFoundError`` names the missing source."""
        from PIL import Image

        source = Path(source)
        if not source.is_file():
            raise FileNotFoundError(f"figure {source} does not exist (is the run folder complete?)")
        target = self.folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(source) as image:
            image = image.convert("RGB")
            if image.width > width:
                image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
            image.quantize(colors=colors, method=Image.Quantize.MEDIANCUT,
                           dither=Image.Dither.NONE).save(target, optimize=True)
        self.written.add(target)
        return target.relative_to(self.page_dir).as_posix()

    def draw(self, draw: Callable[[Path], object], name: str, **options: int) -> str:
        """Call ``draw(path)`` to write a PNG into a temporary folder, then store it as :meth:`copy` does."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "figure.png"
            draw(path)
            return self.copy(path, name, **options)
