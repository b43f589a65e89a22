"""An S3-compatible server on 127.0.0.1 (moto) holding one empty bucket, ``lake``, for the S3 lake tests.

moto keeps its buckets in process-wide state that outlives a server, so the fixture resets it when it ends:
every test starts from an empty bucket, whatever ran before it."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import boto3
import pytest
import requests
from moto.server import ThreadedMotoServer


@pytest.fixture
def s3_options() -> Iterator[dict[str, str]]:
    """deltalake storage options for the server (also what :class:`LakeResource` takes)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    options = {"AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "test",
               "AWS_SECRET_ACCESS_KEY": "test", "AWS_ALLOW_HTTP": "true"}
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                 aws_secret_access_key="test").create_bucket(Bucket="lake")
    try:
        yield options
    finally:
        requests.post(f"{endpoint}/moto-api/reset", timeout=10)
        server.stop()
