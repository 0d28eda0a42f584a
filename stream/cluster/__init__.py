"""Scale-out on Ray: cameras spread over many machines, one page and one alert stream for all.

Ray is the control plane only: it starts nodes (`head.py`, `worker.py` wrap `ray start`), notices lost ones
(the head's tuned health checks, `settings.py`) and runs two kinds of actor. The director (`director.py`, one
named detached actor on the head) owns the camera -> node assignment, so each camera has exactly one owner;
`placement.py` is its pure placement rule. One node worker (`node_actor.py`) per camera node holds an ordinary
`LiveService` for every camera placed there, so engines load once per node and MTCNN and the engines still see
one batch per pass. Redis stays the data plane: node workers publish overlays, status and alerts exactly as
`serve --redis` does, and the gateway (`gateway.py`, `serve --ray`) reads them back for its page.

Nothing under `stream.live` imports this package or Ray: `serve` loads it only with `--ray`.
"""
