"""Loader throughput from an S3 server on this machine beside the same shards on local disk.

The text dataset of bench/loader.py (Zipf pseudo-words through the real converter), here in
1 MiB shards, is written once to a temporary folder and uploaded to moto's S3 server, started as
a separate process on 127.0.0.1 (so that serving does not share the loader's interpreter). Each
row is one epoch's worth of bytes through build_train_loader (T = 8192, 1 worker), timed from its
first batch:

  local            the dataset folder (page cache warm)
  s3               the URL: every sample one ranged request at its member-index offset, the
                   samples of a fetch 16 requests in flight (SampleReader.prefetch)
  s3, 1 in flight  the same, one request at a time
  s3 + cache       the URL through MEGABYTE_CACHE_DIR (cold: each shard downloaded once, then
                   hashed and read from the cache)

The server is local, so this measures the client's overhead (requests, retries' bookkeeping,
copies), not a network: a remote bucket adds its latency and bandwidth on top.

    python bench/loader_s3.py [--mib 32] [--batch-size 8]
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common import machine  # noqa: E402  (bench/: this runs as a script)
from loader import make_text, measure_loader  # noqa: E402
from pipeline.format import storage  # noqa: E402
from pipeline.format.cache import CACHE_DIR_ENV, CACHE_LIMIT_ENV  # noqa: E402
from pipeline.load.reading import SampleReader  # noqa: E402

BUCKET = "bench"
SHARD_BYTES = 1 << 20  # smaller than bench/loader.py's: more shards, so more requests per byte


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_s3() -> tuple[subprocess.Popen, str]:
    """moto's S3 server on a free port of 127.0.0.1, answering: (process, endpoint)."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("moto's S3 server did not start")


def upload_dataset(folder: Path, url: str) -> None:
    import s3fs

    s3fs.S3FileSystem().mkdir(BUCKET)
    for path in sorted(folder.iterdir()):
        storage.upload(path, storage.join(url, path.name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=float, default=32, help="payload MiB of text (default: 32)")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per batch (default: 8)")
    args = parser.parse_args()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    server, endpoint = start_s3()
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = make_text(Path(tmp), int(args.mib * (1 << 20)), seed=0, shard_bytes=SHARD_BYTES)
            url = f"s3://{BUCKET}/text"
            upload_dataset(local, url)
            cache = {CACHE_DIR_ENV: f"{tmp}/cache", CACHE_LIMIT_ENV: str(1 << 30)}
            rows = [("local", str(local), {}, 16), ("s3", url, {}, 16), ("s3, 1 in flight", url, {}, 1),
                    ("s3 + cache", url, cache, 16)]
            print(f"# {machine()}; moto S3 server on 127.0.0.1 (own process); {args.mib:g} MiB "
                  f"text in {len(list(local.glob('*.tar')))} shards; T=8192, 1 worker, batch {args.batch_size}")
            print(f"{'source':<16} {'MiB/s':>8} {'× local':>8}")
            baseline = None
            for name, location, env, in_flight in rows:
                os.environ.update(env)
                SampleReader.PREFETCH = in_flight  # the worker is forked: it takes this along
                result = measure_loader(location, 1, args.batch_size)
                for key in env:
                    del os.environ[key]
                speed = result["bytes"] / result["seconds"] / (1 << 20)
                baseline = baseline or speed
                print(f"{name:<16} {speed:8.1f} {speed / baseline:8.2f}")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
