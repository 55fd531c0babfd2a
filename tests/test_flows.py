"""Prefect flows run for real against a temporary Prefect API (``prefect_test_harness``).

The STAC API is a real ``rustac serve`` over the SIMULATED catalog, the store a real Zarr v3 mosaic,
the network the tiny CloudLULC-Net (demo weights when committed, else untrained): nothing is mocked.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.states import Failed
from prefect.testing.utilities import prefect_test_harness
from prefect.utilities.importtools import import_object

from cloudlulc.config import Settings
from cloudlulc.simulate import DEFAULT_S1, DEFAULT_S2, write_demo_catalog
from cloudlulc.store import mapped_times
from cloudlulc.testing.stac_server import serve_stac
from flows.build_dataset import build_dataset_flow, parse_sets
from flows.demo import demo_aoi_and_time
from flows.evaluate import evaluate_flow
from flows.map_aoi import map_aoi_flow, retry_on_transient, search_task
from flows.nrt import map_aoi_nrt_flow
from flows.params import InvalidParameters
from flows.serve import build_deployments
from flows.train import train_flow

SMALL_CATALOG = {"seed": 0, "tile_size": 300, "overlap": 30, "margin": 12}  # as tests/conftest.py


@pytest.fixture(scope="module", autouse=True)
def prefect_api():
    """One temporary Prefect server (SQLite) for this module's flow runs."""
    with prefect_test_harness(server_startup_timeout=240):
        yield


@pytest.fixture
def fast_env(monkeypatch):
    """Small tiles and chunks, CPU, no retry delay: seconds per flow run on a busy 2-core machine."""
    for k, v in {
        "DEVICE": "cpu",
        "TILE": "64",
        "OVERLAP": "16",
        "CHUNK_SIZE": "64",
        "RETRY_DELAY_SECONDS": "0",
        "DASK_THREADS_PER_WORKER": "2",
    }.items():
        monkeypatch.setenv(f"CLOUDLULC_{k}", v)


def _artifacts(flow_run_id) -> dict[str, list]:
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    out: dict[str, list] = {}
    for a in arts:
        out.setdefault(a.key, []).append(a)
    return out


def _task_run_names(flow_run_id) -> list[str]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return sorted(r.name for r in runs)


# ------------------------------------------------------------------------------------- map-aoi


