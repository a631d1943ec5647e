"""Settings from the environment (prefix PHENOLAB_), so the embedded lab and the shared lab
server run the same code pointed at different stores."""

from __future__ import annotations

from functools import cache

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from experiments.tracking import tracking_uri


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PHENOLAB_", extra="ignore")

    tracking_uri: str = Field(default_factory=tracking_uri,
                              validation_alias=AliasChoices("MLFLOW_TRACKING_URI",
                                                            "PHENOLAB_TRACKING_URI"))
    ui_host: str = "127.0.0.1"
    ui_port: int = Field(5000, ge=1, le=65535)
    ui_url: str | None = Field(None, description="public URL of the MLflow UI, for links")

    @property
    def mlflow_ui(self) -> str:
        return (self.ui_url or f"http://{self.ui_host}:{self.ui_port}").rstrip("/")

    def run_link(self, experiment_id: str, run_id: str) -> str:
        return f"{self.mlflow_ui}/#/experiments/{experiment_id}/runs/{run_id}"


@cache
def settings() -> Settings:
    return Settings()
