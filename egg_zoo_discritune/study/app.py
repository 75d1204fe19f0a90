"""``discritune-study serve``: the study as a small web app (Starlette, served by uvicorn).

Routes: ``/`` consent and instructions; ``POST /start`` gives the visitor the next free slot under a fresh
random token and sends them to ``/p/<token>``, which shows their next unanswered trial (or the thanks page
with the completion code), so a reload or a later visit with the same link resumes; ``POST
/p/<token>/answer`` records one answer in one transaction; ``/p/<token>/<position>/<k>.jpg`` serves the
k-th picture of that participant's trial from the study file (no path from a URL reaches the disk);
``/p/<token>/trial.json`` is the same trial for programs (the simulated participants);
``/admin/answers.csv?token=...`` exports the answers for whoever holds the admin token printed at start.
Participants never see caption sources, image ids or anyone else's data.
"""

from __future__ import annotations

import csv
import io
import json
import secrets
import sqlite3
import time
from contextlib import closing
from pathlib import Path

from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from egg_zoo_discritune.study.pages import render
from egg_zoo_discritune.study.store import connect

MAX_BODY = 4096  # bytes: an answer is three small numbers, form-encoded
MAX_RESPONSE_MS = 24 * 3600 * 1000


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())


class HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _page_error(status: int, message: str, wants_json: bool) -> Response:
    if wants_json:
        return JSONResponse({"error": message}, status_code=status)
    return HTMLResponse(render("message", title="Sorry", message=message), status_code=status)


