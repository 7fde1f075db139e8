# Gateway / consumers image (the vLLM worker uses the upstream vllm/vllm-openai image).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY gateway gateway
COPY consumers consumers
COPY model model
COPY ops ops
COPY cli cli
RUN pip install --no-cache-dir ".[postgres]"
# The intake journal (README "Guarantees") lives on a volume the service user owns.
RUN mkdir -p /var/lib/impression-gateway/journal && chown -R 65534 /var/lib/impression-gateway
USER 65534
ENTRYPOINT []
CMD ["impression-gateway", "serve"]
