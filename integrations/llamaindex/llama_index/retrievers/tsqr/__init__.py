"""TongSearch-QR for LlamaIndex under LlamaIndex's integration namespace (``llama_index.retrievers.tsqr``).

The classes live in the ``tsqr`` package (``tsqr_plugins.adapters.llamaindex``); this package only
makes them importable the way LlamaIndex integrations are.
"""

from tsqr_plugins.adapters.llamaindex import TongSearchQRQueryTransform, TongSearchQRRetriever

__all__ = ["TongSearchQRQueryTransform", "TongSearchQRRetriever"]
