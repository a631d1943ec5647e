# Phenolab: one image for the lab server's API (`phenolab api`), its GPU workers
# (`phenolab worker`) and the MLflow tracking server (`mlflow server`). See docker-compose.yml.
#
# PyPI's x86_64 torch wheels are CUDA builds: the same image runs on CPU and on NVIDIA GPUs
# (the NVIDIA container toolkit brings the driver in at run time).

# ---- build: a virtual environment with the pinned dependencies, and the project as a wheel
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/phenolab
# The dependencies alone first (the ~6 GB layer): cached until pyproject.toml changes.
COPY pyproject.toml deploy/requirements-server.txt /src/
RUN python -c "import tomllib; print(*tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" > /src/requirements.txt \
 && /opt/phenolab/bin/pip install -r /src/requirements.txt -r /src/requirements-server.txt
COPY README.md /src/
COPY experiments /src/experiments
COPY service /src/service
RUN /opt/phenolab/bin/pip wheel --no-deps --wheel-dir /wheels /src

# ---- the image: no compilers, no build context, a non-root user
FROM python:3.11-slim-bookworm
ENV PATH=/opt/phenolab/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/home/phenolab \
    MPLCONFIGDIR=/tmp/matplotlib \
    PHENOLAB_HOME=/var/lib/phenolab \
    PHENOLAB_DATA_DIR=/data \
    PHENOLAB_API_HOST=0.0.0.0
RUN useradd --create-home --uid 1000 --user-group phenolab \
 && mkdir -p /data /srv/mlflow /var/lib/phenolab \
 && chown phenolab:phenolab /data /srv/mlflow /var/lib/phenolab
COPY --from=build /opt/phenolab /opt/phenolab
COPY --from=build /wheels /tmp/wheels
COPY deploy/healthcheck.py /usr/local/bin/phenolab-healthcheck
COPY deploy/mlflow-auth.ini /etc/phenolab/mlflow-auth.ini
RUN pip install --no-deps --no-index /tmp/wheels/*.whl && rm -rf /tmp/wheels \
 && phenolab list > /dev/null
# What the NVIDIA container toolkit mounts into a container given GPUs (`docker run --gpus`):
# CUDA's driver libraries and nvidia-smi. The CPU-only services are given no GPU, so none is used.
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER phenolab
WORKDIR /var/lib/phenolab
EXPOSE 8000 5000
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 CMD ["phenolab-healthcheck"]
CMD ["phenolab", "api"]
