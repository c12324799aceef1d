FROM python:3.11-slim
WORKDIR /app
ENV PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=1 MEMSVC_DATA_DIR=/data MEMSVC_HOST=0.0.0.0
# CPU torch from the PyTorch index keeps the image small; use a CUDA base image for a GPU gate model.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY memsvc ./memsvc
COPY storage ./storage
COPY api ./api
COPY evals ./evals
COPY skills ./skills
COPY clients/python ./clients/python
# the Python client: `memsvc mcp` (stdio) reaches the API through it
RUN pip install ./clients/python && pip install -e .
EXPOSE 8080
CMD ["memsvc", "serve", "--host", "0.0.0.0", "--port", "8080"]
