from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Every config section refuses unknown keys, so a typo fails at start-up instead of being ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)
