"""`grpo-lab ui`: MLflow's UI on the workspace's store, opened on an experiment's training runs.

MLflow 3 opens an experiment in its GenAI view (traces, prompts, "Evaluation runs"), where training
runs are under "Training runs"; its Machine learning view ("Model training" on the sidebar's switch)
shows them as the experiment's runs. The URL printed here opens that view on the experiment's runs:
the UI takes the view from the URL's ``workflowType`` parameter (``machine_learning``).
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional

from grpo_lab.conventions import client
from grpo_lab.errors import GrpoLabError


class UIError(GrpoLabError, ValueError):
    """No store or experiment to show; the message says what to do."""


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def ui_command(uri: str, *, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """The command line that serves MLflow's UI on the store ``uri`` (with this Python's MLflow)."""
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]


def runs_url(base: str, experiment_id: str) -> str:
    """The page of experiment ``experiment_id``'s runs in MLflow's Machine learning view at ``base``."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def find_experiment(uri: str, name: Optional[str] = None) -> tuple[str, str]:
    """(id, name) of the experiment ``name`` in the store ``uri``, or without a name the experiment of
    the run started last (the one just trained)."""
    store = client(uri)
    if name is not None:
        found = store.get_experiment_by_name(name)
        if found is None:
            names = ", ".join(e.name for e in store.search_experiments()) or "none"
            raise UIError(f"no experiment {name!r} in {uri}; its experiments: {names}")
        return found.experiment_id, found.name
    experiments = {e.experiment_id: e.name for e in store.search_experiments()}
    latest = store.search_runs(list(experiments), order_by=["attributes.start_time DESC"], max_results=1) \
        if experiments else []
    if not latest:
        raise UIError(f"no runs in {uri} yet; train one first (grpo-lab demo, or grpo-lab train CONFIG)")
    experiment_id = latest[0].info.experiment_id
    return experiment_id, experiments[experiment_id]


def open_ui(uri: str, *, experiment: Optional[str] = None, host: str = "127.0.0.1", port: int = 5000,
            start: bool = True, echo: Callable[[str], object] = print) -> int:
    """Print the URL of the experiment's training runs and serve the UI on the store ``uri`` until
    interrupted (``start=False``: print only). A tracking server (``http(s)://``) is already serving:
    only its URL is printed."""
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        raise UIError(f"no MLflow store at {uri}; train a run first (grpo-lab demo), or pass --tracking-uri")
    experiment_id, name = find_experiment(uri, experiment)
    base = uri if is_server(uri) else f"http://{host}:{port}"
    echo(f"MLflow UI: {runs_url(base, experiment_id)}")
    echo(f"  experiment '{name}', its runs in MLflow's Machine learning view (\"Model training\" on the sidebar's "
         "switch; in the GenAI view they are under \"Training runs\")")
    if is_server(uri):
        return 0
    command = ui_command(uri, host=host, port=port)
    echo(f"  serving {uri} with: {shlex.join(command)}   (Ctrl-C stops it)")
    if not start:
        return 0
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:
        return 0
