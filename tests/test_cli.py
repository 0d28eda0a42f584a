"""The command line's surface: every command and flag that existed before stream/cli became a package keeps its
name, defaults and choices; `--help` and `alerts` stay torch-free; `serve --precision` reaches the engines."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from support.parts import require
from stream.cli import EXIT_USAGE, build_parser, main

REPO = Path(__file__).resolve().parents[1]

# Written from the parser before the split into one module per command: each command's options as
# "FLAGS KIND [default=] [choices=] [nargs=] [required] [type=] [metavar=]", plus its set_defaults().
EXPECTED = {
    'scan': [
        '--backend store default=auto choices=auto,torch,onnx,tensorrt',
        '--cache-dir store type=Path',
        '--calibrate store nargs=+ type=Path metavar=MEDIA',
        '--device store',
        '--faces store default=mtcnn choices=mtcnn,none',
        '--fps store type=float',
        '--json storetrue',
        '--model append dest=models metavar=NAME',
        '--offline storetrue',
        '--precision store default=fp32 choices=fp32,fp16,int8',
        '--weights store type=Path',
        '--weights-dir store type=Path',
        '<paths> store nargs=+ type=Path metavar=PATH',
    ],
    'eval': [
        '--backend store default=auto choices=auto,torch,onnx,tensorrt',
        '--cache-dir store dest=crop_cache_dir type=Path metavar=DIR',
        '--device store',
        '--faces store default=mtcnn choices=mtcnn,none',
        '--fps store type=float',
        '--model append dest=models metavar=NAME',
        '--no-cache storetrue',
        '--offline storetrue',
        '--out store required type=Path metavar=DIR',
        '--threshold store type=float',
        '--weights store type=Path',
        '--weights-dir store type=Path',
        '<dataset> store type=Path metavar=DATASET',
        'set cache_dir=None',
        'set calibrate=None',
        'set precision=fp32',
    ],
    'serve': [
        '--backend store choices=auto,torch,onnx,tensorrt',
        '--config store type=Path',
        '--data-dir store type=Path',
        '--device store',
        '--host store',
        '--log-level store default=INFO',
        '--loop storetrue',
        '--model append dest=models metavar=NAME',
        '--offline storetrue',
        '--port store type=int',
        '--redis store metavar=URL',
        '--source append dest=sources default=[] metavar=URL_OR_PATH',
        '--token store',
        '--weights-dir store type=Path',
    ],
    'cluster head': [
        '--cameras store default=0 type=_count',
        '--host store',
        '--num-cpus store type=int',
        '--object-store-mb store type=int',
        '--port store default=6380 type=int',
    ],
    'cluster worker': [
        '--address store required metavar=HOST:PORT',
        '--cameras store required type=_count',
        '--host store',
        '--num-cpus store type=int',
        '--object-store-mb store type=int',
    ],
    'cluster status': [
        '--address store required metavar=HOST:PORT',
        '--json storetrue',
    ],
    'cluster': [
        '<cluster_command> head|worker|status required',
    ],
    'train': [
        '--backbone-weights store type=Path metavar=FILE',
        '--batch-size store type=int',
        '--cache-dir store type=Path',
        '--device store',
        '--epochs store type=int',
        '--faces store default=mtcnn choices=mtcnn,none',
        '--finetune storetrue',
        '--fps store type=float',
        '--freeze-epochs store type=int',
        '--grid store default=full choices=full,small',
        '--init store default=MCG-NJU/videomae-base-finetuned-kinetics metavar=FOLDER_OR_HUB_ID',
        '--jobs store default=1 type=int',
        '--lr store type=float',
        '--lr-decay store type=float',
        '--mlflow storetrue',
        '--mlflow-experiment store default=dfstream-train',
        '--no-cache storetrue',
        '--no-progress storefalse dest=progress default=True',
        '--offline storetrue',
        '--out store required type=Path metavar=DIR',
        '--patience store type=int',
        '--per-video store type=int',
        '--resume storetrue',
        '--sbi storetrue',
        '--seed store default=0 type=int',
        '--select store choices=accuracy,auc',
        '--size store type=int',
        '--steps store default=30 type=int',
        '--val-fraction store default=0.2 type=float',
        '--weights-dir store type=Path',
        '--workers store default=0 type=int',
        '<dataset> store type=Path metavar=DATASET',
        '<kind> store choices=logreg,lstm,videomae,xception metavar=KIND',
    ],
    'explain': [
        '--device store',
        '--faces store default=mtcnn choices=mtcnn,none',
        '--fps store type=float',
        '--model append dest=models metavar=NAME',
        '--offline storetrue',
        '--out store type=Path',  # not required with --alert (the alert's evidence folder)
        '--top store default=8 type=int',
        '--weights store type=Path',
        '--weights-dir store type=Path',
        '<path> store nargs=? type=Path metavar=PATH',
        '--alert store metavar=ID',
        '--cite storetrue',
        '--data-dir store type=Path',
        '--kb append type=Path metavar=KB_DIR',
        '--embed-model store metavar=NAME_OR_DIR',
        '--llm-url store',
        '--llm-model store',
        '--llm-timeout store type=float',
    ],
    'kb build': [
        '--embed-model store metavar=NAME_OR_DIR',
        '--no-dense storetrue',
        '--offline storetrue',
        '--out store required type=Path metavar=KB_DIR',
        '<papers> store type=Path metavar=PAPERS_DIR',
    ],
    'kb': [
        '<kb_command> build required',
    ],
    'alerts': [
        '--consumer store metavar=NAME',
        '--data-dir store type=Path',
        '--follow/-f storetrue',
        '--group store metavar=NAME',
        '--json storetrue',
        '--namespace store',
        '--redis store metavar=URL',
    ],
    'models list': [
        '--json storetrue',
        '--weights-dir store type=Path',
    ],
    'models pull': [
        '--weights-dir store type=Path',
        '<names> store nargs=+ metavar=NAME',
    ],
    'models': [
        '<action> list|pull required',
    ],
    'engines build': [
        '--backend store default=onnx choices=auto,torch,onnx,tensorrt',
        '--cache-dir store type=Path',
        '--calibrate store nargs=+ type=Path metavar=MEDIA',
        '--device store',
        '--offline storetrue',
        '--precision store default=fp32 choices=fp32,fp16,int8',
        '--weights store type=Path',
        '--weights-dir store type=Path',
        '<name> store metavar=NAME',
    ],
    'engines': [
        '<action> build required',
    ],
    '': [
        '<command> scan|eval|calibrate|baseline|serve|cluster|train|explain|kb|alerts|models|engines required',
    ],
}


def _describe(action: argparse.Action) -> str:
    kind = type(action).__name__.strip("_").removesuffix("Action").lower()
    parts = ["/".join(action.option_strings) or f"<{action.dest}>", kind]
    if action.option_strings and action.dest != action.option_strings[0].lstrip("-").replace("-", "_"):
        parts.append(f"dest={action.dest}")
    if action.default is not None and kind != "storetrue":
        parts.append(f"default={action.default}")
    if action.choices is not None:
        parts.append(f"choices={','.join(action.choices)}")
    if action.nargs not in (None, 0):
        parts.append(f"nargs={action.nargs}")
    if action.required and action.option_strings:
        parts.append("required")
    if action.type is not None:
        parts.append(f"type={action.type.__name__}")
    if action.metavar is not None:
        parts.append(f"metavar={action.metavar}")
    return " ".join(parts)


def parser_table(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Command path ('' for the top level, 'models pull') -> its options described as in EXPECTED."""
    table, here = {}, []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            here.append(f"<{action.dest}> {'|'.join(action.choices)}" + (" required" if action.required else ""))
            for name, sub in action.choices.items():
                table.update(parser_table(sub, (*prefix, name)))
        else:
            here.append(_describe(action))
    here += [f"set {k}={v}" for k, v in sorted(parser._defaults.items()) if not callable(v)]
    table[" ".join(prefix)] = sorted(here)
    return table


