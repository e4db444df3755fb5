"""A cluster request is checked field by field before anything starts."""

import pytest

from gpulab.clusters import ClusterSpec, SpecError


def test_defaults_are_one_cpu_worker_over_tls():
    spec = ClusterSpec.from_json({})
    assert (spec.workers, spec.gpus_per_worker, spec.protocol) == (1, 0, "tls")
    assert spec.gpus == 0


def test_a_full_gpu_spec_round_trips_through_json():
    body = {"name": "prep", "workers": 2, "threads_per_worker": 4, "memory_limit": "4 GiB",
            "gpus_per_worker": 1, "rmm_pool_size": "10GB", "device_memory_limit": "70 GB",
            "protocol": "ucx"}
    spec = ClusterSpec.from_json(body)
    assert spec.gpus == 2
    assert ClusterSpec.from_json(spec.to_json()) == spec


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"workers": -1}, "workers", "between 1 and 512"),
        ({"workers": 0}, "workers", "between 1 and 512"),
        ({"workers": 10_000}, "workers", "between 1 and 512"),
        ({"workers": "2"}, "workers", "whole number"),
        ({"workers": 2.0}, "workers", "whole number"),
        ({"workers": True}, "workers", "whole number"),
        ({"workers": None}, "workers", "whole number"),
        ({"threads_per_worker": 0}, "threads_per_worker", "between 1 and 256"),
        ({"gpus_per_worker": 2}, "gpus_per_worker", "one worker per GPU"),
        ({"memory_limit": "lots"}, "memory_limit", "a size such as"),
        ({"memory_limit": 4096}, "memory_limit", "a size such as"),
        ({"memory_limit": "0 GB"}, "memory_limit", "more than 0"),
        ({"memory_limit": "4 gigs"}, "memory_limit", "a size such as"),
        ({"memory_limit": ""}, "memory_limit", "a size such as"),
        ({"name": "prep\n"}, "name", "letters, digits"),
        ({"memory_limit": "9" * 40}, "memory_limit", "a size such as"),
        ({"rmm_pool_size": "1 GB"}, "rmm_pool_size", "needs GPU workers"),
        ({"device_memory_limit": "1 GB"}, "device_memory_limit", "needs GPU workers"),
        ({"protocol": "http"}, "protocol", "one of tls, tcp, ucx"),
        ({"protocol": "ucx"}, "protocol", "for GPU workers"),
        ({"name": "<script>"}, "name", "letters, digits"),
        ({"name": "x" * 65}, "name", "letters, digits"),
        ({"name": 3}, "name", "letters, digits"),
        ({"workers": 1, "gpus": 1}, "gpus", "unknown field 'gpus'"),
    ],
)
def test_bad_fields_are_named(body, field, words):
    with pytest.raises(SpecError) as error:
        ClusterSpec.from_json(body)
    assert error.value.field == field
    assert words in str(error.value)
    assert error.value.to_json() == {"message": str(error.value), "field": field}


@pytest.mark.parametrize("body", [[], "workers=2", 3, None])
def test_a_body_that_is_not_an_object_is_refused(body):
    with pytest.raises(SpecError, match="JSON object") as error:
        ClusterSpec.from_json(body)
    assert error.value.field == "body"
