"""The human study: build (seeded, balanced), serve (one transaction per answer, resumable, nothing leaked),
bad input, a real browser, 20 concurrent participants, a server killed mid-run, and the analysis."""

import csv
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter

import httpx
import pytest
import torch
from PIL import Image

from egg_zoo_discritune.archs.options import ReceiverOptions
from egg_zoo_discritune.evaluate import main as evaluate_main
from egg_zoo_discritune.metrics.hard_distractors import nearest_sets, write_sets
from egg_zoo_discritune.study.analyse import AnalyseOptions, analyse_study, mcnemar_exact
from egg_zoo_discritune.study.app import create_app
from egg_zoo_discritune.study.build import BuildOptions, balanced_slots, build_study
from egg_zoo_discritune.study.cli import simulate_study
from egg_zoo_discritune.study.simulate import free_port, participate, running, simulate
from tests.test_eval_data import CONCADIA_SAMPLE
from tests.test_evaluate import _models
from tests.test_gallery import CHROMIUM, FLAGS

N_IMAGES, ADMIN = 40, "admin-secret"
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white", "grey", "pink"]


def _world(root):
    """A dataset in the toy world's manifest format, two captions files as evaluate writes them, and the
    nearest-neighbour candidate sets as evaluate --distractors nearest writes them."""
    root.mkdir(parents=True, exist_ok=True)
    rows, ids = [], []
    for i in range(N_IMAGES):
        colour, size = COLOURS[i % 10], 20 + 5 * (i // 10)
        image = Image.new("RGB", (64, 64), "white")
        image.paste(colour, (10, 10, 10 + size, 10 + size))
        image.save(root / f"{i:03d}.png")
        rows.append({"image": f"{i:03d}.png", "captions": [f"a {colour} square of size {size}."]})
        ids.append(f"{i:03d}.png")
    (root / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    files = []
    for label, caption in (("vague", lambda i: "a picture."), ("tuned", lambda i: f"a {COLOURS[i % 10]} square.")):
        path = root / f"{label}__toyworld.jsonl"
        path.write_text("".join(json.dumps({"image_id": ids[i], "caption": caption(i)}) + "\n"
                                for i in range(N_IMAGES)))
        files.append(f"{label}={path}")
    features = torch.randn(N_IMAGES, 8, generator=torch.Generator().manual_seed(0))
    write_sets(root / "sets.jsonl", nearest_sets(features, 9), ids)
    return files


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("study") / "world"
    return root, _world(root)


def _build(world, path, **changes):
    root, files = world
    options = dict(study=str(path), test_set="toyworld", root=[f"toyworld={root}"], captions=files,
                   candidate_sets=str(root / "sets.jsonl"), n_sets=20, per_participant=10, attention_checks=2, seed=3)
    return build_study(BuildOptions(**{**options, **changes}))


@pytest.fixture
def study(world, tmp_path):
    return _build(world, tmp_path / "study.sqlite")


def _rows(path, sql):
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


def test_build_balances_sources_never_repeats_a_target_and_is_seeded(world, study, tmp_path):
    assert _rows(study, "SELECT count(*) FROM slots") == [(6,)]  # 20 targets x 3 sources / 10 per participant
    per_slot = _rows(study, "SELECT slot, group_concat(trials.source, '|'), group_concat(target_image, '|') FROM "
                            "assignments JOIN trials ON trials.id = trial GROUP BY slot")
    for _, sources, targets in per_slot:
        counts = Counter(sources.split("|"))
        assert counts["attention check"] == 2
        assert max(counts[s] for s in ("vague", "tuned", "Human captions")) - \
            min(counts[s] for s in ("vague", "tuned", "Human captions")) <= 1
        assert len(set(targets.split("|"))) == 12  # ten targets and two attention checks, all different
    trials = _rows(study, "SELECT source, candidates, target_position, caption FROM trials")
    assert Counter(t[0] for t in trials)["tuned"] == 20 and all(len(json.loads(t[1])) == 10 for t in trials)
    assert len({t[2] for t in trials}) > 3  # the target's place is shuffled
    again = _build(world, tmp_path / "again.sqlite")
    assert _rows(again, "SELECT * FROM trials") == _rows(study, "SELECT * FROM trials")
    assert _rows(again, "SELECT * FROM assignments") == _rows(study, "SELECT * FROM assignments")
    with pytest.raises(FileExistsError, match="never overwritten"):
        _build(world, study)
    with pytest.raises(ValueError, match="more than the 20 targets"):
        balanced_slots(list(range(20)), ["a", "b"], 21)
    with pytest.raises(ValueError, match="--attention_checks 31: each needs a target the participant does not "
                                         "otherwise see, and 40 images leave 30"):
        _build(world, tmp_path / "no-room.sqlite", attention_checks=31)
    assert not (tmp_path / "no-room.sqlite").exists()


def test_bad_input_gets_4xx_and_changes_nothing(study):
    with running(create_app(study, ADMIN)) as url, httpx.Client(base_url=url) as client:
        token = client.post("/start").headers["location"].rsplit("/", 1)[-1]
        good = {"position": 0, "choice": 3, "response_ms": 900}
        assert client.post(f"/p/{token}/answer", data=good).status_code == 303
        before = _rows(study, "SELECT * FROM answers")
        other = client.post("/start").headers["location"].rsplit("/", 1)[-1]
        cases = [
            ("tampered token", "POST", f"/p/{token[:-1]}x/answer", {"data": {**good, "position": 1}}, 404),
            ("non-existent trial", "POST", f"/p/{token}/answer", {"data": {**good, "position": 999}}, 404),
            ("choice out of range", "POST", f"/p/{token}/answer", {"data": {**good, "position": 1, "choice": 10}}, 422),
            ("negative choice", "POST", f"/p/{token}/answer", {"data": {**good, "position": 1, "choice": -1}}, 422),
            ("not a number", "POST", f"/p/{token}/answer", {"data": {"position": "1;DROP", "choice": 1}}, 422),
            ("replayed answer", "POST", f"/p/{token}/answer", {"data": good}, 409),
            ("oversized body", "POST", f"/p/{token}/answer", {"content": b"position=1&choice=1&x=" + b"a" * 100_000,
                                                               "headers": {"content-type":
                                                                           "application/x-www-form-urlencoded"}}, 413),
            ("path traversal", "GET", f"/p/{token}/0/..%2F..%2Fetc%2Fpasswd", {}, 404),
            ("path traversal, dots", "GET", f"/p/{token}/../../etc/passwd", {}, 404),
            ("picture out of range", "GET", f"/p/{token}/0/10.jpg", {}, 404),
            ("wrong admin token", "GET", "/admin/answers.csv?token=guess", {}, 403),
        ]
        for name, method, path, kwargs, status in cases:
            assert client.request(method, path, **kwargs).status_code == status, name
        # Someone else's trial: the other participant's position 0 is theirs; answering it with this token answers
        # this participant's own position 0, which is already answered (409); theirs stays unanswered.
        assert client.post(f"/p/{token}/answer", data=good).status_code == 409
        assert _rows(study, "SELECT * FROM answers") == before
        assert client.get(f"/p/{other}/trial.json").json()["position"] == 0
        page = client.get(f"/p/{token}").text
        for secret in ("vague", "tuned", "Human captions", ".png", "target"):
            assert secret not in page, secret


def test_a_participant_in_chromium_clicks_types_reloads_and_finishes(study):
    playwright = pytest.importorskip("playwright.sync_api")
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    with running(create_app(study, ADMIN)) as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page()
        page.goto(url + "/")
        page.click("#consent")
        page.wait_for_selector("#caption")
        token = page.url.rsplit("/", 1)[-1]
        page.wait_for_load_state("load")  # #caption is in the DOM before the trial's pictures have loaded
        assert page.eval_on_selector_all("img", "imgs => imgs.every(i => i.complete && i.naturalWidth > 0)")
        page.click(".grid button >> nth=2")  # trial 1 by click: the third picture
        page.wait_for_function("document.querySelector('#progress').value == 1")
        page.keyboard.press("7")  # trial 2 by keyboard: the seventh picture
        page.wait_for_function("document.querySelector('#progress').value == 2")
        page.reload()
        assert page.eval_on_selector("#progress", "p => p.value") == 2  # resumed where it stopped
        page.keyboard.press("0")  # trial 3: the tenth picture
        page.wait_for_function("document.querySelector('#progress').value == 3")
        answers = _rows(study, "SELECT position, chosen_position, response_ms FROM answers ORDER BY position")
        assert [(p, c) for p, c, _ in answers] == [(0, 2), (1, 6), (2, 9)] and all(ms > 0 for *_, ms in answers)
        total = page.eval_on_selector("#progress", "p => p.max")
        for _ in range(total - 3):
            done = page.eval_on_selector("#progress", "p => p.value")
            page.click(".grid button >> nth=0")
            page.wait_for_function(f"!document.querySelector('#progress') || "
                                   f"document.querySelector('#progress').value > {done}")
        code = page.text_content("#code")
        assert code and _rows(study, f"SELECT completion_code FROM slots WHERE token = '{token}'") == [(code,)]
        page.screenshot(path=str(study.parent / "trial.png"))
        browser.close()
        exported = httpx.get(f"{url}/admin/answers.csv", params={"token": ADMIN}).text
    table = list(csv.DictReader(io.StringIO(exported)))
    assert len(table) == total == 12 and [r["chosen_position"] for r in table[:3]] == ["2", "6", "9"]


def test_twenty_concurrent_participants_lose_and_duplicate_nothing(world, tmp_path):
    study = _build(world, tmp_path / "load.sqlite", n_sets=20, per_participant=3, attention_checks=0)
    assert _rows(study, "SELECT count(*) FROM slots") == [(20,)]
    with running(create_app(study, ADMIN)) as url:
        results = simulate(url, lambda caption, images: 0, concurrency=20, limit=20)
    assert len(results) == 20 and all(r["answers"] == 3 for r in results)
    assert _rows(study, "SELECT count(*), count(DISTINCT slot || '-' || position) FROM answers") == [(60, 60)]
    latencies = sorted(s for r in results for s in r["latencies_s"])
    assert latencies[int(0.95 * len(latencies))] < 5


def _server(study, port):
    code = ("import sys, uvicorn; from pathlib import Path; from egg_zoo_discritune.study.app import create_app; "
            f"uvicorn.run(create_app(Path(sys.argv[1]), {ADMIN!r}), port={port}, log_level='warning')")
    process = subprocess.Popen([sys.executable, "-c", code, str(study)], start_new_session=True)
    for _ in range(300):
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            return process
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError("the study server did not start")


def test_sigkill_mid_run_loses_no_committed_answer(world, tmp_path):
    study = _build(world, tmp_path / "crash.sqlite", n_sets=20, per_participant=10, attention_checks=0)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = _server(study, port)
    acknowledged = []

    def answer_until_killed():
        with httpx.Client(base_url=url) as client:
            token = client.post("/start").headers["location"].rsplit("/", 1)[-1]
            for position in range(10):
                response = client.post(f"/p/{token}/answer", data={"position": position, "choice": 1},
                                       headers={"accept": "application/json"})
                if response.status_code == 200:
                    acknowledged.append((token, position))
                if len(acknowledged) == 8:
                    os.killpg(server.pid, signal.SIGKILL)
                    server.wait()
                    return

    answer_until_killed()
    server = _server(study, port)  # restarted on the same file
    try:
        stored = set(_rows(study, "SELECT slots.token, position FROM answers JOIN slots ON slots.id = answers.slot"))
        assert set(acknowledged) <= stored and len(acknowledged) == 8
        token = acknowledged[0][0]
        resumed = httpx.get(f"{url}/p/{token}/trial.json").json()
        assert resumed["answered"] == len(stored) and resumed["position"] == len(stored)
        assert participate(url, lambda caption, images: 0)["answers"] == 10  # the next slot works
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def test_analysis_table6_by_hand(world, tmp_path):
    study = _build(world, tmp_path / "analysed.sqlite")
    # Three participants answer; then slots 1 and 2 are made right everywhere and slot 3 wrong everywhere, so
    # slot 3 fails both attention checks and is excluded.
    with running(create_app(study, ADMIN)) as url:
        for _ in range(3):
            participate(url, lambda caption, images: 0)
    with sqlite3.connect(study) as db:
        db.execute("UPDATE answers SET correct = 1 WHERE slot IN (1, 2)")
        db.execute("UPDATE answers SET correct = 0 WHERE slot = 3")
    result = analyse_study(study, AnalyseOptions(bootstrap=200, output_dir=str(tmp_path / "out")))
    assert result["participants"] == 3 and result["excluded_participants"] == [3]
    kept = _rows(study, "SELECT trials.source, count(*) FROM answers JOIN assignments USING (slot, position) JOIN "
                        "trials ON trials.id = trial WHERE slot IN (1, 2) AND attention = 0 GROUP BY trials.source")
    for source, n in kept:
        assert result["table6"][source]["answers"] == n and result["table6"][source]["accuracy"] == 1.0
        assert result["table6"][source]["ci95"] == [1.0, 1.0]
    assert (tmp_path / "out" / "table6.md").read_text().count("| 100.0 |") == len(kept)
    assert (tmp_path / "out" / "only_vague.html").is_file()
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(5, 0) == pytest.approx(2 / 32)
    assert mcnemar_exact(3, 1) == pytest.approx(2 * (1 + 4) / 16)


@pytest.mark.skipif(not CONCADIA_SAMPLE.is_dir(), reason="the real Concadia sample (../shared/data) is not here")
def test_build_simulate_and_analyse_on_the_real_concadia_sample(tiny, tmp_path):
    evaluate_main([*_models(tiny), "--checkpoints", "pretrained", "--labels", "ClipCap", "--test_sets", "concadia",
                   "--root", f"concadia={CONCADIA_SAMPLE}", "--block_size", "8", "--decoding", "greedy", "--no-nlg",
                   "--distractors", "nearest", "--k", "9", "--output_dir", str(tmp_path / "eval")])
    study = build_study(BuildOptions(
        study=str(tmp_path / "concadia.sqlite"), test_set="concadia", root=[f"concadia={CONCADIA_SAMPLE}"],
        captions=[f"ClipCap={tmp_path / 'eval' / 'captions' / 'ClipCap__concadia.jsonl'}"],
        candidate_sets=str(tmp_path / "eval" / "candidate_sets" / "concadia.jsonl"), n_sets=16, per_participant=8,
        attention_checks=1))
    result = simulate_study(study, create_app(study, ADMIN), ReceiverOptions(receiver=str(tiny.clip)))
    assert result["participants"] == 4 and {r["answers"] for r in result["table6"].values()} == {16}
    assert all(0 <= r["accuracy"] <= 1 and r["ci95"][0] <= r["accuracy"] <= r["ci95"][1]
               for r in result["table6"].values())