def test_map_aoi_flow_maps_window_and_publishes(sim_catalog, stac_url, tmp_path, fast_env):
    aoi, window = demo_aoi_and_time(sim_catalog, half_side_m=320)
    out = tmp_path / "flow.zarr"
    state = map_aoi_flow(aoi=aoi, time=window, output=str(out), catalog_url=stac_url, return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()

    expected = [
        d for d in sorted(sim_catalog.s2_dates) if window.split("/")[0] <= f"{d:%Y-%m-%d}" <= window.split("/")[1]
    ]
    assert [a["time"][:10] for a in summary["acquisitions"]] == [f"{d:%Y-%m-%d}" for d in expected]
    ds = xr.open_zarr(out, decode_coords="all")
    assert ds["lulc"].rio.crs.to_epsg() == sim_catalog.epsg and ds.sizes["time"] == len(expected)
    for a, t in zip(summary["acquisitions"], ds["time"].values):
        lulc = ds["lulc"].sel(time=t).values
        assert a["mapped_km2"] == pytest.approx(int((lulc != 255).sum()) * 100 / 1e6)
        assert a["s1_items"] and a["s1_gap_days"] <= 12
        assert Path(a["quicklook"]).is_file()

    run_id = state.state_details.flow_run_id
    names = _task_run_names(run_id)
    assert [n.split("-")[0] for n in names].count("infer") == len(expected)
    assert {"search", "pair", "cube", "publish"} <= {n.rsplit("-", 1)[0] for n in names if not n.startswith("infer")}
    arts = _artifacts(run_id)
    md = arts["map-aoi-summary"][0].data
    assert str(out) in md and "km²" in md and "data:image/png;base64," in md
    for a in summary["acquisitions"]:
        assert a["s2_items"][0] in md and a["s1_items"][0] in md
    assert len(arts["map-aoi-quicklook"]) == len(expected)
    assert out.resolve().as_uri() in arts["map-aoi-output"][0].data


def test_bad_parameters_fail_before_any_task(tmp_path, stac_url):
    out = tmp_path / "never.zarr"
    state = map_aoi_flow(
        aoi="17.6,48.2,17.7",
        time="2022-01-31/2022-01-06",
        output=str(out),
        catalog_url=stac_url,
        device="gpu",
        return_state=True,
    )
    assert state.is_failed()
    with pytest.raises(InvalidParameters) as info:
        state.result()
    msg = str(info.value)
    assert "before any work started" in msg
    assert "aoi:" in msg and "4 numbers" in msg
    assert "time:" in msg and "ends before it starts" in msg
    assert "device:" in msg
    assert _task_run_names(state.state_details.flow_run_id) == []
    assert not out.exists()

    # a wrongly typed parameter is refused by Prefect's own validation, also before the flow body
    state = map_aoi_flow(
        aoi="17.6,48.2,17.7,48.3", time="2022-01-16", output=str(out), max_cloud_cover="lots", return_state=True
    )
    assert state.is_failed() and "max_cloud_cover" in str(state.message)
    assert not out.exists()


def test_retry_only_on_transient_errors():
    assert retry_on_transient(search_task, None, Failed(data=ConnectionRefusedError("refused")))
    assert retry_on_transient(search_task, None, Failed(data=TimeoutError("read timed out")))
    assert not retry_on_transient(search_task, None, Failed(data=ValueError("AOI has no area")))


# ------------------------------------------------------------------------------------------ NRT


def test_nrt_maps_each_acquisition_once(tmp_path, fast_env):
    """Run twice: nothing is mapped twice; a new acquisition in the catalog: only it is mapped."""
    two = write_demo_catalog(
        tmp_path / "cat2", s2_acquisitions=DEFAULT_S2[:2], s1_passes=DEFAULT_S1[:2], **SMALL_CATALOG
    )
    three = write_demo_catalog(
        tmp_path / "cat3", s2_acquisitions=DEFAULT_S2[:3], s1_passes=DEFAULT_S1[:3], **SMALL_CATALOG
    )
    aoi, _ = demo_aoi_and_time(two, half_side_m=200)
    store = tmp_path / "nrt.zarr"
    common = {"aoi": aoi, "output": str(store), "lookback_days": 60, "now": "2022-03-01"}
    days = [f"{a.datetime:%Y-%m-%d}" for a in DEFAULT_S2]

    with serve_stac(two) as url:
        first = map_aoi_nrt_flow(**common, catalog_url=url)  # empty store: the lookback window, both dates
        assert [a["time"][:10] for a in first["acquisitions"]] == days[:2]
        second = map_aoi_nrt_flow(**common, catalog_url=url)
        assert second["acquisitions"] == [] and [t[:10] for t in second["skipped_times"]] == days[1:2]
        assert second["window"].startswith(days[1])  # searches from the last mapped day only
    assert [str(t)[:10] for t in mapped_times(store)] == days[:2]

    with serve_stac(three) as url:  # the catalog gained the 3rd acquisition
        third = map_aoi_nrt_flow(**common, catalog_url=url)
    assert [a["time"][:10] for a in third["acquisitions"]] == days[2:3]
    assert [str(t)[:10] for t in mapped_times(store)] == days[:3]
    ds = xr.open_zarr(store, decode_coords="all")
    assert ds.sizes["time"] == 3 and ds["lulc"].rio.crs is not None
    assert np.all(ds["lulc"].isel(time=2).values != 255)


def test_nrt_searches_back_to_an_acquisition_still_waiting_for_sentinel1(tmp_path, fast_env):
    """Jan 6 has no Sentinel-1 pass yet when Jan 16 is mapped; the next run's window starts at Jan 6
    (not at the last mapped day), so Jan 6 is mapped once its wait is over."""
    gap = write_demo_catalog(
        tmp_path / "gap", s2_acquisitions=DEFAULT_S2[:2], s1_passes=DEFAULT_S1[1:2], **SMALL_CATALOG
    )
    aoi, _ = demo_aoi_and_time(gap, half_side_m=200)
    store = tmp_path / "nrt.zarr"
    common = {"aoi": aoi, "output": str(store), "lookback_days": 30}
    with serve_stac(gap) as url:
        first = map_aoi_nrt_flow(**common, now="2022-01-18", catalog_url=url)
        assert [a["time"][:10] for a in first["acquisitions"]] == ["2022-01-16"]
        assert [(u["time"][:10], u["status"]) for u in first["unpaired"]] == [("2022-01-06", "waiting")]
        later = map_aoi_nrt_flow(**common, now="2022-01-25", catalog_url=url)
    assert later["window"].startswith("2022-01-06")
    assert [(a["time"][:10], a["optical_only"]) for a in later["acquisitions"]] == [("2022-01-06", True)]
    assert [str(t)[:10] for t in mapped_times(store)] == ["2022-01-06", "2022-01-16"]


def test_nrt_empty_window_completes_with_nothing(tmp_path, stac_url, sim_catalog, fast_env):
    aoi, _ = demo_aoi_and_time(sim_catalog, half_side_m=200)
    out = map_aoi_nrt_flow(
        aoi=aoi, output=str(tmp_path / "none.zarr"), now="2021-06-01", lookback_days=10, catalog_url=stac_url
    )
    assert out["acquisitions"] == [] and out["mapped_times"] == []
    assert not (tmp_path / "none.zarr").exists()


# ---------------------------------------------------------------------------- other flows


def test_build_dataset_flow_builds_through_dask(sim_catalog, stac_url, tmp_path, fast_env):
    aoi, window = demo_aoi_and_time(sim_catalog, half_side_m=640)
    start, end = window.split("/")
    out = build_dataset_flow(
        {
            "aoi": aoi,
            "start": start,
            "end": end,
            "out": str(tmp_path / "ds"),
            "catalog_url": stac_url,
            "sign": False,
            "patch_size": 32,
            "stride": 32,
            "region_size": 64,
            "split_fractions": [0.5, 0.25, 0.25],
            "max_patches_per_level": 2,
            "seed": 3,
        }
    )
    assert out["n_patches"] > 0 and sum(out["patches_per_split"].values()) == out["n_patches"]
    assert Path(out["zarr_path"]).is_dir() and Path(out["index_path"]).is_file()


def test_build_dataset_flow_rejects_bad_parameters(tmp_path):
    state = build_dataset_flow(
        {"aoi": "1,2,3,4", "start": "2022-02-01", "end": "2022-01-01", "out": str(tmp_path), "patch_size": 8},
        return_state=True,
    )
    assert state.is_failed()
    with pytest.raises(InvalidParameters, match="build-dataset: parameters rejected before any work started"):
        state.result()
    assert parse_sets(["patch_size=256", "split_fractions=[0.8,0.1,0.1]", "label_collection=esa-worldcover"]) == {
        "patch_size": 256,
        "split_fractions": [0.8, 0.1, 0.1],
        "label_collection": "esa-worldcover",
    }


def test_train_flow_trains_and_saves_weights(tmp_path):
    config = {
        "model": "cloudlulc-net-tiny",
        "epochs": 1,
        "steps_per_epoch": 2,
        "batch_size": 2,
        "device": "cpu",
        "threads": 1,
        "progress": False,
        "out_dir": str(tmp_path / "run"),
        "train_data": {"n_patches": 4, "patch_size": 32, "seed": 1},
    }
    out = train_flow(config)
    weights = Path(out["weights_path"])
    assert weights.is_file() and weights.with_suffix(".json").is_file()
    assert len(out["history"]) == 1


def test_train_flow_on_two_processes_publishes_the_log_curve_and_checkpoints(tmp_path):
    """processes=2: the flow starts torchrun (gloo on the CPU) and publishes rank 0's outputs."""
    config = {
        "model": "cloudlulc-net-tiny",
        "model_overrides": {"widths": [8, 16, 16, 32], "latent_dim": 32, "decoder_width": 16, "usmt_heads": 4},
        "epochs": 2,
        "steps_per_epoch": 1,
        "batch_size": 2,
        "threads": 1,
        "progress": False,
        "out_dir": str(tmp_path / "run"),
        "train_data": {"n_patches": 4, "patch_size": 32, "seed": 1},
        "val_data": {"n_patches": 2, "patch_size": 32, "seed": 2},
    }
    state = train_flow(config, processes=2, device="cpu", return_state=True)
    assert state.is_completed(), state.message
    out = state.result()
    run = tmp_path / "run"
    for name in ("last.safetensors", "last.json", "best.safetensors", "best.json", "train_log.csv", "loss_curve.png"):
        assert (run / name).is_file(), name
    assert out["best_path"] == str(run / "best.safetensors") and len(out["history"]) == 2
    assert json.loads((run / "last.json").read_text())["world_size"] == 2
    arts = _artifacts(state.state_details.flow_run_id)
    assert "data:image/png;base64," in arts["train-summary"][0].data
    assert {"val_miou", "train_total"} <= set(json.loads(arts["train-history"][0].data)[0])


def test_evaluate_flow_publishes_the_report(tmp_path):
    params = {
        "models": [{"name": "cloudlulc-net-tiny"}],
        "device": "cpu",
        "out_dir": str(tmp_path / "eval"),
        "dataset": {"kind": "simulated", "n_scenes": 1, "shape": [32, 32], "cloud_covers": [0.3]},
    }
    state = evaluate_flow(params, return_state=True)
    assert state.is_completed(), state.message
    out = state.result()
    assert "cloudlulc-net-tiny" in out["models"] and Path(out["html_path"]).is_file()
    report = _artifacts(state.state_details.flow_run_id)["evaluation-report"][0].data
    assert report == Path(out["markdown_path"]).read_text()


def test_served_deployments():
    s = Settings(
        demo_aoi="17.69,48.23,17.70,48.24",
        demo_time="2022-01-16/2022-01-31",
        catalog_url="http://127.0.0.1:1/",
        nrt_cron="*/30 * * * *",
        nrt_paused=True,
    )
    deps = {f"{d.flow_name}/{d.name}": d for d in build_deployments(s)}
    assert set(deps) == {
        "map-aoi/default",
        "map-aoi/demo",
        "map-aoi-nrt/demo",
        "build-dataset/default",
        "train/default",
        "evaluate/default",
    }
    assert deps["map-aoi/demo"].parameters["aoi"] == s.demo_aoi
    assert deps["map-aoi/demo"].parameters["catalog_url"] == s.catalog_url
    nrt = deps["map-aoi-nrt/demo"]
    assert nrt.schedules[0].schedule.cron == "*/30 * * * *" and nrt.paused
    for d in deps.values():  # every entrypoint is importable from any working directory
        assert import_object(d.entrypoint).name == d.flow_name
    assert "map-aoi/demo" not in {f"{d.flow_name}/{d.name}" for d in build_deployments(Settings())}
    every_hour = {
        d.name: d
        for d in build_deployments(Settings(nrt_aoi="17.69,48.23,17.70,48.24", nrt_name="x", nrt_interval_minutes=60))
    }["x"]
    assert every_hour.schedules[0].schedule.interval.total_seconds() == 3600


class _FlakyProxy:
    """A real HTTP proxy in front of the STAC API whose first ``failures`` searches answer 503.

    Models a catalog that is briefly overloaded: HTTP-level retries (urllib3, in open_catalog) give up,
    the search task fails with a transient error and Prefect must retry it after a delay.
    """

    def __init__(self, upstream: str, failures: int):
        import http.server
        import threading

        import httpx

        self.failures, self.searches = failures, 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _forward(self) -> None:
                if self.path.startswith("/search"):
                    proxy.searches += 1
                    if proxy.searches <= proxy.failures:
                        self.send_response(503)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "accept")}
                r = httpx.request(self.command, upstream + self.path, content=body or None, headers=headers, timeout=30)
                content = r.content.replace(upstream.encode(), proxy.url.encode())  # links lead back here
                self.send_response(r.status_code)
                self.send_header("Content-Type", r.headers.get("content-type", "application/json"))
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = _forward

            def log_message(self, *args) -> None:  # keep the test output quiet
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _FlakyProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_search_is_retried_after_a_transient_catalog_failure(sim_catalog, stac_url, tmp_path, fast_env, monkeypatch):
    monkeypatch.setenv("CLOUDLULC_RETRIES", "2")
    aoi, window = demo_aoi_and_time(sim_catalog, half_side_m=200)
    # 5 x 503: more than open_catalog's 4 HTTP-level retries, so the first task attempt fails
    with _FlakyProxy(stac_url, failures=5) as proxy:
        state = map_aoi_flow(
            aoi=aoi,
            time=window.split("/")[0],
            output=str(tmp_path / "r.zarr"),
            catalog_url=proxy.url,
            return_state=True,
        )
    assert state.is_completed(), state.message
    assert proxy.searches > 5
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        )
    search = [r for r in runs if r.name.startswith("search")]
    assert len(search) == 1 and search[0].run_count == 2  # failed once, retried, completed
    assert len(state.result()["acquisitions"]) == 1


