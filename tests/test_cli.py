"""The command line's surface: every command and flag that existed before stream/cli became a package keeps its
name, defaults and choices; `--help` and `alerts` stay torch-free; `serve --precision` reaches the engines."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

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
        '--out store required type=Path',
        '--top store default=8 type=int',
        '--weights store type=Path',
        '--weights-dir store type=Path',
        '<path> store type=Path metavar=PATH',
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
        '<command> scan|eval|serve|train|explain|alerts|models|engines required',
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
    assert list(table) == list(EXPECTED)
    for command, options in EXPECTED.items():
        missing = sorted(set(options) - set(table[command]))
        assert not missing, f"dfstream {command}: changed or lost {missing}"
