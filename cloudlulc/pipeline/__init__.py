"""Mapping one AOI, stage by stage, without Prefect: :func:`map_aoi` and the stages it runs."""

from cloudlulc.errors import is_transient_error
from cloudlulc.pipeline.results import AcquisitionResult, MapResult, class_areas_km2, summary_markdown
from cloudlulc.pipeline.run import map_aoi
from cloudlulc.pipeline.stages import (
    PipelineError,
    Unpaired,
    acquisition_mode,
    cloud_check_stage,
    cube_stage,
    describe_pair,
    existing_times,
    infer_write_stage,
    input_warnings,
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
    "acquisition_mode",
    "class_areas_km2",
    "cloud_check_stage",
    "cube_stage",
    "describe_pair",
    "existing_times",
    "infer_write_stage",
    "input_warnings",
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
