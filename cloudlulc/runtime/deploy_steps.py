"""Prefect deployment steps (``deploy/prefect.yaml``): plain functions, named there by import path.

Prefect fills ``{{ $VAR }}`` placeholders from the environment of ``prefect deploy``, even in pull
steps, so a working directory written as ``{{ $CLOUDLULC_HOME }}`` was the deploying machine's,
not the worker's. These steps read their variable where they run instead:

* :func:`require_image` (build step, at deploy time): the image the Kubernetes deployments run, a
  pinned tag or digest from ``CLOUDLULC_IMAGE``; deploying without one is refused.
* :func:`enter_home` (pull step, in each flow run on the worker): change into ``CLOUDLULC_HOME``,
  so that relative outputs and ``deploy/`` files resolve against the worker's checkout (or the
  image's ``/opt/cloudlulc``) rather than the temporary directory a process worker runs flows in.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cloudlulc.errors import CloudLULCError

__all__ = ["DeploymentError", "check_image_reference", "enter_home", "require_image"]

#: registry host[:port]/path:tag or @sha256:digest (the grammar of docker/distribution, simplified)
_IMAGE_RE = re.compile(
    r"^(?:[a-z0-9][a-z0-9.-]*(?::[0-9]+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)


class DeploymentError(CloudLULCError):
    """A deployment cannot be registered or started as configured; the message says what to set."""


def check_image_reference(image: str, variable: str = "CLOUDLULC_IMAGE") -> str:
    """``image`` if it is an image reference pinned to a version tag or a digest, else a
    :class:`DeploymentError`: flow pods and Dask pods pull it separately, so ``latest`` or no tag
    could give them different code."""
    image = image.strip()
    m = _IMAGE_RE.match(image)
    if not m:
        raise DeploymentError(f"{variable}={image!r} is not an image reference such as ghcr.io/<org>/cloudlulc:0.1.0")
    if not m.group("digest") and m.group("tag") in (None, "latest"):
        raise DeploymentError(
            f"{variable}={image!r} is not pinned: give a version tag or digest (ghcr.io/<org>/cloudlulc:0.1.0), "
            "so that flow runs and Dask workers run the same code"
        )
    return image


def require_image(variable: str = "CLOUDLULC_IMAGE") -> dict[str, str]:
    """Build step: ``{"image": <the image>}`` from ``variable`` in the deploying environment, or a
    :class:`DeploymentError` that stops ``prefect deploy`` before a deployment without an image is
    registered."""
    image = os.environ.get(variable, "").strip()
    if not image:
        raise DeploymentError(
            f"{variable} is not set: the Kubernetes deployments run the image built from deploy/Dockerfile. "
            f"Build and push it, then deploy with {variable}=ghcr.io/<org>/cloudlulc:<version> (deploy/README.md)"
        )
    return {"image": check_image_reference(image, variable)}


def enter_home(variable: str = "CLOUDLULC_HOME") -> dict[str, str]:
    """Pull step: change this flow run's working directory to the directory in ``variable``, read
    from the environment of the worker that runs it. Returns ``{"directory": <path>}``."""
    value = os.environ.get(variable, "").strip()
    if not value:
        raise DeploymentError(
            f"{variable} is not set on this worker: start the worker with {variable}=<the CloudLULC checkout> "
            "(the directory relative outputs are written under; deploy/README.md)"
        )
    path = Path(value).expanduser()
    if not path.is_dir():
        raise DeploymentError(f"{variable}={value!r} on this worker is not a directory; point it at the checkout")
    os.chdir(path)
    return {"directory": str(path.resolve())}