def create_app(study: Path, admin_token: str) -> Starlette:
    connect(study).close()  # it must be a study file

    def db() -> sqlite3.Connection:
        return connect(study)

    def slot_of(conn: sqlite3.Connection, token: str) -> int:
        row = conn.execute("SELECT id FROM slots WHERE token = ?", (token,)).fetchone()
        if row is None:
            raise HTTPError(404, "This link is not valid.")
        return row[0]

    def next_position(conn: sqlite3.Connection, slot: int) -> tuple[int | None, int, int]:
        """The slot's first unanswered position (None when done), answered count, and total."""
        total, done = conn.execute(
            "SELECT count(*), count(answers.position) FROM assignments LEFT JOIN answers USING (slot, position) "
            "WHERE assignments.slot = ?", (slot,)).fetchone()
        row = conn.execute("SELECT min(position) FROM assignments WHERE slot = ? AND position NOT IN "
                           "(SELECT position FROM answers WHERE slot = ?)", (slot, slot)).fetchone()
        return row[0], done, total

    def trial_at(conn: sqlite3.Connection, slot: int, position: int) -> tuple[str, list[int], int]:
        row = conn.execute("SELECT trials.caption, trials.candidates, trials.target_position FROM assignments "
                           "JOIN trials ON trials.id = assignments.trial WHERE slot = ? AND position = ?",
                           (slot, position)).fetchone()
        if row is None:
            raise HTTPError(404, "No such trial.")
        return row[0], json.loads(row[1]), row[2]

    def completion(conn: sqlite3.Connection, slot: int) -> str:
        conn.execute("UPDATE slots SET completed_at = ?, completion_code = ? WHERE id = ? AND completion_code IS NULL",
                     (now(), secrets.token_hex(4).upper(), slot))
        return conn.execute("SELECT completion_code FROM slots WHERE id = ?", (slot,)).fetchone()[0]

    def consent(request: Request) -> Response:
        with closing(db()) as conn:
            n = conn.execute("SELECT count(*) FROM assignments WHERE slot = 1").fetchone()[0]
        return HTMLResponse(render("consent", n_trials=n))

    def start(request: Request) -> Response:
        token = secrets.token_urlsafe(16)
        with closing(db()) as conn:
            claimed = conn.execute("UPDATE slots SET token = ?, started_at = ? WHERE id = (SELECT min(id) FROM slots "
                                   "WHERE token IS NULL)", (token, now())).rowcount
        if not claimed:
            raise HTTPError(410, "The study is full. Thank you for your interest.")
        return RedirectResponse(f"/p/{token}", status_code=303)

    def current(token: str) -> dict:
        """The participant's next trial, or their completion code once every trial is answered."""
        with closing(db()) as conn:
            slot = slot_of(conn, token)
            position, done, total = next_position(conn, slot)
            if position is None:
                return {"done": True, "completion_code": completion(conn, slot), "total": total}
            caption, candidates, _ = trial_at(conn, slot, position)
        return {"done": False, "position": position, "caption": caption, "answered": done, "total": total,
                "images": [f"/p/{token}/{position}/{k}.jpg" for k in range(len(candidates))]}

    def participant(request: Request) -> Response:
        token = request.path_params["token"]
        trial = current(token)
        if trial["done"]:
            return HTMLResponse(render("thanks", total=trial["total"], code=trial["completion_code"]))
        return HTMLResponse(render("trial", caption=trial["caption"], images=trial["images"],
                                   position=trial["position"], done=trial["answered"], total=trial["total"],
                                   answer_url=f"/p/{token}/answer"), headers={"Cache-Control": "no-store"})

    def trial_json(request: Request) -> Response:
        return JSONResponse(current(request.path_params["token"]))

    def image(request: Request) -> Response:
        token, position, k = (request.path_params[name] for name in ("token", "position", "k"))
        with closing(db()) as conn:
            _, candidates, _ = trial_at(conn, slot_of(conn, token), position)
            if not 0 <= k < len(candidates):
                raise HTTPError(404, "No such picture.")
            jpeg = conn.execute("SELECT jpeg FROM images WHERE id = ?", (candidates[k],)).fetchone()[0]
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    def record(token: str, position: int, choice: int, response_ms: int) -> None:
        with closing(db()) as conn:
            slot = slot_of(conn, token)
            _, candidates, target_position = trial_at(conn, slot, position)
            if not 0 <= choice < len(candidates):
                raise HTTPError(422, f"The choice must be 0-{len(candidates) - 1}.")
            try:
                conn.execute("INSERT INTO answers (slot, position, chosen_position, correct, response_ms, answered_at) "
                             "VALUES (?, ?, ?, ?, ?, ?)",
                             (slot, position, choice, int(choice == target_position), response_ms, now()))
            except sqlite3.IntegrityError:
                raise HTTPError(409, "This trial was already answered.") from None

    async def answer(request: Request) -> Response:
        body = b""
        async for chunk in request.stream():  # bounded: an oversized body is refused before it is all read
            body += chunk
            if len(body) > MAX_BODY:
                raise HTTPError(413, "Request too large.")
        form = parse_qs(body.decode("utf-8", "replace"))
        try:
            position, choice = int(form["position"][0]), int(form["choice"][0])
            response_ms = int(form.get("response_ms", ["0"])[0])
        except (KeyError, ValueError):
            raise HTTPError(422, "An answer needs a position and a choice.") from None
        if not 0 <= response_ms <= MAX_RESPONSE_MS:
            raise HTTPError(422, "Response time out of range.")
        token = request.path_params["token"]
        await run_in_threadpool(record, token, position, choice, response_ms)
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse({"recorded": True})
        return RedirectResponse(f"/p/{token}", status_code=303)

    def export(request: Request) -> Response:
        if not secrets.compare_digest(request.query_params.get("token", ""), admin_token):
            raise HTTPError(403, "The admin token is wrong.")
        with closing(db()) as conn:
            rows = conn.execute(
                "SELECT answers.slot, answers.position, assignments.trial, trials.source, trials.attention, "
                "images.image_id, trials.target_position, answers.chosen_position, answers.correct, "
                "answers.response_ms, answers.answered_at FROM answers JOIN assignments USING (slot, position) "
                "JOIN trials ON trials.id = assignments.trial JOIN images ON images.id = trials.target_image "
                "ORDER BY answers.slot, answers.position").fetchall()
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["participant", "position", "trial", "source", "attention_check", "target_image_id",
                         "target_position", "chosen_position", "correct", "response_ms", "answered_at"])
        writer.writerows(rows)
        return Response(out.getvalue(), media_type="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="answers.csv"'})

    async def http_error(request: Request, error: HTTPError) -> Response:
        wants_json = request.url.path.endswith(".json") or "application/json" in request.headers.get("accept", "")
        return _page_error(error.status, error.message, wants_json)

    routes = [Route("/", consent), Route("/start", start, methods=["POST"]),
              Route("/p/{token}", participant), Route("/p/{token}/trial.json", trial_json),
              Route("/p/{token}/answer", answer, methods=["POST"]),
              Route("/p/{token}/{position:int}/{k:int}.jpg", image), Route("/admin/answers.csv", export)]
    return Starlette(routes=routes, exception_handlers={HTTPError: http_error})
