"""The live path, one package per stage in the data's order:

sources -> faces -> rings -> scheduler (scoring) -> verdicts -> bus -> server -> the browser page (web/).

Nothing here imports the offline jobs (`stream.jobs`) or the command line (`stream.cli`).
"""
