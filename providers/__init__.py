"""Model providers behind one streaming interface.

``providers.base`` holds the typed events, ``ProviderError`` and the ``ChatProvider`` protocol;
``providers.registry`` maps names (local, ollama, openai, gemini) to adapters, imported lazily.
This package imports no Django and reads no environment: settings arrive as arguments.
See docs/providers.md.
"""
