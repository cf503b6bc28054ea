"""echo_plugin's own config file."""

from pydantic import BaseModel, ConfigDict, Field


class EchoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repeat: int = Field(1, ge=1, le=10)