def test_missing_sentinel1_fails_at_once_with_advice(sim_catalog, stac_url, tmp_path, fast_env, monkeypatch):
    monkeypatch.setenv("CLOUDLULC_RETRIES", "2")
    aoi, window = demo_aoi_and_time(sim_catalog, half_side_m=200)
    state = map_aoi_flow(
        aoi=aoi,
        time=window.split("/")[0],
        output=str(tmp_path / "x.zarr"),
        catalog_url=stac_url,
        max_s1_gap_days=0.5,
        return_state=True,
    )
    assert state.is_failed()
    msg = str(state.message)
    assert "No sentinel-1-rtc pass" in msg and "nearest pass found" in msg and "allow_optical_only=true" in msg
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        )
    pair = [r for r in runs if r.name.startswith("pair")]
    assert len(pair) == 1 and pair[0].run_count == 1  # not a transient error: no retry
    assert not (tmp_path / "x.zarr").exists()

    # allowed: the same acquisition is mapped optical-only, and the store and summary say so
    out = map_aoi_flow(
        aoi=aoi,
        time=window.split("/")[0],
        output=str(tmp_path / "x.zarr"),
        catalog_url=stac_url,
        max_s1_gap_days=0.5,
        allow_optical_only=True,
    )
    acq = out["acquisitions"][0]
    assert acq["optical_only"] and acq["s1_items"] == [] and acq["s1_gap_days"] is None
    assert any("optical-only" in w for w in out["warnings"])
    assert xr.open_zarr(tmp_path / "x.zarr")["lulc"].isel(time=0).values.max() < 255


@pytest.mark.parametrize("module, field", [("flows.train", "batch_size"), ("flows.evaluate", "batch_size")])
def test_config_file_cli_rejects_bad_parameters_before_work(module, field, tmp_path):
    import importlib

    config = tmp_path / "params.json"
    config.write_text(json.dumps({field: -1, "out_dir": str(tmp_path / "run")}))
    with pytest.raises(InvalidParameters, match=rf"parameters rejected before any work started:\n(.|\n)*{field}"):
        importlib.import_module(module).main(["--config", str(config)])
    assert not (tmp_path / "run").exists()
