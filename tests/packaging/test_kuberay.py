"""examples/kuberay/: the RayJob manifest and its image, checked without Kubernetes.

The manifest is validated against the structure of KubeRay's ``ray.io/v1`` RayJob custom resource
(the fields it uses, their types and the fields the CRD's OpenAPI schema requires, restated below
from KubeRay 1.x's CRD, plus Kubernetes' rules for names), and against what bulkinfer needs: a
``bulkinfer`` entrypoint that joins the cluster, and the Ray version bulkinfer pins, in the
manifest and in the image. That the entrypoint's overrides compose with the config package
installed is checked in tests/test_examples.py, where the package is installed.
"""

from __future__ import annotations

import re
import shlex
from importlib.metadata import version

import jsonschema
import pytest
import yaml
from conftest import ROOT

KUBERAY = ROOT / "examples" / "kuberay"

INT32 = {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}
#: A Kubernetes resource quantity ("500m", "4", "8Gi"), as the CRD's pattern allows.
QUANTITY = {
    "anyOf": [{"type": "integer"}, {"type": "string"}],
    "pattern": r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?"
    r"(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$",
}
DNS_LABEL = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}
CONTAINER = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": DNS_LABEL,
        "image": {"type": "string"},
        "command": {"type": "array", "items": {"type": "string"}},
        "args": {"type": "array", "items": {"type": "string"}},
        "ports": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["containerPort"],
                "properties": {"containerPort": INT32, "name": {"type": "string"}},
            },
        },
        "resources": {
            "type": "object",
            "properties": {
                "requests": {"type": "object", "additionalProperties": QUANTITY},
                "limits": {"type": "object", "additionalProperties": QUANTITY},
            },
        },
        "env": {"type": "array", "items": {"type": "object", "required": ["name"]}},
        "volumeMounts": {
            "type": "array",
            "items": {"type": "object", "required": ["mountPath", "name"]},
        },
    },
}
POD_TEMPLATE = {
    "type": "object",
    "properties": {
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "required": ["containers"],
            "properties": {
                "containers": {"type": "array", "minItems": 1, "items": CONTAINER},
                "volumes": {"type": "array", "items": {"type": "object", "required": ["name"]}},
            },
        },
    },
}
#: ``ray start`` flags: a map of strings (KubeRay refuses numbers and booleans here).
RAY_START_PARAMS = {"type": "object", "additionalProperties": {"type": "string"}}
#: The keys KubeRay's RayJob ``spec`` knows; anything else is a typo the API server would reject.
SPEC_KEYS = [
    "activeDeadlineSeconds", "backoffLimit", "clusterSelector", "deletionStrategy", "entrypoint",
    "entrypointNumCpus", "entrypointNumGpus", "entrypointResources", "jobId", "managedBy",
    "metadata", "preRunningDeadlineSeconds", "rayClusterSpec", "runtimeEnvYAML",
    "shutdownAfterJobFinishes", "submissionMode", "submitterConfig", "submitterPodTemplate",
    "suspend", "ttlSecondsAfterFinished",
]  # fmt: skip
RAYJOB = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "ray.io/v1"},
        "kind": {"const": "RayJob"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": DNS_LABEL, "namespace": DNS_LABEL},
        },
        "spec": {
            "type": "object",
            "propertyNames": {"enum": SPEC_KEYS},
            "properties": {
                "entrypoint": {"type": "string"},
                "runtimeEnvYAML": {"type": "string"},
                "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode"]},
                "shutdownAfterJobFinishes": {"type": "boolean"},
                "ttlSecondsAfterFinished": INT32,
                "activeDeadlineSeconds": INT32,
                "backoffLimit": INT32,
                "rayClusterSpec": {
                    "type": "object",
                    "required": ["headGroupSpec"],
                    "properties": {
                        "rayVersion": {"type": "string"},
                        "headGroupSpec": {
                            "type": "object",
                            "required": ["template"],
                            "properties": {
                                "rayStartParams": RAY_START_PARAMS,
                                "template": POD_TEMPLATE,
                            },
                        },
                        "workerGroupSpecs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["groupName", "maxReplicas", "minReplicas", "template"],
                                "properties": {
                                    "groupName": {"type": "string"},
                                    "replicas": INT32,
                                    "minReplicas": INT32,
                                    "maxReplicas": INT32,
                                    "rayStartParams": RAY_START_PARAMS,
                                    "template": POD_TEMPLATE,
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


@pytest.fixture(scope="module")
def rayjob() -> dict:
    return yaml.safe_load((KUBERAY / "rayjob.yaml").read_text())


def _pods(rayjob: dict) -> list[dict]:
    cluster = rayjob["spec"]["rayClusterSpec"]
    groups = [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]
    return [group["template"]["spec"] for group in groups]


def entrypoint_args(rayjob: dict) -> list[str]:
    """The entrypoint as the shell would split it."""
    return shlex.split(rayjob["spec"]["entrypoint"])


def test_the_manifest_has_the_structure_of_a_kuberay_rayjob(rayjob):
    jsonschema.validate(rayjob, RAYJOB)


def test_the_structure_check_refuses_what_kubernetes_would(rayjob):
    """The schema above is not vacuous: each of these mistakes is refused."""
    import copy

    def broken(change):
        bad = copy.deepcopy(rayjob)
        change(bad)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, RAYJOB)

    cluster = ("spec", "rayClusterSpec")

    def at(bad, *path):
        node = bad
        for key in path:
            node = node[key]
        return node

    broken(lambda b: at(b, *cluster, "headGroupSpec").update(rayStartParams={"num-cpus": 0}))
    broken(lambda b: at(b, *cluster, "workerGroupSpecs")[0].pop("maxReplicas"))
    broken(lambda b: at(b, "spec").update(entryPoint="bulkinfer"))
    broken(lambda b: at(b, *cluster).pop("headGroupSpec"))
    broken(lambda b: _pods(b)[0]["containers"][0].update(name="Ray_Head"))
    broken(lambda b: _pods(b)[1]["containers"][0]["resources"]["limits"].update(cpu="four"))


def test_the_entrypoint_runs_bulkinfer_on_the_cluster_it_was_submitted_to(rayjob):
    args = entrypoint_args(rayjob)
    assert args[0] == "bulkinfer"
    # Without ray=cluster the driver would start a Ray of its own inside the head pod.
    assert "ray=cluster" in args
    assert not any(a.startswith("ray.address=") for a in args)


def test_every_pod_runs_the_same_image_and_sees_the_same_volume(rayjob):
    pods = _pods(rayjob)
    images = {c["image"] for pod in pods for c in pod["containers"]}
    assert len(images) == 1
    for pod in pods:
        claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
        mounts = {m["mountPath"] for c in pod["containers"] for m in c["volumeMounts"]}
        assert claims == {"team-a-data"} and mounts == {"/data"}
    for arg in entrypoint_args(rayjob):
        if arg.startswith(("sink.params.path=", "hydra.run.dir=")):
            assert arg.split("=", 1)[1].startswith("/data/"), arg  # on the shared volume


def test_the_manifest_and_the_image_use_the_ray_release_bulkinfer_pins(rayjob):
    pinned = ".".join(version("ray").split(".")[:2])
    assert rayjob["spec"]["rayClusterSpec"]["rayVersion"].startswith(pinned + ".")
    base = re.search(r"^FROM rayproject/ray:(\S+)", (KUBERAY / "Dockerfile").read_text(), re.M)
    ray_version = rayjob["spec"]["rayClusterSpec"]["rayVersion"]
    assert base is not None and base.group(1).startswith(ray_version + "-")
