"""Datasets at URLs, against real servers on 127.0.0.1: moto's S3 server and an HTTP server that
answers Range requests. Convert to S3 (with a resume), read back (inspect, samples, loader, eval),
survive a connection cut mid-shard and a server restart mid-read with the same bytes as from local
disk, resume a conversion the server died in, cache shards without evicting one being read, and
turn a bad URL into one line, exit 2."""

import dataclasses
import http.server
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from loader_datasets import text_docs
from model import PRESETS, build_model
from model.weights import save_weights
from pipeline.convert import output as convert_output
from pipeline.format import reader, remote, storage
from pipeline.format.cache import CACHE_DIR_ENV, CACHE_LIMIT_ENV
from pipeline.format.remote import RETRIES
from pipeline.format.errors import DataError, UsageError
from pipeline.load.loader import LoaderConfig, build_train_loader, build_validation_loader
from tools.cli import main as cli

from helpers import error_line, free_port

REPO = Path(__file__).resolve().parents[1]
BUCKET = "data"
CONVERT = ["convert", "text", "--shard-size", "32K", "--no-progress"]
CONFIG = dataclasses.replace(PRESETS["tiny"], seq_len=64, global_dim=64, global_heads=2, local_dim=32,
                             local_heads=2, global_layers=1, local_layers=1, dropout=0.0)


def use_endpoint(monkeypatch, url: str) -> None:
    """Point S3 at `url` (fsspec keeps one client per process: a new endpoint needs a new one)."""
    import s3fs

    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    s3fs.S3FileSystem.clear_instance_cache()


# ---------------------------------------------------------------------------------------------
# servers


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server on a free port, the environment pointing at it, and a bucket."""
    from moto.server import ThreadedMotoServer
    import s3fs

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        use_endpoint(env, f"http://127.0.0.1:{port}")
        s3fs.S3FileSystem().mkdir(BUCKET)
        yield {"port": port, "endpoint": f"http://127.0.0.1:{port}", "server": server}
        s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """GET and HEAD of the files under `root`, with one `Range: bytes=a-b` answered 206."""

    root: Path
    gets: list  # the ranges asked for, for tests that count requests

    def do_HEAD(self):
        self.answer(send_body=False)

    def do_GET(self):
        self.answer(send_body=True)

    def answer(self, send_body: bool):
        path = self.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start, end = 0, len(data) - 1
        asked = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if asked:
            start, end = int(asked[1]), min(int(asked[2] or end), end)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(end + 1 - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if send_body:
            self.gets.append((self.path, start, end))
            self.wfile.write(data[start:end + 1])

    def log_message(self, *args):
        pass


class HTTPServer:
    """A threading HTTP server for a directory that can be stopped and started on its port."""

    def __init__(self, root: Path):
        self.handler = type("Handler", (RangeHandler,), {"root": root, "gets": []})
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.start()

    def start(self):
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), self.handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class CuttingProxy:
    """A TCP proxy on 127.0.0.1 to `port` that drops every connection open at that moment, once,
    when `cut_after` bytes have come back from the server."""

    def __init__(self, port: int, cut_after: int):
        self.port, self.cut_after = port, cut_after
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.received = 0
        self.cuts = 0
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.port))
            threading.Thread(target=self.pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self.pump, args=(upstream, client, True), daemon=True).start()

    def pump(self, source, target, downstream: bool):
        try:
            while data := source.recv(1 << 14):
                if downstream and self.cuts == 0 and self.received + len(data) > self.cut_after:
                    target.sendall(data[: self.cut_after - self.received])
                    self.cuts += 1
                    raise OSError("cut")
                target.sendall(data)
                self.received += len(data) if downstream else 0
        except OSError:
            pass
        for end in (source, target):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            end.close()

    def close(self):
        self.listener.close()


# ---------------------------------------------------------------------------------------------
# data


@pytest.fixture(scope="module")
def data(tmp_path_factory, s3):
    """The same text converted to a local directory and to s3://data/text (by the CLI)."""
    root = tmp_path_factory.mktemp("storage")
    source = root / "docs.jsonl"
    source.write_text("".join(json.dumps({"text": d.decode()}) + "\n" for d in text_docs(500, seed=4, high=300)))
    assert cli([*CONVERT, str(source), "--out", str(root / "text")]) == 0
    url = f"s3://{BUCKET}/text"
    assert cli([*CONVERT, str(source), "--out", url]) == 0
    return {"source": source, "local": root / "text", "url": url, "root": root}


def samples(location) -> list:
    return [(key, meta, payload) for _, key, meta, payload in reader.iter_samples([location])]


