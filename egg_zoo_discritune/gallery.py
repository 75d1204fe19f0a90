"""``gallery.html``: the paper's Fig. 2 in spirit, one self-contained page (thumbnails embedded, no network).

Every image with its human reference and each captioner's caption, the rank the retriever gave the image
among its block for that caption, and, with hard distractors, the image the caption picked instead. A
filter shows only the images that one captioner's caption retrieves, or that only it retrieves.
"""

from __future__ import annotations

import base64
import html
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from PIL import Image

from egg_zoo_discritune.data_loaders.image_modes import to_rgb
from egg_zoo_discritune.data_loaders.images import ImageRecord, read_image_bytes

THUMBNAIL = 160


@dataclass
class Captions:
    """One captioner's captions of a test set's images, in image order, and what the retriever made of them."""

    model: str
    captions: list[str]
    ranks: Optional[list[int]]  # rank of the image among its block (1: retrieved; 0: in the dropped last block)
    picked: Optional[list[int]] = None  # the image each caption led to among its set (-1: no set)


@dataclass
class Section:
    """A test set: its evaluated images (positions as in ``Captions``), of which the first ``n_shown`` are shown."""

    title: str
    records: list[ImageRecord]
    sources: list[Captions]
    block_size: Optional[int]  # of the ranks, when there are any
    n_shown: int
    rule: str  # when a caption counts as right, in words
    picked_label: str = "hard set"  # what chose ``picked``


def thumbnail(record: ImageRecord, archives: dict[Path, tarfile.TarFile]) -> str:
    """The image as a JPEG data URI at most ``THUMBNAIL`` pixels on a side."""
    buffer = io.BytesIO()
    with Image.open(io.BytesIO(read_image_bytes(record, archives))) as image:
        small = to_rgb(image)
        small.thumbnail((THUMBNAIL, THUMBNAIL))
        small.save(buffer, "JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _card(i: int, section: Section, uris: dict[int, str]) -> str:
    record = section.records[i]
    correct, rows = [], []
    for k, source in enumerate(section.sources):
        rank = source.ranks[i] if source.ranks is not None else 0
        picked_image = source.picked[i] if source.picked is not None else -1
        hit = picked_image == i if picked_image >= 0 else rank == 1
        if hit:
            correct.append(k)
        badge = "" if source.ranks is None else f"rank {rank}/{section.block_size}" if rank else "last block"
        picked = ""
        if picked_image == i:
            picked = f"{section.picked_label}: ✓"
        elif picked_image >= 0:
            other = html.escape(section.records[picked_image].image_id)
            picked = (f'{section.picked_label}: <img class="picked" src="{uris[picked_image]}" title="the picture '
                      f'picked instead: {other}" alt="picked instead">')
        rows.append(f'<tr class="{"hit" if hit else "miss"}"><th>{html.escape(source.model)}</th>'
                    f'<td>{html.escape(source.captions[i])}</td><td class="rank">{badge}</td><td>{picked}</td></tr>')
    reference = f'<div class="ref">reference: {html.escape(record.captions[0])}</div>' if record.captions else ""
    return (f'<div class="card" data-correct="{" ".join(map(str, correct))}"><img class="target" src="{uris[i]}" '
            f'alt="{html.escape(record.image_id)}"><div class="id">{html.escape(record.image_id)}</div>'
            f'{reference}<table>{"".join(rows)}</table></div>')


STYLE = """body{font-family:sans-serif;margin:1.5em;color:#222}h2{margin-top:1.5em}
.cards{display:flex;flex-wrap:wrap;gap:12px}.card{border:1px solid #ccc;border-radius:6px;padding:8px;width:420px}
.card img.target{width:160px;image-rendering:auto}.id{font-size:11px;color:#777}.ref{font-style:italic;margin:4px 0}
table{border-collapse:collapse;font-size:13px;width:100%}th{text-align:left;padding-right:6px;vertical-align:top;
width:35%}td{vertical-align:top;padding:2px 4px}tr.hit td.rank{color:#070;font-weight:bold}tr.miss td.rank{color:#b00}
img.picked{width:48px;border:2px solid #b00}.controls{position:sticky;top:0;background:#fff;padding:6px 0;
border-bottom:1px solid #ddd}"""

SCRIPT = """const filter=document.getElementById('filter');function apply(){const v=filter.value;let shown=0;
for(const c of document.querySelectorAll('.card')){const ok=c.dataset.correct.split(' ').filter(x=>x!=='');
let show=true;if(v.startsWith('only:')){show=ok.length===1&&ok[0]===v.slice(5);}else if(v.startsWith('hit:')){
show=ok.includes(v.slice(4));}c.style.display=show?'':'none';if(show)shown++;}
document.getElementById('shown').textContent=shown;}filter.addEventListener('change',apply);apply();"""


def write_gallery(path: Path, sections: Sequence[Section]) -> Path:
    """Writes the page; the captioners (their order) must be the same in every section."""
    models = [source.model for source in sections[0].sources]
    options = ['<option value="all">all images</option>']
    for k, model in enumerate(models):
        options.append(f'<option value="hit:{k}">only where {html.escape(model)} retrieves the image</option>')
        options.append(f'<option value="only:{k}">only where {html.escape(model)} alone retrieves it</option>')
    archives: dict[Path, tarfile.TarFile] = {}
    body = []
    for section in sections:
        needed = set(range(section.n_shown)) | {source.picked[i] for source in section.sources if source.picked
                                                 for i in range(section.n_shown) if source.picked[i] >= 0}
        uris = {i: thumbnail(section.records[i], archives) for i in sorted(needed)}
        body.append(f"<h2>{html.escape(section.title)}</h2><p>The first {section.n_shown} of "
                    f"{len(section.records)} images; {html.escape(section.rule)}.</p>"
                    '<div class="cards">' + "".join(_card(i, section, uris) for i in range(section.n_shown))
                    + "</div>")
    for archive in archives.values():
        archive.close()
    page = (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>DiscriTune captions</title>'
            f"<style>{STYLE}</style></head><body><h1>Captions and what the retriever made of them</h1>"
            f'<div class="controls"><label>show <select id="filter">{"".join(options)}</select></label> '
            f'<span id="shown"></span> shown</div>{"".join(body)}'
            f'<script>{SCRIPT}</script></body></html>')
    path.write_text(page)
    return path
