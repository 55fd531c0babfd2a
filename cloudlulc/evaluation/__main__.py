"""``python -m cloudlulc.evaluation params.json``: run an evaluation described by a JSON document."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cloudlulc.evaluation.params import EvaluationParams
from cloudlulc.evaluation.pipeline import run_evaluation


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cloudlulc.evaluation", description=__doc__)
    ap.add_argument("params", type=Path, help="JSON file holding cloudlulc.evaluation.EvaluationParams")
    ap.add_argument("--out-dir", type=Path, default=None, help="override params.out_dir")
    args = ap.parse_args(argv)
    doc = json.loads(args.params.read_text())
    if args.out_dir is not None:
        doc["out_dir"] = str(args.out_dir)
    result = run_evaluation(EvaluationParams.model_validate(doc))
    print(f"results: {result.json_path}\nreport:  {result.html_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
