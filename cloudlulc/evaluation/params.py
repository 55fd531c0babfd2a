"""Pydantic parameters and results of an evaluation run.

One validated object describes a whole run (models, dataset, product comparison, cloud sweep, output
folder) so that the Prefect flow (``flows/evaluate.py``), the CLI and Python callers share one entry
point, :func:`cloudlulc.evaluation.run_evaluation`, and the run is reproducible from its JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: Cloud-cover levels of the default sweep: 0 %, 10 %, ..., 100 %.
DEFAULT_SWEEP_LEVELS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))


class ModelSpec(BaseModel):
    """One method to evaluate: a display ``name`` plus either a weights file or a model name.

    ``weights`` (a ``.safetensors`` or its ``.json`` config, loaded with ``from_pretrained``) wins;
    otherwise ``model`` (default: ``name``) is built with ``build_model(model, **overrides)`` with
    untrained weights, which is useful for smoke runs and for comparing architectures' plumbing.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    weights: Path | None = None
    model: str | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _default_model(self) -> ModelSpec:
        if self.weights is None and self.model is None:
            self.model = self.name
        return self


class DatasetSpec(BaseModel):
    """Where the evaluation patches come from.

    ``simulated`` needs no files (scenes from :func:`cloudlulc.simulate.simulate_scene`, documented as
    simulated in the report); ``zarr`` is our training-set store; ``geotiff`` is the paper's layout.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["simulated", "zarr", "geotiff"] = "simulated"
    path: Path | None = None
    split: str = "test"
    # simulated only
    n_scenes: int = Field(8, ge=1)
    shape: tuple[int, int] = (64, 64)
    cloud_covers: list[float] = Field(default_factory=lambda: [0.0, 0.2, 0.45, 0.8])
    seed: int = 1000

    @model_validator(mode="after")
    def _path_needed(self) -> DatasetSpec:
        if self.kind != "simulated" and self.path is None:
            raise ValueError(f"dataset kind {self.kind!r} needs `path` (the store or the GeoTIFF root)")
        return self


class ProductComparisonSpec(BaseModel):
    """Score global LULC products and our mosaic against one reference map on one grid.

    ``reference`` is a raster of CloudLULC class values (0..5, 255 ignore) in any CRS; every product is
    brought onto its grid (nearest) and all are scored on the pixels valid in *every* layer, so the
    numbers are comparable. ``stac_url=None`` means the Planetary Computer.
    """

    model_config = ConfigDict(extra="forbid")

    reference: Path
    #: clip the reference to this AOI first (anything ``cloudlulc.stac.parse_aoi`` accepts, lon/lat)
    aoi: Any = None
    collections: list[str] = Field(default_factory=lambda: ["esa-worldcover", "io-lulc-annual-v02"])
    stac_url: str | None = None
    sign: bool | None = None
    #: pick the product release valid at this date (ISO); default: the mosaic slice's time, else newest
    date: str | None = None
    mosaic: Path | None = None
    mosaic_time: str | None = None
    mosaic_name: str = "CloudLULC mosaic"
    #: side of the square windows whose cloud fraction bins the metrics (needs the mosaic's cloud layer)
    window: int = Field(32, ge=4)


class CloudSweepSpec(BaseModel):
    """Fixed land cover, varying simulated cloud cover: how each method degrades."""

    model_config = ConfigDict(extra="forbid")

    levels: list[float] = Field(default_factory=lambda: list(DEFAULT_SWEEP_LEVELS))
    n_scenes: int = Field(4, ge=1)
    shape: tuple[int, int] = (64, 64)
    seed: int = 2000


class EvaluationParams(BaseModel):
    """Everything one evaluation run needs; serialised verbatim into ``results.json``."""

    model_config = ConfigDict(extra="forbid")

    models: list[ModelSpec] = Field(default_factory=list)
    dataset: DatasetSpec | None = Field(default_factory=DatasetSpec)
    products: ProductComparisonSpec | None = None
    cloud_sweep: CloudSweepSpec | None = None
    out_dir: Path = Path("eval-out")
    title: str = "CloudLULC evaluation"
    batch_size: int = Field(4, ge=1)
    device: str = "auto"
    num_workers: int = Field(0, ge=0)
    #: which pixels with NaN inputs are excluded from scoring (they are always filled before inference)
    nan_policy: Literal["any", "all", "none"] = "any"
    #: torch seed set before models are built, so runs with untrained ``build_model`` entries repeat
    seed: int = 0

    @model_validator(mode="after")
    def _something_to_do(self) -> EvaluationParams:
        if not self.models and "dataset" not in self.model_fields_set:
            self.dataset = None  # a products-only run does not need the default simulated split
        if (self.dataset is not None or self.cloud_sweep is not None) and not self.models:
            raise ValueError("dataset evaluation and cloud sweep need at least one entry in `models`")
        if self.dataset is None and self.products is None and self.cloud_sweep is None:
            raise ValueError("nothing to evaluate: give `dataset`, `products` or `cloud_sweep`")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique in one report, got {names}")
        return self


class EvaluationResult(BaseModel):
    """What a run produced: the report files and the metrics they show."""

    out_dir: Path
    json_path: Path
    markdown_path: Path
    html_path: Path
    #: model name -> ConfusionMatrix.compute() dict on the dataset split
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)
    #: product name -> metrics dict on the common valid mask
    products: dict[str, dict[str, Any]] | None = None
    #: {"levels": [...], "methods": {name: [metrics dict per level]}}
    cloud_sweep: dict[str, Any] | None = None
