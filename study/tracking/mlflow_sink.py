"""The MLflow sink: one parent run per study, one nested run per maskstudy run.

Nested runs are named ``task/model/masker/seed`` and tagged ``study, task, model, masker,
masker_kind, seed, run_id, status`` (``role`` tells the study's parent run from its runs). A run
carries the flattened training and masker parameters as params, ``train_loss``,
``validation/<metric>`` and ``eval/<metric>`` at ``step = epoch``, and ``final/<metric>``,
``final/value`` (the primary metric), ``realised_mask_rate`` and ``wall_time_s`` at the final
step; a failed run is ``FAILED`` with its last error in the ``error`` tag. Runs are found again by
their ``run_id`` tag, so pushing twice never duplicates one; a failed run that later succeeds is
updated in place. Tables and the report are artifacts of the parent run.

Imported only when a protocol lists ``sink: mlflow`` (``pip install 'maskstudy[mlflow]'``).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from urllib.parse import unquote

SQLITE = "sqlite:///"
BATCH = 1000  # MLflow's limit of metrics per log_batch call
PARAM_BATCH = 100  # ... and of params
ERROR_CHARS = 5000  # the error tag keeps the message's end (MLflow caps tag values at 8000)


def resolve_uri(uri: str | None, base_dir: Path, store_path: Path) -> str:
    """``sqlite:///relative/path`` relative to the protocol's folder; no URI: a SQLite file beside
    the store (``runs/demo.sqlite`` → ``runs/demo.mlflow.sqlite``). Other URIs are left as written."""
    if uri is None:
        return SQLITE + str(store_path.with_name(store_path.stem + ".mlflow.sqlite").absolute())
    if uri.startswith(SQLITE) and not uri[len(SQLITE):].startswith("/"):
        return SQLITE + str((base_dir / unquote(uri[len(SQLITE):])).absolute())
    return uri


def _ms(t: float | None) -> int:
    return int((t if t is not None else time.time()) * 1000)


class MlflowSink:
    def __init__(self, params, protocol):
        self.protocol = protocol
        self.uri = resolve_uri(params.uri, protocol.base_dir, protocol.store_path)
        self.experiment = params.experiment or protocol.name
        self.known: dict[str, tuple[str, str]] = {}  # maskstudy run_id → (MLflow run id, status tag)

    def describe(self) -> str:
        return f"mlflow at {self.uri}"

    def open(self) -> None:
        # A tracking server that is down must cost seconds, not MLflow's default minutes of retries;
        # the user's own settings win.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating initial MLflow database tables"
        logging.getLogger("alembic").setLevel(logging.WARNING)

        if self.uri.startswith(SQLITE):
            Path(self.uri[len(SQLITE):]).parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=self.uri)
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is None:
            self.experiment_id = self.client.create_experiment(self.experiment, artifact_location=self._artifacts())
        else:
            self.experiment_id = exp.experiment_id
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(self.experiment_id)
        study = self.protocol.name
        parents = [r for r in self._search("tags.role = 'study'") if r.data.tags.get("study") == study]
        if parents:
            self.parent_id = parents[0].info.run_id
        else:
            self.parent_id = self.client.create_run(
                self.experiment_id, run_name=study,
                tags={"study": study, "role": "study", "protocol": str(Path(self.protocol.source).absolute()),
                      "protocol_sha256": self.protocol.sha256}).info.run_id
        self.known = {r.data.tags["run_id"]: (r.info.run_id, r.data.tags.get("status", ""))
                      for r in self._search("tags.role = 'run'")
                      if r.data.tags.get("study") == study and "run_id" in r.data.tags}

    def _artifacts(self) -> str | None:
        """Beside a SQLite tracking file (MLflow's default would be ./mlruns in the working directory)."""
        if not self.uri.startswith(SQLITE):
            return None
        db = Path(self.uri[len(SQLITE):])
        return (db.parent / f"{db.stem}-artifacts").absolute().as_uri()

    def _search(self, filter_string: str) -> list:
        out, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], filter_string, max_results=1000, page_token=token)
            out.extend(page)
            token = page.token
            if not token:
                return out

    def push(self, runs) -> int:
        from mlflow.entities import Metric, Param, RunTag

        written = 0
        for r in runs:
            have = self.known.get(r.run_id)
            if have is not None and have[1] == r.status:
                continue  # recorded as it is: a rerun or a back-fill writes nothing twice
            if have is None:
                mid = self.client.create_run(
                    self.experiment_id, start_time=_ms(r.started_at), run_name=r.name,
                    tags={**r.tags, "role": "run", "mlflow.parentRunId": self.parent_id}).info.run_id
                params = [Param(k, str(v)) for k, v in sorted(r.params.items())]
                for i in range(0, len(params), PARAM_BATCH):
                    self.client.log_batch(mid, params=params[i:i + PARAM_BATCH])
            else:
                mid = have[0]
            when = _ms(r.finished_at)
            metrics = [Metric(k, float(v), when, epoch) for epoch, values in sorted(r.epochs.items())
                       for k, v in values.items()]
            last = max(r.epochs, default=0)
            metrics += [Metric(k, float(v), when, last) for k, v in r.final.items()]
            tags = [RunTag("status", r.status)] + ([RunTag("metric", r.tags["metric"])] if "metric" in r.tags else [])
            if r.error is not None:
                tags.append(RunTag("error", r.error[-ERROR_CHARS:]))
            for i in range(0, max(len(metrics), 1), BATCH):
                self.client.log_batch(mid, metrics=metrics[i:i + BATCH], tags=tags if i == 0 else [])
            if r.error is None and have is not None:
                try:  # a failed run that succeeded on a later attempt keeps no stale error
                    self.client.delete_tag(mid, "error")
                except Exception:  # noqa: BLE001 - the tag was never set
                    pass
            self.client.set_terminated(mid, "FINISHED" if r.status == "done" else "FAILED", end_time=when)
            self.known[r.run_id] = (mid, r.status)
            written += 1
        return written

    def log_artifacts(self, paths: list[Path], folder: str) -> None:
        for p in paths:
            if p.is_file():
                self.client.log_artifact(self.parent_id, str(p), artifact_path=folder or None)

    def close(self) -> None:
        self.client.set_terminated(self.parent_id, "FINISHED")
