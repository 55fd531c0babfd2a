"""Prefect flow ``evaluate``: a thin wrapper over :func:`cloudlulc.evaluation.run_evaluation`.

Parameters are the library's :class:`cloudlulc.evaluation.EvaluationParams` (models, dataset, product
comparison, cloud sweep); the flow publishes the Markdown report as an artifact and returns the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from cloudlulc.evaluation import EvaluationParams
from flows.params import run_with_config_file, validate


@flow(name="evaluate", log_prints=True, validate_parameters=False)
def evaluate_flow(params: EvaluationParams | dict[str, Any]) -> dict[str, Any]:
    """Run the evaluation described by ``params``; returns :class:`EvaluationResult` as JSON."""
    from cloudlulc.evaluation import run_evaluation

    p = params if isinstance(params, EvaluationParams) else validate(EvaluationParams, "evaluate", params)
    get_run_logger().info("evaluating %d model(s) into %s", len(p.models), p.out_dir)
    result = run_evaluation(p)
    md_path = Path(result.markdown_path)
    if md_path.exists():
        create_markdown_artifact(
            markdown=md_path.read_text(), key="evaluation-report", description=f"{p.title}: {result.html_path}"
        )
    print(f"report: {result.html_path}")
    return result.model_dump(mode="json")


def main(argv: list[str] | None = None) -> None:
    run_with_config_file(EvaluationParams, "evaluate", evaluate_flow, argv)


if __name__ == "__main__":
    main()