def first_batches(location, count: int, num_workers: int = 0) -> list:
    config = LoaderConfig(datasets=[location], seq_len=64, patch_size=8, micro_batch_size=4,
                          num_workers=num_workers)
    loader = iter(build_train_loader(config))
    return [next(loader)["ids"] for _ in range(count)]


# ---------------------------------------------------------------------------------------------
# writing to S3, reading back


def test_conversion_to_s3_uploads_the_same_files(data):
    import s3fs

    fs = s3fs.S3FileSystem()
    local = sorted(p.name for p in data["local"].iterdir())
    assert len(local) > 5 and "index.json" in local and ".progress.json" not in local
    assert all(f"{name}.idx" in local for name in local if name.endswith(".tar"))
    assert storage.listdir(data["url"]) == local
    for name in local:
        assert fs.cat_file(f"{BUCKET}/text/{name}") == (data["local"] / name).read_bytes(), name


def test_inspect_and_samples_from_s3_match_local(data, capsys):
    assert samples(data["url"]) == samples(data["local"])
    assert cli(["inspect", "verify", data["url"]]) == 0
    assert "ok: 500 samples verified" in capsys.readouterr().out
    for verb in (["stats"], ["show", "--index", "7"]):
        assert cli(["inspect", *verb, data["url"]]) == 0
        remote = capsys.readouterr().out
        assert cli(["inspect", *verb, str(data["local"])]) == 0
        assert remote.replace(data["url"], "") == capsys.readouterr().out.replace(str(data["local"]), "")
    assert cli(["inspect", "ls", data["url"]]) == 0
    assert f"{data['url']}/text-000000.tar" in capsys.readouterr().out


def test_loader_and_validation_from_s3_match_local(data):
    for remote, local in zip(first_batches(data["url"], 6, num_workers=1), first_batches(data["local"], 6)):
        assert torch.equal(remote, local)
    config = LoaderConfig(validation=data["url"], seq_len=64, patch_size=8, micro_batch_size=4, num_workers=0)
    remote = [b["ids"] for b in build_validation_loader(config)]
    config.validation = str(data["local"])
    local = [b["ids"] for b in build_validation_loader(config)]
    assert len(remote) == len(local) > 0 and all(torch.equal(a, b) for a, b in zip(remote, local))


def test_eval_from_s3(data, tmp_path, capsys):
    torch.manual_seed(0)
    model = tmp_path / "model.safetensors"
    save_weights(build_model(CONFIG), model, {"modality": "text"})
    results = []
    for location in (data["url"], str(data["local"])):
        assert cli(["eval", str(model), "--data", location, "--device", "cpu", "--no-progress",
                    "--max-bytes", "3000"]) == 0
        results.append(capsys.readouterr().out.replace(location, "DATA").split("\n"))
    # the same targets and bits per byte (the speed column differs)
    assert [line.split()[:3] for line in results[0]] == [line.split()[:3] for line in results[1]]


def test_sha256_of_a_remote_shard_is_checked(data):
    import s3fs

    fs = s3fs.S3FileSystem()
    url = f"s3://{BUCKET}/tampered"
    for path in sorted(data["local"].iterdir()):
        content = path.read_bytes()
        if path.name == "text-000001.tar":  # same size, one byte flipped
            content = content[:700] + bytes([content[700] ^ 1]) + content[701:]
        fs.pipe_file(f"{BUCKET}/tampered/{path.name}", content)
    info = reader.dataset_shards(url)[1][1]
    with pytest.raises(DataError, match="sha256 .* does not match"):
        reader.check_shard(f"{url}/text-000001.tar", info)


def test_interrupted_conversion_resumes_at_the_url(data, monkeypatch):
    url = f"s3://{BUCKET}/resumed"
    publish = convert_output.Output.publish
    published = []

    def killed_at_the_third_shard(self, shard):
        if len(published) == 2:
            raise KeyboardInterrupt
        publish(self, shard)
        published.append(shard)

    monkeypatch.setattr(convert_output.Output, "publish", killed_at_the_third_shard)
    assert cli([*CONVERT, str(data["source"]), "--out", url]) == 130  # "interrupted"
    left = storage.listdir(url)
    assert "index.json" not in left and ".progress.json" in left
    assert left[1:] == sorted(published + [f"{name}.idx" for name in published])  # each with its index
    monkeypatch.setattr(convert_output.Output, "publish", publish)
    assert cli([*CONVERT, str(data["source"]), "--out", url]) == 0
    assert storage.listdir(url) == sorted(p.name for p in data["local"].iterdir())
    assert samples(url) == samples(data["local"])


# ---------------------------------------------------------------------------------------------
# faults: a cut connection, a restarted server, one that stays down


