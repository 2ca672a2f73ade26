"""The head of a knowledge-base entry on the ``gopwatch.kb`` topic (its vectors follow it in
binary; see :mod:`models.kb.wire`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class KbEntryHead(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = 1
    example_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
    category: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{1,63}$")]
    negative: bool = False
    notes: Annotated[str, Field(max_length=1000)] = ""
    source_sha256: Annotated[str, Field(pattern=r"^([0-9a-f]{64})?$")] = ""
    modality: Literal["visual", "text", "audio"] = "visual"
    text: Annotated[str, Field(max_length=1000)] = ""  # a text example's line
    count: Annotated[int, Field(ge=1, le=1_000_000)]
    dim: Annotated[int, Field(ge=1, le=4096)]
    sound: Annotated[int, Field(ge=0, le=1_000_000)] = 0  # a clip's soundtrack vectors (audio space)
    marks: Annotated[int, Field(ge=0, le=1_000_000)] = 0  # landmarks of its sound (int32 pairs)
