"""Hostile and unlucky command lines: a bad argument, config value or model file is one line on
stderr (never a traceback) and exit code 2 (1 for data with nothing to score), found before
anything heavy is loaded, with nothing written. Also `megabyte eval`'s progress and speed, and
the file mode of exported weights."""

import dataclasses
import io
import json
import logging
import os
import stat
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from loader_datasets import images, text_docs, write_shards, write_text
from model import PRESETS, build_model, generate
from model.weights import save_weights
from tools.cli import main as cli

from helpers import ENV, REPO, error_line, free_port
from train.windows import dataset_streams, dataset_ids, eval_modes, evaluate_streams

CONFIG = dataclasses.replace(PRESETS["tiny"], seq_len=64, global_dim=64, global_heads=2, local_dim=32,
                             local_heads=2, global_layers=1, local_layers=1, dropout=0.0)
MISSING_MODEL = "no/such/model.safetensors"  # an argument error must be found before the model is read



def listing(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    torch.manual_seed(0)
    model_file = root / "model.safetensors"
    save_weights(build_model(CONFIG), model_file, {"modality": "text"})
    return {"model": model_file, "data": write_text(root / "data", text_docs(12, seed=3)),
            "empty": write_text(root / "empty", [])}


# ---------------------------------------------------------------------------------------------
# megabyte generate: arguments checked before the model is loaded, and by the library as well


def refused(argv: list[str], capsys) -> str:
    """Run the command, which must refuse with exit code 2 (returned, or argparse's SystemExit for
    a flag out of its range) and one stderr line; returns that line."""
    try:
        code = cli(argv)
    except SystemExit as stop:
        code = stop.code
    assert code == 2, argv
    return error_line(capsys)


@pytest.mark.parametrize("flags, message", [
    (["--bytes", "-1"], "argument --bytes: -1: must be 1 to 16,777,216"),
    (["--bytes", "0"], "argument --bytes: 0: must be 1 to"),
    (["--bytes", "99999999999999999999"], "argument --bytes: 99999999999999999999: must be 1 to"),
    (["--bytes", "1e3"], "argument --bytes: '1e3' is not an integer"),
    (["--temperature", "-1"], "argument --temperature: -1: must be at least 0"),
    (["--temperature", "nan"], "argument --temperature: nan: must be at least 0"),
    (["--temperature", "inf"], "argument --temperature: inf"),
    (["--top-k", "0"], "argument --top-k: 0: must be at least 1"),
    (["--top-k", "-5"], "argument --top-k: -5: must be at least 1"),
    (["--top-p", "0"], "argument --top-p: 0: must be above 0 and at most 1"),
    (["--top-p", "1.5"], "argument --top-p: 1.5: must be above 0 and at most 1"),
    (["--top-p", "nan"], "argument --top-p: nan"),
    (["--seed", "-1"], "argument --seed: -1: must be 0 to 18,446,744,073,709,551,615"),
    (["--keep", "0.3"], "--keep is the fraction of --prompt-image kept as the prompt: give --prompt-image"),
    (["--prompt-image", "x.png", "--keep", "2"], "argument --keep: 2: must be at least 0 and below 1"),
    (["--prompt-image", "x.png", "--keep", "1"], "argument --keep: 1: must be at least 0 and below 1"),
    (["--prompt-image", "x.png", "--keep", "-0.5"], "argument --keep: -0.5"),
])
def test_generate_refuses_arguments_that_make_no_sense(tmp_path, capsys, flags, message):
    line = refused(["generate", "--model", MISSING_MODEL, *flags], capsys)
    assert line.startswith("megabyte generate: error: ") and message in line, line


def test_generate_output_must_be_a_file_in_an_existing_folder(tmp_path, capsys):
    for out, message in [(tmp_path / "missing" / "out.txt", "the folder"), (tmp_path, "is a folder")]:
        assert cli(["generate", "--model", MISSING_MODEL, "--out", str(out)]) == 2
        line = error_line(capsys)
        assert f"--out {out}: " in line and message in line, line
    assert listing(tmp_path) == []


def test_generate_writes_its_output_whole_and_with_the_umask(files, tmp_path, capsys):
    out = tmp_path / "out.bin"
    old = os.umask(0o027)
    try:
        assert cli(["generate", "--model", str(files["model"]), "--bytes", "5", "--out", str(out)]) == 0
    finally:
        os.umask(old)
    assert listing(tmp_path) == ["out.bin"]  # no temporary file left beside it
    assert stat.S_IMODE(out.stat().st_mode) == 0o640


def test_the_library_checks_generation_arguments_with_the_same_messages(files):
    model = build_model(CONFIG).eval()
    for kwargs, message in [({"max_new_bytes": -1}, "cannot generate -1 bytes"),
                            ({"temperature": float("nan")}, "temperature nan"),
                            ({"top_k": 0}, "top-k 0"), ({"top_p": 0.0}, "top-p 0.0"),
                            ({"keep": 64}, "keep=64 must leave room in the context")]:
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            generate(model, [b"abc"], **{"max_new_bytes": 4, **kwargs})
    assert len(generate(model, [b"abc"], 4, temperature=0, stop_at_boundary=False)[0]) == 4


# ---------------------------------------------------------------------------------------------
# model files that are not ours, broken or cut short


def broken_model_files(folder, good) -> dict:
    data = good.read_bytes()
    header = int.from_bytes(data[:8], "little")
    bad_config = data[:8 + header].replace(b'"format"', b'"formal"')  # same length: the file stays valid
    paths = {"random": os.urandom(4096), "truncated": data[: len(data) // 2], "empty": b"",
             "header only": data[:8 + header], "no format": bad_config + data[8 + header:]}
    out = {}
    for name, content in paths.items():
        out[name] = folder / f"{name.replace(' ', '-')}.safetensors"
        out[name].write_bytes(content)
    out["not ours"] = folder / "other.safetensors"
    save_file({"weight": torch.zeros(3)}, out["not ours"])
    config = json.loads(json.loads(data[8:8 + header])["__metadata__"]["config"])
    config["seq_len"] = 12345  # not a multiple of the patch size
    out["bad config"] = folder / "bad-config.safetensors"
    save_file({"weight": torch.zeros(3)}, out["bad config"], {"format": "megabyte-weights",
                                                              "config": json.dumps(config)})
    out["missing tensors"] = folder / "missing-tensors.safetensors"
    save_file({"weight": torch.zeros(3)}, out["missing tensors"], {"format": "megabyte-weights",
                                                                   "config": json.dumps(CONFIG.to_dict())})
    return out


@pytest.mark.parametrize("command", ["generate", "eval"])
def test_a_file_that_is_not_a_megabyte_model_is_one_line_naming_it(files, tmp_path, capsys, command):
    for name, path in broken_model_files(tmp_path, files["model"]).items():
        args = ["--model", str(path)] if command == "generate" else [str(path), "--data", str(files["data"])]
        before = listing(tmp_path)
        assert cli([command, *args]) == 2, name
        line = error_line(capsys)
        assert f"{path}: not a megabyte model file" in line, (name, line)
        assert listing(tmp_path) == before


# ---------------------------------------------------------------------------------------------
# megabyte eval


@pytest.mark.parametrize("flags, message", [
    (["--batch-size", "0"], "argument --batch-size: 0: must be 1 to 65,536"),
    (["--max-bytes", "-1"], "argument --max-bytes: -1: must be at least 0"),
    (["--sliding", "0"], "argument --sliding: 0: must be at least 1"),
    (["--device", "nonsense"], "--device nonsense: not a torch device"),
])
def test_eval_refuses_arguments_before_loading_the_model(files, capsys, flags, message):
    assert message in refused(["eval", MISSING_MODEL, "--data", str(files["data"]), *flags], capsys)


def test_eval_refuses_data_that_is_missing_or_has_nothing_to_score(files, tmp_path, capsys):
    assert cli(["eval", MISSING_MODEL, "--data", str(tmp_path / "nothing")]) == 2
    assert "index.json: no such manifest" in error_line(capsys)
    assert cli(["eval", str(files["model"]), "--data", str(files["empty"])]) == 1
    line = error_line(capsys)
    assert f"{files['empty']}: the dataset has no bytes to score" in line, line


def test_images_larger_than_the_context_are_scored_in_segments(files, tmp_path, capsys):
    images_dir = write_shards(tmp_path / "images", "image", images(3, 8), per_shard=2)  # 192 > 64 bytes
    assert cli(["eval", str(files["model"]), "--data", str(images_dir), "--no-progress"]) == 0
    assert "576 targets" in capsys.readouterr().out  # every byte of the 3 images, in 64-byte segments


def test_eval_prints_the_parameters_and_bytes_per_second(files, capsys):
    assert cli(["eval", str(files["model"]), "--data", str(files["data"]), "--sliding", "32",
                "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    parameters = sum(p.numel() for p in build_model(CONFIG).parameters())
    lines = captured.out.splitlines()
    assert lines[0].endswith(f", {parameters:,} parameters")
    assert lines[1].split() == ["mode", "bits/byte", "cost", "bytes/s"]
    for row in lines[2:]:
        assert float(row.split()[-1].replace(",", "")) > 0


def test_the_eval_progress_counts_every_byte_of_every_mode(files, capsys):
    modes = eval_modes(CONFIG, True, 32)
    total = dataset_ids(files["data"])
    docs = text_docs(12, seed=3)
    assert total == sum(map(len, docs)) + len(docs)  # the bytes and each document's end
    assert dataset_ids(files["data"], max_ids=100) == 100
    results = evaluate_streams(build_model(CONFIG), lambda: dataset_streams(files["data"], CONFIG), modes,
                               torch.device("cpu"), 4, total_ids=total)
    ends = capsys.readouterr().err.splitlines()[1::2]  # not a terminal: a line as each mode starts and ends
    assert len(ends) == len(modes) and all(end.startswith(f"... done: {total:,} bytes in ") for end in ends)
    assert all(r["targets"] == total for r in results.values())
    assert all(r["seconds"] > 0 for r in results.values())


# ---------------------------------------------------------------------------------------------
# megabyte train / config: every field of the config is type- and range-checked


@pytest.mark.parametrize("setting, message", [
    ("optim.lr=abc", "optim.lr = 'abc': expected float, not str"),
    ("optim.lr=true", "optim.lr = True: expected float, not bool"),
    ('data.batch_size="8"', "data.batch_size = '8': expected int, not str"),
    ("data.batch_size=8.0", "data.batch_size = 8.0: expected int, not float"),
    ("data.datasets='x'", "data.datasets = 'x': expected list[str], not str"),
    ("data.weights=[1, 'a']", "data.weights = [1, 'a']: expected list[float], not list"),
    ("run.progress=1", "run.progress = 1: expected bool, not int"),
    ('model.seq_len="64"', "model.seq_len = '64': expected int, not str"),
    ("optim.lr=-1", "optim.lr = -1: must be above 0"),
    ("optim.lr=nan", "optim.lr = nan: must be above 0"),
    ("optim.eps=0", "optim.eps = 0: must be above 0"),
    ("optim.warmup_steps=-1", "optim.warmup_steps = -1: must be at least 0"),
    ("optim.min_lr_ratio=2", "optim.min_lr_ratio = 2: must be 0 to 1"),
    ("optim.betas=[0.9]", "optim.betas = [0.9]: two numbers from 0 to below 1"),
    ("optim.betas=[0.9, 1.5]", "optim.betas = [0.9, 1.5]: two numbers from 0 to below 1"),
    ("optim.weight_decay=-0.1", "optim.weight_decay = -0.1: must be at least 0"),
    ("run.log_every=0", "run.log_every = 0: must be at least 1"),
    ("run.checkpoint_every=-1", "run.checkpoint_every = -1: must be at least 0"),
    ("run.eval_every=-5", "run.eval_every = -5: must be at least 0"),
    ("run.eval_batches=-1", "run.eval_batches = -1: must be at least 0"),
    ("run.keep_last=0", "run.keep_last = 0: must be at least 1"),
    ("run.max_minutes=-1", "run.max_minutes = -1: must be at least 0"),
    ("run.max_minutes=inf", "run.max_minutes = inf: must be at least 0"),
    ("data.num_workers=-1", "data.num_workers must be a non-negative integer, got -1"),
    ("data.piece_sequences=0", "data.piece_sequences must be a positive integer, got 0"),
    ("data.weights=[-1]", "data.weights [-1.0] must be positive numbers"),
    ("data.weights=[0]", "data.weights [0.0] must be positive numbers"),
])
def test_config_values_of_the_wrong_type_or_range_are_one_line(capsys, setting, message):
    assert cli(["config", "--config", "tiny-cpu", "--set", setting]) == 2
    line = error_line(capsys)
    assert line.startswith("megabyte config: error: ") and message in line, line


def test_a_config_file_that_is_not_text_is_one_line(tmp_path, capsys):
    config = tmp_path / "binary.toml"
    config.write_bytes(b'lr = "\xff\xfe"\n')
    assert cli(["config", "--config", str(config)]) == 2
    assert f"{config}: not valid TOML" in error_line(capsys)


def test_an_output_directory_that_is_a_file_is_refused_before_training(files, tmp_path, capsys):
    out_file = tmp_path / "out"
    out_file.write_text("not a folder\n")
    for out_dir in (out_file, out_file / "run"):
        assert cli(["train", "--config", "tiny-cpu", "--set", f"data.datasets=['{files['data']}']",
                    "--set", f"data.validation='{files['data']}'", "--set", f"run.out_dir='{out_dir}'"]) == 2
        line = error_line(capsys)
        assert f"run.out_dir = '{out_dir}': {out_file} is a file, not a folder" in line, line
    assert listing(tmp_path) == ["out"] and out_file.read_text() == "not a folder\n"


# ---------------------------------------------------------------------------------------------
# megabyte plot


def test_plot_refuses_a_missing_run_a_bad_output_and_broken_metrics(tmp_path, capsys):
    run = tmp_path / "run"
    cases = [(["plot", str(tmp_path / "nothing")], 2, "not a run directory"),
             (["plot", str(tmp_path), "--out", str(tmp_path / "missing" / "c.png")], 2, "the folder"),
             (["plot", str(tmp_path), "--out", str(tmp_path / "c.xyz")], 2, "cannot draw a .xyz file"),
             (["plot", str(run)], 1, "metrics.jsonl: not JSON lines of training records")]
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"kind": "train", "step": 1, "bpb": 8.0, "lr": 0.1}\n{"kind": "tr')
    for argv, code, message in cases:
        assert cli(argv) == code, argv
        assert message in error_line(capsys)
    assert listing(tmp_path) == ["run", "run/metrics.jsonl"]


# ---------------------------------------------------------------------------------------------
# weights files follow the umask like any other output


def test_saved_weights_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        save_weights(build_model(CONFIG), tmp_path / "a.safetensors")
        os.umask(0o077)
        save_weights(build_model(CONFIG), tmp_path / "b.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.safetensors").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.safetensors").stat().st_mode) == 0o600


# ---------------------------------------------------------------------------------------------
# every number a command reads has a range, checked before any work starts and before any output
# folder exists


@pytest.mark.parametrize("argv, message", [
    (["convert", "text", "F", "--out", "O", "--level", "99"], "argument --level: 99: must be 1 to 22"),
    (["convert", "text", "F", "--out", "O", "--workers", "0"], "argument --workers: 0: must be 1 to 1,024"),
    (["convert", "image", "F", "--out", "O", "--size", "0"], "argument --size: 0: must be 1 to 8,192"),
    (["convert", "image", "F", "--out", "O", "--size", "64", "--max-pixels", "-1"], "argument --max-pixels"),
    (["convert", "audio", "F", "--out", "O", "--sample-rate", "0"], "argument --sample-rate: 0"),
    (["convert", "audio", "F", "--out", "O", "--clip-seconds", "nan"], "argument --clip-seconds: nan: must be "
                                                                        "above 0 and at most 1,000,000"),
    (["inspect", "stats", "D", "--max-samples", "0"], "argument --max-samples: 0: must be at least 1"),
    (["inspect", "show", "D", "--index", "-1"], "argument --index: -1: must be at least 0"),
    (["inspect", "show", "D", "--bytes", "-1"], "argument --bytes: -1: must be at least 0"),
    (["inspect", "render", "D", "--out", "O.png", "--count", "0"], "argument --count: 0: must be 1 to 4,096"),
    (["inspect", "render", "D", "--out", "O.png", "--scale", "100000"], "argument --scale: 100000: must be 1 to 16"),
    (["inspect", "render", "D", "--out", "O.png", "--columns", "x"], "argument --columns: 'x' is not an integer"),
])
def test_numbers_out_of_range_are_refused_before_any_work(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "F").write_text("a document\n")
    line = refused(argv, capsys)
    assert line.startswith(f"megabyte {' '.join(argv[:2])}: error: {message}"), line
    assert listing(tmp_path) == ["F"]  # no O/ left behind


# ---------------------------------------------------------------------------------------------
# megabyte compare: a suite's names and numbers are checked; a dry run writes nothing


def write_suite(folder, data, out_dir, budget="budget_flops = 1e12", run_name="megabyte", extra=()):
    suite = folder / "suite.toml"
    suite.write_text("\n".join([f'train = "{data}"', f'validation = "{data}"', f'out_dir = "{out_dir}"',
                                budget, *extra, '[set]', '"model.seq_len" = 64', '[[runs]]',
                                f'name = "{run_name}"', 'preset = "tiny"']) + "\n")
    return suite


def test_a_dry_run_plans_and_writes_nothing(files, tmp_path, capsys):
    out_dir = tmp_path / "etc"  # anywhere at all: a dry run creates nothing there
    assert cli(["compare", str(write_suite(tmp_path, files["data"], out_dir)), "--plan"]) == 0
    assert capsys.readouterr().out.startswith("megabyte: ")
    assert listing(tmp_path) == ["suite.toml"]


@pytest.mark.parametrize("change, message", [
    ({"run_name": ".."}, "runs[0]: name '..': 1-90 letters, digits, '_' and '-' only"),
    ({"run_name": "a.b"}, "name 'a.b'"),
    ({"run_name": ""}, "name ''"),
    ({"budget": "budget_flops = 1e308"}, "1e+308 training FLOPs buys 1.97e+298 steps, more than the "
                                         "1,000,000,000 a run may plan: lower the budget"),
    ({"extra": ["curve_points = 0"]}, "curve_points = 0: must be 1 to 1000"),
    ({"extra": ["generate_bytes = 1000000000000"]}, "generate_bytes = 1000000000000: must be 1 to 16777216"),
    ({"extra": ["ranks = -1"]}, "ranks = -1: must be 1 to"),
    ({"extra": ["curve_batches = 0"]}, "curve_batches = 0: must be 1 to"),
])
def test_a_suite_with_a_bad_name_or_number_is_one_line_and_writes_nothing(files, tmp_path, capsys, change,
                                                                          message):
    suite = write_suite(tmp_path, files["data"], tmp_path / "out", **change)
    for flags in ([], ["--plan"]):
        assert cli(["compare", str(suite), *flags]) == 2
        line = error_line(capsys)
        assert line.startswith(f"megabyte compare: error: {suite}: ") and message in line, line
    assert listing(tmp_path) == ["suite.toml"]


# ---------------------------------------------------------------------------------------------
# arguments are checked against the model's config, read from its file's header, before its
# weights are loaded


def test_arguments_the_model_cannot_take_are_refused_before_its_weights_are_read(files, tmp_path, capsys,
                                                                                  monkeypatch):
    import train.export

    transformer = tmp_path / "transformer.safetensors"
    save_weights(build_model(dataclasses.replace(CONFIG, architecture="transformer", patch_size=1, local_layers=0)),
                 transformer, {"modality": "text"})
    monkeypatch.setattr(train.export, "load_found", lambda *a: pytest.fail("the weights were loaded"))
    for argv, message in [
        (["eval", str(transformer), "--data", str(files["data"]), "--strided"], "--strided shifts the patch grid"),
        (["eval", str(files["model"]), "--data", str(files["data"]), "--sliding", "65"], "--sliding 65: the "
                                                                                         "stride must be 1 to 64"),
        (["generate", "--model", str(transformer), "--prompt-image", "x.png"], "--prompt-image needs an image model"),
    ]:
        assert cli(argv) == 2, argv
        assert message in error_line(capsys)
    assert listing(tmp_path) == ["transformer.safetensors"]


# ---------------------------------------------------------------------------------------------
# a reader that goes away, and libraries that talk


def test_a_reader_that_goes_away_ends_the_command_quietly(files):
    """`megabyte config ... | head`: the pipe is closed before anything is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run([sys.executable, "-m", "tools.cli", "config", "--config", "tiny-cpu"],
                                cwd=REPO, env=ENV, stdout=write_end, stderr=subprocess.PIPE, text=True,
                                timeout=60)
    finally:
        os.close(write_end)
    assert result.returncode == 141 and result.stderr == "", result.stderr


def test_a_reader_that_goes_away_mid_output_ends_it_quietly(files, monkeypatch, capsys):
    class ClosedPipe(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert cli(["inspect", "stats", str(files["data"])]) == 141
    assert capsys.readouterr().err == ""


def fresh_logging(monkeypatch) -> None:
    """Logging as a new process has it: no handler yet (pytest's own, added for the test's call,
    are set aside until it ends)."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    for logger, level in ((root, logging.WARNING), (logging.getLogger("megabyte"), logging.NOTSET)):
        monkeypatch.setattr(logger, "level", level)
    root.manager._clear_cache()  # levels were set behind logging's back


def test_library_log_lines_do_not_precede_the_one_error_line(tmp_path, monkeypatch, capsys):
    """convert to an S3 endpoint that refuses connections: botocore's "Found credentials in
    environment variables." (INFO) stays unsaid."""
    import s3fs

    import pipeline.format.remote

    fresh_logging(monkeypatch)
    for name, value in [("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1"), ("AWS_MAX_ATTEMPTS", "1"),
                        ("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")]:
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(pipeline.format.remote, "RETRIES", 1)
    s3fs.S3FileSystem.clear_instance_cache()
    (tmp_path / "F").write_text("a document\n")
    try:
        assert cli(["convert", "text", str(tmp_path / "F"), "--out", "s3://bucket/text", "--no-progress"]) == 2
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        logging.getLogger().manager._clear_cache()
    line = error_line(capsys)
    assert line.startswith("megabyte convert: error: s3://bucket/text/") and "EndpointConnectionError" in line
    assert listing(tmp_path) == ["F"]