def test_connection_cut_mid_shard_loses_and_repeats_nothing(data, s3, monkeypatch):
    proxy = CuttingProxy(s3["port"], cut_after=50_000)  # inside the second shard (32 KiB+ each)
    try:
        use_endpoint(monkeypatch, proxy.url)
        assert samples(data["url"]) == samples(data["local"])
        assert proxy.cuts == 1
        proxy.cuts, proxy.received = 0, 0
        for remote, local in zip(first_batches(data["url"], 4), first_batches(data["local"], 4)):
            assert torch.equal(remote, local)
        assert proxy.cuts == 1
    finally:
        proxy.close()
        use_endpoint(monkeypatch, s3["endpoint"])


def test_server_restart_mid_read_resumes_at_the_byte_reached(data):
    server = HTTPServer(data["local"])
    url = f"{server.url}/text-000002.tar"
    expected = (data["local"] / "text-000002.tar").read_bytes()
    try:
        with storage.open_binary(url) as f:
            head = f.read(3000)
            server.stop()
            restart = threading.Timer(0.2, server.start)
            restart.start()
            f.seek(5000)
            middle = f.read(1000)
            f.seek(3000)
            rest = f.read()
        restart.join()
        assert head + rest == expected and middle == expected[5000:6000]
        assert samples(server.url) == samples(data["local"])
    finally:
        server.stop()


def test_a_server_that_stays_down_is_one_error_naming_the_offset(data, monkeypatch):
    monkeypatch.setattr(remote, "BACKOFF", 0.001)  # the tries, not the waits between them
    server = HTTPServer(data["local"])
    url = f"{server.url}/text-000000.tar"
    f = storage.open_binary(url)  # its size is known: nothing is read yet
    server.stop()
    f.seek(4096)
    with pytest.raises(storage.StorageError, match=rf"{url}: cannot read bytes 4096-.* after "
                                                   rf"{RETRIES} tries \(ClientConnectorError"):
        f.read(10)


# ---------------------------------------------------------------------------------------------
# the cache


def cached_names(cache: Path) -> list[str]:
    return sorted(p.name.split("-", 1)[1] for p in cache.iterdir() if p.name != ".lock")


def test_cache_reads_a_shard_once_and_never_evicts_one_being_read(data, tmp_path, monkeypatch):
    server = HTTPServer(data["local"])
    shards = sorted(p for p in data["local"].iterdir() if p.suffix == ".tar")
    size = shards[0].stat().st_size
    assert all(p.stat().st_size == size for p in shards[:3])  # 10240-byte records: equal sizes
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_DIR_ENV, str(cache))
    monkeypatch.setenv(CACHE_LIMIT_ENV, str(2 * size))  # room for two shards
    urls = [f"{server.url}/{p.name}" for p in shards[:3]]
    try:
        pinned = storage.open_binary(urls[0])  # held open here: pinned
        # another process (a DataLoader worker, say) reads the two others: the third needs room,
        # and takes it from the second, not from the first, which is being read
        subprocess.run([sys.executable, "-c", "import sys; from pipeline.format import storage; "
                        "[storage.open_binary(url).close() for url in sys.argv[1:]]", urls[1], urls[2]],
                       cwd=REPO, check=True, timeout=60)
        assert cached_names(cache) == [shards[0].name, shards[2].name]
        assert pinned.read() == shards[0].read_bytes()
        gets = len(server.handler.gets)
        with storage.open_binary(urls[2]) as f:  # from the cache: no request
            assert f.read() == shards[2].read_bytes() and len(server.handler.gets) == gets
        pinned.close()
        with storage.open_binary(urls[1]) as f:  # now the first, least recently opened, goes
            assert f.read() == shards[1].read_bytes()
        assert cached_names(cache) == [shards[1].name, shards[2].name]
    finally:
        server.stop()


def test_cache_needs_a_limit(monkeypatch, tmp_path, data):
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(CACHE_LIMIT_ENV, raising=False)
    with pytest.raises(UsageError, match="MEGABYTE_CACHE_LIMIT is not"):
        storage.open_binary(f"{data['url']}/text-000000.tar")
    monkeypatch.setenv(CACHE_LIMIT_ENV, "10GB")
    with pytest.raises(UsageError, match="in bytes"):
        storage.open_binary(f"{data['url']}/text-000000.tar")


# ---------------------------------------------------------------------------------------------
# bad locations: one line, exit 2


