"""Deploy a model file as a service: ML Lab's
`POST /api/projects/{project}/files/models/deploy?fileKey=&name=` (JSON body: environment
variables), answered with the service object like any deploy.

The file's format is checked first (400 for a file that is no model); the service is then
an ordinary code service running servicelab's model server (see servicelab.models).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import JSONResponse

from servicelab import envelope
from servicelab.deploy import check_may_deploy
from servicelab.files import FileNotFound, InvalidKey
from servicelab.models.deploy import NotAModel, detect, model_spec, name_from_file
from servicelab.spec import check_env, code_port, normalize_name

from .deps import ProjectContext, lab, project_context
from .errors import ApiError
from .services import _env_value, deploy_checked, manager, service_out

router = APIRouter(prefix="/api/projects/{project}/files/models", tags=["models"])


@router.post(
    "/deploy",
    summary="Deploy a model file (scikit-learn, XGBoost, LightGBM, MLflow, ONNX, Python) as a "
    "service with the Open Inference Protocol (V2) and /predict",
    status_code=201,
)
async def deploy_model(
    request: Request,
    file_key: str = Query(alias="fileKey", description="Key of the model file"),
    name: str | None = Query(default=None, description="Service name; from the file if absent"),
    update: bool = Query(default=False, description="Update the service if it exists"),
    body: dict[str, Any] | None = Body(default=None, description="Environment variables"),
    ctx: ProjectContext = Depends(project_context),
) -> JSONResponse:
    env = {str(k): _env_value(k, v) for k, v in (body or {}).items()}
    # A bad name, environment or $PORT is a 400 before any work, in normalize's words.
    check_env(env)
    code_port(env)
    if name:
        normalize_name(name, what="service name")
    # Who may deploy at all, before the lab reads a byte of the caller's file.
    check_may_deploy(lab(request).settings, manager(request).runtime, ctx.identity)
    try:
        info, found = await detect(lab(request).files, ctx.name, file_key)
    except InvalidKey as exc:
        raise ApiError(400, str(exc), code="invalid_key") from None
    except FileNotFound as exc:
        raise ApiError(404, str(exc), code="not_found") from None
    except NotAModel as exc:
        raise ApiError(400, str(exc), code="not_a_model") from None
    service_name = normalize_name(name, what="service name") if name else name_from_file(info.name)
    spec = model_spec(ctx.name, service_name, info, found, env)
    row, created = await deploy_checked(request, ctx, spec, replace_existing=update, lab_code=True)
    status = 201 if created else 200
    message = f"Deploying {info.key} ({found.format}, {found.framework})."
    return JSONResponse(
        envelope.success(service_out(row, ctx.name, request), status=status, message=message),
        status_code=status,
    )
