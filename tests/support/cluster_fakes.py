"""The nodes' cheap pipeline for the cluster tests (`serve --ray --node-pipeline support.cluster_fakes:pipeline`): the
serve fakes' one face in every frame and an engine that calls it fake, so the cameras' real decoded clips give
overlays at once and every track opens an alert that stays open (what a lost node must leave behind)."""

from __future__ import annotations

from support.serve_fakes import AlwaysFake, OneFace


def pipeline(config, device):
    return [AlwaysFake()], OneFace(), None
