"""The cluster configs are valid for the Ray Serve and genai versions pinned here."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from serving.settings import Settings

serve_schema = pytest.importorskip("ray.serve.schema")
DEPLOY = Path(__file__).resolve().parents[2] / "serving" / "deploy"


def configs() -> dict[str, dict]:
    rayservice = yaml.safe_load((DEPLOY / "rayservice.yaml").read_text())
    assert rayservice["kind"] == "RayService" and rayservice["apiVersion"] == "ray.io/v1"
    return {"serve_config.yaml": yaml.safe_load((DEPLOY / "serve_config.yaml").read_text()),
            "rayservice.yaml": yaml.safe_load(rayservice["spec"]["serveConfigV2"])}


@pytest.mark.parametrize("name", ["serve_config.yaml", "rayservice.yaml"])
def test_serve_config_is_valid_and_builds(name):
    config = serve_schema.ServeDeploySchema.model_validate(configs()[name])
    (app,) = config.applications
    assert app.import_path == "serving.app:build_app"
    assert {d.name for d in app.deployments} == {"Upscaler", "Designer", "Synthesizer", "Gateway"}
    upscaler = next(d for d in app.deployments if d.name == "Upscaler")
    assert upscaler.ray_actor_options.num_gpus == 0.5 and upscaler.user_config["batching"] is True
    Settings(**app.args["settings"])  # every setting exists and is valid

    from serving.app import build_app

    assert build_app(app.args) is not None


def test_build_app_names_a_bad_setting():
    from serving.app import build_app

    with pytest.raises(ValueError, match="job_workers"):
        build_app({"settings": {"job_workers": -1}})


def _deployments(app) -> dict:
    """The deployments an application binds, by name (the ingress and what it is bound to)."""
    found, todo = {}, [app._bound_deployment]
    while todo:
        deployment = todo.pop()
        found[deployment.name] = deployment
        todo.extend(a._bound_deployment for a in deployment.init_args if hasattr(a, "_bound_deployment"))
    return found


def test_image_inference_in_the_ingress_drops_the_upscaler_hop():
    from serving.app import build_app

    split = _deployments(build_app({"settings": {}}))
    merged = _deployments(build_app({"settings": {"image_inference": "ingress"}, "engine_options": {"threads": 1}}))
    assert set(split) == {"Gateway", "Upscaler", "Designer", "Synthesizer"}
    assert set(merged) == {"Gateway", "Designer", "Synthesizer"}
    gateway = merged["Gateway"]
    assert gateway.init_args[0] is None and gateway.init_args[-1] == {"threads": 1}
    assert gateway.ray_actor_options["num_cpus"] == 1 and split["Gateway"].ray_actor_options["num_cpus"] == 0
