"""A real S3 API on loopback for tests: moto's server on 127.0.0.2, one fresh bucket per test.

moto answers the same HTTP API as S3 (PUT, multipart uploads, listings), so pyarrow's S3 client runs
its real code path against it. The credentials are moto's placeholders; nothing leaves the machine.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass

from tests.cluster import free_port

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_EC2_METADATA_DISABLED": "true"}


@dataclass
class MotoS3:
    endpoint: str

    def env(self) -> dict[str, str]:
        """What a process needs to reach the store by a plain s3:// URI (pyarrow reads AWS_ENDPOINT_URL_S3)."""
        return dict(os.environ, **CREDENTIALS, AWS_ENDPOINT_URL_S3=self.endpoint)

    def new_bucket(self) -> str:
        import pyarrow.fs as pafs

        name = f"raybench-{secrets.token_hex(4)}"
        fs = pafs.S3FileSystem(access_key="testing", secret_key="testing", region="us-east-1",
                               endpoint_override=self.endpoint, scheme="http", allow_bucket_creation=True)
        fs.create_dir(name)
        return name

    def uri_with_endpoint(self, bucket: str, prefix: str) -> str:
        """The endpoint inside the URI (pyarrow's URI options), for processes without the env."""
        return f"s3://{bucket}/{prefix}?endpoint_override={self.endpoint}&scheme=http"


def start_moto() -> tuple[MotoS3, object]:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.2", port=port, verbose=False)
    server.start()
    return MotoS3(f"http://127.0.0.2:{port}"), server
