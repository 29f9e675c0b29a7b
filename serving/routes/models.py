"""GET /v1/models: what can be asked for."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from serving.deps import Caller, ServiceDep, errors

router = APIRouter(tags=["models"])


class ModelInfo(BaseModel):
    id: str
    name: str
    architecture: str
    scale: int
    content: str
    license: str
    ready: bool


class ModelList(BaseModel):
    models: list[ModelInfo]
    image_default: str
    video_default: str


@router.get("/v1/models", response_model=ModelList, responses=errors())
def list_models(owner: Caller, service: ServiceDep) -> ModelList:
    models = [ModelInfo(id=m.id, name=m.name, architecture=m.architecture, scale=m.scale, content=m.content,
                        license=m.license, ready=m.weights_path.exists()) for m in service.registry]
    return ModelList(models=models, image_default=service.settings.image_model,
                     video_default=service.settings.video_model)
