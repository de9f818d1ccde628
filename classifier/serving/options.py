"""One prediction request, parsed from whichever form it came in (form, JSON, query, CLI):
one or more uploads (``PredictRequest``) and the options they share (``Options``)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from classifier.errors import ClassifierError, InvalidRequest
from classifier.models import labels

DEFAULT_TOP_K = 3
MAX_TOP_K = 20
SERVERS = ("local", "remote", "custom")
_WHOLE_NUMBER = re.compile(r"\s*[0-9]+\s*")


@dataclass(frozen=True)
class Options:
    """What a request asks, whichever of the three HTTP forms (or the CLI) it came from; its
    fields are the option names every form takes (``OPTION_NAMES``)."""

    model: str | None = None
    """A registered model's name as the client wrote it (``None``: the answering server's
    default); the classifier resolves it once, to a ``ModelSpec`` it passes on."""
    top_k: int = DEFAULT_TOP_K
    server: str = "local"
    remote_url: str | None = None
    explain: bool = False
    explain_class: str | None = None
    """A class_id or label to explain; ``None``: the top prediction."""

    @classmethod
    def parse(cls, options: Mapping[str, object]) -> Options:
        """Validate loosely typed options (form fields, JSON values, query parameters). Naming
        a class to explain asks for an explanation: ``explain_class`` alone implies ``explain``."""
        _refuse_nulls(options)
        explain_class = _explain_class(options)
        return cls(
            model=_text(options, "model"),
            top_k=_top_k(options.get("top_k")),
            server=_server(options.get("server")),
            remote_url=_text(options, "remote_url"),
            explain=_flag(options, "explain") or explain_class is not None,
            explain_class=explain_class,
        )

    def forwarded_options(self) -> dict[str, str]:
        """The options a remote instance needs to answer this request as this one would."""
        fields = {"top_k": str(self.top_k), **({"model": self.model} if self.model else {})}
        if self.explain:
            fields["explain"] = "1"
        if self.explain_class:
            fields["explain_class"] = self.explain_class
        return fields


OPTION_NAMES = tuple(option.name for option in dataclasses.fields(Options))


@dataclass(frozen=True)
class Upload:
    """One image of a request: its bytes, or why they could not be read (a JSON entry that
    is not base64), which becomes that image's error and no other's."""

    filename: str
    data: bytes = b""
    problem: ClassifierError | None = None


@dataclass(frozen=True)
class PredictRequest:
    """One or more images classified with the same options.

    ``single``: the client sent one image in the single-image form (one ``image`` part, JSON
    ``image``, a raw body). Its error is then the request's error, found before any model is
    touched, its decoded photo is kept (the page draws an explanation over it), and the HTTP
    edge answers in the single-image shape; otherwise each image's error stays in its place."""

    uploads: tuple[Upload, ...]
    options: Options = Options()
    single: bool = False

    @classmethod
    def one(cls, image: bytes, options: Options = Options(), filename: str = "image") -> PredictRequest:
        return cls((Upload(filename or "image", image),), options, single=True)

    @classmethod
    def many(cls, uploads: Sequence[Upload], options: Options = Options()) -> PredictRequest:
        return cls(tuple(uploads), options)


def default_filename(index: int) -> str:
    """The name of the ``index``-th image (from 0) when the client gave none: ``image-1``, ..."""
    return f"image-{index + 1}"


def _refuse_nulls(options: Mapping[str, object]) -> None:
    """A JSON null is not an option's default (leaving it out, or "", is): openapi.json says
    what each option takes, and null is none of it."""
    for name in OPTION_NAMES:
        if name in options and options[name] is None:
            raise InvalidRequest(f"{name} is null: leave it out (or send it empty) for its default.")


def _text(options: Mapping[str, object], name: str) -> str | None:
    value = options.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string.")
    return value.strip()


_FLAGS = {"1": True, "true": True, "0": False, "false": False}


def _flag(options: Mapping[str, object], name: str) -> bool:
    """``1``/``true``/``0``/``false`` as text (any case), or as JSON ``true``/``false``/``1``/``0``;
    default off."""
    value = options.get(name)
    if value is None or value == "":
        return False
    if isinstance(value, (bool, int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _FLAGS:
        return _FLAGS[value.strip().lower()]
    raise InvalidRequest(f"{name} must be 1, true, 0 or false.")


def _explain_class(options: Mapping[str, object]) -> str | None:
    """A class_id (``n02123159``) or label (``tabby``) of the 1000 ImageNet classes."""
    name = _text(options, "explain_class")
    if name is not None and not labels.class_numbers(name):
        raise InvalidRequest(f"explain_class {name[:100]!r} is neither an ImageNet class_id (like n02123159) "
                             "nor a label (like tabby).")
    return name


def _top_k(value: object) -> int:
    if value is None or value == "":
        return DEFAULT_TOP_K
    try:
        if (isinstance(value, bool) or (isinstance(value, float) and not value.is_integer())
                or (isinstance(value, str) and not _WHOLE_NUMBER.fullmatch(value))):
            raise ValueError
        top_k = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        top_k = 0
    if not 1 <= top_k <= MAX_TOP_K:
        raise InvalidRequest(f"top_k must be a whole number from 1 to {MAX_TOP_K}.")
    return top_k


def _server(value: object) -> str:
    if value is None or value == "":
        return "local"
    if value not in SERVERS:
        raise InvalidRequest(f"server must be one of: {', '.join(SERVERS)}.")
    return str(value)
