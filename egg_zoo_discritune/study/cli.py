"""``discritune-study build | serve | analyse``: the human retrieval study of the paper's Table 6, runnable by
anyone with Python (``python -m egg_zoo_discritune.study <command> --help``)."""

from __future__ import annotations

import argparse
import logging
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from egg_zoo_discritune.archs.options import ReceiverOptions
from egg_zoo_discritune.cli import run as run_cli, start
from egg_zoo_discritune.config import add_options, options_from
from egg_zoo_discritune.options import opt
from egg_zoo_discritune.study.analyse import AnalyseOptions, analyse_study, markdown
from egg_zoo_discritune.study.build import BuildOptions, build_study

log = logging.getLogger("discritune")


@dataclass
class ServeOptions:
    """Where the study is served, and the optional dry run."""

    host: str = opt("127.0.0.1", "address to listen on (0.0.0.0: every interface, for participants elsewhere)")
    port: int = opt(8000, "port to listen on (0: any free one)")
    admin_token: Optional[str] = opt(None, "token of the CSV export (default: a new random one, printed at start)")
    simulate: Optional[str] = opt(None, "a dry run without people: 'retriever' answers every trial with the "
                                        "--receiver's argmax, through the HTTP endpoints, then prints Table 6",
                                  ("retriever",))
    concurrency: int = opt(4, "--simulate: participants answering at the same time")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="discritune-study", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add_options(commands.add_parser("build", help="write the study file (SQLite)"), BuildOptions)
    serve = commands.add_parser("serve", help="serve the study on the web (Starlette + uvicorn)")
    serve.add_argument("study_file", help="the study file made by build")
    add_options(serve, ServeOptions)
    add_options(serve, ReceiverOptions)
    analyse = commands.add_parser("analyse", help="Table 6 from the answers")
    analyse.add_argument("study_file", help="the study file")
    add_options(analyse, AnalyseOptions)
    return parser


def serve(study: Path, opts: ServeOptions, receiver: ReceiverOptions) -> Optional[dict]:
    import uvicorn

    from egg_zoo_discritune.study.app import create_app

    token = opts.admin_token or secrets.token_urlsafe(16)
    app = create_app(study, token)

    def announce(base: str) -> None:
        print(f"study {study}: participants start at {base}/\nanswers as CSV: {base}/admin/answers.csv?token={token}",
              flush=True)

    if opts.simulate is None:
        announce(f"http://{opts.host}:{opts.port}")
        uvicorn.run(app, host=opts.host, port=opts.port, log_level="info")
        return None
    result = simulate_study(study, app, receiver, opts.concurrency, opts.host, opts.port or None, announce)
    print(markdown(result))
    return result


def simulate_study(study: Path, app, receiver: ReceiverOptions, concurrency: int = 4, host: str = "127.0.0.1",
                   port: Optional[int] = None, announce=lambda url: None) -> dict:
    """Serves ``app`` while the retriever's simulated participants fill every free slot; returns Table 6."""
    from egg_zoo_discritune.factory import load_clips
    from egg_zoo_discritune.study.simulate import retriever_chooser, running, simulate

    retriever, _, preprocess = load_clips(receiver)
    retriever.eval()
    with running(app, host, port) as url:
        announce(url)
        participants = simulate(url, retriever_chooser(retriever, preprocess), concurrency)
    log.info("%d simulated participants answered %d trials", len(participants),
             sum(p["answers"] for p in participants))
    return analyse_study(study, AnalyseOptions())


def main(argv: Optional[Sequence[str]] = None):
    namespace = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    start(no_cuda=True)
    if namespace.command == "build":
        path = build_study(options_from(namespace, BuildOptions))
        print(path)
        return path
    if namespace.command == "serve":
        return serve(Path(namespace.study_file), options_from(namespace, ServeOptions),
                     options_from(namespace, ReceiverOptions))
    result = analyse_study(Path(namespace.study_file), options_from(namespace, AnalyseOptions))
    print(markdown(result))
    return result


def cli() -> None:
    run_cli(main)


if __name__ == "__main__":
    cli()