def test_every_command_and_flag_keeps_its_defaults():
    table = parser_table(build_parser())
    assert [c for c in table if c in EXPECTED] == list(EXPECTED)  # new commands may join; none may go
    for command, options in EXPECTED.items():
        missing = sorted(set(options) - set(table[command]))
        assert not missing, f"dfstream {command}: changed or lost {missing}"


def test_new_serve_options_and_shared_choices():
    from engines.backends import BACKENDS, PRECISIONS
    from stream.cli import common

    assert (common.BACKENDS, common.PRECISIONS) == (BACKENDS, PRECISIONS)  # one list, in engines.choices
    serve = parser_table(build_parser())["serve"]
    assert "--precision store choices=fp32,fp16,int8" in serve
    assert "--calibrate store nargs=+ type=Path metavar=MEDIA" in serve


# -- no torch for the parser and `alerts` ------------------------------------------------------------------------

NO_TORCH = """
import sys
from stream.cli import main
for argv in ([{help}], ["alerts", "--data-dir", {data!r}]):
    try:
        main(argv)
    except SystemExit:
        pass
heavy = sorted(m for m in ("torch", "engines.base", "engines.registry", "aiohttp", "rich", "av") if m in sys.modules)
assert not heavy, heavy
"""


@pytest.mark.parametrize("help_argv", ["'--help'", "'serve', '--help'", "'scan', '--help'", "'train', '--help'"])
def test_help_and_alerts_import_no_torch(help_argv, tmp_path):
    code = NO_TORCH.format(help=help_argv, data=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "no alerts yet" in done.stderr


def test_alerts_as_a_module_runs_without_warnings(tmp_path):
    done = subprocess.run([sys.executable, "-W", "error", "-m", "stream.cli.alerts", "--data-dir", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == f"dfstream alerts: no alerts yet ({tmp_path / 'alerts.jsonl'} does not exist)"


# -- serve --precision -------------------------------------------------------------------------------------------

def test_serve_precision_reaches_the_config_and_the_engines(monkeypatch, tmp_path):
    from stream.cli import serve

    args = build_parser().parse_args(["serve", "--precision", "int8", "--backend", "onnx", "--calibrate",
                                      str(tmp_path / "faces.mp4"), "--model", "meso4-df", "--offline",
                                      "--data-dir", str(tmp_path)])
    config = serve.config_from_args(args)
    assert (config.precision, config.backend) == ("int8", "onnx")
    assert serve.config_from_args(build_parser().parse_args(["serve"])).precision == "fp32"  # the config's default

    seen = []
    from types import SimpleNamespace

    from stream.cli.common import MediaCrops, int8_crops
    from stream.live import assembly

    def prepared(name, options, weights_file=None):
        seen.append((name, options))
        return SimpleNamespace(name=name, weights_path=None, weights_sha256="0" * 64, calibration=None)

    monkeypatch.setattr(assembly, "prepare_engine", prepared)
    crops = int8_crops(args.calibrate)
    built = assembly.serve_engines(config, "cpu", args.offline, crops)
    assert [e.name for e in built.engines] == ["meso4-df"] and built.ensemble is None
    options = seen[0][1]
    assert (options.backend, options.precision, options.int8_crops, options.offline) == \
        ("onnx", "int8", MediaCrops((tmp_path / "faces.mp4",)), True)


def test_serve_precision_from_yaml_and_refused_when_unknown(tmp_path):
    from stream.config.serve import ConfigError, load_config

    path = tmp_path / "serve.yaml"
    path.write_text("precision: int8\nbackend: onnx\n")
    assert load_config(path).precision == "int8"
    assert load_config(path, {"precision": "fp16"}).precision == "fp16"  # the command line wins
    with pytest.raises(ConfigError, match="'int4' is not one of fp32, fp16, int8"):
        load_config(None, {"precision": "int4"})


def test_serve_fp16_on_the_cpu_is_refused_by_the_engine_preparation(capsys):
    weights = REPO.parent / "shared" / "weights" / "mesonet"
    if not (weights / "Meso4_DF.h5").exists():
        require("the shared MesoNet weights", f"not found in {weights}")
    code = main(["serve", "--precision", "fp16", "--backend", "onnx", "--weights-dir", str(weights), "--offline",
                 "--device", "cpu"])
    assert code == EXIT_USAGE
    assert "dfstream serve: ONNX Runtime on the CPU has no fast fp16" in capsys.readouterr().err


# -- usage errors ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "message"), [
    ([], "the following arguments are required: command"),
    (["serve", "--precision", "int4"], "argument --precision: invalid choice: 'int4'"),
    (["scan", "x.mp4", "--backend", "cuda"], "argument --backend: invalid choice: 'cuda'"),
    (["models"], "the following arguments are required: action"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_argparse_usage_errors_exit_2_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == EXIT_USAGE
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["engines", "build", "meso4-df", "--backend", "auto"],
     "dfstream engines: engines build needs a concrete --backend: onnx or tensorrt"),
    (["explain", "x.mp4", "--out", "out", "--model", "meso4-df", "--model", "meso4-f2f"],
     "dfstream explain: explain takes exactly one --model"),
    (["serve", "--source", "ftp://camera/stream"], "dfstream serve: "),
    (["scan", "x.mp4", "--model", "no-such-model", "--offline"], "dfstream scan: "),
])
def test_bad_input_exits_2_with_one_line(argv, message, capsys):
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err


def test_bugs_are_not_mistaken_for_usage_errors(monkeypatch):
    from stream.cli import models

    def broken(args):
        raise KeyError("a bug")

    monkeypatch.setattr(models, "run_list", broken)
    with pytest.raises(KeyError):
        main(["models", "list"])
