"""Caption quality against human references: BLEU-4, METEOR, ROUGE-L, CIDEr (and SPICE) through
pycocoevalcap, after its PTB tokenizer, as in the paper's Tables 2, 3 and 5.

The PTB tokenizer and METEOR run on Java. SPICE also needs the Stanford CoreNLP 3.6.0 jars, which
pycocoevalcap downloads on first use; where they cannot be downloaded, give their folder with
``spice_jars`` (or ``$SPICE_CORENLP_DIR``); without them SPICE is reported as not available, with
the reason, never as a number.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

CORENLP_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
CORENLP_HINT = ("download stanford-corenlp-full-2015-12-09.zip from nlp.stanford.edu, put "
                f"{' and '.join(CORENLP_JARS)} in a folder and pass it with --spice_jars (or $SPICE_CORENLP_DIR)")


class JavaNotFoundError(FileNotFoundError):
    """Java, which the PTB tokenizer, METEOR and SPICE run on, is missing."""


def java_major_version() -> int:
    """The installed Java's major version; an error saying what to install when there is none."""
    if shutil.which("java") is None:
        raise JavaNotFoundError("the PTB tokenizer and METEOR (pycocoevalcap) need Java >= 8, and `java` is not on "
                                "the PATH: install it (e.g. apt-get install default-jre-headless) or skip the caption "
                                "metrics with --no-nlg")
    out = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        raise JavaNotFoundError(f"cannot read the Java version from: {out.strip()}")
    major, minor = int(match.group(1)), int(match.group(2) or 0)
    return minor if major == 1 else major


def find_corenlp_jars(spice_jars: Optional[str] = None) -> tuple[Optional[Path], str]:
    """The folder holding the CoreNLP 3.6.0 jars, or None and why not."""
    from pycocoevalcap.spice import spice

    candidates = [Path(d) for d in (spice_jars, os.environ.get("SPICE_CORENLP_DIR")) if d]
    candidates.append(Path(spice.__file__).parent / "lib")  # where pycocoevalcap's own download puts them
    for folder in candidates:
        if all((folder / jar).is_file() for jar in CORENLP_JARS):
            return folder, ""
    looked = ", ".join(str(c) for c in candidates)
    return None, f"Stanford CoreNLP 3.6.0 jars not found (looked in {looked}); {CORENLP_HINT}"


def spice_score(gts: dict, res: dict, corenlp: Path, java_version: int) -> float:
    """Mean SPICE F-score, running pycocoevalcap's SPICE jar with the CoreNLP jars on the class path."""
    from pycocoevalcap.spice import spice

    spice_dir = Path(spice.__file__).parent
    with tempfile.TemporaryDirectory() as tmp:
        data = [{"image_id": i, "test": res[i][0], "refs": gts[i]} for i in sorted(gts)]
        (Path(tmp) / "in.json").write_text(json.dumps(data))
        classpath = os.pathsep.join([str(spice_dir / "spice-1.0.jar"), str(spice_dir / "lib" / "*"),
                                     str(corenlp / "*")])
        # Java >= 16 closes the JDK internals that SPICE's libraries reach into.
        opens = ["--add-opens", "java.base/java.nio=ALL-UNNAMED", "--add-opens",
                 "java.base/sun.nio.ch=ALL-UNNAMED"] if java_version >= 16 else []
        subprocess.run(["java", *opens, "-Xmx8G", "-cp", classpath, "edu.anu.spice.SpiceScorer",
                        str(Path(tmp) / "in.json"), "-out", str(Path(tmp) / "out.json"), "-subset", "-silent"],
                       check=True, capture_output=True)
        results = json.loads((Path(tmp) / "out.json").read_text())
    scores = [float(r["scores"]["All"]["f"]) for r in results if r["scores"]["All"]["f"] is not None]
    return sum(scores) / len(scores) if scores else float("nan")


def caption_metrics(references: dict[str, list[str]], hypotheses: dict[str, str],
                    spice_jars: Optional[str] = None, spice: bool = True) -> dict:
    """Corpus-level scores of ``hypotheses`` (one caption per id) against ``references`` (a list per id).
    Ids without a reference are left out (``n_scored`` counts the rest)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    java_version = java_major_version()
    ids = [i for i in hypotheses if references.get(i)]
    if not ids:
        raise ValueError("no image has a reference caption: nothing to score")
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": r} for r in references[i]] for i in ids})
    res = tokenizer.tokenize({i: [{"caption": hypotheses[i]}] for i in ids})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores = {
        "bleu_4": float(bleu[3]),
        "meteor": float(Meteor().compute_score(gts, res)[0]),
        "rouge_l": float(Rouge().compute_score(gts, res)[0]),
        "cider": float(Cider().compute_score(gts, res)[0]),
        "n_scored": len(ids),
    }
    corenlp, why = find_corenlp_jars(spice_jars) if spice else (None, "not requested")
    scores["spice"] = spice_score(gts, res, corenlp, java_version) if corenlp else f"not available: {why}"
    return scores
