"""CPU or GPU? The routing classifier, documented in docs/routing.md.

Explicit resources win: a task that says `resources.class` (or asks for VRAM) gets what
it asked for, and a registered skill brings its own needs. Otherwise the classifier adds
up evidence into a score between 0 (surely CPU) and 1 (surely GPU) and routes to the GPU
at 0.5 or more. The score and the reasons are stored on the task and shown in the UI, so
an operator can see why a task went where it did.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Kinds whose words point at accelerator work, and their weight.
_GPU_WORDS = {
    "train": 0.45, "finetune": 0.5, "fine-tune": 0.5, "lora": 0.45, "embed": 0.3, "embedding": 0.3,
    "inference": 0.3, "generate": 0.2, "diffusion": 0.5, "image": 0.25, "vision": 0.3, "ocr": 0.25,
    "transcribe": 0.3, "whisper": 0.4, "rerank": 0.2, "gpu": 0.6, "cuda": 0.6, "vllm": 0.5,
}
_CPU_WORDS = {
    "http": 0.3, "fetch": 0.3, "scrape": 0.3, "email": 0.35, "report": 0.2, "etl": 0.3, "sql": 0.3,
    "parse": 0.2, "summarize": 0.1, "notify": 0.35, "webhook": 0.35, "echo": 0.4, "sleep": 0.4,
}
# Models served by a remote API run on someone else's GPU: the caller needs a CPU.
_API_MODEL = re.compile(r"^(gpt-|o[1-9]|claude|gemini|mistral-(large|small|medium)|command|text-embedding)", re.I)
# Open weights served locally need a GPU.
_LOCAL_MODEL = re.compile(r"(llama|qwen|mixtral|mistral-7b|phi-|gemma|deepseek|whisper|stable-diffusion|sdxl|flux|bge-|e5-)", re.I)


@dataclass(frozen=True)
class Route:
    resource_class: str
    vram_mb: int | None
    score: float | None
    reason: str


def route(*, kind: str, payload: dict, model: str = "", resources: dict | None = None, skill=None) -> Route:
    resources = resources or {}
    if resources.get("class") or resources.get("vram_mb"):
        cls = resources.get("class") or "gpu"
        return Route(cls, resources.get("vram_mb") if cls == "gpu" else None, None, "explicit resources")
    if skill is not None:
        return Route(skill.resource_class, skill.vram_mb, None, f"skill {skill.name} declares {skill.resource_class}")

    score, reasons = 0.5, []
    words = re.split(r"[^a-z0-9-]+", kind.lower())
    for word in words:
        if word in _GPU_WORDS:
            score += _GPU_WORDS[word]
            reasons.append(f"kind '{word}' +{_GPU_WORDS[word]:.2f}")
        if word in _CPU_WORDS:
            score -= _CPU_WORDS[word]
            reasons.append(f"kind '{word}' -{_CPU_WORDS[word]:.2f}")
    model = model or str(payload.get("model") or "")
    if model:
        if _API_MODEL.search(model):
            score -= 0.4
            reasons.append(f"model {model} is served by an API -0.40")
        elif _LOCAL_MODEL.search(model):
            score += 0.4
            reasons.append(f"model {model} runs locally +0.40")
    if payload.get("gpu") is True:
        score += 0.5
        reasons.append("payload asks for a gpu +0.50")
    if isinstance(payload.get("batch_size"), int) and payload["batch_size"] >= 32:
        score += 0.15
        reasons.append("large batch +0.15")
    if not reasons:
        score -= 0.1
        reasons.append("no GPU evidence -0.10")
    score = max(0.0, min(1.0, score))
    cls = "gpu" if score >= 0.5 else "cpu"
    vram = None
    if cls == "gpu":
        vram = int(payload["vram_mb"]) if isinstance(payload.get("vram_mb"), int) else 8192
    return Route(cls, vram, round(score, 3), "; ".join(reasons))
