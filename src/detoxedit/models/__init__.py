"""Models: loading, chat formatting, batched generation and architecture adapters."""

from detoxedit.models.adapter import ArchitectureSpec, LinearView, ModelAdapter, declare_architecture, get_adapter
from detoxedit.models.chat import ChatFormat
from detoxedit.models.generation import Batching, Sampling, generate, generate_ids
from detoxedit.models.loading import load_model

__all__ = [
    "ArchitectureSpec", "Batching", "ChatFormat", "LinearView", "ModelAdapter", "Sampling",
    "declare_architecture", "generate", "generate_ids", "get_adapter", "load_model",
]
