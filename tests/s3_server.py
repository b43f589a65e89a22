"""An S3-compatible server on 127.0.0.1 (moto) holding one empty bucket, ``lake``, for the S3 lake tests.

moto keeps its buckets in process-wide state that outlives a server, so the fixture resets it when it ends:
every test starts from an empty bucket, whatever ran before it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import boto3
import pytest
import requests
from moto.server import ThreadedMotoServer

from tests.browser import free_port


@contextmanager
def moto_s3() -> Iterator[dict[str, str]]:
    """An S3 server on a free port of 127.0.0.1 with an empty bucket ``lake``; yields its deltalake storage options."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    options = {"AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "test",
               "AWS_SECRET_ACCESS_KEY": "test", "AWS_ALLOW_HTTP": "true"}
    try:
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                     aws_secret_access_key="test").create_bucket(Bucket="lake")
        yield options
    finally:
        requests.post(f"{endpoint}/moto-api/reset", timeout=10)
        server.stop()


@pytest.fixture
def s3_options() -> Iterator[dict[str, str]]:
    """deltalake storage options for the server (also what :class:`LakeResource` takes)."""
    with moto_s3() as options:
        yield options
