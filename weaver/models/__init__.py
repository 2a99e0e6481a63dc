"""Models: the native Weaver encoder-decoder Transformer."""

from weaver.models.weaver import DecoderCache, WeaverConfig, WeaverModel, build_weaver

__all__ = ["DecoderCache", "WeaverConfig", "WeaverModel", "build_weaver"]
