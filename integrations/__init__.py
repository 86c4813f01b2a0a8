"""chainfs.integrations: adapters that let real inference engines keep their KV in chainfs.

- `chainfs.integrations.vllm`: `ChainfsConnector`, a vLLM KV connector over `chainfs.kvcache`.
- `chainfs.integrations.hf_model`: a local Llama model and tokenizer for an offline machine.

Both need the `vllm` extra (its own venv, `.venv-vllm`; see the Makefile).
"""
