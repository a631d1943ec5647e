"""Settings from the environment, so the embedded lab and the shared lab server run the same code
pointed at different stores. Every setting is an environment variable:

Stores
- `MLFLOW_TRACKING_URI` (or `PHENOLAB_TRACKING_URI`): the MLflow store, e.g. `http://mlflow:5000`;
  default the embedded `sqlite:///$PHENOLAB_HOME/mlruns/mlflow.db`.
- `PHENOLAB_HOME`: where the embedded stores live (`$PHENOLAB_HOME/mlruns`), default the cwd.
- `PHENOLAB_QUEUE_URL`: the job queue. Unset → a Huey SQLite file `mlruns/queue.db`;
  `sqlite:///path/queue.db` → that file; `redis://host:6379/0` → Redis.
- `PHENOLAB_QUEUE_NAME`: the queue's name (Redis keys, SQLite rows), default `phenolab`.

API (`phenolab api`, `phenolab serve`, `phenolab submit`)
- `PHENOLAB_API_HOST` / `PHENOLAB_API_PORT`: where the API listens, default 127.0.0.1:8000.
- `PHENOLAB_API_URL`: the API's public URL, used in links and by `phenolab submit`; default
  `http://<api_host>:<api_port>`.
- `PHENOLAB_API_TOKEN`: when set, every request except `/healthz` and the docs needs
  `Authorization: Bearer <token>`; `phenolab submit` sends it.
- `PHENOLAB_MAX_BODY_BYTES`: the largest request body accepted (413 beyond), default 65536.
- `PHENOLAB_MAX_JOB_MEMORY_GB` / `PHENOLAB_MAX_JOB_TFLOPS`: the largest job a submit accepts, by
  its config's estimate (`experiments.core.cost`) of its peak memory and its work, default 16 GiB
  and 30,000 TFLOPs (the largest course default, the hw1 suite, is ~2 GiB and ~3,100 TFLOPs);
  beyond, a 422 naming the fields its size grows with.

MLflow UI (links in responses, `phenolab ui`, `phenolab serve`)
- `PHENOLAB_UI_HOST` / `PHENOLAB_UI_PORT`: where `phenolab ui|serve` starts it, default
  127.0.0.1:5000.
- `PHENOLAB_UI_URL`: its public URL for links, default `http://<ui_host>:<ui_port>`.
- `PHENOLAB_UI_WORKERS`: server processes of the UI started by `phenolab ui|serve`, default 1
  (MLflow's own default, 4, costs a core's worth of start-up on a workstation).

Workers (`phenolab worker`, `phenolab serve`)
- `PHENOLAB_GPUS`: the GPUs jobs run on: `all` (default: every visible GPU; none visible → CPU),
  `none` (CPU only) or a list of indices `0,2`.
- `PHENOLAB_JOBS_PER_GPU`: concurrent jobs per GPU (or on the CPU when there is none), default 1.
- `PHENOLAB_POLL_SECONDS`: how often an idle worker polls the queue, default 0.5.

Liveness (short values make the tests fast; defaults suit real jobs)
- `PHENOLAB_HEARTBEAT_SECONDS`: how often a running job writes its heartbeat and progress tags
  and looks for a cancel request, default 5.
- `PHENOLAB_STALE_SECONDS`: a RUNNING job whose heartbeat is older than this has lost its
  worker, default 60; a SCHEDULED job this old that is missing from the queue is re-enqueued.
- `PHENOLAB_SWEEP_SECONDS`: how often the API looks for such jobs, default 15.
- `PHENOLAB_MAX_ATTEMPTS`: runs of a job before a lost worker makes it FAILED, default 2
  (= re-queued once).
"""

from __future__ import annotations

from functools import cache

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from experiments.stores import home, tracking_uri


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PHENOLAB_", extra="ignore")

    tracking_uri: str = Field(default_factory=tracking_uri,
                              validation_alias=AliasChoices("MLFLOW_TRACKING_URI",
                                                            "PHENOLAB_TRACKING_URI"))
    queue_url: str | None = Field(None, description="sqlite:///file or redis://host:port/db")
    queue_name: str = Field("phenolab", min_length=1, max_length=100)

    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=1, le=65535)
    api_url: str | None = Field(None, description="public URL of the API, for links and clients")
    api_token: str | None = Field(None, description="bearer token required by the API")
    max_body_bytes: int = Field(65_536, ge=1024, le=16 * 2**20)
    max_job_memory_gb: float = Field(16.0, gt=0, le=1e6)
    max_job_tflops: float = Field(30_000.0, gt=0, le=1e12)

    ui_host: str = "127.0.0.1"
    ui_port: int = Field(5000, ge=1, le=65535)
    ui_url: str | None = Field(None, description="public URL of the MLflow UI, for links")
    ui_workers: int = Field(1, ge=1, le=32)

    gpus: str = Field("all", description="all | none | comma-separated GPU indices")
    jobs_per_gpu: int = Field(1, ge=1, le=64)
    poll_seconds: float = Field(0.5, gt=0, le=60)

    heartbeat_seconds: float = Field(5.0, gt=0, le=600)
    stale_seconds: float = Field(60.0, gt=0, le=86_400)
    sweep_seconds: float = Field(15.0, gt=0, le=3600)
    max_attempts: int = Field(2, ge=1, le=10)

    @model_validator(mode="after")
    def _liveness(self) -> Settings:
        """A stale time within two heartbeats would declare every running job lost."""
        if self.stale_seconds <= 2 * self.heartbeat_seconds:
            raise ValueError(f"PHENOLAB_STALE_SECONDS ({self.stale_seconds}) must exceed twice "
                             f"PHENOLAB_HEARTBEAT_SECONDS ({self.heartbeat_seconds})")
        return self

    @property
    def mlflow_ui(self) -> str:
        return (self.ui_url or f"http://{self.ui_host}:{self.ui_port}").rstrip("/")

    @property
    def api(self) -> str:
        return (self.api_url or f"http://{self.api_host}:{self.api_port}").rstrip("/")

    @property
    def queue(self) -> str:
        """The queue's URL, the embedded SQLite file when none is set."""
        return self.queue_url or f"sqlite:///{home() / 'queue.db'}"

    def run_link(self, experiment_id: str, run_id: str) -> str:
        return f"{self.mlflow_ui}/#/experiments/{experiment_id}/runs/{run_id}"


@cache
def settings() -> Settings:
    return Settings()
