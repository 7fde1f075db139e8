# Gateway / consumers image (the vLLM worker uses the upstream vllm/vllm-openai image).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY gateway gateway
COPY consumers consumers
COPY model model
COPY ops ops
RUN pip install --no-cache-dir ".[postgres]"
USER 65534
ENTRYPOINT []
CMD ["impression-gateway", "serve"]
