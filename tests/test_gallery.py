"""gallery.html in a real headless browser (Debian's chromium driven by Playwright): every image loads, and the
filter shows exactly the images a captioner retrieves."""

import shutil

import pytest
from PIL import Image

from egg_zoo_discritune.data_loaders.images import ImageRecord
from egg_zoo_discritune.gallery import Captions, Section, write_gallery

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
pytestmark = pytest.mark.skipif(CHROMIUM is None,
                                reason="Debian's chromium is not installed (apt-get install chromium)")
# What a closed network needs: no background connections, no first-run or update checks.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def _gallery(tmp_path):
    records = []
    for i, (colour, mode) in enumerate([("red", "RGB"), ("green", "RGBA"), ("blue", "P"), ("white", "L"),
                                        ("orange", "RGB"), ("purple", "CMYK")]):
        path = tmp_path / f"{i}.png" if mode != "CMYK" else tmp_path / f"{i}.jpg"
        Image.new("RGB", (64 + 10 * i, 48), colour).convert(mode).save(path)
        records.append(ImageRecord(path, f"img-{i}", [f"a {colour} picture."]))
    vanilla = Captions("vanilla", ["a picture."] * 6, [1, 2, 2, 1, 0, 0], None)
    # The finetuned captioner with hard sets: it retrieves images 0, 1 and 3; image 2's caption picked image 5.
    finetuned = Captions("finetuned <b>", [f"a {c} square." for c in "abcdef"], [1, 1, 2, 1, 0, 0],
                         [0, 1, 5, 3, -1, -1])
    return write_gallery(tmp_path / "gallery.html",
                         [Section("Toy test set", records, [vanilla, finetuned], 2, 4, "right among 2 nearest")])


def test_the_gallery_loads_its_images_and_filters_in_chromium(tmp_path):
    page_path = _gallery(tmp_path)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page()
        page.goto(page_path.as_uri())
        images = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.complete, i.naturalWidth])")
        assert len(images) == 4 + 1  # four cards and the one hard distractor picked instead
        assert all(complete and width > 0 for complete, width in images), images
        assert page.text_content("#shown") == "4"

        def visible_ids(choice):
            page.select_option("#filter", choice)
            return page.eval_on_selector_all(".card", "cards => cards.filter(c => c.style.display !== 'none')"
                                                      ".map(c => c.querySelector('.id').textContent)")

        assert visible_ids("hit:1") == ["img-0", "img-1", "img-3"]
        assert visible_ids("only:1") == ["img-1"]  # vanilla retrieves 0 and 3 too (rank 1 of its block)
        assert visible_ids("hit:0") == ["img-0", "img-3"]
        assert visible_ids("only:0") == []
        assert page.text_content("#shown") == "0"
        assert len(visible_ids("all")) == 4
        assert page.locator("text=finetuned <b>").count() >= 1  # names are escaped, not markup
        browser.close()
