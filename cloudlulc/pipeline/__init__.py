"""Mapping one AOI, stage by stage, without Prefect: :func:`map_aoi` and the stages it runs."""

from cloudlulc.errors import is_transient_error
from cloudlulc.pipeline.results import AcquisitionResult, MapResult, class_areas_km2, summary_markdown
from cloudlulc.pipeline.run import map_aoi
from cloudlulc.pipeline.stages import (
    PipelineError,
    Unpaired,
    cube_stage,
    describe_pair,
    existing_times,
    infer_write_stage,
    optical_only_warnings,
    pair_stage,
    publish_stage,
    read_chunk_size,
    remember_unpaired,
    run_attrs,
    search_stage,
)

__all__ = [
    "AcquisitionResult",
    "MapResult",
    "PipelineError",
    "Unpaired",
    "class_areas_km2",
    "cube_stage",
    "describe_pair",
    "existing_times",
    "infer_write_stage",
    "is_transient_error",
    "map_aoi",
    "optical_only_warnings",
    "pair_stage",
    "publish_stage",
    "read_chunk_size",
    "remember_unpaired",
    "run_attrs",
    "search_stage",
    "summary_markdown",
]
