"""Errors a user can act on. The CLI prints their message as one line and exits non-zero."""


class PipelineError(Exception):
    """Base class: anything the user can fix (params, data, services)."""


class ParamsError(PipelineError):
    """params.yaml is missing a key, has an unknown one, or a value out of range."""


class DataError(PipelineError):
    """An input file is missing, corrupted, of the wrong shape or dtype, or fails its hash."""


class TrackingError(PipelineError):
    """The MLflow tracking store cannot be reached or used."""


class TrainingDiverged(PipelineError):
    """The loss became NaN or infinite."""


def one_line(error: BaseException, limit: int = 200) -> str:
    """An exception's message as one line a user can read (libraries raise multi-line ones)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