def test_bad_urls_are_one_line_and_exit_2(data, s3, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(remote, "BACKOFF", 0.001)  # the tries, not the waits between them
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's own retries of a refused connection
    closed = free_port()
    cases = [
        ("s3://no-such-bucket/text", "no such manifest (The specified bucket does not exist)"),
        (f"s3://{BUCKET}/nothing", "s3://data/nothing/index.json: no such manifest"),
        (f"http://127.0.0.1:{closed}/text", f"after {RETRIES} tries (ClientConnectorError"),
    ]
    for url, message in cases:
        assert cli(["inspect", "ls", url]) == 2
        line = error_line(capsys)
        assert url in line and message in line, line
        assert cli(["eval", "no/model.safetensors", "--data", url]) == 2
        assert url in error_line(capsys)
    use_endpoint(monkeypatch, f"http://127.0.0.1:{closed}")
    assert cli(["inspect", "stats", data["url"]]) == 2
    assert "EndpointConnectionError" in error_line(capsys)
    use_endpoint(monkeypatch, s3["endpoint"])


def test_wrong_credentials_are_one_line_and_exit_2(data, monkeypatch, capsys):
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin

    monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # moto checks keys from now on
    monkeypatch.setattr(ActionAuthenticatorMixin, "request_count", 0)
    assert cli(["inspect", "ls", data["url"]]) == 2
    line = error_line(capsys)
    assert data["url"] in line and "access denied" in line and "check the credentials" in line, line


def test_http_is_no_place_to_convert_to(data, capsys):
    with pytest.raises(SystemExit) as stop:
        cli([*CONVERT, str(data["source"]), "--out", "http://127.0.0.1:1/text"])
    assert stop.value.code == 2 and "http(s) URLs are read-only" in capsys.readouterr().err


def test_trainer_refuses_a_bad_dataset_url_before_training(data, tmp_path, capsys):
    config = tmp_path / "config.toml"
    config.write_text(f'[data]\ndatasets = ["s3://no-such-bucket/text"]\n[run]\nout_dir = "{tmp_path / "run"}"\n')
    assert cli(["train", "--config", str(config), "--set", "model.preset=tiny"]) == 2
    line = error_line(capsys)
    assert "s3://no-such-bucket/text/index.json" in line and "bucket does not exist" in line, line
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_short_training_run_from_s3(data, s3, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("\n".join([
        "[data]", f'datasets = ["{data["url"]}"]', f'validation = "{data["url"]}"', "batch_size = 4",
        "micro_batch_size = 4", "num_workers = 1",
        "[optim]", "lr = 0.003", "warmup_steps = 1", "total_steps = 3",
        "[deepspeed]", "zero_stage = 1",
        "[run]", f'out_dir = "{tmp_path / "run"}"', "checkpoint_every = 0", "eval_every = 3",
        "eval_batches = 2", "log_every = 1", "progress = false"]) + "\n")
    model = ["model.preset=tiny", "model.seq_len=64", "model.global_dim=64", "model.global_layers=1",
             "model.global_heads=2", "model.local_dim=32", "model.local_layers=1", "model.local_heads=2"]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "train.main", "--config", str(config),
                             *[f"--set={s}" for s in model]], cwd=REPO, env=env, timeout=300,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["kind"] == "train" for r in records) == 3 and any(r["kind"] == "eval" for r in records)


def test_a_server_dying_mid_conversion_is_one_line_and_a_rerun_resumes(data, tmp_path, monkeypatch, capsys):
    """Its own moto server, stopped before the fourth upload (the journal and a shard's files
    are up): the conversion stops in one line, exit 2; the server back on the same port, a rerun
    goes on to the same files as a local conversion."""
    from moto.server import ThreadedMotoServer

    source, local = tmp_path / "docs.jsonl", tmp_path / "local"
    source.write_text("".join(data["source"].read_text().splitlines(keepends=True)[:40]))
    assert cli([*CONVERT, str(source), "--out", str(local)]) == 0
    assert len(list(local.glob("*.tar"))) >= 3
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    use_endpoint(monkeypatch, f"http://127.0.0.1:{port}")  # moto's buckets live in this process
    monkeypatch.setattr(remote, "BACKOFF", 0.01)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's own retries of a refused connection
    monkeypatch.setattr(logging.getLogger("werkzeug"), "disabled", True)  # the server's access log
    upload, uploads = storage.upload, []

    def dying(local_path, location):
        if len(uploads) == 3:
            server.stop()
        upload(local_path, location)
        uploads.append(location)

    monkeypatch.setattr(storage, "upload", dying)
    url = f"s3://{BUCKET}/died"
    try:
        capsys.readouterr()
        assert cli([*CONVERT, str(source), "--out", url]) == 2
        line = error_line(capsys)
        assert line.startswith(f"megabyte convert: error: {url}/") and f"after {RETRIES} tries" in line
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        left = storage.listdir(url)
        assert "index.json" not in left and 0 < len(left) < len(list(local.iterdir()))
        monkeypatch.setattr(storage, "upload", upload)
        assert cli([*CONVERT, str(source), "--out", url]) == 0
        assert storage.listdir(url) == sorted(p.name for p in local.iterdir())
        assert samples(url) == samples(local)
    finally:
        server.stop()
