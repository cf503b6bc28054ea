"""The payload of ``echo_events``."""

from pydantic import BaseModel, ConfigDict, Field


class EchoEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    word: str = Field(min_length=1, max_length=40)
